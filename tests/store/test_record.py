"""The typed run record: what the trainer writes is what every reader reads, old records still
load, and a folder's run.json is told apart as written, missing, unreadable or forbidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune import report, runs
from kubetune.headline import TASK_METRICS, headline, higher_is_better
from kubetune.store import FileStore, ForbiddenError, RunLocation
from kubetune.store.checkpoints import STATE_REMOVED
from kubetune.store.record import UnreadableError, load_record, read_run
from kubetune.train.record import RecordWriter


@pytest.fixture
def location(tmp_path: Path) -> RunLocation:
    return RunLocation(FileStore(f"file://{tmp_path}/runs"), "topic", "topic-00000001")


def test_what_the_writer_stores_the_reader_reads(location: RunLocation) -> None:
    writer = RecordWriter(location, None, main=True)
    writer.write("running", task="classification", params={"train.learning_rate": 1e-5})
    assert read_run(location).status == "running"
    writer.write(
        "completed",
        metrics={"test": {"accuracy": 0.9, "perplexity": float("inf")}},
        parameters={"trainable": 10, "total": 100},
        zero_shot={"method": "embedding", "examples_per_class": 8, "first_prompt": "x"},
        **{STATE_REMOVED: {"steps": [5], "bytes": 2_000_000}},
    )
    record = load_record(location)
    assert (record.status, record.task, record.attempt) == ("completed", "classification", 1)
    assert record.params == {"train.learning_rate": 1e-5}
    assert record.value("test", "accuracy") == 0.9
    assert record.value("test", "perplexity") == float("inf")  # not null
    assert record.parameters is not None and record.parameters.trainable == 10
    assert record.zero_shot is not None and record.zero_shot.model_extra == {"first_prompt": "x"}
    assert record.optimizer_state_removed is not None
    assert record.optimizer_state_removed.bytes == 2_000_000
    # The next attempt keeps the first start and counts itself.
    again = RecordWriter(location, record, main=True)
    assert again.write("running").started == record.started
    assert load_record(location).attempt == 2


def test_the_writer_refuses_a_record_readers_would_reject(location: RunLocation) -> None:
    with pytest.raises(ValueError, match="parameters"):
        RecordWriter(location, None, main=True).write("completed", parameters=[1, 2])
    assert read_run(location).status == "starting"  # nothing was written


def test_an_old_record_loads(location: RunLocation) -> None:
    """A record from before sweep parameters, attempts, per-split fingerprints and pod
    template revisions (render.chart), with a field this version does not know."""
    location.store.write_json(
        location.key("run.json"),
        {
            "status": "completed",
            "run_id": "topic-00000001",
            "task": "classification",
            "render": {"chart": "kubetune-job-0.1.0", "namespace": None},
            "data": {"fingerprint": "abc", "sources": {"train": "x.csv"}, "rows": {"train": 5}},
            "started": "2025-01-02T03:04:05.000000Z",
            "finished": "2025-01-02T03:05:05.000000Z",
            "metrics": {"eval": {"accuracy": 0.5}},
            "from_the_future": {"x": 1},
        },
    )
    folder = read_run(location)
    assert folder.state == "written"
    record = folder.record
    assert record.params == {} and record.attempt is None
    assert record.render.chart == "kubetune-job-0.1.0" and record.render.pod_template is None
    assert record.data is not None and record.data.fingerprints is None
    assert record.started_at is not None and record.ended_at is not None
    assert (record.ended_at - record.started_at).total_seconds() == 60
    assert record.model_extra == {"from_the_future": {"x": 1}}
    detail = runs.show(runs.RunDetail(folder, [], None, None, None))
    assert detail is not None


def test_missing_unreadable_and_forbidden_are_told_apart(location: RunLocation) -> None:
    missing = read_run(location)
    assert (missing.state, missing.status, missing.problem) == ("missing", "starting", None)

    location.store.write_text(location.key("run.json"), "{not json")
    bad = read_run(location)
    assert (bad.state, bad.status) == ("unreadable", "unreadable")
    assert bad.problem == f"{location.url}/run.json: not JSON"

    location.store.write_json(location.key("run.json"), {"status": "done", "metrics": []})
    with pytest.raises(UnreadableError) as caught:
        load_record(location)
    assert str(caught.value).startswith(f"{location.url}/run.json: not a run record: status: ")
    assert "\n" not in str(caught.value)

    denied = read_run(RunLocation(Forbidding(location.store.uri), "topic", "topic-00000001"))
    assert (denied.state, denied.status) == ("forbidden", "forbidden")
    assert denied.problem is not None and "access denied" in denied.problem


class Forbidding(FileStore):
    """A store whose credentials may list but not read (S3 AccessDenied)."""

    def read_bytes(self, key: str) -> bytes:
        raise ForbiddenError(f"{self.url(key)}: read refused: access denied")


def test_every_reader_says_starting_for_a_folder_without_run_json(location: RunLocation) -> None:
    location.store.write_text(location.key("spec.yaml"), "task: ner\n")
    (info,) = runs.read_all([location])
    assert info.status == "starting"
    assert report.load_run(location).status == "starting"


def test_s3_access_denied_is_forbidden() -> None:
    import boto3
    from botocore.stub import Stubber

    from kubetune.store.s3 import S3Store

    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    location = RunLocation(S3Store("s3://bucket/runs", client=client), "topic", "topic-1")
    with Stubber(client) as stub:
        stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
        folder = read_run(location)
    assert (folder.state, folder.status) == ("forbidden", "forbidden")
    assert folder.problem == "s3://bucket/runs/topic/topic-1/run.json: read refused: access denied"


@pytest.mark.parametrize("task", sorted(TASK_METRICS))
def test_each_task_has_one_headline_with_a_direction(task: str) -> None:
    found = headline(task)
    assert found.metric == TASK_METRICS[task][0]
    assert found.higher_is_better == (found.metric != "perplexity")


def test_the_reports_best_run_follows_the_headlines_direction(tmp_path: Path) -> None:
    store = FileStore(f"file://{tmp_path}/runs")
    for run_id, value in (("lm-1", 12.0), ("lm-2", 7.5), ("lm-3", 30.0)):
        location = RunLocation(store, "lm", run_id)
        store.write_text(location.key("spec.yaml"), "task: causal-lm\n")
        store.write_json(
            location.key("run.json"),
            {
                "status": "completed",
                "task": "causal-lm",
                "metrics": {"eval": {"perplexity": value}},
            },
        )
    views = [report.load_run(RunLocation(store, "lm", r)) for r in ("lm-1", "lm-2", "lm-3")]
    sweep = report.make_sweep("lm", views)
    assert not higher_is_better("perplexity")
    assert sweep.best is not None and sweep.best.run_id == "lm-2"
    assert sweep.better == "lower"
