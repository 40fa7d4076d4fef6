"""The trainer's side of staging: staged inputs fetched from the store and checked byte for
byte against their content address; the run's own store is searched first."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kubetune import spec as specmod
from kubetune import stage
from kubetune.errors import ConfigError
from kubetune.store import MANIFEST, open_store
from kubetune.train.inputs import Fetcher

DATA = b'{"text": "shares rose", "label": "business"}\n'


@pytest.fixture
def staged(s3_env: str, tmp_path: Path) -> tuple[str, str, str]:
    """(store uri, staged data file URI, staged model folder URI) in moto."""
    model = tmp_path / "laptop" / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "bert"}\n')
    (model / "sub" / "vocab.txt").write_text("[PAD]\n")
    (tmp_path / "laptop" / "train.jsonl").write_bytes(DATA)
    uri = f"s3://runs/{tmp_path.name}"
    stager = stage.Stager()
    storage = specmod.StorageSpec(uri=uri)
    train = stage.LocalInput("data.train", "train.jsonl", tmp_path / "laptop" / "train.jsonl")
    data = stager.stage(train, storage)
    folder = stager.stage(stage.LocalInput("model.name", "model", model), storage)
    return uri, data.uri, folder.uri


def test_staged_folder_is_fetched_once_and_checked(
    staged: tuple[str, str, str], tmp_path: Path
) -> None:
    uri, _data, folder = staged
    fetch = Fetcher(open_store(uri), None, tmp_path / "work")
    local = fetch.folder("model.name", folder)
    assert (local / "sub" / "vocab.txt").read_text() == "[PAD]\n"
    assert (local / "config.json").is_file()
    (local / "config.json").write_text("changed locally")  # a second ask does not refetch
    assert fetch.folder("model.decoder", folder) == local
    assert (local / "config.json").read_text() == "changed locally"


def test_tampered_model_file_is_one_line_naming_the_object(
    staged: tuple[str, str, str], tmp_path: Path
) -> None:
    uri, _data, folder = staged
    store = open_store(uri)
    tree = folder.rsplit("/", 1)[1]
    store.write_bytes(f"inputs/sha256/{tree}/sub/vocab.txt", b"[PAD]\n[EVIL]\n")
    with pytest.raises(ConfigError) as caught:
        Fetcher(store, None, tmp_path / "work").folder("model.name", folder)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"model.name: {uri}/inputs/sha256/{tree}/sub/vocab.txt has sha256")
    assert "changed after staging" in message
    assert not (tmp_path / "work" / tree).exists()  # nothing half-checked is kept


def test_tampered_manifest_is_refused(staged: tuple[str, str, str], tmp_path: Path) -> None:
    uri, _data, folder = staged
    store = open_store(uri)
    tree = folder.rsplit("/", 1)[1]
    store.write_bytes(f"inputs/sha256/{tree}/{MANIFEST}", b'{"files":{}}')
    with pytest.raises(ConfigError, match=rf"{MANIFEST} has sha256 .* not the {tree[:12]}"):
        Fetcher(store, None, tmp_path / "work").folder("model.name", folder)


def test_staged_data_file_is_checked_against_its_address(
    staged: tuple[str, str, str], tmp_path: Path
) -> None:
    uri, data, _folder = staged
    store = open_store(uri)
    fetch = Fetcher(store, None, tmp_path / "work")
    (path,) = fetch.data_files("data.train", data)
    assert path.read_bytes() == DATA and path.name == "train.jsonl"
    digest = hashlib.sha256(DATA).hexdigest()
    store.write_bytes(f"inputs/sha256/{digest}/train.jsonl", b"{}\n")
    with pytest.raises(ConfigError, match=r"^data\.train: .*/train\.jsonl has sha256"):
        Fetcher(store, None, tmp_path / "work2").data_files("data.train", data)


def test_the_runs_own_store_is_searched_first(staged: tuple[str, str, str], tmp_path: Path) -> None:
    """A reproduction into another store reads the inputs copied there, whatever bucket the
    spec's URIs name."""
    uri, data, folder = staged
    spec = specmod.validate(
        {"name": "x", "task": "classification", "model": {"name": folder},
         "data": {"train": data}, "storage": {"uri": uri}}
    )  # fmt: skip
    other = open_store(f"file://{tmp_path}/other")
    stage.copy_inputs(spec, [], other)
    gone_data = data.replace("s3://runs/", "s3://no-such-bucket/")
    gone_folder = folder.replace("s3://runs/", "s3://no-such-bucket/")
    fetch = Fetcher(other, None, tmp_path / "work")
    assert fetch.data_files("data.train", gone_data)[0].read_bytes() == DATA
    assert (fetch.folder("model.name", gone_folder) / "config.json").is_file()
    with pytest.raises(ConfigError, match=r"^model\.name: s3://no-such-bucket/.* is not in"):
        Fetcher(None, None, tmp_path / "work3").folder("model.name", gone_folder)
