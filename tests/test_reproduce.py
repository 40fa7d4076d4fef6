"""`kubetune reproduce`: the same manifests from a stored run, and a local re-run judged
against the record."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubetune import render as rendermod
from kubetune import reproduce, sweep
from kubetune import spec as specmod
from kubetune.errors import ConfigError
from kubetune.store import FileStore, RunLocation
from kubetune.store.record import parse_record
from kubetune.sweep import ResolvedRun

from conftest import DIGEST_IMAGE, ROOT, base_spec, run_cli
from tiny import tiny_spec, write_yaml

KUBETUNE = [sys.executable, "-m", "kubetune.cli"]
TAG_IMAGE = "ghcr.io/kubetune/kubetune-trainer:0.1.0"
OTHER_DIGEST = "registry.example/kubetune-trainer@sha256:" + "cd" * 32


def kubetune(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env={**os.environ, "COLUMNS": "200"})


def kubetune_process(
    *args: str, cwd: Path = ROOT, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """The whole-pipeline runs (`kubetune run`, `reproduce --local`) as real processes."""
    return subprocess.run(
        [*KUBETUNE, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def sweep_spec(**overrides: Any) -> dict[str, Any]:
    return base_spec(
        sweep={"parameters": {"train.learning_rate": {"values": [1e-5, 2e-5, 3e-5]}}}, **overrides
    )


def store_run(root: Path, run: ResolvedRun, **record: Any) -> str:
    """Fake what the trainer in a pod stores for ``run``; returns the run's URI."""
    location = RunLocation(FileStore(f"file://{root}"), run.sweep, run.run_id)
    location.store.write_text(location.key("spec.yaml"), specmod.dump(run.spec))
    data = {
        "status": "completed",
        "run_id": run.run_id,
        "sweep": run.sweep,
        "spec_hash": run.spec_hash,
        "params": run.params,
        "task": run.spec.task,
        "image": run.spec.image,
        "render": {"chart": reproduce.current_chart(), "namespace": None},
        **record,
    }
    location.store.write_json(location.key("run.json"), data)
    return location.url


# --- --render -------------------------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["ml", None])
def test_render_is_byte_identical_to_the_original_render(
    write_spec: Any, tmp_path: Path, namespace: str | None
) -> None:
    path = write_spec(sweep_spec())
    run = sweep.expand(specmod.load(path))[1]
    ns = ["-n", namespace] if namespace else []
    original = kubetune("render", str(path), "--run", run.run_id, *ns)
    assert original.returncode == 0, original.stderr
    uri = store_run(
        tmp_path / "runs", run, render={"chart": "kubetune-job-0.1.0", "namespace": namespace or ""}
    )
    again = kubetune("reproduce", uri, "--render")
    assert again.returncode == 0, again.stderr
    assert again.stdout == original.stdout
    assert again.stderr == ""
    assert f"name: {run.run_id}" in again.stdout and "2e-05" in again.stdout


def test_render_out_writes_the_same_gitops_folder(write_spec: Any, tmp_path: Path) -> None:
    path = write_spec(sweep_spec())
    run = sweep.expand(specmod.load(path))[2]
    uri = store_run(tmp_path / "runs", run, render={"chart": None, "namespace": "ml"})
    first = kubetune(
        "render", str(path), "--run", run.run_id, "-n", "ml", "--out", str(tmp_path / "a")
    )
    second = kubetune("reproduce", uri, "--render", "--out", str(tmp_path / "b"))
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.yaml"))
    assert len(files) == 3
    for rel in files:
        assert (tmp_path / "b" / rel).read_bytes() == (tmp_path / "a" / rel).read_bytes()


def test_tag_image_warns_and_image_pins_only_the_pods_image(tmp_path: Path) -> None:
    run = sweep.expand(specmod.validate(sweep_spec(image=TAG_IMAGE)))[0]
    uri = store_run(tmp_path / "runs", run)
    warned = kubetune("reproduce", uri, "--render")
    assert warned.returncode == 0
    (warning,) = warned.stderr.strip().splitlines()
    assert warning.startswith(
        f"warning: image {TAG_IMAGE} is a tag, not a digest: the rerun "
        "may get different bits; pin it with --image REF@sha256:"
    )
    original = rendermod.stream(rendermod.render([run]))
    assert warned.stdout == original

    recorded = reproduce.load(uri)
    pinned, warnings = reproduce.render(recorded, image=OTHER_DIGEST)
    assert warnings == []
    before, after = original.splitlines(), rendermod.stream(pinned).splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 2  # the container's image and KUBETUNE_IMAGE, nothing else
    assert all(TAG_IMAGE in a and b == a.replace(TAG_IMAGE, OTHER_DIGEST) for a, b in changed)


def test_recorded_digest_needs_no_image_and_a_different_one_is_flagged(tmp_path: Path) -> None:
    run = sweep.expand(specmod.validate(sweep_spec()))[0]
    recorded = reproduce.load(store_run(tmp_path / "runs", run))
    assert reproduce.render(recorded)[1] == []
    _rendered, warnings = reproduce.render(recorded, image=OTHER_DIGEST)
    assert warnings == [f"--image {OTHER_DIGEST} is not the image the run recorded, {DIGEST_IMAGE}"]


def test_image_must_be_a_digest(tmp_path: Path) -> None:
    run = sweep.expand(specmod.validate(sweep_spec(image=TAG_IMAGE)))[0]
    proc = kubetune(
        "reproduce",
        store_run(tmp_path / "runs", run),
        "--render",
        "--image",
        "ghcr.io/kubetune/kubetune-trainer:0.2.0",
    )
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "--image ghcr.io/kubetune/kubetune-trainer:0.2.0: give a digest reference" in line


def test_another_chart_version_is_flagged(tmp_path: Path) -> None:
    run = sweep.expand(specmod.validate(sweep_spec()))[0]
    uri = store_run(tmp_path / "runs", run, render={"chart": "kubetune-job-0.0.9", "namespace": ""})
    _rendered, warnings = reproduce.render(reproduce.load(uri))
    assert warnings == [
        f"the run was rendered with chart kubetune-job-0.0.9; this is "
        f"{reproduce.current_chart()}, so the manifests may differ from the original"
    ]


def test_an_edited_stored_spec_is_refused(tmp_path: Path) -> None:
    run = sweep.expand(specmod.validate(sweep_spec()))[0]
    uri = store_run(tmp_path / "runs", run)
    spec_file = tmp_path / "runs" / run.sweep / run.run_id / "spec.yaml"
    spec_file.write_text(spec_file.read_text().replace("epochs: 3", "epochs: 4"))
    proc = kubetune("reproduce", uri, "--render")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "hashes to run id bbc-topic-" in line and "the stored spec was changed" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "choose one of --render, --submit or --local"),
        (["--render", "--local"], "choose one of --render, --submit or --local"),
        (["--local", "--out", "x"], "--out does not apply to --local; drop it"),
        (["--render", "--tolerance", "0.1"], "--tolerance does not apply to --render; drop it"),
        (["--local", "--endpoint", "http://x"], "--endpoint does not apply to --local; drop it"),
        (["--render", "--replace"], "--replace does not apply to --render; drop it"),
        (
            ["--submit", "--store", "file://./x"],
            "--store file://./x: a Kubernetes Job writes to s3://bucket/prefix",
        ),
    ],
)
def test_exactly_one_mode_and_its_own_options(
    tmp_path: Path, args: list[str], message: str
) -> None:
    run = sweep.expand(specmod.validate(sweep_spec()))[0]
    proc = kubetune("reproduce", store_run(tmp_path / "runs", run), *args)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {message}"


def test_uri_must_be_one_run(tmp_path: Path) -> None:
    runs = sweep.expand(specmod.validate(sweep_spec()))
    for run in runs[:2]:
        store_run(tmp_path / "runs", run)
    proc = kubetune("reproduce", f"file://{tmp_path}/runs", "--render")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "holds 2 runs; pass one run folder, <store>/<sweep>/<run-id>" in line


def test_a_local_run_cannot_be_rendered_as_a_job(tmp_path: Path) -> None:
    (run,) = sweep.expand(specmod.validate(base_spec(storage=None)))
    proc = kubetune("reproduce", store_run(tmp_path / "runs", run), "--render")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert f"{run.run_id} cannot run as a Kubernetes Job: storage.uri: a Kubernetes Job" in line


def test_a_run_that_read_laptop_files_is_refused_before_anything_is_rendered(
    tmp_path: Path,
) -> None:
    data = base_spec()
    data["data"]["train"] = "data/bbc-news/train.jsonl"  # what `kubetune run` reads here
    (run,) = sweep.expand(specmod.validate(data))
    proc = kubetune("reproduce", store_run(tmp_path / "runs", run), "--render")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "read data.train from data/bbc-news/train.jsonl on the machine it ran on" in line
    assert "--local" in line and "kubetune submit" in line


def test_a_run_without_a_record_yet_is_refused(tmp_path: Path) -> None:
    run = sweep.expand(specmod.validate(sweep_spec()))[0]
    uri = store_run(tmp_path / "runs", run)
    (tmp_path / "runs" / run.sweep / run.run_id / "run.json").unlink()
    with pytest.raises(ConfigError, match="no run.json yet"):
        reproduce.load(uri)


# --- what --local compares ------------------------------------------------------------------


def test_compared_metrics_are_quality_metrics_of_eval_and_test() -> None:
    timings = {"runtime": 1.0, "samples_per_second": 9.0, "steps_per_second": 1.0, "epoch": 3.0}
    record = parse_record(
        {
            "metrics": {
                "train": {"train_loss": 0.3, "epoch": 3.0},
                "eval": {"accuracy": 0.9, "loss": 0.2, "labels": "x", **timings},
                "test": {"accuracy": 0.8, "f1": 0.7, **timings},
            }
        }
    )
    job = specmod.validate(base_spec())
    assert reproduce.compared_metrics(job, record) == [
        ("eval", "accuracy"),
        ("eval", "loss"),
        ("test", "accuracy"),
        ("test", "f1"),
    ]
    named = specmod.validate(base_spec(reproduce={"metrics": ["f1", "accuracy"]}))
    assert reproduce.compared_metrics(named, record) == [
        ("test", "f1"),
        ("eval", "accuracy"),
        ("test", "accuracy"),
    ]
    unknown = specmod.validate(base_spec(reproduce={"metrics": ["rougeL"]}))
    with pytest.raises(ConfigError, match=r"reproduce.metrics: rougeL not recorded .* accuracy"):
        reproduce.compared_metrics(unknown, record)
    with pytest.raises(ConfigError, match="this failed run records no final eval or test"):
        reproduce.compared_metrics(job, parse_record({"status": "failed"}))


def test_differences_are_relative_except_against_zero() -> None:
    recorded = {"test": {"accuracy": 0.80, "f1": 0.0, "loss": 0.5, "bleu": math.nan}}
    reproduced = {"test": {"accuracy": 0.81, "f1": 0.002, "bleu": math.nan}}
    pairs = [("test", n) for n in ("accuracy", "f1", "loss", "bleu")]
    acc, f1, loss, bleu = reproduce.compare(pairs, recorded, reproduced, tolerance=0.01)
    assert acc.difference == pytest.approx(0.0125) and not acc.ok
    assert f1.difference == pytest.approx(0.002) and f1.ok
    assert loss.reproduced is None and loss.difference is None and not loss.ok
    assert bleu.ok
    (loose,) = reproduce.compare(pairs[:1], recorded, reproduced, tolerance=0.02)
    assert loose.ok


def test_environment_differences_name_packages_gpus_and_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in nvidia-smi on PATH, printing what the real one prints for one H100.
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0123)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    import platform
    from importlib import metadata

    record = {
        "packages": {
            "pyyaml": metadata.version("pyyaml"),
            "typer": "0.0.1",
            "no-such-package-here": "1.0",
        },
        "hardware": {
            "gpus": ["NVIDIA A100-SXM4-40GB"] * 2,
            "python": "3.10.1",
            "platform": platform.platform(),
        },
        "image": DIGEST_IMAGE,
    }
    assert reproduce.environment_differences(parse_record(record)) == [
        f"typer 0.0.1 in the record, {metadata.version('typer')} here",
        "no-such-package-here 1.0 in the record, absent here",
        "GPUs: 2× NVIDIA A100-SXM4-40GB in the record, 1× NVIDIA H100 80GB HBM3 here",
        f"python 3.10.1 in the record, {platform.python_version()} here",
        f"the run ran in image {DIGEST_IMAGE}; this re-run uses this machine's packages",
    ]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert reproduce.local_gpu_names() == []


# --- --local end to end, with a tiny real model -----------------------------------------------


@pytest.fixture(scope="module")
def reproduced(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real tiny run (kubetune run) and its reproduction (reproduce --local), in one folder."""
    root = tmp_path_factory.mktemp("reproduce")
    path = write_yaml(root / "job.yaml", tiny_spec(tiny, train={"epochs": 2}))
    original = kubetune_process("run", str(path), cwd=root, timeout=600)
    assert original.returncode == 0, original.stdout + original.stderr
    (run_dir,) = (root / "runs" / "tiny-cls").iterdir()
    uri = f"file://./runs/tiny-cls/{run_dir.name}"
    proc = kubetune_process("reproduce", uri, "--local", cwd=root, timeout=600)
    return root, uri, proc


def _copy(root: Path, tmp_path: Path) -> Path:
    """A private copy of the recorded run and its reproduction, to edit."""
    for name in ("runs", "reproductions"):
        shutil.copytree(root / name, tmp_path / name)
    return tmp_path


def _edit_record(root: Path, uri: str, change: Any) -> None:
    path = root / uri.removeprefix("file://./") / "run.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.slow
def test_local_reproduces_a_real_run_within_tolerance(reproduced: Any) -> None:
    root, uri, proc = reproduced
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│ ")]
    assert any(r.startswith("│ test  │ accuracy ") for r in rows)
    assert any(r.startswith("│ eval  │ accuracy ") for r in rows)
    assert all("✓ within" in r for r in rows) and "✗" not in proc.stdout
    assert not any(" runtime " in r or "samples_per_second" in r for r in rows)
    assert f"✓ reproduced: {len(rows)} metrics within 1.00%" in proc.stderr
    record = json.loads(
        (
            root / uri.removeprefix("file://./").replace("runs/", "reproductions/", 1) / "run.json"
        ).read_text()
    )
    assert record["status"] == "completed"


@pytest.mark.slow
def test_local_outside_tolerance_exits_1_naming_the_metric(reproduced: Any, tmp_path: Path) -> None:
    root, uri, _proc = reproduced
    copy = _copy(root, tmp_path)
    _edit_record(copy, uri, lambda d: d["metrics"]["test"].update(accuracy=0.05))
    proc = kubetune_process("reproduce", uri, "--local", cwd=copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "compared with the reproduction already at" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: not reproduced within 1.00%: test accuracy (")
    assert "eval accuracy" not in errors[0]
    assert "│ test  │ accuracy │     0.05 │" in proc.stdout and "✗ outside" in proc.stdout
    # A looser tolerance from the command line accepts the same difference.
    loose = kubetune_process("reproduce", uri, "--local", "--tolerance", "100", cwd=copy)
    assert loose.returncode == 0, loose.stderr


@pytest.mark.slow
def test_local_warns_where_packages_differ(reproduced: Any, tmp_path: Path) -> None:
    root, uri, _proc = reproduced
    copy = _copy(root, tmp_path)
    _edit_record(copy, uri, lambda d: d["packages"].update(transformers="4.0.0"))
    proc = kubetune_process("reproduce", uri, "--local", cwd=copy)
    assert proc.returncode == 0, proc.stderr
    from importlib import metadata

    here = metadata.version("transformers")
    assert f"warning: transformers 4.0.0 in the record, {here} here" in proc.stderr.splitlines()


@pytest.mark.slow
def test_local_refuses_the_runs_own_store(reproduced: Any) -> None:
    root, uri, _proc = reproduced
    proc = kubetune_process("reproduce", uri, "--local", "--store", f"file://{root}/runs", cwd=root)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "the recorded run lives there; a reproduction goes to another store" in line
