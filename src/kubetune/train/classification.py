"""Sequence classification: one label per text (or text pair)."""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, EvalPrediction

from kubetune.headline import headline
from kubetune.spec import JobSpec
from kubetune.train import metrics
from kubetune.train.data import Splits, infer_labels, require_columns
from kubetune.train.pretrained import from_pretrained
from kubetune.train.task import Task, pad_multiple

PEFT_TASK = "SEQ_CLS"
#: How much of each input text a prediction row keeps: enough to tell examples apart in
#: ``kubetune report``, not a copy of the data set.
PREVIEW_CHARS = 300


def preview(text: Any) -> str:
    """The start of an input text for a prediction row, cut at :data:`PREVIEW_CHARS` with "…"."""
    shown = str(text)
    if len(shown) <= PREVIEW_CHARS:
        return shown
    return shown[: PREVIEW_CHARS - 1].rstrip() + "…"


def build(spec: JobSpec, splits: Splits, tokenizer: Any, model_path: str) -> Task:
    """Tokenise the splits and load the model with a head for the spec's labels."""
    d = spec.data
    columns = {"text_column": d.text_column, "label_column": d.label_column}
    if d.text_pair_column:
        columns["text_pair_column"] = d.text_pair_column
    require_columns(splits, columns)
    names = infer_labels(splits, d.label_column, d.labels, sequence=False)
    to_id = {name: i for i, name in enumerate(names)}

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        pair = batch[d.text_pair_column] if d.text_pair_column else None
        enc = tokenizer(batch[d.text_column], pair, truncation=True, max_length=d.max_length)
        enc["labels"] = [v if isinstance(v, int) else to_id[str(v)] for v in batch[d.label_column]]
        return dict(enc)

    def tokenize(data: Dataset) -> Dataset:
        return data.map(encode, batched=True, remove_columns=data.column_names)

    model = from_pretrained(
        AutoModelForSequenceClassification,
        spec,
        model_path,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id=to_id,
    )

    def compute_metrics(pred: EvalPrediction) -> dict[str, Any]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        gold = np.asarray(pred.label_ids)
        return metrics.classification_metrics(gold, np.argmax(logits, axis=-1), names)

    def predictions(
        raw: Dataset, logits: np.ndarray, model: Any
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        shifted = logits - logits.max(axis=-1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
        predicted = probs.argmax(axis=-1)
        gold = np.array([v if isinstance(v, int) else to_id[str(v)] for v in raw[d.label_column]])
        texts = list(raw[d.text_column])
        pairs = list(raw[d.text_pair_column]) if d.text_pair_column else None
        rows = [
            {
                "id": raw[i]["id"] if "id" in raw.column_names else i,
                "text": preview(texts[i]),
                **({"text_pair": preview(pairs[i])} if pairs is not None else {}),
                "label": names[int(gold[i])],
                "prediction": names[int(predicted[i])],
                "score": round(float(probs[i, predicted[i]]), 6),
            }
            for i in range(len(raw))
        ]
        return rows, {"confusion_matrix": metrics.confusion(gold, predicted, names)}

    return Task(
        model=model,
        labels=names,
        tokenized={split: tokenize(data) for split, data in splits.present().items()},
        collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple()),
        compute_metrics=compute_metrics,
        predictions=predictions,
        default_metric=headline("classification").metric,
        peft_task=PEFT_TASK,
    )
