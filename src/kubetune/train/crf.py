"""The classical NER baseline (``task: classical``, ``classical.method: crf``): a linear-chain
CRF over hand-made word features, fitted with CRFsuite (python-crfsuite).

What engineers fit before a transformer tagger, and what the CoNLL shared tasks' strongest
systems were: each word is described by itself (lower-cased, its last 2 and 3 characters,
its shape: capitalised, all capitals, digits, a dot or a hyphen inside) and by its
neighbours one word either side, and L-BFGS fits the weights of those features and of every
tag-to-tag transition (``classical.c1``/``c2``: L1/L2 penalties, ``max_iter``).

It is scored as fine-tuned NER is: seqeval's entity precision, recall and F1, overall and per
type (:func:`metrics.entity_metrics`), the same prediction rows (tokens, gold tags, predicted
tags, entity spans), so it is one arm of a NER sweep. final/ holds CRFsuite's own model file
(a table of weights, not a pickle) beside ``classical.json``; :func:`load_final` reads it back
for ``kubetune predict`` and ``kubetune serve``, which split raw text into words with
:data:`WORD` (a word, with inner dots, hyphens and apostrophes, or one punctuation mark) and
answer entity spans with character offsets. No torch here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune import events
from kubetune.errors import ConfigError
from kubetune.events import emit
from kubetune.spec import JobSpec
from kubetune.train import metrics

if TYPE_CHECKING:
    from datasets import Dataset

    from kubetune.train.data import Splits
    from kubetune.train.zeroshot import Scored

#: final/'s CRFsuite model file.
MODEL_FILE = "tagger.crfsuite"
#: How raw text (predict, serve) is split into the words the CRF tags.
WORD = re.compile(r"\w+(?:['’.\-]\w+)*|[^\w\s]")


def word_features(words: Sequence[str], i: int) -> dict[str, float | str]:
    """The features of word ``i`` in context: CRFsuite reads a string value as a one-hot
    feature (``name=value``) and a number as a weighted one."""
    word = words[i]
    out: dict[str, float | str] = {
        "bias": 1.0,
        "lower": word.lower(),
        "suffix2": word[-2:].lower(),
        "suffix3": word[-3:].lower(),
        "shape": _shape(word),
        "title": float(word.istitle()),
        "upper": float(word.isupper()),
        "digit": float(any(c.isdigit() for c in word)),
        "inner_dot": float("." in word[1:-1]),
    }
    for offset, name in ((-1, "prev"), (1, "next")):
        j = i + offset
        if 0 <= j < len(words):
            other = words[j]
            out[f"{name}.lower"] = other.lower()
            out[f"{name}.shape"] = _shape(other)
            out[f"{name}.title"] = float(other.istitle())
        else:
            out[f"{name}.edge"] = 1.0  # the sentence begins (prev) or ends (next) here
    return out


def _shape(word: str) -> str:
    """Xx, X, x, d, with runs collapsed: "v2.3.1" → "xd.d.d", "iOS" → "xX"."""
    kinds = [
        "X" if c.isupper() else "x" if c.isalpha() else "d" if c.isdigit() else c for c in word
    ]
    return "".join(k for n, k in enumerate(kinds) if n == 0 or k != kinds[n - 1])


def sentence_features(words: Sequence[str]) -> list[dict[str, float | str]]:
    return [word_features(words, i) for i in range(len(words))]


@dataclass
class Tagger:
    """A fitted CRF: its model file and the tags it knows; final/."""

    path: Path
    labels: list[str]
    fit_details: dict[str, Any] = field(default_factory=dict)
    _tagger: Any = None
    method = "crf"

    def tag(self, words: Sequence[str]) -> list[str]:
        """One BIO tag per word."""
        if not words:
            return []
        if self._tagger is None:
            import pycrfsuite  # type: ignore[import-untyped]

            self._tagger = pycrfsuite.Tagger()
            self._tagger.open(str(self.path))
        return [str(t) for t in self._tagger.tag(sentence_features(words))]

    def rows(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """``kubetune predict``'s rows for raw texts: ``entities``, each with its type, text
        and character offsets (the spans :data:`WORD` words make)."""
        from kubetune.train.bio import spans_of

        out = []
        for text in texts:
            found = [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]
            tags = self.tag([w for w, _, _ in found])
            out.append({"entities": spans_of(text, [(s, e) for _, s, e in found], tags)})
        return out


def fit(spec: JobSpec, splits: Splits, folder: Path) -> Tagger:
    """The CRF fitted on data.train, its model file written to ``folder``."""
    import pycrfsuite

    from kubetune.train.data import infer_labels, require_columns

    d, settings = spec.data, spec.classical
    if splits.train is None:  # validate() requires data.train; say so for hand-built specs
        raise ConfigError("data.train: classical method crf fits on training data; set it")
    require_columns(splits, {"tokens_column": d.tokens_column, "tags_column": d.tags_column})
    names = [
        str(n)
        for n in infer_labels(
            splits, d.tags_column, d.labels, sequence=True, field="data.tags_column"
        )
    ]
    trainer = pycrfsuite.Trainer(verbose=False)
    words_seen = 0
    for words, tags in _pairs(splits.train, spec, names, "train"):
        if words:
            trainer.append(sentence_features(words), tags)
            words_seen += len(words)
    if not words_seen:
        raise ConfigError(f"data.tokens_column: no training row has any {d.tokens_column!r}")
    trainer.set_params(
        {
            "c1": settings.c1,
            "c2": settings.c2,
            "max_iterations": settings.max_iter,
            # Weights for tag pairs never seen together in training too (a B-VERSION right
            # after a B-PRODUCT), so they can be learnt to be unlikely.
            "feature.possible_transitions": True,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MODEL_FILE
    started = time.perf_counter()
    trainer.train(str(path))
    seconds = time.perf_counter() - started
    log = trainer.logparser.last_iteration or {}
    iterations = int(log.get("num", 0))
    tagger = Tagger(path, names)
    info = pycrfsuite.Tagger()
    info.open(str(path))
    parameters = len(info.info().state_features) + len(info.info().transitions)
    tagger.fit_details = {
        "features": len(info.info().state_features),
        "fit_seconds": round(seconds, 3),
        "iterations": iterations,
        "converged": iterations < settings.max_iter,
        "train_rows": len(splits.train),
        "parameters": parameters,
    }
    emit(events.Model(0, parameters, len(names)))
    return tagger


def evaluate(spec: JobSpec, splits: Splits, tagger: Tagger) -> Scored:
    """Entity metrics and prediction rows of the eval and test splits."""
    from kubetune.train.bio import entity_spans
    from kubetune.train.zeroshot import Scored

    results: dict[str, dict[str, Any]] = {}
    artifacts: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    timings: dict[str, float] = {}
    for split, raw in (("eval", splits.eval), ("test", splits.test)):
        if raw is None:
            continue
        began = time.perf_counter()
        pairs = list(_pairs(raw, spec, tagger.labels, split))
        predicted = [tagger.tag(words) for words, _ in pairs]
        seconds = time.perf_counter() - began
        ids = raw["id"] if "id" in raw.column_names else list(range(len(raw)))
        rows = [
            {
                "id": row_id,
                "tokens": list(words),
                "tags": gold,
                "predicted": guess,
                "entities": entity_spans(list(words), guess),
            }
            for row_id, (words, gold), guess in zip(ids, pairs, predicted, strict=True)
        ]
        found = metrics.entity_metrics([gold for _, gold in pairs], predicted)
        found["runtime"] = round(seconds, 4)
        found["samples_per_second"] = round(len(rows) / max(seconds, 1e-9), 3)
        results[split], artifacts[split] = found, (rows, {})
        timings[split] = round(seconds, 3)
    details: dict[str, Any] = {
        "method": "crf",
        **tagger.fit_details,
        "classifier": "linear-chain CRF (CRFsuite, L-BFGS)",
        "settings": _settings(spec),
        "seconds": {"fit": tagger.fit_details.get("fit_seconds")} | timings,
        "python_crfsuite": version("python-crfsuite"),
    }
    parameters = int(tagger.fit_details.get("parameters", 0))
    return Scored(results, artifacts, list(tagger.labels), parameters, details)


def _settings(spec: JobSpec) -> dict[str, Any]:
    c = spec.classical
    return {"method": "crf", "c1": c.c1, "c2": c.c2, "max_iter": c.max_iter}


def _pairs(
    raw: Dataset, spec: JobSpec, names: list[str], split: str
) -> list[tuple[list[str], list[str]]]:
    """(words, gold tags as names) per row; a row whose tags do not match its words is the
    data's mistake."""
    d = spec.data
    out = []
    for n, (words, tags) in enumerate(zip(raw[d.tokens_column], raw[d.tags_column], strict=True)):
        words = [str(w) for w in (words or [])]
        gold = [names[t] if isinstance(t, int) else str(t) for t in (tags or [])]
        if len(words) != len(gold):
            raise ConfigError(
                f"data.tags_column: row {n + 1} of the {split} data has {len(words)} words "
                f"and {len(gold)} tags; give one tag per word"
            )
        out.append((words, gold))
    return out


# --- final/ ---------------------------------------------------------------------------------


def save_final(tagger: Tagger, spec: JobSpec, folder: Path) -> dict[str, Any]:
    """CRFsuite's model file copied into final/ (``folder``); returns what ``classical.json``
    records beside it (:func:`kubetune.train.classical.fit_and_score` writes that file)."""
    folder.mkdir(parents=True, exist_ok=True)
    if tagger.path.resolve() != (folder / MODEL_FILE).resolve():
        (folder / MODEL_FILE).write_bytes(tagger.path.read_bytes())
    return {
        "method": "crf",
        "model": MODEL_FILE,
        "format": "crfsuite",
        "labels": tagger.labels,
        "settings": _settings(spec),
        "fit": tagger.fit_details,
        "versions": {"python-crfsuite": version("python-crfsuite")},
    }


def load_final(root: Path, settings: dict[str, Any]) -> Tagger:
    """The tagger a crf run stored in final/ (its ``classical.json`` already read)."""
    try:
        path = root / str(settings["model"])
        labels = [str(name) for name in settings["labels"]]
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"{root}: its classical.json names no CRF model or tags ({exc}); give the final/ "
            "of a task: classical run"
        ) from exc
    if not path.is_file():
        raise ConfigError(f"{path}: missing from the CRF's final/; copy the whole final/ folder")
    tagger = Tagger(path, labels, dict(settings.get("fit") or {}))
    try:
        tagger.tag(["probe"])  # CRFsuite reads the file now, so a bad one fails here
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a CRFsuite model file ({exc})") from exc
    return tagger
