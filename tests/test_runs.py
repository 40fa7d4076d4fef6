"""`kubetune runs list` and `runs show` over run folders written as the contract says."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from kubetune import runs
from kubetune.errors import ConfigError
from kubetune.store import FileStore, RunLocation, Store, open_store
from kubetune.store.checkpoints import STATE_REMOVED
from kubetune.store.record import RunFolder, parse_record

from conftest import ROOT, run_cli


def kubetune(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env={**os.environ, "COLUMNS": "250"})


def record(status: str, run_id: str, **extra: Any) -> dict[str, Any]:
    """A run.json as the trainer writes it at the start, plus ``extra``."""
    data: dict[str, Any] = {
        "status": status,
        "run_id": run_id,
        "sweep": run_id.rsplit("-", 1)[0],
        "spec_hash": "f" * 64,
        "params": {},
        "seed": 42,
        "task": "classification",
        "image": None,
        "render": {"chart": None, "namespace": None},
        "packages": {
            "kubetune": "0.1.0",
            "torch": "2.13.0+cpu",
            "transformers": "5.23.0",
            "numpy": "2.4.6",
        },
        "git": {"sha": "0123456789abcdef0123", "dirty": True},
        "hardware": {
            "platform": "Linux-6.1-x86_64",
            "python": "3.11.7",
            "cpu_count": 2,
            "torch_threads": 2,
            "cuda": None,
            "gpus": [],
        },
        "started": "2026-01-02T03:04:05.000000Z",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "revision": "abc123"},
        "data": {},
    }
    data.update(extra)
    return data


def metrics(accuracy: float, split: str = "test") -> dict[str, Any]:
    timings = {"runtime": 1.5, "samples_per_second": 99.0, "steps_per_second": 9.0}
    return {
        "train": {"epoch": 3.0, "train_loss": 0.4, "train_runtime": 60.0},
        "eval": {"accuracy": accuracy - 0.01, "macro_f1": 0.5, "loss": 0.7, **timings},
        **({split: {"accuracy": accuracy, "macro_f1": 0.55, **timings}} if split != "eval" else {}),
    }


def write_run(store: Store, sweep: str, run_id: str, data: dict[str, Any] | None) -> RunLocation:
    """A run folder: spec.yaml always; run.json when ``data`` is given."""
    location = RunLocation(store, sweep, run_id)
    store.write_text(location.key("spec.yaml"), f"name: {sweep}\n")
    if data is not None:
        store.write_json(location.key("run.json"), data)
    return location


def completed(run_id: str, accuracy: float, lr: float, **extra: Any) -> dict[str, Any]:
    return record(
        "completed",
        run_id,
        params={"train.learning_rate": lr},
        finished="2026-01-02T03:16:17.000000Z",
        metrics=metrics(accuracy),
        **extra,
    )


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    """A store with a sweep of five runs in every state, and a second sweep."""
    store = FileStore(f"file://{tmp_path}/runs")
    write_run(store, "topic", "topic-00000001", completed("topic-00000001", 0.9123, 1e-5))
    write_run(
        store,
        "topic",
        "topic-00000002",
        record("running", "topic-00000002", params={"train.learning_rate": 2e-5}),
    )
    write_run(
        store,
        "topic",
        "topic-00000003",
        record(
            "interrupted",
            "topic-00000003",
            params={"train.learning_rate": 3e-5},
            stopped="2026-01-02T04:04:05Z",
            step=200,
        ),
    )
    write_run(
        store,
        "topic",
        "topic-00000004",
        record(
            "failed",
            "topic-00000004",
            params={"train.learning_rate": 4e-5},
            finished="2026-01-02T03:04:35Z",
            error="CUDA out of memory",
        ),
    )
    write_run(store, "topic", "topic-00000005", None)
    write_run(
        store,
        "ner",
        "ner-00000001",
        record(
            "completed",
            "ner-00000001",
            task="ner",
            params={"lora.r": 8},
            metrics={"eval": {"f1": 0.77, "loss": 0.3}},
        ),
    )
    return store


def _row(out: str, run_id: str) -> list[str]:
    line = next(line for line in out.splitlines() if run_id in line)
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_list_shows_status_parameters_headline_metrics_and_time(store: FileStore) -> None:
    proc = kubetune("runs", "list", store.uri)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "topic: 5 runs (classification)" in out and "ner: 1 run (ner)" in out
    assert "train.learning_rate" in out and "lora.r" in out
    assert _row(out, "topic-00000001") == [
        "topic-00000001",
        "1e-05",
        "completed",
        "0.9123",
        "0.5500",
        "2026-01-02 03:04",
        "12m12s",
    ]
    assert _row(out, "topic-00000002")[1:3] == ["2e-05", "running"]
    assert _row(out, "topic-00000003")[2:] == ["interrupted", "—", "—", "2026-01-02 03:04", "1h00m"]
    assert _row(out, "topic-00000004")[2:] == ["failed", "—", "—", "2026-01-02 03:04", "30s"]
    assert _row(out, "topic-00000005")[1:] == ["—", "starting", "—", "—", "—", "—"]
    # A sweep without a test split headlines its eval metrics.
    assert "eval" in out.split("ner: 1 run")[1] and "0.7700" in _row(out, "ner-00000001")


def test_a_running_run_counts_its_time_so_far() -> None:
    info = RunFolder(
        RunLocation(FileStore("file:///x"), "s", "s-1"),
        parse_record(record("running", "s-1", started="2026-01-02T03:00:00Z")),
    )
    from datetime import UTC, datetime

    assert (
        runs.fmt_duration(runs.duration(info, datetime(2026, 1, 2, 5, 30, tzinfo=UTC))) == "2h30m"
    )


def test_list_narrows_to_a_sweep_or_one_run(store: FileStore) -> None:
    sweep = kubetune("runs", "list", f"{store.uri}/ner")
    assert sweep.returncode == 0, sweep.stderr
    assert "ner-00000001" in sweep.stdout and "topic-" not in sweep.stdout
    one = runs.read_all(runs.find(f"{store.uri}/topic/topic-00000003/"))
    assert [(i.run_id, i.status) for i in one] == [("topic-00000003", "interrupted")]


def test_list_of_an_empty_store_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = kubetune("runs", "list", "file://./empty", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == "" and proc.stderr.strip() == "no runs in file://./empty"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file://./nope", "file://./nope: no such folder"),
        ("ftp://host/runs", "ftp://host/runs: use file://./runs, file:///abs/path or s3://"),
        ("runs", "runs: use file://./runs"),
    ],
)
def test_list_bad_uri_is_one_line_exit_2(tmp_path: Path, uri: str, message: str) -> None:
    proc = kubetune("runs", "list", uri, cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


class OverlapStore(FileStore):
    """A file store whose reads each wait until ``expected`` reads are in flight together,
    and which counts the most that ever were: a reader that never has that many running
    at once hangs here (until the guard below fails it) instead of passing on a fast
    machine, and one that runs more shows up in ``most``."""

    #: Only for a hang: the reads a correct reader makes never wait this long.
    PATIENCE_S = 120

    def __init__(self, uri: str, expected: int) -> None:
        super().__init__(uri)
        self.expected = expected
        self.changed = threading.Condition()
        self.in_flight = 0
        self.most = 0

    def read_bytes(self, key: str) -> bytes:
        with self.changed:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.changed.notify_all()
            met = self.changed.wait_for(lambda: self.most >= self.expected, self.PATIENCE_S)
            assert met, f"never {self.expected} reads at once (at most {self.most})"
        try:
            return super().read_bytes(key)
        finally:
            with self.changed:
                self.in_flight -= 1


def test_records_are_read_concurrently_bounded_and_kept_in_order(tmp_path: Path) -> None:
    store = OverlapStore(f"file://{tmp_path}", expected=4)
    locations = [
        write_run(store, "s", f"s-{i:08d}", record("completed", f"s-{i:08d}")) for i in range(12)
    ]
    infos = runs.read_all(locations, workers=4)
    assert store.most == 4, "as many reads at once as there are workers, never more"
    assert [i.run_id for i in infos] == [loc.run_id for loc in locations]
    assert all(i.status == "completed" for i in infos)


def test_an_unreadable_record_does_not_hide_the_others(store: FileStore) -> None:
    store.write_text("topic/topic-00000002/run.json", "{not json")
    infos = {i.run_id: i for i in runs.read_all(runs.find(store.uri))}
    assert infos["topic-00000002"].status == "unreadable"
    assert "not JSON" in (infos["topic-00000002"].problem or "")
    assert infos["topic-00000001"].status == "completed"


def test_list_on_s3(s3_env: str, tmp_path: Path) -> None:
    uri = f"s3://runs/{tmp_path.name}"
    s3 = open_store(uri)
    write_run(s3, "topic", "topic-0000000a", completed("topic-0000000a", 0.88, 1e-5))
    write_run(s3, "topic", "topic-0000000b", None)
    proc = kubetune("runs", "list", uri)
    assert proc.returncode == 0, proc.stderr
    assert _row(proc.stdout, "topic-0000000a")[1:4] == ["1e-05", "completed", "0.8800"]
    assert _row(proc.stdout, "topic-0000000b")[2] == "starting"
    assert kubetune("runs", "list", f"s3://runs/{tmp_path.name}-none").stderr.startswith("no runs")


def _checkpoint(store: Store, location: RunLocation, step: int, manifest: bool) -> None:
    prefix = location.key(f"checkpoints/step-{step:06d}")
    store.write_bytes(f"{prefix}/model.safetensors", b"weights")
    if manifest:
        store.write_json(f"{prefix}/MANIFEST.json", {"step": step, "files": []})


def test_show_one_run(store: FileStore) -> None:
    run = RunLocation(store, "topic", "topic-00000001")
    store.write_json(
        run.key("run.json"),
        completed(
            "topic-00000001",
            0.9123,
            1e-5,
            image="ghcr.io/k/t@sha256:" + "ab" * 32,
            render={"chart": "kubetune-job-0.1.0", "namespace": "ml"},
            hardware={
                "platform": "Linux-x",
                "python": "3.11.7",
                "cpu_count": 16,
                "cuda": "12.4",
                "gpus": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"],
            },
            **{STATE_REMOVED: {"steps": [100, 200], "bytes": 702_345_678}},
        ),
    )
    _checkpoint(store, run, 100, manifest=True)
    _checkpoint(store, run, 200, manifest=True)
    _checkpoint(store, run, 300, manifest=False)  # an upload cut short
    store.write_text(run.key("final/config.json"), "{}")
    store.write_text(
        run.key("spec.yaml"),
        "name: topic\ntask: classification\n"
        "model: {name: m}\ndata: {train: t.jsonl}\n"
        "tracking: {wandb: {project: news, entity: lab}}\n",
    )
    proc = kubetune("runs", "show", f"{store.uri}/topic/topic-00000001")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    fields = {
        k: v.strip()
        for k, _, v in (line.partition("  ") for line in out.splitlines())
        if k and not k.startswith(("┃", "│", "┏", "┡", "└", "final metrics", "param"))
    }
    assert fields["sweep"] == "topic"
    assert fields["spec hash"] == "f" * 64
    assert fields["image"] == "ghcr.io/k/t@sha256:" + "ab" * 32
    assert fields["chart"] == "kubetune-job-0.1.0, namespace ml"
    assert fields["git"] == "0123456789ab (dirty)"
    assert fields["hardware"].startswith("2× NVIDIA H100 80GB HBM3, CUDA 12.4, 16 CPUs")
    assert fields["packages"] == "kubetune 0.1.0, torch 2.13.0+cpu, transformers 5.23.0"
    assert fields["started"] == "2026-01-02 03:04 UTC, took 12m12s"
    assert fields["checkpoints"] == (
        "steps 100, 200 (optimizer state removed at completion: 702.3 MB freed)"
    )
    assert fields["final/"] == f"{store.uri}/topic/topic-00000001/final"
    assert fields["W&B run"] == "topic-00000001 (project lab/news)"
    assert "│ train.learning_rate │ 1e-05" in out
    assert _row(out, "│ accuracy ")[1:] == ["—", "0.9023", "0.9123"]
    assert _row(out, "│ train_loss ")[1:] == ["0.4000", "—", "—"]
    # Quality first, timings last.
    assert out.index("│ accuracy ") < out.index("│ loss ") < out.index("│ runtime ")


def test_show_tolerates_a_record_older_than_the_contract(store: FileStore) -> None:
    store.write_json(
        "topic/topic-00000002/run.json",
        {"status": "interrupted", "run_id": "topic-00000002", "step": 40},
    )
    proc = kubetune("runs", "show", f"{store.uri}/topic/topic-00000002")
    assert proc.returncode == 0, proc.stderr
    assert "interrupted" in proc.stdout and "step 40" in proc.stdout
    assert "final metrics" not in proc.stdout
    assert "checkpoints  —" in proc.stdout and "final/       —" in proc.stdout


def test_show_wants_one_run(store: FileStore) -> None:
    proc = kubetune("runs", "show", f"{store.uri}/topic")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "holds 5 runs; pass one run folder, <store>/<sweep>/<run-id>" in line
    with pytest.raises(ConfigError, match="topic-99999999: no such folder"):
        runs.locate(f"{store.uri}/topic/topic-99999999")
    store.write_text("topic/notes/todo.txt", "x")
    with pytest.raises(
        ConfigError, match="no run here; pass a run folder, <store>/<sweep>/<run-id>"
    ):
        runs.locate(f"{store.uri}/topic/notes")


def test_metric_names_that_are_timings() -> None:
    assert all(
        runs.is_timing(n)
        for n in (
            "runtime",
            "eval_samples_per_second",
            "epoch",
            "steps_per_second",
            "model_preparation_time",
        )
    )
    assert not any(runs.is_timing(n) for n in ("accuracy", "loss", "rougeL", "perplexity"))


def test_list_table_at_60_columns_keeps_run_ids_and_parameter_values_whole() -> None:
    from rich.console import Console

    points = {"bbc-news-grid-29ed0de5": (2e-5, 8), "bbc-news-grid-0a1b2c3d": (1e-4, 16)}
    infos = [
        RunFolder(
            RunLocation(FileStore("file:///x"), "bbc-news-grid", run_id),
            parse_record(
                record("completed", run_id, params={"train.learning_rate": lr, "lora.r": r})
            ),
        )
        for run_id, (lr, r) in points.items()
    ]
    console = Console(width=60, record=True, soft_wrap=True)  # as the CLI's console
    for table in runs.list_tables(infos):
        console.print(table)
    rows = {line.split("│")[1].strip(): line for line in console.export_text().splitlines()
            if line.startswith("│ bbc-news-grid-")}  # fmt: skip
    assert set(rows) == set(points), "every run id whole, on its row's first line"
    assert "2e-05" in rows["bbc-news-grid-29ed0de5"] and "0.0001" in rows["bbc-news-grid-0a1b2c3d"]
    assert "│ 16 " in rows["bbc-news-grid-0a1b2c3d"]
