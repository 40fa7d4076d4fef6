"""Long documents read in overlapping windows (``data.long_documents``), and the windows'
outputs turned back into one per document.

A text longer than ``data.max_length`` tokens is cut into windows of at most that many
tokens, each sharing ``stride`` tokens with the one before it (the tokenizer's own
``return_overflowing_tokens``), so every token of the document is read by some window.
Training sees every window as an example with its document's label(s); evaluation and
prediction combine a document's window logits (:func:`aggregate`) into one prediction.

Pure: the tokenizer is handed in, and nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from kubetune.errors import ConfigError

Aggregate = Literal["mean", "max", "first"]
#: The tokenizer outputs a window keeps (the model's inputs).
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Windows:
    """The windows of a list of documents, in document order."""

    #: The model inputs of each window (``input_ids``, ``attention_mask``, and
    #: ``token_type_ids`` when the tokenizer gives them): one list per window.
    inputs: dict[str, list[list[int]]]
    #: Window → index of its document; non-decreasing, every document has a window.
    document: np.ndarray
    #: Per window: True on the last window kept of a document that ``max_windows`` cut short
    #: (its end was not read).
    cut: np.ndarray

    def __len__(self) -> int:
        return len(self.document)

    def stats(self) -> dict[str, Any]:
        """See :func:`stats`."""
        return stats(self.document, self.cut)


def stats(document: np.ndarray, cut: np.ndarray) -> dict[str, Any]:
    """What a run records about a split's windows: documents, windows, windows per document
    (mean and max), and the documents max_windows cut short."""
    document = np.asarray(document, dtype=np.int64)
    counts = np.bincount(document) if len(document) else np.zeros(0, dtype=np.int64)
    return {
        "documents": len(counts),
        "windows": len(document),
        "windows_per_document": round(float(counts.mean()), 4) if len(counts) else 0.0,
        "windows_per_document_max": int(counts.max()) if len(counts) else 0,
        "cut_documents": int(np.asarray(cut, dtype=bool).sum()),
    }


def split(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    stride: int,
    max_windows: int | None = None,
) -> Windows:
    """Each text as windows of at most ``max_length`` tokens (special tokens included) that
    share ``stride`` tokens with the one before; a text that fits is one window. With
    ``max_windows``, a document keeps only its first that many windows.

    Raises:
        ConfigError: the tokenizer cannot return overflowing windows (a slow tokenizer).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            "data.long_documents: needs a fast (Rust) tokenizer to cut windows, and "
            f"{type(tokenizer).__name__} is not one; use a model with tokenizer.json or remove "
            "data.long_documents"
        )
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
    )
    document = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
    keep = np.ones(len(document), dtype=bool)
    cut = np.zeros(len(document), dtype=bool)
    if max_windows is not None and len(document):
        # The rank of each window within its document: its index less its document's first.
        rank = np.arange(len(document)) - np.searchsorted(document, document, side="left")
        keep = rank < max_windows
        cut = (rank == max_windows - 1) & np.append(~keep[1:], False)
    inputs = {
        name: [row for row, kept in zip(encoded[name], keep, strict=True) if kept]
        for name in INPUTS
        if name in encoded
    }
    return Windows(inputs=inputs, document=document[keep], cut=cut[keep])


def aggregate(
    logits: np.ndarray, document: np.ndarray, documents: int, how: Aggregate = "mean"
) -> np.ndarray:
    """One row of logits per document from its windows' rows: their mean, their elementwise
    max, or the first window's (what truncation would have read).

    ``document`` maps each row of ``logits`` to its document (0 … documents-1); every
    document needs at least one window.
    """
    logits = np.asarray(logits, dtype=np.float64)
    document = np.asarray(document, dtype=np.int64)
    if len(logits) != len(document):
        raise ValueError(f"{len(logits)} rows of logits for {len(document)} windows")
    counts = np.bincount(document, minlength=documents)
    if len(counts) != documents or (counts == 0).any():
        raise ValueError(f"every one of {documents} documents needs a window")
    if how == "first":
        # The first occurrence of each document (windows come in document order, but any
        # order works).
        _, first = np.unique(document, return_index=True)
        return logits[first]
    out_shape = (documents, *logits.shape[1:])
    if how == "max":
        out = np.full(out_shape, -np.inf)
        np.maximum.at(out, document, logits)
        return out
    if how == "mean":
        total = np.zeros(out_shape)
        np.add.at(total, document, logits)
        return total / counts.reshape(-1, *([1] * (logits.ndim - 1)))
    raise ValueError(f"unknown aggregate {how!r}; one of mean, max, first")
