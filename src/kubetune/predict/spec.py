"""Batch job specs: a stored model applied to a corpus (``kind: predict``) or a corpus
encoded into a FAISS index (``kind: index``).

They share the training spec's conventions and sections (``resources``, ``storage``,
``image``) and its one-line errors, and run the same three ways: ``kubetune run`` here,
``kubetune render`` / ``submit`` as an Indexed Job of ``shards`` completions. Their output
goes to ``<store>/<name>/<batch id>/`` (:mod:`kubetune.predict.shards`), where the batch id
is the name and the hash of the resolved spec, as a run id is.

This module imports no ML framework: the laptop path loads it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError

from kubetune import _yaml
from kubetune.errors import Issue, SpecError
from kubetune.spec import (
    DEFAULT_IMAGE,
    DnsLabel,
    ImageRef,
    NonEmpty,
    ResourcesSpec,
    StorageSpec,
    _Model,
    did_you_mean,
    dotted,
)

KINDS = ("predict", "index")
#: A hub dataset in ``corpus.uri``: ``hub:<dataset id>`` (its ``corpus.split``).
HUB = "hub:"


class CorpusSpec(_Model):
    """The rows to predict or encode."""

    uri: NonEmpty = Field(
        description="A .jsonl/.csv/.parquet file or a folder of them (relative to the folder "
        "kubetune runs in), an s3:// prefix of such files, or hub:<dataset id> (its "
        "corpus.split; the machine must reach the Hugging Face hub or have it cached)."
    )
    split: NonEmpty = Field("train", description="Split of a hub dataset.")
    text_column: NonEmpty = Field("text", description="Column holding each row's text.")
    question_column: NonEmpty | None = Field(
        None,
        description="A question-answering model: the column holding each row's question, "
        "answered from the row's text_column (its context).",
    )
    id_column: NonEmpty | None = Field(
        "id",
        description="Column kept on each output row to join it back; rows without it are "
        "named by their row number (row).",
    )


class OutputSpec(_Model):
    """How predictions are written (kind: predict)."""

    format: Literal["jsonl", "parquet"] = Field(
        "jsonl", description="jsonl, or parquet (nested columns for scores and entity spans)."
    )


class IndexSpec(_Model):
    """The FAISS index built from the embeddings (kind: index), with a BM25 index of the
    same texts beside it for bm25 and hybrid search."""

    type: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        "auto",
        description="flat (exact), ivf or hnsw (approximate); auto: flat up to the size "
        "kubetune.retrieval.index documents, ivf beyond.",
    )


class GenerateSpec(_Model):
    """Decoding of seq2seq and causal-LM models (kind: predict)."""

    max_new_tokens: int = Field(64, ge=1, le=4096, description="Tokens to generate per row.")
    num_beams: int = Field(1, ge=1, le=16, description="Beam search width; 1 is greedy.")


class BatchSpec(_Model):
    """A batch job over a corpus with a stored model."""

    kind: Literal["predict", "index"] = Field(
        description="predict: the model's output for every row. index: every row's embedding, "
        "and a FAISS index of them."
    )
    name: DnsLabel = Field(description="Job name (DNS-1123 label, ≤ 40 chars).")
    model: NonEmpty = Field(
        description="A stored run (<store>/<sweep>/<run-id>; its final/ model). For kind: "
        "index also a sentence encoder folder: a path, pkg:<package>/<folder> or an s3:// "
        "folder."
    )
    corpus: CorpusSpec
    shards: int = Field(
        1,
        ge=1,
        le=10_000,
        description="Pieces the corpus is cut into: on a cluster the completions of an Indexed "
        "Job, each written with a manifest last, so a failed shard is redone alone and a "
        "finished one never twice.",
    )
    parallelism: int | None = Field(
        None, ge=1, le=10_000, description="Shards running at once on a cluster (default all)."
    )
    max_length: int | None = Field(
        None, ge=8, le=32_768, description="Tokens per row; longer rows are truncated."
    )
    int8: bool = Field(
        False,
        description="Quantize the model's Linear layers to int8 (CPU only): about twice as "
        "fast on CPUs without native bf16. Labels hold (300 of 300 BBC News articles); "
        "embeddings move (mean cosine 0.94 to fp32's on BBC paragraphs), so check retrieval "
        "quality before indexing with it.",
    )
    tokens_per_batch: int = Field(
        4096,
        ge=64,
        le=1_048_576,
        description="Padded tokens per forward pass (rows sorted by length); raise on GPUs.",
    )
    output: OutputSpec = Field(default_factory=OutputSpec)
    generation: GenerateSpec = Field(default_factory=GenerateSpec)
    index: IndexSpec | None = Field(None, description="kind: index only.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    image: ImageRef = Field(DEFAULT_IMAGE, description="Image of the pods; pin by digest.")
    storage: StorageSpec | None = Field(
        None, description="Store the output goes to. Required to render a Kubernetes Job."
    )


def is_batch(path: str | Path) -> bool:
    """Whether the YAML file at ``path`` is a batch spec (it has a top-level ``kind``)."""
    try:
        data, _ = _yaml.load(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    except SpecError:
        return False
    return isinstance(data, dict) and "kind" in data


def validate(
    data: Any, source: str | None = None, lines: dict[Any, int] | None = None
) -> BatchSpec:
    """Validate plain data as a BatchSpec, every problem at once (as :func:`spec.validate`).

    Raises:
        SpecError: each problem with its dotted path (and line, when known).
    """
    lines = lines or {}
    if not isinstance(data, dict):
        raise SpecError([Issue("", "a batch spec is a mapping of keys to values")], source)
    try:
        batch = BatchSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_issues(exc, lines), source) from exc
    issues = [
        Issue(path, message, lines.get(tuple(path.split(".")))) for path, message in _rules(batch)
    ]
    if issues:
        raise SpecError(issues, source)
    return batch


def _issues(exc: ValidationError, lines: dict[Any, int]) -> list[Issue]:
    """One issue per path, each saying what to change (the job spec's wording)."""
    found: dict[str, Issue] = {}
    for error in exc.errors(include_url=False):
        loc, model = [], BatchSpec.model_fields
        for part in error["loc"]:
            # Union branches (int, str, …) and wrappers are not keys of the spec.
            if isinstance(part, int) or part in model:
                loc.append(part)
                annotation = model[part].annotation if not isinstance(part, int) else None
                model = _fields(annotation)
            elif error["type"] == "extra_forbidden" and part == error["loc"][-1]:
                loc.append(part)
        path = dotted(tuple(loc))
        kind, value = error["type"], error.get("input")
        if kind == "extra_forbidden":
            hint = did_you_mean(str(loc[-1]), list(model))
            message = f"unknown key; did you mean {hint!r}?" if hint else "unknown key"
            if model:
                message += "" if hint else f"; allowed: {', '.join(model)}"
        elif kind == "missing":
            message = "required; add it"
        elif kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            message = f"must be {expected} (got {value!r})"
        else:
            text = str(error["msg"])
            text = text.removeprefix("Value error, ").removeprefix("Input should be ")
            message = f"must be {text} (got {value!r})"
        if path not in found:
            found[path] = Issue(path, message, lines.get(tuple(loc)))
    return list(found.values())


def _fields(annotation: Any) -> dict[str, Any]:
    """The fields of the model an annotation names (``IndexSpec | None`` too); {} if none."""
    for candidate in (annotation, *get_args(annotation)):
        fields = getattr(candidate, "model_fields", None)
        if isinstance(fields, dict):
            return fields
    return {}


def _rules(batch: BatchSpec) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if batch.kind == "predict" and batch.index is not None:
        problems.append(("index", "only kind: index builds an index; remove it or set kind: index"))
    if batch.kind == "index" and batch.output.format != "jsonl":
        problems.append(
            ("output.format", "kind: index writes embeddings, not predictions; remove it")
        )
    if batch.parallelism is not None and batch.parallelism > batch.shards:
        problems.append(
            (
                "parallelism",
                f"at most shards ({batch.shards}) run at once; lower it or raise shards",
            )
        )
    if batch.int8 and batch.resources.gpus > 0:
        problems.append(
            ("int8", "int8 quantization runs on CPU only; set resources.gpus: 0 or drop int8")
        )
    return problems


def load(path: str | Path) -> BatchSpec:
    """Load and validate a batch spec file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([Issue("", exc.strerror or str(exc))], source) from exc
    data, lines = _yaml.load(text, source)
    batch = validate(data, source, lines)
    if batch.index is None and batch.kind == "index":
        batch = batch.model_copy(update={"index": IndexSpec()})
    return batch


def batch_id(batch: BatchSpec) -> str:
    """``<name>-<8 hex>`` of the spec's content: the same spec writes to the same folder, so
    a rerun finds the shards it already finished."""
    data = batch.model_dump(mode="json", exclude={"resources", "image", "parallelism"})
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return f"{batch.name}-{digest[:8]}"


def dump(batch: BatchSpec) -> str:
    """The spec as YAML, only what differs from the defaults (what a ConfigMap carries)."""
    import yaml

    return yaml.safe_dump(
        batch.model_dump(mode="json", exclude_defaults=True), sort_keys=False, allow_unicode=True
    )
