"""What a run reads — its data, its model, its store — checked before the trainer starts.

The trainer's start-up costs 10–40 s on a laptop (two interpreters importing torch) and a
pod's scheduling and image pull on a cluster, so a mistake that can be found without it is
found here, in about a second: files and columns that do not exist, labels that disagree
across splits, a model folder or hub id that cannot be resolved, ``data.max_length`` beyond
the model's position embeddings, a store that cannot be reached, and data that changed
behind a finished run. ``kubetune run`` checks every run before launching the first;
``kubetune validate --inputs`` checks them alone.

Each problem is one line naming the spec field (or the data file and line) and what to
change: a :class:`~kubetune.errors.ConfigError` (exit 2) for the user's input, a
:class:`~kubetune.errors.WorldError` (exit 1) for what is outside it (the network). No ML
framework is imported: the trainer reads the same files through :mod:`kubetune.datafiles`
and runs :func:`model_limits` on the folder it loads, so both sides say the same thing.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from kubetune import datafiles
from kubetune.errors import ConfigError, Issue, KubetuneError, SpecError, WorldError
from kubetune.spec import LABELLING_TASKS, JobSpec, data_task, task_readers
from kubetune.sweep import ResolvedRun

if TYPE_CHECKING:
    from kubetune.store.record import RunRecord

#: Model types whose positions are relative (T5's buckets): no hard limit on input length.
_RELATIVE_POSITIONS = ("relative_attention_num_buckets",)
#: RoBERTa-style embeddings reserve ``pad_token_id + 1`` positions before the first token.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "xlm-roberta-xl"}


class InputsError(SpecError):
    """Problems with what a spec's runs read; every one found is reported, one line each."""


# --- paths ---------------------------------------------------------------------------------


def looks_local(source: str) -> bool:
    """Whether a data source or model name is a local path rather than a hub id.

    Hub ids are ``name`` or ``owner/name``; anything that starts like a path, has a data
    file's suffix or more than one ``/`` is a path.
    """
    name = source.partition(":")[0] if not source.startswith(("/", ".")) else source
    return (
        source.startswith((".", "/", "~"))
        or Path(source).suffix in datafiles.FORMATS
        or name.count("/") >= 2
    )


def missing_path(source: str, spec_path: str | None = None) -> str:
    """ "no such file" with what a relative path is relative to, and the likely fix."""
    where = "" if Path(source).is_absolute() else f" in {Path.cwd()}"
    hint = ""
    if spec_path and not Path(source).is_absolute():
        beside = Path(spec_path).parent / source
        if beside.exists():
            hint = f"; it is beside the spec: write {beside}"
    return (
        f"{source}: no such file or folder{where} (relative paths are read from the folder "
        f"kubetune runs in){hint}"
    )


def package_folder(name: str, field: str = "model.name") -> Path:
    """``pkg:<package>/<folder>``: a folder inside an installed Python package (staged by
    ``render --stage``/``submit``, read in place by ``kubetune run``).

    Raises:
        ConfigError: the package is not installed or has no such folder.
    """
    from importlib import resources

    package, _, rest = name[4:].partition("/")
    try:
        root = resources.files(package)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{field}: {name} needs the package {package} installed on this machine "
            f"(pip install {package.replace('_', '-')}), or name an s3:// folder"
        ) from exc
    path = Path(str(root.joinpath(rest)))
    if not path.is_dir():
        raise ConfigError(f"{field}: {name}: no folder {rest!r} in package {package}")
    return path


# --- the model -----------------------------------------------------------------------------


@dataclass
class ModelFolder:
    """What the checks read of a model: its config (and tokenizer config) when available."""

    config: dict[str, Any] | None
    where: str


def model_folder(name: str, field: str, *, probe_hub: bool = True) -> ModelFolder | None:
    """Resolve a model reference far enough to read its ``config.json``.

    Returns None where the model cannot be read from here without fetching it (an ``s3://``
    folder, a hub id with the hub reachable). ``probe_hub`` False skips the network check
    (the trainer lets transformers fetch and report).
    """
    if name.startswith("s3://"):
        return None
    if name.startswith("pkg:"):
        return _read_folder(package_folder(name, field), name, field)
    path = Path(name).expanduser()
    if path.is_dir():
        return _read_folder(path, name, field)
    if path.exists():
        raise ConfigError(f"{field}: {name} is a file; name the model's folder (with config.json)")
    if looks_local(name):
        raise ConfigError(f"{field}: {missing_path(name)}")
    return _hub_model(name, field, probe_hub)


def _read_folder(path: Path, name: str, field: str) -> ModelFolder:
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(
            f"{field}: {name} has no config.json; name a folder written by save_pretrained"
        )
    try:
        loaded = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{field}: {config} is not a readable JSON config ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{field}: {config} is not a JSON object")
    return ModelFolder(loaded, str(config))


def _hub_model(name: str, field: str, probe: bool) -> ModelFolder | None:
    cached = _hub_cache(name)
    if cached is not None:
        return _read_folder(cached, name, field)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        raise ConfigError(
            f"{field}: {name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            "download it where there is network, or name a local folder"
        )
    if probe and not hub_reachable():
        raise WorldError(
            f"{field}: {name} is not a local folder or in the Hugging Face cache, and "
            f"{hub_endpoint()} cannot be reached from here; name a local folder (or a pkg: "
            "model), or fetch it where there is network"
        )
    return None


def _hub_cache(name: str) -> Path | None:
    """The cached snapshot folder of a hub model, when its config.json is cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # an id the hub library refuses is simply not cached
        return None
    return Path(found).parent if isinstance(found, str) else None


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens (DNS fails at once on a machine offline)."""
    parsed = urlparse(hub_endpoint())
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def position_limit(config: dict[str, Any]) -> int | None:
    """The most tokens a model's position embeddings take; None when positions are relative."""
    if any(key in config for key in _RELATIVE_POSITIONS):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            if config.get("model_type") in _OFFSET_POSITIONS:
                value -= int(config.get("pad_token_id") or 0) + 1
            return value
    return None


def model_limits(spec: JobSpec, folder: ModelFolder, *, decoder: bool = False) -> None:
    """``data.max_length`` (or, for a decoder, ``max_target_length``) within the model's
    position embeddings."""
    if folder.config is None:
        return
    limit = position_limit(folder.config)
    field, value = (
        ("data.max_target_length", spec.data.max_target_length)
        if decoder
        else ("data.max_length", spec.data.max_length)
    )
    if limit is not None and value > limit:
        raise ConfigError(
            f"{field}: {value} tokens is more than this model reads ({limit} positions, "
            f"{folder.where}); use at most {limit}"
        )


def check_model(spec: JobSpec, *, probe_hub: bool = True) -> None:
    """The model (and a seq2seq decoder) can be found, and the lengths fit them."""
    if spec.task not in (task_readers("model") or ()):  # classical: no model to find
        return
    main = model_folder(spec.model.name, "model.name", probe_hub=probe_hub)
    if main is not None:
        model_limits(spec, main)
        if spec.task == "seq2seq" and spec.model.decoder is None:
            model_limits(spec, main, decoder=True)
    if spec.model.decoder is not None:
        decoder = model_folder(spec.model.decoder, "model.decoder", probe_hub=probe_hub)
        if decoder is not None:
            model_limits(spec, decoder, decoder=True)


# --- the data ------------------------------------------------------------------------------


def columns_for(spec: JobSpec) -> dict[str, str]:
    """The columns a task reads (a classical run: its method's family's): spec field (under
    ``data.``) → column name."""
    d, task = spec.data, data_task(spec)
    if task == "ner":
        return {"tokens_column": d.tokens_column, "tags_column": d.tags_column}
    if task == "seq2seq":
        return {"source_column": d.source_column, "target_column": d.target_column}
    if task == "embedding":
        return {"query_column": d.query_column, "positive_column": d.positive_column}
    if task == "question-answering":
        return {
            "question_column": d.question_column,
            "context_column": d.context_column,
            "answers_column": d.answers_column,
        }
    if task == "causal-lm":
        if d.prompt_column is None:
            return {"text_column": d.text_column}
        return {"prompt_column": d.prompt_column, "completion_column": d.completion_column}
    columns = {"text_column": d.text_column, "label_column": d.label_column}
    if d.text_pair_column and task == "classification":
        columns["text_pair_column"] = d.text_pair_column
    return columns


def _text_fields(spec: JobSpec) -> list[str]:
    """The fields whose columns must hold text in every row."""
    if data_task(spec) == "ner":
        return []
    labels = {"label_column", "answers_column"}
    return [f for f in columns_for(spec) if f not in labels]


def _label_field(spec: JobSpec) -> tuple[str, bool] | None:
    """The field holding labels, and whether each row holds a list of them."""
    task = data_task(spec)
    if task == "ner":
        return "tags_column", True
    if task in LABELLING_TASKS:
        return "label_column", spec.data.multi_label
    return None


def splits_read(spec: JobSpec) -> dict[str, str]:
    """The splits the task reads and their sources."""
    d = spec.data
    sources = {"train": d.train, "eval": d.eval, "test": d.test}
    if spec.task == "zero-shot" and not (spec.prompt and spec.prompt.examples):
        sources["train"] = None
    if spec.task == "classical" and spec.classical.method == "lead":
        sources["train"] = None  # nothing is fitted
    return {split: source for split, source in sources.items() if source}


@dataclass
class LocalData:
    """The local splits of a spec: their rows and fingerprints (None if any is not local)."""

    rows: dict[str, list[datafiles.Row]] = field(default_factory=dict)
    prints: dict[str, str] = field(default_factory=dict)
    all_local: bool = True


def read_local(spec: JobSpec, spec_path: str | None) -> LocalData:
    """Read every local split; check that every other source can be reached."""
    found = LocalData()
    for split, source in splits_read(spec).items():
        where = f"data.{split}"
        if source.startswith("s3://"):
            found.all_local = False
            continue  # read (and checked) through the store by the trainer
        path = Path(source)
        if not path.exists():
            if looks_local(source):
                raise ConfigError(f"{where}: {missing_path(source, spec_path)}")
            found.all_local = False
            _hub_dataset(source, where, spec.data.revision)
            continue
        files = datafiles.local_files(path, where)
        found.rows[split] = datafiles.read_rows(files, where)
        found.prints[split] = datafiles.hash_files(files)
        if not found.rows[split]:
            raise ConfigError(f"{where}: {source} has no rows")
    return found


def _hub_dataset(source: str, where: str, revision: str | None = None) -> None:
    """Ask the hub whether dataset ``source`` (``name[:split]``) exists: a name it does not
    know is the user's mistake (exit 2), a hub that does not answer the world's (exit 1)."""
    if os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE"):
        return  # the user relies on the datasets cache; the trainer says if it is not there
    name = source.partition(":")[0]
    url = f"{hub_endpoint().rstrip('/')}/api/datasets/{quote(name, safe='/')}"
    if revision:
        url += f"/revision/{quote(revision, safe='')}"
    request = urllib.request.Request(url, method="GET")
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10):
            return
    except urllib.error.HTTPError as exc:
        # The hub answers 401 for a name it does not know when asked without a token, and 404
        # with one (or for a revision that does not exist): either way, not a dataset we can read.
        if exc.code in (400, 401, 404):
            raise ConfigError(_no_such_dataset(source, where, revision)) from exc
        raise WorldError(
            f"{where}: the hub ({hub_endpoint()}) answered HTTP {exc.code} when asked for "
            f"dataset {name}; try again later"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise WorldError(
            f"{where}: {source} is not a local file or folder (in {Path.cwd()}), and the hub "
            f"({hub_endpoint()}) cannot be reached for a dataset of that name; check the path"
        ) from exc


def _no_such_dataset(source: str, where: str, revision: str | None) -> str:
    from kubetune.spec import did_you_mean

    here = sorted(p.name for p in Path.cwd().iterdir()) if Path.cwd().is_dir() else []
    near = did_you_mean(source, here)
    hint = f"; did you mean the local {near!r}?" if near else ""
    at = f" at revision {revision!r} (data.revision)" if revision else ""
    login = "" if os.environ.get("HF_TOKEN") else " (a private one needs HF_TOKEN)"
    return (
        f"{where}: {source} is neither a local file or folder (in {Path.cwd()}) nor a "
        f"dataset on the hub ({hub_endpoint()}){at}{login}; check the name{hint}"
    )


def check_rows(spec: JobSpec, data: LocalData) -> None:
    """Columns exist and hold text; labels are present and consistent across splits."""
    for split, rows in data.rows.items():
        for name, column in columns_for(spec).items():
            if not any(column in row.values for row in rows):
                columns = sorted({key for row in rows[:100] for key in row.values})
                raise ConfigError(
                    f"data.{name}: column {column!r} is not in the {split} data "
                    f"({rows[0].where.rsplit(':', 1)[0]}); columns: {', '.join(columns)}"
                )
        for name in _text_fields(spec):
            column = getattr(spec.data, name)
            for row in rows:
                value = row.values.get(column)
                if not isinstance(value, str):
                    what = "no" if value is None else f"{type(value).__name__} in"
                    raise ConfigError(
                        f"data.{name}: {row.where} has {what} {column!r}, not text; give every "
                        "row its text"
                    )
    labelled = _label_field(spec)
    if labelled is None or not data.rows:
        return
    name, sequence = labelled
    column = getattr(spec.data, name)
    if data_task(spec) == "ner":
        _check_tag_lengths(spec, data)
    datafiles.label_names(
        {
            split: ((r.where, r.values.get(column)) for r in rows)
            for split, rows in data.rows.items()
        },
        column,
        spec.data.labels,
        sequence=sequence,
        field=f"data.{name}",
    )


def _check_tag_lengths(spec: JobSpec, data: LocalData) -> None:
    tokens, tags = spec.data.tokens_column, spec.data.tags_column
    for rows in data.rows.values():
        for row in rows:
            words, labels = row.values.get(tokens), row.values.get(tags)
            if not isinstance(words, list):
                raise ConfigError(
                    f"data.tokens_column: {row.where} holds "
                    f"{'nothing' if words is None else type(words).__name__} in {tokens!r}, "
                    "not a list of words"
                )
            if isinstance(labels, list) and len(labels) != len(words):
                raise ConfigError(
                    f"data.tags_column: {row.where} has {len(words)} words and {len(labels)} "
                    "tags; give one tag per word"
                )


# --- the store and finished runs -----------------------------------------------------------


def check_store(uri: str, *, create: bool) -> None:
    """The store can be written: a file:// folder can be made, an s3:// bucket answers."""
    from kubetune.store import check_uri

    if check_uri(uri, "--store") == "file":
        _check_folder_store(uri, create=create)
    else:
        _check_bucket(uri)


def _check_folder_store(uri: str, *, create: bool) -> None:
    from kubetune.store import file_uri_path

    path = file_uri_path(uri)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--store {uri}: {path} is a file; name a folder")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"--store {uri}: cannot make the folder {path} ({exc.strerror}); choose one "
                "you can write"
            ) from exc
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"--store {uri}: {path} is not writable; choose a folder you own")


def _check_bucket(uri: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from kubetune.store import endpoint_here
    from kubetune.store.s3 import _endpoint, make_client

    bucket = urlparse(uri).netloc
    endpoint = _endpoint(endpoint_here(None))
    client = make_client(endpoint, patient=False)
    where = f" at {endpoint}" if endpoint else ""
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError as exc:
        raise ConfigError(
            f"--store {uri}: no S3 credentials here; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        ) from exc
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ConfigError(
                f"--store {uri}: there is no bucket {bucket}{where}; create it or fix the name"
            ) from exc
        if code in ("403", "AccessDenied", "Forbidden"):
            raise ConfigError(
                f"--store {uri}: access to bucket {bucket}{where} is denied for these "
                "credentials; use credentials that may write it"
            ) from exc
        raise WorldError(f"--store {uri}: the bucket did not answer ({code or exc})") from exc
    except BotoCoreError as exc:
        raise WorldError(f"--store {uri}: cannot reach S3{where} ({exc})") from exc


def check_finished(run: ResolvedRun, store_uri: str, data: LocalData) -> None:
    """A finished run is not returned as done when the data behind it has changed."""
    if not data.all_local or not data.prints:
        return
    from kubetune.store import RunLocation, StoreError, open_store
    from kubetune.store.record import load_record

    location = RunLocation(open_store(store_uri), run.sweep, run.run_id)
    try:
        record = load_record(location)
    except StoreError:
        # Missing: not finished. Otherwise the trainer reads it again, and reports what is
        # wrong with the store.
        return
    changed = data_changes(record, data.prints)
    if changed:
        raise ConfigError(changed_data_message(run, location.url, changed))


def changed_data_message(run: ResolvedRun, url: str, changed: list[str]) -> str:
    sources = run.spec.data.model_dump()
    names = " and ".join(f"data.{split} ({sources.get(split)})" for split in changed)
    return (
        f"{names}: changed since run {run.run_id} finished on it ({url}); to train on the new "
        "data, delete that run's folder or rename the spec (name: …)"
    )


def local_prints(spec: JobSpec) -> dict[str, str] | None:
    """Each split's fingerprint when every source is a local file or folder, else None."""
    prints: dict[str, str] = {}
    for split, source in splits_read(spec).items():
        path = Path(source)
        if source.startswith("s3://") or not path.exists():
            return None
        prints[split] = datafiles.hash_files(datafiles.local_files(path, f"data.{split}"))
    return prints


def data_changes(record: RunRecord, prints: dict[str, str]) -> list[str]:
    """The splits the run reads (``prints``: :func:`splits_read`'s) whose data differ from a
    completed run's record (all, if only the combined fingerprint was recorded); empty when
    the run is not completed or nothing changed. A split the record holds that the run does
    not read (the trainer fingerprints data.train for a zero-shot or lead run too) is no
    change."""
    if record.status != "completed" or record.data is None:
        return []
    per_split = record.data.fingerprints
    if per_split:
        return [
            s for s in ("train", "eval", "test") if s in prints and per_split.get(s) != prints[s]
        ]
    old = record.data.fingerprint
    if old is not None and old != datafiles.combined_fingerprint(prints):
        return list(prints)
    return []


# --- everything, for one spec's runs -------------------------------------------------------


def check_runs(runs: list[ResolvedRun], spec_path: str | None, store: str | None = None) -> None:
    """Check every run's inputs (each distinct data and model once); ``store``: also the
    store and the finished runs in it. Every problem is reported, one line each.

    Raises:
        InputsError: the user's input is wrong (exit 2).
        WorldError: the network or a store failed (exit 1).
    """
    issues: list[Issue] = []
    world: list[WorldError] = []

    def attempt(check: Callable[[], None]) -> bool:
        try:
            check()
        except WorldError as exc:
            world.append(exc)
        except KubetuneError as exc:
            issues.extend(Issue("", line) for line in exc.lines() if line not in map(str, issues))
        else:
            return True
        return False

    if store is not None and not attempt(lambda uri=store: check_store(uri, create=True)):  # type: ignore[misc]
        store = None  # the finished runs in it cannot be looked at either
    for check in _checks(runs, spec_path, store):
        attempt(check)
    if issues:
        raise InputsError(issues)
    if world:
        raise world[0]


def _checks(
    runs: list[ResolvedRun], spec_path: str | None, store: str | None
) -> Iterator[Callable[[], None]]:
    models: set[tuple[str, ...]] = set()
    datas: dict[str, LocalData] = {}
    for run in runs:
        spec = run.spec
        model_key = (
            spec.model.name,
            str(spec.model.decoder),
            spec.task,
            str(spec.data.max_length),
            str(spec.data.max_target_length),
        )
        if model_key not in models:
            models.add(model_key)
            yield lambda spec=spec: check_model(spec)  # type: ignore[misc]
        data_key = spec.data.model_dump_json() + spec.task + str(spec.prompt)

        def data_check(spec: JobSpec = spec, key: str = data_key, run: ResolvedRun = run) -> None:
            if key not in datas:
                datas[key] = LocalData(all_local=False)  # a failed read is not read twice
                read = read_local(spec, spec_path)
                check_rows(spec, read)
                datas[key] = read
            if store is not None:
                check_finished(run, store, datas[key])

        yield data_check
