"""The server's requests as pydantic models, their limits, and a validation error as one line.

The models are built per server by :func:`request_models`, because their limits (texts per
request, characters per text, the largest k) are the server's settings and pydantic checks
them, so the OpenAPI schema at ``/docs`` states them too.

This module does not use ``from __future__ import annotations``: the limited models are
classes made inside a function, whose field types (made from the limits) live in that
function, not in the module's globals where string annotations would be resolved.
"""

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

#: The search modes of ``POST /v1/search``: nearest vectors, BM25 over the words, or both.
Mode = Literal["dense", "bm25", "hybrid"]


@dataclass(frozen=True)
class Limits:
    """What one request may ask; larger requests are refused with 422 naming the field."""

    max_texts: int = 256  # texts per request (predict, embed)
    max_chars: int = 100_000  # characters per text or query (the longest BBC News article: 25k)
    max_k: int = 100  # hits per search


class TextsRequest(BaseModel):
    """Texts to predict or embed: ``texts``, a list, or ``text``, one text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _texts_or_text(self) -> "TextsRequest":
        if self.texts is not None and self.text is not None:
            raise PydanticCustomError(
                "texts_and_text", "texts: give 'texts' (a list) or 'text' (one), not both"
            )
        if self.texts is None and self.text is None:
            raise PydanticCustomError(
                "texts_missing", "texts: required: a list of texts (or 'text': one text)"
            )
        return self

    def all_texts(self) -> list[str]:
        """The request's texts, one or many."""
        return self.texts if self.texts is not None else [self.text or ""]


class SearchRequest(BaseModel):
    """A query against the served index."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str
    k: int = 10
    mode: Mode = "dense"


class AnswerRequest(BaseModel):
    """A question about a context, for a question-answering model."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: str
    context: str


@dataclass(frozen=True)
class RequestModels:
    """The request bodies of one server's endpoints, with its limits."""

    texts: type[TextsRequest]
    search: type[SearchRequest]
    answer: type[AnswerRequest]


def request_models(limits: Limits) -> RequestModels:
    """:class:`TextsRequest` and :class:`SearchRequest` with ``limits`` on their fields."""
    one_text = Annotated[str, Field(max_length=limits.max_chars)]

    class LimitedTextsRequest(TextsRequest):
        texts: Annotated[
            list[one_text] | None,
            Field(
                min_length=1,
                max_length=limits.max_texts,
                description=f"1 to {limits.max_texts} texts of at most {limits.max_chars} "
                "characters; results come in this order",
            ),
        ] = None
        text: Annotated[
            one_text | None,
            Field(description="one text, instead of texts (results: a list of one)"),
        ] = None

    class LimitedSearchRequest(SearchRequest):
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=limits.max_chars,
                description=f"the query, at most {limits.max_chars} characters",
            ),
        ]
        k: Annotated[
            int, Field(ge=1, le=limits.max_k, description=f"hits to return, 1 to {limits.max_k}")
        ] = 10
        mode: Annotated[
            Mode, Field(description="dense: nearest vectors; bm25: words; hybrid: both, fused")
        ] = "dense"

    class LimitedAnswerRequest(AnswerRequest):
        question: Annotated[
            str,
            Field(min_length=1, max_length=limits.max_chars,
                  description=f"the question, at most {limits.max_chars} characters"),
        ]  # fmt: skip
        context: Annotated[
            str,
            Field(min_length=1, max_length=limits.max_chars,
                  description="the text the answer is taken from; read whole, in windows"),
        ]  # fmt: skip

    return RequestModels(LimitedTextsRequest, LimitedSearchRequest, LimitedAnswerRequest)


#: Every field of every request, for "did you mean" on an unknown one.
FIELDS = ("texts", "text", "query", "k", "mode", "question", "context")


def one_line(errors: Sequence[Mapping[str, Any]]) -> str:
    """The first validation error of a request as ``field: what to change`` (a list element as
    ``texts[3]``); FastAPI reports body errors at ``("body", ...)``."""
    if not errors:
        return "body: not a valid request"
    error = errors[0]
    loc = [part for part in error.get("loc", ()) if part != "body"]
    kind = str(error.get("type", ""))
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return f"body: not valid JSON ({reason})" if reason else "body: not valid JSON"
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    message = _message(kind, error, path)
    if not path:
        # A whole-body error: either the body is missing or not an object, or a model
        # validator's message, which names its field itself.
        return message if kind.startswith("texts_") else f"body: {message}"
    return f"{path}: {message}"


def _message(kind: str, error: Mapping[str, Any], path: str) -> str:
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    given = error.get("input")
    if kind == "missing":
        return "required" if path else 'required: a JSON object such as {"texts": [...]}'
    if kind == "extra_forbidden":
        name = path.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(name, FIELDS, n=1)
        return f"unknown field; did you mean '{close[0]}'?" if close else "unknown field"
    if kind == "too_short":
        return f"at least {ctx.get('min_length')} text per request"
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} texts per request (got {ctx.get('actual_length')})"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        got = f" (got {len(given)})" if isinstance(given, str) else ""
        return f"at most {ctx.get('max_length')} characters{got}"
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = f"at least {ctx['ge']}" if "ge" in ctx else f"at most {ctx.get('le')}"
        return f"{bound} (got {_short(given)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a JSON object"
    if kind == "list_type":
        return f"must be a list of texts (got {_json_kind(given)})"
    if kind == "string_type":
        return f"must be a string (got {_json_kind(given)})"
    if kind == "int_type":
        return f"must be an integer (got {_short(given)})"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')} (got {_short(given)})"
    message = str(error.get("msg", "not valid"))
    return message[:1].lower() + message[1:]


def _json_kind(value: Any) -> str:
    """What a JSON value is, as a user wrote it."""
    kinds = {str: "a string", bool: "true or false", int: "a number", float: "a number",
             dict: "an object", list: "a list", type(None): "null"}  # fmt: skip
    return kinds.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    """A value as JSON shows it, cut short."""
    text = (
        json.dumps(value)
        if isinstance(value, (str, int, float, bool, type(None)))
        else (_json_kind(value))
    )
    return text if len(text) <= 40 else text[:37] + "..."
