"""The summarisation baseline (``task: classical``, ``classical.method: lead``): the source's
first ``classical.lead_sentences`` sentences, as they are.

Lead-k is the baseline every summarisation paper reports first (Lead-3 on CNN/DailyMail):
writers put what matters first, and a generator that cannot beat copying the opening has not
learnt to summarise. Nothing is fitted, so it is a zero-shot baseline in the strict sense:
data.train is not read. Sentences are split by :func:`metrics.split_sentences`, the rule
ROUGE-Lsum reads them with. It is scored as fine-tuned seq2seq is (ROUGE-1/2/L/Lsum, BLEU,
chrF against data.target_column) with the same prediction rows (source, reference,
generated), so it is one arm of a seq2seq sweep. final/ records the method and its setting,
so ``kubetune predict`` and ``kubetune serve`` answer ``generated`` for raw texts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune.errors import ConfigError
from kubetune.spec import JobSpec
from kubetune.train import metrics

if TYPE_CHECKING:
    from kubetune.train.data import Splits
    from kubetune.train.zeroshot import Scored


@dataclass(frozen=True)
class Lead:
    """The first ``sentences`` sentences of a text."""

    sentences: int = 1
    method = "lead"

    def summarise(self, text: str) -> str:
        return " ".join(metrics.split_sentences(text)[: self.sentences])

    def rows(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """``kubetune predict``'s rows for raw texts: ``generated``, as a generator's are."""
        return [{"generated": self.summarise(str(text))} for text in texts]


def evaluate(spec: JobSpec, splits: Splits) -> Scored:
    """Generation metrics and prediction rows of the eval and test splits."""
    from kubetune.train.data import require_columns
    from kubetune.train.zeroshot import Scored

    d = spec.data
    lead = Lead(spec.classical.lead_sentences)
    named = (("eval", splits.eval), ("test", splits.test))
    scored = {split: raw for split, raw in named if raw is not None}
    if not scored:  # validate() requires one; say so for hand-built specs
        raise ConfigError("data.eval: classical method lead scores data.eval or data.test")
    require_columns(splits, {"source_column": d.source_column, "target_column": d.target_column})
    results: dict[str, dict[str, Any]] = {}
    artifacts: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    for split, raw in scored.items():
        began = time.perf_counter()
        sources = [_text(s, n, split, d.source_column) for n, s in enumerate(raw[d.source_column])]
        references = [
            _text(r, n, split, d.target_column) for n, r in enumerate(raw[d.target_column])
        ]
        generated = [lead.summarise(s) for s in sources]
        found: dict[str, Any] = metrics.generation_metrics(generated, references)
        seconds = time.perf_counter() - began
        found["gen_words"] = sum(len(g.split()) for g in generated) / max(len(generated), 1)
        found["runtime"] = round(seconds, 4)
        found["samples_per_second"] = round(len(generated) / max(seconds, 1e-9), 3)
        ids = raw["id"] if "id" in raw.column_names else list(range(len(raw)))
        rows = [
            {"id": key, "source": source, "reference": reference, "generated": text}
            for key, source, reference, text in zip(
                ids, sources, references, generated, strict=True
            )
        ]
        results[split], artifacts[split] = found, (rows, {})
    details = {"method": "lead", "settings": _settings(spec)}
    return Scored(results, artifacts, [], 0, details)


def _settings(spec: JobSpec) -> dict[str, Any]:
    return {"method": "lead", "lead_sentences": spec.classical.lead_sentences}


def _text(value: Any, row: int, split: str, column: str) -> str:
    if value is None:
        raise ConfigError(
            f"data: row {row + 1} of the {split} data has no {column!r}; give every row one"
        )
    return str(value)


def save_final(spec: JobSpec, folder: Path) -> dict[str, Any]:
    """Nothing to copy into final/: returns what ``classical.json`` records (the method and
    its sentences; :func:`kubetune.train.classical.fit_and_score` writes that file)."""
    return {"method": "lead", "settings": _settings(spec)}


def load_final(root: Path, settings: dict[str, Any]) -> Lead:
    """The lead baseline a run stored in final/ (its ``classical.json`` already read)."""
    count = (settings.get("settings") or {}).get("lead_sentences", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(
            f"{root}: classical.json's lead_sentences is {count!r}; it must be a whole number "
            "of 1 or more"
        )
    return Lead(count)
