"""Sequence classification: one label per text (or text pair), or several with
``data.multi_label``; texts longer than ``data.max_length`` read whole in windows with
``data.long_documents``.

- Single label: softmax over the labels, cross-entropy; accuracy and macro-F1.
- Multi-label: every label a yes/no decision. The head is trained with binary cross-entropy
  on multi-hot float labels (``problem_type: multi_label_classification``, which final/'s
  config keeps, so ``pipeline("text-classification", top_k=None)`` gives each label's sigmoid
  score); a label applies when its sigmoid reaches its threshold (``data.threshold``, or each
  label's best on the eval split with ``"tune"``, then applied to test). Micro-F1 leads.
- Long documents: each text is cut into overlapping windows (:mod:`kubetune.train.windows`).
  Training sees every window as an example with its document's label(s); evaluation, the
  model selection it drives, metrics and prediction rows are per document, from the mean
  (max, first) of its windows' logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, EvalPrediction

from kubetune.errors import ConfigError
from kubetune.headline import headline
from kubetune.spec import JobSpec
from kubetune.train import metrics, multilabel, windows
from kubetune.train.data import Splits, infer_labels, require_columns
from kubetune.train.pretrained import from_pretrained
from kubetune.train.task import FINAL_METRICS, Task, pad_multiple

PEFT_TASK = "SEQ_CLS"
MULTI_LABEL = "multi_label_classification"
#: How much of each input text a prediction row keeps: enough to tell examples apart in
#: ``kubetune report``, not a copy of the data set.
PREVIEW_CHARS = 300
#: Columns a windowed split carries through ``Dataset.map`` and then drops: each window's
#: document (its row in the split) and whether max_windows cut that document short.
_DOCUMENT, _CUT = "_document", "_cut"


def preview(text: Any) -> str:
    """The start of an input text for a prediction row, cut at :data:`PREVIEW_CHARS` with "…"."""
    shown = str(text)
    if len(shown) <= PREVIEW_CHARS:
        return shown
    return shown[: PREVIEW_CHARS - 1].rstrip() + "…"


@dataclass
class Layout:
    """Which document each window of a split reads (long documents only)."""

    document: np.ndarray
    cut: np.ndarray
    #: The label(s) each window was given: how :class:`Scorer` tells a split's windows apart
    #: from another split's of the same count.
    labels: np.ndarray

    @property
    def documents(self) -> int:
        return int(self.document[-1]) + 1 if len(self.document) else 0


@dataclass
class Scorer:
    """Logits of a split (windows or texts) → per-document decisions and their metrics."""

    names: list[str]
    multi_label: bool
    #: data.threshold: a number, or "tune".
    threshold: float | str
    aggregate: windows.Aggregate = "mean"
    #: split → its window layout; empty without long documents.
    layouts: dict[str, Layout] = field(default_factory=dict)
    #: Thresholds tuned on the eval split's final predictions, applied to test.
    tuned: np.ndarray | None = None

    @property
    def tune(self) -> bool:
        return self.multi_label and self.threshold == "tune"

    def per_document(self, logits: np.ndarray, split: str | None) -> np.ndarray:
        """One row of logits per document: the windows' rows aggregated (long documents),
        else the rows as they are."""
        if not self.layouts:
            return np.asarray(logits)
        if split not in self.layouts:
            raise RuntimeError(f"no window layout for the {split or 'given'} split")
        layout = self.layouts[split]
        if len(logits) != len(layout.document):
            raise RuntimeError(
                f"the {split} split has {len(layout.document)} windows but the trainer "
                f"returned {len(logits)} rows of logits; every window's row is needed to "
                "score its document"
            )
        return windows.aggregate(logits, layout.document, layout.documents, self.aggregate)

    def split_of_windows(self, logits: np.ndarray, labels: np.ndarray) -> str | None:
        """The split whose windows these are (the Trainer's compute_metrics is not told):
        the one with as many windows and the same window labels, eval first."""
        if not self.layouts:
            return None
        same = [s for s, lay in self.layouts.items() if len(lay.document) == len(logits)]
        for split in sorted(same, key=lambda s: s != "eval"):
            if np.array_equal(self.layouts[split].labels, labels):
                return split
        raise RuntimeError(f"no split has {len(logits)} windows with these labels")

    def thresholds(self, scores: np.ndarray, gold: np.ndarray, tune_here: bool) -> np.ndarray:
        """Each label's threshold: data.threshold; with "tune", the best on these scores
        (``tune_here``: the eval split) or those tuned on eval."""
        if self.tune and tune_here:
            return multilabel.tune_thresholds(scores, gold)
        if self.tune and self.tuned is not None:
            return self.tuned
        return multilabel.thresholds_for(self.threshold, len(self.names))

    def score(
        self, logits: np.ndarray, gold: np.ndarray, tune_here: bool
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray | None]:
        """Per-document metrics, probabilities, decisions (label ids, or a multi-hot matrix)
        and the thresholds used (multi-label)."""
        if self.multi_label:
            probs = multilabel.sigmoid(logits)
            thresholds = self.thresholds(probs, gold, tune_here)
            decided = multilabel.decide(probs, thresholds)
            scores = multilabel.metrics(gold, decided, self.names)
            scores.update(
                {f"threshold_{n}": float(t) for n, t in zip(self.names, thresholds, strict=True)}
            )
            return scores, probs, decided, thresholds
        shifted = logits - logits.max(axis=-1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
        decided = probs.argmax(axis=-1)
        return metrics.classification_metrics(gold, decided, self.names), probs, decided, None


def label_names(splits: Splits, spec: JobSpec) -> list[str]:
    """Label names in id order; multi-label names sorted as given or seen."""
    d = spec.data
    names = infer_labels(splits, d.label_column, d.labels, sequence=d.multi_label)
    # infer_labels puts NER's "O" first for sequences; a multi-label "O" is just a label.
    return sorted(names) if d.multi_label and d.labels is None else names


def gold_labels(values: list[Any], names: list[str], multi_label: bool) -> np.ndarray:
    """Label ids (one per text), or a multi-hot float matrix (texts × labels): what the
    model's loss takes as ``labels``."""
    if multi_label:
        return multilabel.multi_hot(values, names).astype(np.float32)
    to_id = {name: i for i, name in enumerate(names)}
    return np.array([v if isinstance(v, int) else to_id[str(v)] for v in values], dtype=np.int64)


def check(spec: JobSpec) -> None:
    """Settings this family cannot honour together (one line each, exit 2)."""
    d, t = spec.data, spec.train
    if d.multi_label and t.label_smoothing_factor:
        raise ConfigError(
            "train.label_smoothing_factor: multi-label classification trains each label as a "
            "yes/no decision, with no smoothing over labels; set it to 0"
        )
    if d.long_documents is not None and d.text_pair_column:
        raise ConfigError(
            "data.long_documents: windows cut one text per example; remove "
            "data.text_pair_column or data.long_documents"
        )


def build(spec: JobSpec, splits: Splits, tokenizer: Any, model_path: str) -> Task:
    """Tokenise the splits (as windows for long documents) and load the model with a head
    for the spec's labels."""
    d = spec.data
    check(spec)
    columns = {"text_column": d.text_column, "label_column": d.label_column}
    if d.text_pair_column:
        columns["text_pair_column"] = d.text_pair_column
    require_columns(splits, columns)
    names = label_names(splits, spec)
    long_docs = d.long_documents
    scorer = Scorer(
        names,
        d.multi_label,
        d.threshold,
        aggregate=long_docs.aggregate if long_docs is not None else "mean",
    )

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
        gold = gold_labels(batch[d.label_column], names, d.multi_label)
        if long_docs is None:
            pair = batch[d.text_pair_column] if d.text_pair_column else None
            enc = dict(
                tokenizer(batch[d.text_column], pair, truncation=True, max_length=d.max_length)
            )
            return {**enc, "labels": gold.tolist()}
        cut = windows.split(
            tokenizer, batch[d.text_column], d.max_length, long_docs.stride, long_docs.max_windows
        )
        return {
            **cut.inputs,
            "labels": gold[cut.document].tolist(),
            _DOCUMENT: [indices[i] for i in cut.document],
            _CUT: cut.cut.tolist(),
        }

    def tokenize(split: str, data: Dataset) -> Dataset:
        out = data.map(encode, batched=True, with_indices=True, remove_columns=data.column_names)
        if long_docs is None:
            return out
        scorer.layouts[split] = Layout(
            document=np.asarray(out[_DOCUMENT], dtype=np.int64),
            cut=np.asarray(out[_CUT], dtype=bool),
            labels=np.asarray(out["labels"]),
        )
        return out.remove_columns([_DOCUMENT, _CUT])

    head: dict[str, Any] = {"problem_type": MULTI_LABEL} if d.multi_label else {}
    model = from_pretrained(
        AutoModelForSequenceClassification,
        spec,
        model_path,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        **head,
    )
    tokenized = {split: tokenize(split, data) for split, data in splits.present().items()}
    return Task(
        model=model,
        labels=names,
        tokenized=tokenized,
        collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple()),
        compute_metrics=metrics_during_training(scorer),
        predictions=predictor(spec, splits, scorer),
        default_metric=headline("classification", d.multi_label).metric,
        peft_task=PEFT_TASK,
        # final/kubetune.json: the thresholds tuned on eval, so predict and serve decide so.
        inference=lambda: (
            {"thresholds": dict(zip(names, map(float, scorer.tuned), strict=True))}
            if scorer.tuned is not None
            else {}
        ),
    )


def metrics_during_training(scorer: Scorer) -> Callable[[EvalPrediction], dict[str, Any]]:
    """The Trainer's compute_metrics: per document, so that metric_for_best_model and early
    stopping judge documents, not windows. With "tune", the eval split's thresholds are
    tuned on it at each evaluation, as its final metrics are."""

    def compute(pred: EvalPrediction) -> dict[str, Any]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        logits, labels = np.asarray(logits), np.asarray(pred.label_ids)
        split = scorer.split_of_windows(logits, labels)
        gold = labels
        if split is not None:
            # Each document's gold labels are those of its first window.
            _, first = np.unique(scorer.layouts[split].document, return_index=True)
            gold = labels[first]
        if scorer.multi_label:
            gold = gold.astype(np.int64)
        return scorer.score(scorer.per_document(logits, split), gold, tune_here=True)[0]

    return compute


def predictor(
    spec: JobSpec, splits: Splits, scorer: Scorer
) -> Callable[[Dataset, np.ndarray, Any], tuple[list[dict[str, Any]], dict[str, Any]]]:
    """The Task's predictions: one row per document, the split's final metrics per document
    (:data:`FINAL_METRICS`), and its artifacts: the confusion matrix, or the thresholds used;
    with long documents, windows per document."""
    d = spec.data
    names = scorer.names

    def predictions(
        raw: Dataset, logits: np.ndarray, model: Any
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        split = next((s for s, data in splits.present().items() if data is raw), None)
        doc_logits = scorer.per_document(np.asarray(logits), split)
        values = list(raw[d.label_column])
        gold = gold_labels(values, names, d.multi_label)
        if d.multi_label:
            gold = gold.astype(np.int64)
        final, probs, decided, thresholds = scorer.score(doc_logits, gold, split == "eval")
        layout = scorer.layouts.get(split or "")
        counts = np.bincount(layout.document) if layout is not None else None
        ids = list(raw["id"]) if "id" in raw.column_names else list(range(len(raw)))
        texts = list(raw[d.text_column])
        pairs = list(raw[d.text_pair_column]) if d.text_pair_column else None
        rows: list[dict[str, Any]] = []
        over = multilabel.labels_over(probs, thresholds, names) if thresholds is not None else []
        for i in range(len(raw)):
            row: dict[str, Any] = {"id": ids[i], "text": preview(texts[i])}
            if pairs is not None:
                row["text_pair"] = preview(pairs[i])
            if d.multi_label:
                row["label"] = [names[j] for j in np.flatnonzero(gold[i])]
                row["prediction"] = over[i]
            else:
                row["label"] = names[int(gold[i])]
                row["prediction"] = names[int(decided[i])]
                row["score"] = round(float(probs[i, decided[i]]), 6)
            if counts is not None:
                row["windows"] = int(counts[i])
            rows.append(row)
        artifacts: dict[str, Any] = {}
        if thresholds is not None:
            if split == "eval" and scorer.tune:
                scorer.tuned = thresholds
            tuned = scorer.tune and (split == "eval" or scorer.tuned is not None)
            artifacts["thresholds"] = multilabel.threshold_record(thresholds, names, tuned)
        else:
            artifacts["confusion_matrix"] = metrics.confusion(gold, decided, names)
        if layout is not None:
            seen = windows.stats(layout.document, layout.cut)
            final["windows_per_document"] = seen["windows_per_document"]
            final["windows_per_document_max"] = seen["windows_per_document_max"]
            # The eval split's artifact names every split's windows: training's decide the cost.
            artifacts["windows"] = (
                {s: windows.stats(lay.document, lay.cut) for s, lay in scorer.layouts.items()}
                if split == "eval"
                else seen
            )
        artifacts[FINAL_METRICS] = final
        return rows, artifacts

    return predictions
