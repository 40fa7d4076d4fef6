"""The store: file:// on disk and s3:// over real HTTP against moto's S3 server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune.store import FileStore, RunLocation, Store, StoreError, file_uri_path, open_store


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    if "runs" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket="runs")
    return s3_endpoint


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    request.getfixturevalue("s3_env")
    return open_store(f"s3://runs/{tmp_path.name}")


def test_round_trip_list_and_delete(store: Store, tmp_path: Path) -> None:
    store.write_text("a/b/spec.yaml", "name: x\n")
    store.write_json("a/b/run.json", {"status": "completed"})
    assert store.read_text("a/b/spec.yaml") == "name: x\n"
    assert store.read_json("a/b/run.json") == {"status": "completed"}
    assert store.exists("a/b/run.json") and not store.exists("a/b/nope")
    assert store.list_keys("a") == ["a/b/run.json", "a/b/spec.yaml"]
    assert store.list_keys("a/b/run") == []  # a prefix is a folder, not a string prefix
    store.delete_prefix("a/b")
    assert store.list_keys("a") == []
    with pytest.raises(StoreError, match="not found"):
        store.read_bytes("a/b/spec.yaml")


def test_checkpoints_count_only_with_a_manifest(store: Store, tmp_path: Path) -> None:
    run = RunLocation(store, "sweep", "sweep-12345678")
    for step in (10, 20, 30):
        local = tmp_path / f"ckpt-{step}"
        (local / "sub").mkdir(parents=True)
        (local / "model.bin").write_bytes(bytes([step]) * 1000)
        (local / "sub" / "state.json").write_text(json.dumps({"step": step}))
        run.put_checkpoint(local, step)
    # A crash mid-upload: files but no manifest.
    store.write_bytes(run.key("checkpoints/step-000040/model.bin"), b"partial")
    assert run.checkpoints() == [10, 20, 30]
    run.prune_checkpoints(keep=1, protect={10})
    assert run.checkpoints() == [10, 30]
    fetched = run.fetch_checkpoint(30, tmp_path / "back")
    assert (fetched / "model.bin").read_bytes() == bytes([30]) * 1000
    assert json.loads((fetched / "sub" / "state.json").read_text()) == {"step": 30}


def test_fetch_detects_a_corrupted_checkpoint(store: Store, tmp_path: Path) -> None:
    run = RunLocation(store, "s", "s-00000000")
    local = tmp_path / "c"
    local.mkdir()
    (local / "model.bin").write_bytes(b"good")
    run.put_checkpoint(local, 5)
    store.write_bytes(run.key("checkpoints/step-000005/model.bin"), b"evil")
    with pytest.raises(StoreError, match="checksum mismatch"):
        run.fetch_checkpoint(5, tmp_path / "back")


def test_file_store_keeps_keys_inside_its_root(tmp_path: Path) -> None:
    store = FileStore(f"file://{tmp_path}")
    with pytest.raises(StoreError, match="escapes the store root"):
        store.write_text("../outside.txt", "x")


def test_file_uris() -> None:
    assert file_uri_path("file:///abs/runs") == Path("/abs/runs")
    assert file_uri_path("file://./runs") == Path("runs")
    assert file_uri_path("file://runs") == Path("runs")


def test_trainer_reads_s3_data_through_the_store(s3_env: str, tmp_path: Path) -> None:
    from kubetune import spec
    from kubetune.train.data import load_splits

    store = open_store("s3://runs")
    rows = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(20)]
    store.write_text("data/train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    job = spec.validate(
        {
            "name": "s3-data",
            "task": "classification",
            "model": {"name": "m"},
            "data": {"train": "s3://runs/data/train.jsonl", "validation_split": 0.25},
        }
    )
    splits = load_splits(job, tmp_path)
    assert splits.train is not None and splits.eval is not None
    assert len(splits.train) + len(splits.eval) == 20
    assert set(splits.train["text"]) | set(splits.eval["text"]) == {r["text"] for r in rows}
