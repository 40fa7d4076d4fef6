"""Run the trainer image as the chart's pod would, with buildah, against moto over HTTP.

    python scripts/image_pod.py IMAGE        (scripts/image-cpu.sh run; make image-cpu-e2e)

No container runtime runs here (crun cannot set up cgroups on these machines), so a kubelet's
part is played by ``buildah run --isolation chroot`` on a container of IMAGE:

- the Job is rendered by ``kubetune render`` from jobs/bbc-news-topic.yaml, on CPU, on a
  small slice of BBC News (E2E_STEPS steps, 64 tokens), with this machine's moto as its store;
- the container's command and args and its env are the rendered ones, Secret references
  filled from a test Secret; the user is the pod's runAsUser:runAsGroup (10001);
- every volume is mounted at its mountPath: the ConfigMap's files (mode 0444, read-only),
  the emptyDirs as empty folders owned by that user;
- the pod's root filesystem is read-only (readOnlyRootFilesystem): buildah cannot mount it
  so, so the container's writable layer is compared before and after the trainer; anything
  the trainer wrote outside its volumes fails the run.

The training data goes to moto first (s3:// URIs in data.*), and the model is the examples
extra's packaged all-MiniLM-L6-v2 in the image (pkg:). The run passes when the trainer exits
0 and the run's run.json in moto says completed. Prints each phase's duration.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "jobs" / "bbc-news-topic.yaml"
BUCKET = "runs"
STORE = f"s3://{BUCKET}/e2e"
DATA = f"s3://{BUCKET}/data/bbc-news"
#: The test Secret the rendered env's secretKeyRefs read (moto takes any credentials).
SECRETS = {"kubetune-s3": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def kubetune(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("kubetune")), *args], check=True)


def phase(name: str, started: float) -> None:
    print(f"  {name}: {time.monotonic() - started:.0f}s", flush=True)


def render(work: Path, endpoint: str, image: str) -> tuple[str, list[dict[str, Any]]]:
    """The run id and the manifests `kubetune render` gives for the slice."""
    steps = os.environ.get("E2E_STEPS", "5")
    sets = {
        "image": image,
        "resources.gpus": "0",
        "resources.cpu": "2",
        "resources.memory": "4Gi",
        "storage.uri": STORE,
        "storage.endpoint": endpoint,
        "data.train": f"{DATA}/train.jsonl",
        "data.eval": f"{DATA}/validation.jsonl",
        "data.test": f"{DATA}/test.jsonl",
        "data.max_length": "64",
        "data.max_train_samples": "64",
        "data.max_eval_samples": "32",
        "train.max_steps": steps,
        "train.batch_size": "8",
        "tracking.wandb.mode": "disabled",
        "tracking.wandb.secret": "null",
    }
    out = work / "rendered"
    args = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    kubetune("render", str(SPEC), *args, "--out", str(out))
    (values,) = (out / "values").glob("*.values.yaml")
    run_id = values.name.removesuffix(".values.yaml")
    manifest = out / f"{run_id}.yaml"
    return run_id, [d for d in yaml.safe_load_all(manifest.read_text()) if d]


def pod_env(container: dict[str, Any]) -> list[str]:
    env = []
    for item in container.get("env", []):
        if "value" in item:
            env.append(f"{item['name']}={item['value']}")
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env.append(f"{item['name']}={SECRETS[ref['name']][ref['key']]}")
    return env


def pod_volumes(
    pod: dict[str, Any],
    docs: list[dict[str, Any]],
    container: dict[str, Any],
    root: Path,
    *,
    chown: bool = True,
) -> list[str]:
    """``--volume`` arguments: each of the container's mounts, made as a kubelet makes it
    (``chown``: hand the emptyDirs to the pod's user, which needs root)."""
    uid, gid = pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    args = []
    for mount in container["volumeMounts"]:
        volume, source = volumes[mount["name"]], root / mount["name"]
        source.mkdir(parents=True)
        if "configMap" in volume:
            for name, text in config_maps[volume["configMap"]["name"]]["data"].items():
                (source / name).write_text(text)
                (source / name).chmod(volume["configMap"].get("defaultMode", 0o644))
        elif "emptyDir" in volume:
            if chown:
                os.chown(source, uid, gid)
        else:
            raise SystemExit(f"volume {mount['name']}: neither a ConfigMap nor an emptyDir")
        options = "ro" if mount.get("readOnly") else "rw"
        args += ["--volume", f"{source}:{mount['mountPath']}:{options}"]
    return args


def pod_run(
    manifests: list[dict[str, Any]], root: Path, *, chown: bool = True
) -> tuple[list[str], list[str]]:
    """The ``buildah run`` options and the command that run the rendered Job's container as
    its pod would, with its volumes made under ``root``."""
    job = next(d for d in manifests if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    options = ["--isolation", "chroot", "--user", user]
    for item in pod_env(container):
        options += ["--env", item]
    options += pod_volumes(pod, manifests, container, root, chown=chown)
    return options, [*container["command"], *container.get("args", [])]


def written(upper: Path) -> set[str]:
    return {str(p.relative_to(upper)) for p in upper.rglob("*")}


def run_pod(image: str, manifests: list[dict[str, Any]], work: Path) -> None:
    job = next(d for d in manifests if d["kind"] == "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    # buildah cannot mount the root filesystem read-only: the check after the run stands in.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    ctr = subprocess.run(
        ["buildah", "from", "--pull-never", image], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        merged = Path(
            subprocess.run(
                ["buildah", "mount", ctr], check=True, capture_output=True, text=True
            ).stdout.strip()
        )
        upper = merged.with_name("diff")  # overlay: the container's writable layer
        # What buildah itself puts in the layer (mount points, /run …): a first run of `true`
        # with the same user and volumes; the trainer may add nothing to it.
        probe, _ = pod_run(manifests, work / "probe")
        subprocess.run(["buildah", "run", *probe, ctr, "--", "true"], check=True)
        before = written(upper)
        options, command = pod_run(manifests, work / "volumes")
        print("  $", " ".join(command), flush=True)
        started = time.monotonic()
        code = subprocess.run(["buildah", "run", *options, ctr, "--", *command]).returncode
        phase("trainer in the image", started)
        if code != 0:
            raise SystemExit(f"the trainer exited {code}")
        extra = written(upper) - before
        if extra:
            raise SystemExit(f"wrote to the read-only root filesystem: {sorted(extra)[:10]}")
        print("  root filesystem untouched (readOnlyRootFilesystem holds)")
    finally:
        subprocess.run(["buildah", "rm", ctr], check=False, capture_output=True)


def main() -> None:
    image = sys.argv[1]
    from moto.server import ThreadedMotoServer

    from kubetune.store import open_store

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    work = Path(tempfile.mkdtemp(prefix="kubetune-image-pod-"))
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        started = time.monotonic()
        kubetune("data", "prepare", "bbc-news", str(work / "data"))
        data = open_store(DATA)
        for split in ("train", "validation", "test"):
            data.upload_file(work / "data" / f"{split}.jsonl", f"{split}.jsonl")
        phase(f"BBC News prepared and uploaded to {DATA}", started)
        started = time.monotonic()
        run_id, manifests = render(work, endpoint, image)
        phase(f"rendered {run_id}", started)
        run_pod(image, manifests, work)
        sweep = manifests[0]["metadata"]["labels"]["kubetune.io/sweep"]
        store = open_store(STORE)
        record = store.read_json(f"{sweep}/{run_id}/run.json")
        keys = store.list_keys(f"{sweep}/{run_id}")
        status = record["status"]
        print(f"  {STORE}/{sweep}/{run_id}: {len(keys)} objects, run.json status {status}")
        print("  final metrics:", json.dumps(record.get("metrics", {}), sort_keys=True)[:300])
        if record["status"] != "completed":
            raise SystemExit(f"run.json says {record['status']!r}, not completed")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
