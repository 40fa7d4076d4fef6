"""kubetune.store.checkpoints without training: fake checkpoint folders, and a file store whose
checkpoint uploads wait until the test lets them through (:class:`GatedStore`), so every
ordering is set by the test, never by how fast this machine is."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubetune.store import FileStore, RunLocation, checkpoints
from kubetune.store.checkpoints import CheckpointError, Uploader

SAVE_STEPS = 5


class GatedStore(FileStore):
    """A file store in which the files of checkpoint N upload only once ``open(N)`` is
    called: as slow a store as the test wants, driven by events."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self._lock = threading.Lock()
        self._gates: dict[int, threading.Event] = {}
        self.broken: set[int] = set()

    def gate(self, step: int) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(step, threading.Event())

    def open(self, step: int) -> None:
        self.gate(step).set()

    def upload_file(self, local: Path, key: str) -> None:
        found = re.search(r"/checkpoints/step-(\d+)/", key)
        if found:
            step = int(found.group(1))
            self.gate(step).wait()
            if step in self.broken:
                raise RuntimeError(f"disk full writing {key}")
        super().upload_file(local, key)


def fake_checkpoint(folder: Path, step: int) -> Path:
    """What the Trainer leaves in checkpoint-N: weights, optimizer state, trainer state."""
    local = folder / f"checkpoint-{step}"
    local.mkdir(parents=True)
    (local / "model.safetensors").write_bytes(b"w" * 300 + bytes([step % 256]))
    (local / "optimizer.pt").write_bytes(b"o" * 600)
    (local / "trainer_state.json").write_text(f'{{"global_step": {step}}}', encoding="utf-8")
    return local


@pytest.fixture
def store(tmp_path: Path) -> GatedStore:
    return GatedStore(f"file://{tmp_path / 'store'}")


@pytest.fixture
def location(store: GatedStore) -> RunLocation:
    return RunLocation(store, "sweep", "run")


@pytest.fixture
def uploader(store: GatedStore, location: RunLocation, tmp_path: Path) -> Iterator[Uploader]:
    up = Uploader(location, tmp_path / "staging", keep=2, concurrency=2)
    yield up
    for step in range(0, 100, SAVE_STEPS):  # a failed test's uploads finish, and close returns
        store.open(step)
    up.close()


def test_a_save_returns_only_once_the_checkpoint_before_is_stored(
    uploader: Uploader, store: GatedStore, location: RunLocation, tmp_path: Path
) -> None:
    uploader.submit(fake_checkpoint(tmp_path, 5), 5)
    # Checkpoint 5 cannot be stored until the gate opens: the next save must wait for it.
    reached = threading.Event()
    waited_for: list[int] = []
    seen_when_returned: list[list[int]] = []

    def next_save() -> None:
        def on_wait(unstored: int) -> None:
            waited_for.append(unstored)
            reached.set()

        uploader.submit(fake_checkpoint(tmp_path, 10), 10, on_wait=on_wait)
        seen_when_returned.append(location.checkpoints())
        reached.set()

    saver = threading.Thread(target=next_save)
    saver.start()
    reached.wait()  # the save is waiting (or, were the bound looser, has returned)
    store.open(5)
    saver.join()
    assert waited_for == [5]
    assert seen_when_returned == [[5]], "the save returned before checkpoint 5 was stored"
    assert uploader.unstored() == [10], "the new checkpoint uploads behind training"


def test_every_save_finds_all_earlier_checkpoints_stored_however_slow_the_store(
    uploader: Uploader, store: GatedStore, location: RunLocation, tmp_path: Path
) -> None:
    """The slowest store that still lets training go on: each checkpoint's upload is let
    through only when the next save is already waiting for it."""
    saves = list(range(SAVE_STEPS, 45, SAVE_STEPS))
    for step in saves:
        uploader.submit(fake_checkpoint(tmp_path, step), step, on_wait=store.open)
        earlier = [s for s in saves if s < step]
        assert [s.step for s in uploader.stored] == earlier
        assert location.checkpoints() == earlier[-2:], "kept: the newest two"
        assert uploader.unstored() == [step]
    store.open(saves[-1])
    assert uploader.drain()
    assert location.checkpoints() == saves[-2:]


def test_a_stopping_save_queues_behind_the_unstored_one_without_waiting(
    uploader: Uploader, store: GatedStore, location: RunLocation, tmp_path: Path
) -> None:
    uploader.submit(fake_checkpoint(tmp_path, 5), 5)
    uploader.submit(fake_checkpoint(tmp_path, 8), 8, wait=False)
    assert uploader.unstored() == [5, 8]
    assert location.checkpoints() == []
    store.open(5)
    store.open(8)
    assert uploader.drain()
    assert [s.step for s in uploader.stored] == [5, 8], "stored in the order saved"


def test_a_checkpoint_that_cannot_be_stored_stops_the_next_save(
    uploader: Uploader, store: GatedStore, location: RunLocation, tmp_path: Path
) -> None:
    store.broken.add(5)
    uploader.submit(fake_checkpoint(tmp_path, 5), 5)
    store.open(5)
    with pytest.raises(CheckpointError, match="disk full"):
        uploader.submit(fake_checkpoint(tmp_path, 10), 10)
    assert location.checkpoints() == []
    assert uploader.unstored() == [], "checkpoint 10 was not queued behind the failure"


def test_a_stored_checkpoint_matches_its_manifest(
    uploader: Uploader, store: GatedStore, location: RunLocation, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store.open(5)
    uploader.submit(fake_checkpoint(tmp_path, 5), 5)
    assert uploader.drain()
    with ThreadPoolExecutor(2) as pool:
        checkpoints.fetch(location, 5, tmp_path / "fetched", pool)
    assert (tmp_path / "fetched" / "optimizer.pt").read_bytes() == b"o" * 600


def stored_checkpoint(uploader: Uploader, store: GatedStore, tmp_path: Path, step: int) -> None:
    """A checkpoint as a run stores it, with the resume-only files a Trainer writes."""
    local = fake_checkpoint(tmp_path, step)
    (local / "scheduler.pt").write_bytes(b"s" * 10)
    (local / "rng_state.pth").write_bytes(b"r" * 20)
    (local / "training_args.bin").write_bytes(b"a" * 5)
    store.open(step)
    uploader.submit(local, step)
    assert uploader.drain()


def held(location: RunLocation, step: int) -> set[str]:
    prefix = location.checkpoint_prefix(step)
    return {k.removeprefix(f"{prefix}/") for k in location.store.list_keys(prefix)}


def test_a_completed_runs_checkpoints_lose_their_optimizer_state_and_still_verify(
    uploader: Uploader, store: GatedStore, location: RunLocation, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    for step in (5, 10):
        stored_checkpoint(uploader, store, tmp_path, step)
    trimmed = checkpoints.trim_resume_state(location)
    assert trimmed == checkpoints.Trimmed(steps=[5, 10], bytes=2 * (600 + 10 + 20))
    kept = {"model.safetensors", "trainer_state.json", "training_args.bin"}
    for step in (5, 10):
        manifest = store.read_json(checkpoints.manifest_key(location, step))
        assert {f["path"] for f in manifest["files"]} == kept
        assert held(location, step) == kept | {"MANIFEST.json"}, "nothing the manifest omits"
        assert manifest["trimmed"]["files"] == ["optimizer.pt", "rng_state.pth", "scheduler.pt"]
        with ThreadPoolExecutor(2) as pool:  # raises unless every file matches the manifest
            checkpoints.fetch(location, step, tmp_path / f"fetched-{step}", pool)
    assert location.checkpoints() == [5, 10], "the weights stay listed"
    assert checkpoints.trim_resume_state(location) == checkpoints.Trimmed([], 0)


def test_trimming_again_after_a_crash_removes_what_the_manifest_no_longer_names(
    uploader: Uploader, store: GatedStore, location: RunLocation, tmp_path: Path
) -> None:
    stored_checkpoint(uploader, store, tmp_path, 5)
    checkpoints.trim_resume_state(location)
    # A crash between the manifest and the deletes leaves a file the manifest does not name.
    store.write_bytes(f"{location.checkpoint_prefix(5)}/optimizer.pt", b"o" * 600)
    checkpoints.trim_resume_state(location)
    assert "optimizer.pt" not in held(location, 5)


def test_a_resume_never_picks_a_trimmed_checkpoint_and_keeps_it(
    uploader: Uploader, store: GatedStore, location: RunLocation, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stored_checkpoint(uploader, store, tmp_path, 5)
    checkpoints.trim_resume_state(location)
    rejected: list[tuple[int, str]] = []
    with ThreadPoolExecutor(2) as pool:
        found = checkpoints.latest_valid(
            location, tmp_path / "resume", pool, lambda s, r: rejected.append((s, r))
        )
    assert found is None
    assert rejected == [(5, "its optimizer state was removed when the run completed")]
    assert location.checkpoints() == [5], "its weights are not deleted"


# --- the same primitives against both stores: a folder and S3 over HTTP (moto) -------------


@pytest.fixture(params=["file", "s3"])
def any_location(request: pytest.FixtureRequest, tmp_path: Path) -> RunLocation:
    from kubetune.store import open_store

    if request.param == "file":
        return RunLocation(open_store(f"file://{tmp_path / 'store'}"), "sweep", "run")
    request.getfixturevalue("s3_env")
    return RunLocation(open_store(f"s3://runs/{tmp_path.name}"), "sweep", "run")


FAST = checkpoints.Retry(seconds=0, first_wait=0)


def stored(
    location: RunLocation, folder: Path, step: int, writer: str = "me"
) -> list[dict[str, Any]]:
    """Upload ``folder`` as checkpoint ``step`` and write its manifest; the manifest files."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        files = checkpoints.upload_tree(
            location.store, folder, location.checkpoint_prefix(step), pool, FAST
        )
    checkpoints.write_manifest(location, step, files, writer, FAST)
    return files


def test_a_checkpoint_counts_once_its_manifest_is_stored_and_fetches_intact(
    any_location: RunLocation, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    local = fake_checkpoint(tmp_path / "trainer", 5)
    with ThreadPoolExecutor(2) as pool:
        checkpoints.upload_tree(
            any_location.store, local, any_location.checkpoint_prefix(5), pool, FAST
        )
        assert any_location.checkpoints() == [], "data without a manifest is not a checkpoint"
        files = [f["path"] for f in stored(any_location, local, 5)]
        assert any_location.checkpoints() == [5]
        checkpoints.fetch(any_location, 5, tmp_path / "back", pool, FAST)
    assert files == ["model.safetensors", "optimizer.pt", "trainer_state.json"]
    for name in files:
        assert (tmp_path / "back" / name).read_bytes() == (local / name).read_bytes()


def test_a_second_trainer_cannot_claim_a_stored_step_but_a_retried_write_can(
    any_location: RunLocation, tmp_path: Path
) -> None:
    local = fake_checkpoint(tmp_path / "trainer", 5)
    files = stored(any_location, local, 5, writer="pod-a")
    # The same writer, same files: a retry whose first answer was lost. Not a conflict.
    checkpoints.write_manifest(any_location, 5, files, "pod-a", FAST)
    with pytest.raises(checkpoints.WriterConflictError, match=r"stored first by .*pod-a"):
        checkpoints.write_manifest(any_location, 5, files, "pod-b", FAST)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("flip", "sha256 of model.safetensors differs from the manifest"),
        ("truncate", "model.safetensors has 300 bytes, the manifest 301"),
        ("remove", "model.safetensors is missing"),
    ],
)
def test_a_damaged_checkpoint_is_rejected_removed_and_the_one_before_resumed(
    any_location: RunLocation, tmp_path: Path, damage: str, reason: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    for step in (5, 10):
        stored(any_location, fake_checkpoint(tmp_path / "trainer", step), step)
    key = f"{any_location.checkpoint_prefix(10)}/model.safetensors"
    if damage == "flip":
        any_location.store.write_bytes(key, b"x" * 301)
    elif damage == "truncate":
        any_location.store.write_bytes(key, b"w" * 300)
    else:
        any_location.store.delete_keys([key])
    rejected: list[tuple[int, str]] = []
    with ThreadPoolExecutor(2) as pool:
        found = checkpoints.latest_valid(
            any_location, tmp_path / "resume", pool, lambda s, r: rejected.append((s, r)), FAST
        )
    assert found is not None and found[1] == 5
    assert (found[0] / "trainer_state.json").read_text(encoding="utf-8") == '{"global_step": 5}'
    assert rejected == [(10, reason)]
    assert any_location.checkpoints() == [5]
    assert any_location.store.list_keys(any_location.checkpoint_prefix(10)) == []


def test_pruning_keeps_the_newest_and_the_protected_and_leaves_tombstones(
    any_location: RunLocation, tmp_path: Path
) -> None:
    for step in (5, 10, 15, 20):
        stored(any_location, fake_checkpoint(tmp_path / "trainer", step), step)
    pruned = checkpoints.prune(any_location, keep=2, protect=[5], writer="me")
    assert pruned == [10]
    assert any_location.checkpoints() == [5, 15, 20]
    tombstone = checkpoints.manifest_key(any_location, 10)
    assert any_location.store.read_json(tombstone)["pruned"] is True
    # A late trainer cannot store step 10 again over its tombstone; what it uploaded before
    # its manifest was refused goes when the tombstones do.
    with pytest.raises(checkpoints.WriterConflictError):
        stored(any_location, fake_checkpoint(tmp_path / "late", 10), 10, writer="late")
    checkpoints.drop_tombstones(any_location)
    assert any_location.store.list_keys(any_location.checkpoint_prefix(10)) == []
    assert any_location.checkpoints() == [5, 15, 20]


def test_a_failing_store_is_retried_until_it_answers_then_given_up_on() -> None:
    from kubetune.store import StoreError

    failures = [StoreError("503"), StoreError("503")]

    def flaky() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    patient = checkpoints.Retry(seconds=3600, first_wait=0, max_wait=0)
    assert checkpoints.with_retry("upload x", flaky, patient) == "ok"

    def down() -> None:
        raise StoreError("connection refused")

    with pytest.raises(CheckpointError, match="upload x: still failing after 0 s"):
        checkpoints.with_retry("upload x", down, FAST)
