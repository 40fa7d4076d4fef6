"""Named-entity recognition as token classification over BIO tags.

Labels are aligned to sub-words with ``word_ids``: the first sub-token of a word carries the
word's tag and the rest get -100 (ignored by the loss), unless ``data.label_all_tokens``
labels them too (B- turned into I-). Special tokens and padding are always -100. Final
metrics and predictions are computed per word, so both modes are scored the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset
from transformers import (
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    EvalPrediction,
)

from kubetune.errors import ConfigError
from kubetune.headline import headline
from kubetune.spec import JobSpec
from kubetune.train import metrics
from kubetune.train.bio import entity_spans
from kubetune.train.data import Splits, infer_labels, require_columns
from kubetune.train.pretrained import from_pretrained
from kubetune.train.task import FINAL_METRICS, Task, pad_multiple

PEFT_TASK = "TOKEN_CLS"
IGNORE = -100


def align_labels(
    word_ids: list[int | None], word_tags: list[int], names: list[str], label_all: bool
) -> list[int]:
    """Sub-token labels for one example (see the module docstring)."""
    to_id = {name: i for i, name in enumerate(names)}
    labels: list[int] = []
    previous: int | None = None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE)
        elif word != previous:
            labels.append(word_tags[word])
        elif label_all:
            name = names[word_tags[word]]
            labels.append(
                to_id.get("I-" + name[2:], word_tags[word])
                if name.startswith("B-")
                else word_tags[word]
            )
        else:
            labels.append(IGNORE)
        previous = word
    return labels


def build(spec: JobSpec, splits: Splits, tokenizer: Any, model_path: str) -> Task:
    """Tokenise word lists, align BIO tags to sub-words, load a token-classification model."""
    d = spec.data
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("model.name: NER needs a fast tokenizer (word_ids); this model has none")
    require_columns(splits, {"tokens_column": d.tokens_column, "tags_column": d.tags_column})
    names = infer_labels(splits, d.tags_column, d.labels, sequence=True, field="data.tags_column")
    to_id = {name: i for i, name in enumerate(names)}

    def tag_ids(tags: list[Any]) -> list[int]:
        return [t if isinstance(t, int) else to_id[str(t)] for t in tags]

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        enc = tokenizer(
            batch[d.tokens_column],
            is_split_into_words=True,
            truncation=True,
            max_length=d.max_length,
        )
        enc["labels"] = [
            align_labels(enc.word_ids(i), tag_ids(tags), names, d.label_all_tokens)
            for i, tags in enumerate(batch[d.tags_column])
        ]
        return dict(enc)

    def tokenize(data: Dataset) -> Dataset:
        return data.map(encode, batched=True, remove_columns=data.column_names)

    model = from_pretrained(
        AutoModelForTokenClassification,
        spec,
        model_path,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id=to_id,
    )

    def compute_metrics(pred: EvalPrediction) -> dict[str, Any]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        predicted = np.argmax(logits, axis=-1)
        gold_tags, pred_tags = [], []
        for gold_row, pred_row in zip(pred.label_ids, predicted, strict=True):
            keep = gold_row != IGNORE
            gold_tags.append([names[i] for i in gold_row[keep]])
            pred_tags.append([names[i] for i in pred_row[keep]])
        return metrics.entity_metrics(gold_tags, pred_tags)

    def predictions(
        raw: Dataset, logits: np.ndarray, model: Any
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        predicted = np.argmax(logits, axis=-1)
        rows: list[dict[str, Any]] = []
        gold_all, pred_all = [], []
        for i in range(len(raw)):
            tokens = raw[i][d.tokens_column]
            gold = [names[t] for t in tag_ids(raw[i][d.tags_column])]
            enc = tokenizer(
                tokens, is_split_into_words=True, truncation=True, max_length=d.max_length
            )
            word_pred = ["O"] * len(tokens)
            seen: set[int] = set()
            for position, word in enumerate(enc.word_ids()):
                if word is not None and word not in seen:
                    seen.add(word)
                    word_pred[word] = names[int(predicted[i, position])]
            gold_all.append(gold)
            pred_all.append(word_pred)
            rows.append(
                {
                    "id": raw[i]["id"] if "id" in raw.column_names else i,
                    "tokens": tokens,
                    "tags": gold,
                    "predicted": word_pred,
                    "entities": entity_spans(tokens, word_pred),
                }
            )
        return rows, {FINAL_METRICS: metrics.entity_metrics(gold_all, pred_all)}

    return Task(
        model=model,
        labels=names,
        tokenized={split: tokenize(data) for split, data in splits.present().items()},
        collator=DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_multiple()),
        compute_metrics=compute_metrics,
        predictions=predictions,
        default_metric=headline("ner").metric,
        peft_task=PEFT_TASK,
    )
