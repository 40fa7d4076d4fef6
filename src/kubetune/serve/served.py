"""What a server serves: a stored run's classifier, tagger, question-answering model or
classical pipeline, a sentence encoder, or an index searched with its encoder; checked when
the server is made, loaded once when it starts.

A :class:`Target` is known before anything heavy is imported: its description, its endpoints,
and how to load it. Checking the folders up front turns a wrong path into one line before the
server starts; loading (seconds: torch, the weights, the index) happens in the server's
background thread, and gives a :class:`Served`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kubetune.errors import ConfigError

PREDICT = "/v1/predict"
ANSWER = "/v1/answer"
EMBED = "/v1/embed"
SEARCH = "/v1/search"

T = TypeVar("T")


class Document(Protocol):
    """An indexed document (:class:`kubetune.retrieval.index.Doc`)."""

    @property
    def text(self) -> str: ...


class Searcher(Protocol):
    """What the server needs of :class:`kubetune.retrieval.index.Index`."""

    def doc(self, ident: str) -> Document: ...

    def search(self, vectors: Any, k: int) -> list[list[tuple[str, float]]]: ...

    def search_bm25(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]: ...

    def search_hybrid(
        self, query_vectors: Any, queries: Sequence[str], k: int
    ) -> list[list[tuple[str, float]]]: ...


@dataclass(frozen=True)
class Served:
    """What was loaded: one model function the batcher calls, and what ``/readyz`` shows.

    ``run`` maps texts to one result per text: a prediction (a dict) for a model, a vector
    (a float32 array) for an encoder."""

    about: dict[str, Any]
    run: Callable[[list[Any]], Sequence[Any]]
    index: Searcher | None = None
    #: What one request item the model cannot take is (one line, answered with 422), or
    #: None: checked before the item joins a batch, whose other requests it would fail.
    check: Callable[[Any], str | None] | None = None


@dataclass(frozen=True)
class Target:
    """What a server will serve, before it is loaded."""

    what: str  # one line, for messages: "a model (runs/x/final)"
    endpoints: tuple[str, ...]
    load: Callable[[], Served]


def model(
    folder: str | Path,
    *,
    model_sha256: str | None = None,
    source: str | None = None,
    max_length: int | None = None,
    device: str | None = None,
    int8: bool = False,
) -> Target:
    """A stored run's classifier or token tagger (its ``final/`` folder), predicted through
    :mod:`kubetune.predict.engine`.

    Raises:
        ConfigError: the folder is not a model folder.
    """
    from kubetune.train.classical import SETTINGS_FILE as CLASSICAL

    path = Path(folder)
    if (path / CLASSICAL).is_file():
        return _classical(path, model_sha256=model_sha256, source=source)
    _need(path, "config.json", "a model folder (a run's final/)")
    if _answers_questions(path):
        return _reader(path, model_sha256=model_sha256, source=source, max_length=max_length,
                       device=device, int8=int8)  # fmt: skip

    def load() -> Served:
        from kubetune.predict import engine

        _quiet()
        loaded = _loading(path, lambda: engine.load(str(path), max_length=max_length,
                                                    device=device, int8=int8))  # fmt: skip
        if loaded.task not in ("classification", "ner"):
            raise ConfigError(
                f"{path}: a {loaded.task} model; kubetune serve answers with classifiers and "
                "taggers (generate with kubetune predict)"
            )
        about = {"task": loaded.task, "labels": loaded.labels, "max_length": loaded.max_length,
                 "source": source or str(path)}  # fmt: skip
        if model_sha256:
            about["model_sha256"] = model_sha256
        return Served(about, lambda texts: engine.predict(loaded, texts))

    return Target(f"a model ({source or path})", (PREDICT,), load)


def _answers_questions(path: Path) -> bool:
    """Whether the model folder's config names a question-answering head."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path / 'config.json'}: not readable JSON ({exc})") from exc
    return any("QuestionAnswering" in str(a) for a in config.get("architectures") or [])


def _reader(
    path: Path,
    *,
    model_sha256: str | None,
    source: str | None,
    max_length: int | None,
    device: str | None,
    int8: bool,
) -> Target:
    """A question-answering model: (question, context) pairs in, answers out."""

    def load() -> Served:
        from kubetune.predict import engine

        _quiet()
        loaded = _loading(path, lambda: engine.load(str(path), max_length=max_length,
                                                    device=device, int8=int8))  # fmt: skip
        about: dict[str, Any] = {"task": loaded.task, "max_length": loaded.max_length,
                                 "source": source or str(path)}  # fmt: skip
        if model_sha256:
            about["model_sha256"] = model_sha256

        def answer(pairs: list[Any]) -> list[dict[str, Any]]:
            questions, contexts = [q for q, _ in pairs], [c for _, c in pairs]
            return engine.answer(loaded, questions, contexts)

        def check(pair: Any) -> str | None:
            problem = engine.crowded_questions(loaded, [pair[0]])
            return None if problem is None else "question: " + problem.removeprefix("question 1 ")

        return Served(about, answer, check=check)

    return Target(f"a question-answering model ({source or path})", (ANSWER,), load)


def _classical(path: Path, *, model_sha256: str | None, source: str | None) -> Target:
    """A classical run's baseline (TF-IDF + logistic regression, CRF or lead), no torch."""

    def load() -> Served:
        from kubetune.train import classical

        fitted = classical.load_final(path)  # ConfigError naming what is wrong
        about: dict[str, Any] = {"task": "classical", "method": fitted.method}
        for name in ("labels", "multi_label"):  # what a tagger and a classifier know
            if hasattr(fitted, name):
                about[name] = getattr(fitted, name)
        about["source"] = source or str(path)
        if model_sha256:
            about["model_sha256"] = model_sha256
        return Served(about, fitted.rows)

    return Target(f"a classical model ({source or path})", (PREDICT,), load)


def encoder(
    folder: str | Path,
    *,
    index: str | Path | None = None,
    source: str | None = None,
    max_length: int | None = None,
    device: str | None = None,
    int8: bool = False,
) -> Target:
    """A sentence encoder (``/v1/embed``), and with ``index`` that index searched with it
    (``/v1/search``): the index's vectors must be this encoder's.

    Raises:
        ConfigError: a folder is not what it should be, or the index's vectors have another
            dimension than the encoder's (checked when loaded).
    """
    path = Path(folder)
    _need(path, "config.json", "an encoder folder (sentence-transformers or transformers)")
    index_path = Path(index) if index is not None else None
    if index_path is not None and not index_path.is_dir():
        raise ConfigError(f"{index_path}: no such folder; give an index folder")

    def load() -> Served:
        from kubetune.predict import encode

        _quiet()
        enc = _loading(path, lambda: encode.load(str(path), device=device, int8=int8,
                                                 max_length=max_length))  # fmt: skip
        about: dict[str, Any] = {
            "task": "embedding",
            "dim": enc.dim,
            "max_length": enc.max_length,
            "source": source or str(path if index_path is None else index_path),
        }

        def run(texts: list[str]) -> list[Any]:
            return list(enc.encode(texts))

        if index_path is None:
            return Served(about, run)
        from kubetune.retrieval.index import Index

        loaded = Index.load(index_path)  # ConfigError naming the file that is wrong
        loaded.bm25  # noqa: B018  # read bm25/ now, not on the first BM25 query
        if loaded.faiss.d != enc.dim:
            raise ConfigError(
                f"{index_path}: its vectors have {loaded.faiss.d} dimensions, the encoder "
                f"({path}) makes {enc.dim}; serve the index with the encoder that built it"
            )
        # index.json as /readyz shows it: what the index is, not its tuning.
        summary = {k: v for k, v in loaded.meta.items() if k not in ("params", "bm25")}
        about.update(task="search", index={**summary, "count": len(loaded)}, encoder=str(path))
        return Served(about, run, loaded)

    if index_path is None:
        return Target(f"an encoder ({source or path})", (EMBED,), load)
    return Target(f"an index ({source or index_path}) with its encoder", (SEARCH, EMBED), load)


def _need(folder: Path, name: str, what: str) -> None:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder; give {what}")
    if not (folder / name).is_file():
        raise ConfigError(f"{folder}: no {name}, so not {what}; give such a folder")


def _loading(folder: Path, load: Callable[[], T]) -> T:
    """``load()``, with a folder that the library cannot read reported as one line."""
    try:
        return load()
    except (OSError, ValueError) as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{folder}: cannot be loaded ({line}); give a complete folder") from exc


def _quiet() -> None:
    """No progress bars in a server's log (transformers draws one per weights file)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
