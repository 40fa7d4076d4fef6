#!/usr/bin/env bash
# The CPU flavour of the trainer image, built and run without Docker: buildah and debootstrap.
#
#   make image-cpu        (scripts/image-cpu.sh base build)       the image
#   make image-cpu-e2e    (scripts/image-cpu.sh base build run)   ... and a pod's run of it
#
# base   a Debian bookworm minbase with python3 (3.11) and ca-certificates, made with
#        debootstrap from the Debian mirror and committed as $BASE_IMAGE. Made once: the image
#        in buildah's storage is the cache (`buildah rmi $BASE_IMAGE` makes it again).
# build  images/trainer/Dockerfile, the same file as the CUDA image, with the CPU flavour's
#        build args (BASE_IMAGE, PYTHON_SOURCE=system, TORCH_CUDA=cpu, TORCH_INDEX), extras
#        train,examples, as $IMAGE. torch is the CPU wheel of constraints.txt: from
#        $TORCH_WHEELS when that folder holds it (copied into images/trainer/wheels/, which
#        git ignores), else from PyTorch's CPU index.
# run    scripts/image_pod.py: renders jobs/bbc-news-topic.yaml on a small slice of BBC News
#        and runs the rendered pod's command in $IMAGE as the chart does (UID 10001, the
#        chart's env, the ConfigMap at its mountPath, emptyDirs, a root filesystem that must
#        stay unwritten) against a moto S3 server; checks run.json says completed.
#
# Needs root (debootstrap, buildah's chroot isolation), buildah and debootstrap
# (apt-get install buildah debootstrap), and for `run` the dev venv ($VENV, default .venv;
# make image-cpu-e2e creates it). Each step prints how long it took.
#
# Settings (environment): BASE_IMAGE (localhost/kubetune-base:bookworm), IMAGE
# (localhost/kubetune-trainer:cpu), DEBIAN_MIRROR (http://deb.debian.org/debian),
# TORCH_WHEELS (/opt/wheels), CA_BUNDLE (/etc/ssl/certs/ca-certificates.crt: the CAs pip and
# uv trust during the build, for TLS-intercepting proxies; empty for their own), VENV.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BASE_IMAGE="${BASE_IMAGE:-localhost/kubetune-base:bookworm}"
IMAGE="${IMAGE:-localhost/kubetune-trainer:cpu}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TORCH_WHEELS="${TORCH_WHEELS:-/opt/wheels}"
CA_BUNDLE="${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
VENV="${VENV:-$ROOT/.venv}"
WORK="$ROOT/build/image"
DOCKERFILE=images/trainer/Dockerfile

step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
die() {
  printf '\033[1;31merror:\033[0m %s\n' "$*" >&2
  exit 1
}
timed() {
  local name=$1 start=$SECONDS
  shift
  "$@"
  printf '\033[1;32m%s took %ds\033[0m on %s\n' "$name" $((SECONDS - start)) "$(cpu)"
}
cpu() {
  printf '%s, %s cores' "$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)" "$(nproc)"
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

base() {
  step "base image $BASE_IMAGE (debootstrap bookworm)"
  if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "  cached: buildah rmi $BASE_IMAGE to make it again"
    return
  fi
  need debootstrap "apt-get install debootstrap"
  local rootfs="$WORK/rootfs-bookworm" ctr mnt
  rm -rf "$rootfs"
  mkdir -p "$WORK"
  # minbase: essential packages and apt; python3 is the interpreter the image runs
  # (PYTHON_SOURCE=system), ca-certificates lets the build reach PyPI over TLS.
  debootstrap --variant=minbase --include=python3,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed: see $WORK/debootstrap.log"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
  ctr="$(buildah from scratch)"
  mnt="$(buildah mount "$ctr")"
  cp -a "$rootfs/." "$mnt/"
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash --label org.opencontainers.image.base.name=debian:bookworm-minbase "$ctr"
  buildah commit --rm "$ctr" "$BASE_IMAGE"
  rm -rf "$rootfs"
}

build() {
  step "trainer image $IMAGE (CPU flavour of $DOCKERFILE)"
  need buildah "apt-get install buildah"
  buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 \
    || die "no base image $BASE_IMAGE: run scripts/image-cpu.sh base first"
  local version wheel torch_index=https://download.pytorch.org/whl/cpu secret=()
  version="$(sed -n 's/^torch==\(.*\)+cpu$/\1/p' constraints.txt)"
  [[ -n "$version" ]] || die "constraints.txt pins no torch==<version>+cpu"
  wheel="$(find "$TORCH_WHEELS" -maxdepth 1 -name "torch-$version+cpu-cp311-*.whl" 2>/dev/null | head -n 1)"
  rm -f images/trainer/wheels/*.whl
  if [[ -n "$wheel" ]]; then
    echo "  torch from $wheel"
    cp "$wheel" images/trainer/wheels/
    torch_index=none
  else
    echo "  torch from $torch_index ($TORCH_WHEELS holds no torch-$version+cpu wheel)"
  fi
  if [[ -n "$CA_BUNDLE" ]]; then secret=(--secret "id=ca-bundle,src=$CA_BUNDLE"); fi
  buildah bud --isolation chroot -f "$DOCKERFILE" --ignorefile "$DOCKERFILE.dockerignore" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg PYTHON_SOURCE=system \
    --build-arg TORCH_CUDA=cpu \
    --build-arg TORCH_INDEX="$torch_index" \
    --build-arg EXTRAS=train,examples \
    "${secret[@]}" -t "$IMAGE" .
  rm -f images/trainer/wheels/*.whl
  # The builder stage's image is left untagged; only the runtime image is kept.
  buildah images --filter dangling=true -q | xargs -r buildah rmi >/dev/null 2>&1 || true
  buildah images "$IMAGE"
}

run() {
  step "the rendered pod in $IMAGE against moto (BBC News, small slice)"
  [[ -x "$VENV/bin/python" ]] || die "no $VENV/bin/python: make image-cpu-e2e creates it, or set VENV"
  "$VENV/bin/python" scripts/image_pod.py "$IMAGE"
}

(($# > 0)) || set -- base build run
[[ "$(id -u)" == 0 ]] || die "needs root: debootstrap and buildah's chroot isolation"
for what in "$@"; do
  case "$what" in
    base | build | run) timed "$what" "$what" ;;
    *) die "unknown step '$what': base, build or run" ;;
  esac
done
