"""Staging: a run's local inputs → immutable, content-addressed objects in its store.

A pod cannot read the submitter's disk. Before a run becomes a Job, every input the spec names
on this machine — ``data.train``/``eval``/``test`` (and an embedding task's ``data.corpus``)
files or folders, and ``model.name``/``model.decoder`` folders (``pkg:<package>/<folder>`` or
a path) — is uploaded into the run's own store and the spec the pod reads names the uploaded
copy instead::

    <uri>/inputs/sha256/<sha256 of the bytes>/<file name>     a file
    <uri>/inputs/sha256/<tree hash>/…  + MANIFEST.json         a folder; MANIFEST.json last

A folder's ``MANIFEST.json`` maps each relative path to its size and sha256; its bytes are the
canonical JSON (sorted keys, no spaces) and the tree hash is their sha256, so a manifest names
its own address and the trainer can check every byte it downloads. An address holds one content
forever: what is already stored is never sent again, whichever run or sweep point staged it.

The run id of a staged run is the hash of the staged spec: it covers the inputs' bytes, not the
laptop path they were read from. Relative paths resolve against the working directory, as they
do for ``kubetune run``. Hub ids and ``s3://`` sources pass through untouched.

This module imports no ML framework.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune import spec as specmod
from kubetune import sweep
from kubetune.errors import ConfigError
from kubetune.preflight import package_folder
from kubetune.store import MANIFEST, ConflictError, Store, StoreError, endpoint_here, open_store
from kubetune.sweep import ResolvedRun

#: The store's endpoint as this machine reaches it, when that is not the pod's storage.endpoint
#: (a MinIO inside the cluster, port-forwarded here).
#: Where staged inputs live inside a store.
PREFIX = "inputs/sha256"
#: Spec fields that may name local data, and those that may name a local model folder.
DATA_FIELDS = ("data.train", "data.eval", "data.test", "data.corpus")
MODEL_FIELDS = ("model.name", "model.decoder")
#: File types the trainer reads as data (kubetune.train.data): a path with one is never a hub id.
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
#: ``…/inputs/sha256/<hex>[/<rest>]`` inside any s3:// URI.
ADDRESS = re.compile(r"^(?P<root>s3://.+?)/inputs/sha256/(?P<hex>[0-9a-f]{64})(?:/(?P<rest>.+))?$")


@dataclass(frozen=True)
class LocalInput:
    """One spec field that names something on this machine."""

    field: str  # data.train, model.name, …
    source: str  # as written in the spec
    path: Path  # the file or folder it names, absolute


@dataclass(frozen=True)
class StagedInput:
    """Where a local input went: recorded in the pod's env and in run.json as ``inputs``."""

    source: str
    uri: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "uri": self.uri, "sha256": self.sha256}


# --- finding local inputs ------------------------------------------------------------------


def _looks_local(field: str, value: str) -> bool:
    """A value that can only be a path (so a missing one is an error, not a hub id)."""
    if value.startswith((".", "/", "~")):
        return True
    return field in DATA_FIELDS and value.lower().endswith(DATA_SUFFIXES)


def local_fields(spec: specmod.JobSpec) -> list[tuple[str, str]]:
    """(field, value) of every input that names something on this machine, here or not."""
    data = spec.model_dump(mode="json")
    out = []
    for field in (*DATA_FIELDS, *MODEL_FIELDS):
        value = specmod.get_path(data, field)
        if not value or "://" in value:
            continue
        packaged = field in MODEL_FIELDS and value.startswith("pkg:")
        if packaged or Path(value).expanduser().exists() or _looks_local(field, value):
            out.append((field, value))
    return out


def find_local(spec: specmod.JobSpec) -> list[LocalInput]:
    """The fields of ``spec`` that name files or folders on this machine, in field order.

    Raises:
        ConfigError: a field names a local path (or ``pkg:`` folder) that is not here.
    """
    found = []
    for field, value in local_fields(spec):
        if field in MODEL_FIELDS and value.startswith("pkg:"):
            found.append(LocalInput(field, value, package_folder(value, field)))
            continue
        path = Path(value).expanduser()
        if not path.exists():
            raise ConfigError(
                f"{field}: {value}: no such file or folder here (relative paths start from "
                f"{Path.cwd()}); create it, or name an s3:// object"
            )
        found.append(LocalInput(field, value, path.resolve()))
    return found


def refuse_local(runs: Iterable[ResolvedRun]) -> None:
    """Refuse runs whose spec names inputs on this machine (``render`` without ``--stage``).

    Raises:
        ConfigError: naming the first such field and the two ways out.
    """
    for run in runs:
        for field, value in local_fields(run.spec):
            folder = field in MODEL_FIELDS or Path(value).expanduser().is_dir()
            storage = run.spec.storage
            where = f"{storage.uri.rstrip('/')}/{PREFIX}/" if storage else "the run's store"
            raise ConfigError(
                f"{field}: {value} is a {'folder' if folder else 'file'} on this machine; a pod "
                f"cannot read it: pass --stage to upload it to {where} (content-addressed), or "
                "name an s3:// object"
            )


# --- hashing -------------------------------------------------------------------------------

#: (path, size, mtime_ns) → sha256: each file is read once per process, however many sweep
#: points name it.
_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path, advance: Callable[[int], None] | None = None) -> str:
    """sha256 of a file, cached by (path, size, mtime) for this process."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    cached = _HASHES.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            if advance is not None:
                advance(len(block))
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def folder_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted; hidden files and caches are not inputs."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(
            part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts
        )
    )


def manifest_bytes(entries: dict[str, dict[str, Any]]) -> bytes:
    """The canonical MANIFEST.json of a folder: its sha256 is the folder's address."""
    return json.dumps({"files": entries}, sort_keys=True, separators=(",", ":")).encode()


# --- staging -------------------------------------------------------------------------------


def reach(
    uri: str, endpoint: str | None = None, region: str | None = None, concurrency: int = 8
) -> Store:
    """The store at ``uri`` as this machine reaches it: ``$KUBETUNE_STORE_ENDPOINT`` when set
    (a MinIO in the cluster, port-forwarded here), else the endpoint the pods use."""
    return open_store(
        uri,
        endpoint=endpoint_here(endpoint),
        region=region,
        concurrency=concurrency,
    )


@dataclass
class Totals:
    """What staging did, for the CLI's summary line."""

    inputs: int = 0  # distinct staged addresses
    uploaded: int = 0  # bytes sent
    stored: int = 0  # bytes already in the store
    files: int = 0

    @property
    def total(self) -> int:
        return self.uploaded + self.stored


@dataclass
class _Item:
    uri: str
    sha256: str
    size: int


class Stager:
    """Stages local inputs into stores; remembers what it has already staged this process."""

    def __init__(
        self,
        *,
        upload: bool = True,
        advance: Callable[[int], None] | None = None,
        open_for: Callable[[specmod.StorageSpec], Store] | None = None,
    ) -> None:
        self.upload = upload
        self.advance = advance
        self.totals = Totals()
        self._stores: dict[tuple[str, str | None, str | None], Store] = {}
        self._done: dict[tuple[str, str], _Item] = {}  # (store uri, local path) → staged
        self._open_for = open_for or (
            lambda s: reach(s.uri, s.endpoint, s.region, concurrency=s.upload_concurrency)
        )

    def store_for(self, storage: specmod.StorageSpec) -> Store:
        key = (storage.uri.rstrip("/"), storage.endpoint, storage.region)
        if key not in self._stores:
            self._stores[key] = self._open_for(storage)
        return self._stores[key]

    def stage(self, found: LocalInput, storage: specmod.StorageSpec) -> StagedInput:
        store = self.store_for(storage)
        done_key = (store.uri, str(found.path))
        item = self._done.get(done_key)
        if item is None:
            item = (
                self._folder(store, found.path)
                if found.path.is_dir()
                else self._file(store, found.path)
            )
            self._done[done_key] = item
        return StagedInput(found.source, item.uri, item.sha256)

    def _count(self, size: int, sent: bool) -> None:
        if sent:
            self.totals.uploaded += size
        else:
            self.totals.stored += size

    def _file(self, store: Store, path: Path) -> _Item:
        digest = file_sha256(path, self.advance)
        key = f"{PREFIX}/{digest}/{path.name}"
        size = path.stat().st_size
        sent = False
        if not store.exists(key):
            if self.upload:
                store.upload_file(path, key)
            sent = True
        self._count(size, sent)
        self.totals.inputs += 1
        self.totals.files += 1
        return _Item(store.url(key), digest, size)

    def _folder(self, store: Store, folder: Path) -> _Item:
        files = folder_files(folder)
        if not files:
            raise ConfigError(f"{folder}: an empty folder; nothing to stage")
        entries: dict[str, dict[str, Any]] = {
            p.relative_to(folder).as_posix(): {
                "size": p.stat().st_size,
                "sha256": file_sha256(p, self.advance),
            }
            for p in files
        }
        if MANIFEST in entries:
            raise ConfigError(
                f"{folder / MANIFEST}: staged folders keep their own {MANIFEST} there; rename it"
            )
        manifest = manifest_bytes(entries)
        tree = hashlib.sha256(manifest).hexdigest()
        prefix = f"{PREFIX}/{tree}"
        size = sum(int(e["size"]) for e in entries.values())
        self.totals.inputs += 1
        self.totals.files += len(files)
        if store.exists(f"{prefix}/{MANIFEST}"):
            self._count(size, False)
            return _Item(store.url(prefix), tree, size)
        if self.upload:
            # Files already there from a staging cut off halfway are complete objects of this
            # very content (S3 writes are atomic); only the rest go up. The manifest goes last:
            # until it is there, the address does not count as stored.
            held = store.list_sizes(prefix)
            for path in files:
                rel = path.relative_to(folder).as_posix()
                key = f"{prefix}/{rel}"
                if held.get(key) == entries[rel]["size"]:
                    self._count(entries[rel]["size"], False)
                    continue
                store.upload_file(path, key)
                self._count(entries[rel]["size"], True)
            # ConflictError: another submitter stored the same folder first, the same bytes.
            with contextlib.suppress(ConflictError):
                store.write_bytes(f"{prefix}/{MANIFEST}", manifest, if_absent=True)
        else:
            self._count(size, True)
        return _Item(store.url(prefix), tree, size)


@dataclass(frozen=True)
class Staged:
    """Runs whose specs name staged objects, and what staging did."""

    runs: list[ResolvedRun]
    totals: Totals


def plan_bytes(runs: Sequence[ResolvedRun]) -> int:
    """Bytes of the distinct local inputs of ``runs`` (to size a progress bar).

    Raises:
        ConfigError: an input is missing (see :func:`find_local`).
    """
    seen: set[Path] = set()
    total = 0
    for run in runs:
        for found in find_local(run.spec):
            files = folder_files(found.path) if found.path.is_dir() else [found.path]
            for path in files:
                if path not in seen:
                    seen.add(path)
                    total += path.stat().st_size
    return total


def stage_runs(
    runs: Sequence[ResolvedRun],
    *,
    upload: bool = True,
    advance: Callable[[int], None] | None = None,
    stager: Stager | None = None,
) -> Staged:
    """Stage every run's local inputs into its store; return the runs with staged specs.

    Each run's spec names its staged objects, its run id is the staged spec's, and
    ``inputs`` says what each was. Runs that become the same run once staged are one run.
    ``upload=False`` hashes and checks but sends nothing (``submit --dry-run``).

    Raises:
        ConfigError: an input is missing, or a run with local inputs has no s3:// store.
        StoreError: the store could not be read or written.
    """
    from kubetune.render import check_renderable

    stager = stager or Stager(upload=upload, advance=advance)
    out: list[ResolvedRun] = []
    seen: set[str] = set()
    for run in runs:
        found = find_local(run.spec)
        if not found:
            if run.run_id not in seen:
                seen.add(run.run_id)
                out.append(run)
            continue
        check_renderable(run)
        storage = run.spec.storage
        assert storage is not None
        staged = {f.field: stager.stage(f, storage) for f in found}
        data = run.spec.model_dump(mode="json")
        for field, item in staged.items():
            specmod.set_path(data, field, item.uri)
        spec = specmod.validate(data)
        staged_run = dataclasses.replace(
            run,
            spec=spec,
            run_id=sweep.run_id(spec),
            inputs={**run.inputs, **{k: v.as_dict() for k, v in staged.items()}},
        )
        if staged_run.run_id in seen:
            continue
        seen.add(staged_run.run_id)
        out.append(dataclasses.replace(staged_run, index=len(out)))
    return Staged(out, stager.totals)


# --- staged inputs elsewhere: lookup and copies --------------------------------------------


def sweep_base(job: specmod.JobSpec) -> ResolvedRun:
    """A driven sweep's spec without its sweep block, as one run: what its trials share and
    what gets staged for them.

    Raises:
        ConfigError: the sweep varies a local input (only the spec's own are staged).
    """
    assert job.sweep is not None
    base = sweep.base_run(job)
    fields = (*DATA_FIELDS, *MODEL_FIELDS)
    swept = [p for p in job.sweep.parameters if p in fields]
    if swept and find_local(base.spec):
        raise ConfigError(
            f"sweep.parameters.{swept[0]}: a driven sweep on the cluster stages only the "
            "spec's own local inputs; give s3:// or hub values to sweep over"
        )
    return base


def with_staged(job: specmod.JobSpec, inputs: dict[str, dict[str, str]]) -> specmod.JobSpec:
    """A driven sweep's spec naming its staged inputs (from :func:`stage_runs` of
    :func:`sweep_base`) instead of this machine's files: what its driver and trials read."""
    if not inputs:
        return job
    data = job.model_dump(mode="json")
    for field, item in inputs.items():
        specmod.set_path(data, field, item["uri"])
    return specmod.validate(data)


def address(uri: str) -> tuple[str, str, str] | None:
    """``(store root, hex, rest)`` of a content-addressed URI, else None."""
    match = ADDRESS.match(uri)
    if match is None:
        return None
    return match["root"], match["hex"], match["rest"] or ""


def addressed_inputs(spec: specmod.JobSpec) -> dict[str, str]:
    """field → URI of the spec's content-addressed inputs."""
    data = spec.model_dump(mode="json")
    out = {}
    for field in (*DATA_FIELDS, *MODEL_FIELDS):
        value = specmod.get_path(data, field)
        if value and address(value) is not None:
            out[field] = value
    return out


def copy_inputs(spec: specmod.JobSpec, sources: Sequence[Store], target: Store) -> int:
    """Copy the spec's content-addressed inputs into ``target`` under the same
    ``inputs/sha256/…`` keys (for a reproduction into another store); each is looked up in
    ``sources`` first, then where its URI points (opened with the spec's endpoint and region).
    What ``target`` already holds is not copied again. Returns the bytes copied.

    Raises:
        StoreError: an input is in none of the places, or a store failed.
    """
    copied = 0
    storage = spec.storage
    for field, uri in addressed_inputs(spec).items():
        root, digest, rest = address(uri)  # type: ignore[misc]
        rel = f"{PREFIX}/{digest}" + (f"/{rest}" if rest else "")
        folder = not rest
        probe = f"{rel}/{MANIFEST}" if folder else rel
        if target.exists(probe):
            continue
        candidates = [
            *sources,
            open_store(
                root,
                endpoint=storage.endpoint if storage else None,
                region=storage.region if storage else None,
            ),
        ]
        source = next((s for s in candidates if s.exists(probe)), None)
        if source is None:
            raise StoreError(f"{field}: {uri} is in none of {', '.join(s.uri for s in candidates)}")
        if not folder:
            data = source.read_bytes(rel)
            target.write_bytes(rel, data)
            copied += len(data)
            continue
        manifest = source.read_bytes(probe)
        for name in json.loads(manifest)["files"]:
            data = source.read_bytes(f"{rel}/{name}")
            target.write_bytes(f"{rel}/{name}", data)
            copied += len(data)
        with contextlib.suppress(ConflictError):
            target.write_bytes(probe, manifest, if_absent=True)
    return copied


def human_bytes(n: int) -> str:
    """1536 → '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def inputs_env(run: ResolvedRun) -> str:
    """The run's staged inputs as the JSON of the pod's KUBETUNE_INPUTS ('{}' when none)."""
    return json.dumps(run.inputs, sort_keys=True, separators=(",", ":"))
