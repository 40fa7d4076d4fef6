"""The store: file:// on disk and s3:// over real HTTP against moto's S3 server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.store import (
    ConflictError,
    FileStore,
    Store,
    StoreError,
    file_uri_path,
    find_runs,
    open_store,
)


@pytest.fixture
def store(file_or_s3_store: Store) -> Store:
    return file_or_s3_store


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


def test_conditional_write_has_one_winner(store: Store) -> None:
    store.write_text("r/MANIFEST.json", "first")
    with pytest.raises(ConflictError, match="already written"):
        store.write_bytes("r/MANIFEST.json", b"second", if_absent=True)
    assert store.read_text("r/MANIFEST.json") == "first"
    store.write_bytes("r/other.json", b"only", if_absent=True)
    assert store.read_text("r/other.json") == "only"


def test_conditional_writes_racing_from_threads_have_one_winner(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def attempt(i: int) -> bool:
        try:
            store.write_bytes("race/MANIFEST.json", str(i).encode(), if_absent=True)
        except ConflictError:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        wins = [i for i, won in enumerate(pool.map(attempt, range(16))) if won]
    assert len(wins) == 1
    assert store.read_text("race/MANIFEST.json") == str(wins[0])


def test_sizes_and_deletes(store: Store) -> None:
    store.write_bytes("s/a.bin", b"12345")
    store.write_bytes("s/sub/b.bin", b"")
    assert store.list_sizes("s") == {"s/a.bin": 5, "s/sub/b.bin": 0}
    store.delete_keys(["s/a.bin"])
    assert store.list_keys("s") == ["s/sub/b.bin"]


def test_s3_client_settings_suit_s3_compatible_stores(s3_env: str) -> None:
    from kubetune.store.s3 import S3Store

    s3 = open_store("s3://runs/p", endpoint=s3_env, concurrency=4)
    assert isinstance(s3, S3Store)
    config = s3.client.meta.config
    assert config.retries["mode"] == "standard"
    assert config.s3["addressing_style"] == "path"  # MinIO, moto: no bucket subdomains
    assert s3.client.meta.endpoint_url == s3_env
    # botocore >= 1.36 only: CRC trailers on every upload break some S3-compatible stores.
    if hasattr(config, "request_checksum_calculation"):
        assert config.request_checksum_calculation == "when_required"


def test_file_store_keeps_keys_inside_its_root(tmp_path: Path) -> None:
    store = FileStore(f"file://{tmp_path}")
    with pytest.raises(StoreError, match="escapes the store root"):
        store.write_text("../outside.txt", "x")


def test_find_runs_at_every_level(store: Store) -> None:
    for run in ("a/a-1", "a/a-2", "b/b-1"):
        store.write_text(f"{run}/spec.yaml", "name: x\n")
        store.write_text(f"{run}/final/spec.yaml", "not a run folder\n")
    root = store.uri
    assert [r.prefix for r in find_runs(root)] == ["a/a-1", "a/a-2", "b/b-1"]
    assert [r.url for r in find_runs(f"{root}/a")] == [f"{root}/a/a-1", f"{root}/a/a-2"]
    (only,) = find_runs(f"{root}/b/b-1/")
    assert only.url == f"{root}/b/b-1" and only.store.read_text(only.key("spec.yaml"))
    assert find_runs(f"{root}/nothing") == []


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


@pytest.mark.parametrize(
    ("code", "status"), [("403", 403), ("AccessDenied", 403), ("SlowDown", 503)]
)
def test_s3_exists_is_false_only_when_the_key_is_not_there(code: str, status: int) -> None:
    """A denied or failed HEAD is an error, never "not stored": an unreadable run must not look
    like a fresh one (the trainer would start it over)."""
    import boto3
    from botocore.stub import Stubber

    from kubetune.store import ForbiddenError, NotFoundError, StoreError
    from kubetune.store.s3 import S3Store

    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    store = S3Store("s3://bucket/runs", client=client)
    with Stubber(client) as stub:
        stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
        assert store.exists("a/run.json") is False
        stub.add_client_error("head_object", service_error_code=code, http_status_code=status)
        with pytest.raises(StoreError, match=r"s3://bucket/runs/a/run.json: stat ") as err:
            store.exists("a/run.json")
        assert not isinstance(err.value, NotFoundError)
        assert isinstance(err.value, ForbiddenError) == (status == 403)
        stub.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
        with pytest.raises(NotFoundError, match="not found"):
            store.read_bytes("a/run.json")


def test_clients_share_parsed_models_but_read_credentials_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubetune.store.s3 import make_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    first = make_client("http://127.0.0.1:9", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "second")
    second = make_client("http://127.0.0.1:9", "us-east-1")
    assert first._request_signer._credentials.access_key == "first"
    assert second._request_signer._credentials.access_key == "second"
    # One parse of the S3 model serves both: the same loaded description, not an equal copy.
    described = [c.meta.service_model._service_description for c in (first, second)]
    assert described[0] is described[1]
