"""Entity spans from BIO tags: what NER and its CRF baseline put in prediction rows and
``kubetune predict`` answers. No ML framework here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def spans_of(
    text: str, offsets: Sequence[tuple[int, int]], tags: Sequence[str]
) -> list[dict[str, Any]]:
    """The entities of words tagged BIO, each ``{type, start, end, text}`` with character
    offsets into ``text`` (``offsets``: each word's). An I- tag after another type, or after
    O, begins a new entity, as seqeval reads it."""
    spans: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for (start, end), tag in zip(offsets, tags, strict=True):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        continues = tag.startswith("I-") and current is not None and current["type"] == kind
        if current is not None and not continues:
            spans.append(current)
            current = None
        if kind is not None and not continues:
            current = {"type": kind, "start": start, "end": end}
        elif continues and current is not None:
            current["end"] = end
    if current is not None:
        spans.append(current)
    for span in spans:
        span["text"] = text[span["start"] : span["end"]]
    return spans


def entity_spans(tokens: Sequence[str], tags: Sequence[str]) -> list[dict[str, Any]]:
    """Entities of a BIO sequence with character offsets into ``" ".join(tokens)``."""
    offsets, at = [], 0
    for token in tokens:
        offsets.append((at, at + len(token)))
        at += len(token) + 1
    return spans_of(" ".join(tokens), offsets, tags)
