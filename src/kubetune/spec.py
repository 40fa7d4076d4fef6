"""The job spec: one typed model of a fine-tuning task, loaded safely from YAML.

Field names follow Hugging Face ``TrainingArguments`` and peft ``LoraConfig`` where one
exists. Every field documents itself (``Field(description=…)``); the JSON Schema committed at
``schema/jobspec.schema.json`` is generated from these models.

Validation reports every problem at once, each as an :class:`~kubetune.errors.Issue` naming
the dotted path and what to change. Cross-field rules live in one place,
:func:`_cross_field_issues`.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from kubetune import _yaml
from kubetune.errors import Issue, SpecError
from kubetune.headline import CLASSICAL_FAMILIES, TASK_METRICS, metrics_of

Loc = tuple[str | int, ...]
Task = Literal[
    "classification",
    "ner",
    "question-answering",
    "seq2seq",
    "causal-lm",
    "embedding",
    "zero-shot",
    "classical",
]
FINE_TUNING_TASKS: tuple[str, ...] = (
    "classification",
    "ner",
    "question-answering",
    "seq2seq",
    "causal-lm",
    "embedding",
)
ClassicalMethod = Literal["tfidf-logreg", "crf", "lead"]
#: The fields of ``classical`` each method reads (``method`` aside): setting another one is
#: an error, as for FIELD_TASKS.
CLASSICAL_METHOD_FIELDS: dict[str, frozenset[str]] = {
    "tfidf-logreg": frozenset(
        {"ngram_max", "min_df", "max_features", "sublinear_tf", "c", "class_weight", "max_iter"}
    ),
    "crf": frozenset({"c1", "c2", "max_iter"}),
    "lead": frozenset({"lead_sentences"}),
}
#: Tasks that read labels per text: one per text, or several with data.multi_label.
LABELLING_TASKS = frozenset({"classification", "zero-shot", "classical"})
#: Baselines: runs that train no transformer, shown beside fine-tuned runs in the report.
BASELINE_TASKS = frozenset({"zero-shot", "classical"})
TASKS: tuple[str, ...] = get_args(Task)

_GENERATING = frozenset({"seq2seq", "causal-lm"})
_OPTIMISER_FIELDS = (
    "learning_rate", "epochs", "max_steps", "batch_size", "gradient_accumulation_steps",
    "warmup_steps", "weight_decay", "lr_scheduler_type", "optim", "precision",
)  # fmt: skip
#: The fields only some tasks read → those tasks. A field here that a spec sets (to anything
#: but its default) is an error when the task is not one of them: the run would ignore it.
#: A field read by every task is not listed. The one table behind that rule, its messages,
#: the fields a task sweep drops from each run, and the tests that keep it true.
FIELD_TASKS: dict[str, frozenset[str]] = {
    # Before "model": a field's readers are those of the first entry that holds it.
    "model.decoder": frozenset({"seq2seq"}),
    "model": frozenset(set(TASKS) - {"classical"}),
    "data.text_column": frozenset({"causal-lm"} | LABELLING_TASKS),
    "data.text_pair_column": frozenset({"classification"}),
    "data.label_column": LABELLING_TASKS,
    "data.labels": frozenset({"ner"} | LABELLING_TASKS),
    "data.multi_label": LABELLING_TASKS,
    "data.threshold": LABELLING_TASKS,
    "data.long_documents": frozenset({"classification"}),
    "data.question_column": frozenset({"question-answering"}),
    "data.context_column": frozenset({"question-answering"}),
    "data.answers_column": frozenset({"question-answering"}),
    "data.doc_stride": frozenset({"question-answering"}),
    "data.max_answer_length": frozenset({"question-answering"}),
    "data.null_threshold": frozenset({"question-answering"}),
    "data.tokens_column": frozenset({"ner", "classical"}),
    "data.tags_column": frozenset({"ner", "classical"}),
    "data.label_all_tokens": frozenset({"ner"}),
    "data.source_column": frozenset({"seq2seq", "classical"}),
    "data.target_column": frozenset({"seq2seq", "classical"}),
    "data.source_prefix": frozenset({"seq2seq"}),
    "data.max_target_length": frozenset({"seq2seq"}),
    "data.prompt_column": frozenset({"causal-lm"}),
    "data.completion_column": frozenset({"causal-lm"}),
    "data.chat_template": frozenset({"causal-lm"}),
    "data.packing": frozenset({"causal-lm"}),
    "data.query_column": frozenset({"embedding"}),
    "data.positive_column": frozenset({"embedding"}),
    "data.corpus": frozenset({"embedding"}),
    "lora": frozenset(FINE_TUNING_TASKS),
    "prompt": frozenset({"zero-shot"}),
    "classical": frozenset({"classical"}),
    "generation.max_new_tokens": _GENERATING,
    "generation.min_new_tokens": _GENERATING,
    "generation.num_beams": _GENERATING,
    "generation.length_penalty": _GENERATING,
    "generation.no_repeat_ngram_size": _GENERATING,
    "generation.samples": frozenset({"causal-lm"}),
    # sentence-transformers' trainer batches with its own sampler (no duplicate texts in a
    # batch: each is another query's negative) and scores with its own loss.
    "train.group_by_length": frozenset(set(TASKS) - {"embedding", "classical"}),
    "train.label_smoothing_factor": frozenset(set(TASKS) - {"embedding", "classical"}),
    # scikit-learn fits TF-IDF + logistic regression in one call: no steps, rates or batches.
    # The fields of train every transformer task reads are listed here for it alone.
    **{f"train.{name}": frozenset(set(TASKS) - {"classical"}) for name in _OPTIMISER_FIELDS},
}

#: Longest job name: leaves room for ``-<8 hex>`` run ids and ``-<index>`` pod hostnames
#: inside Kubernetes' 63-character label limit.
MAX_NAME = 40

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_QUANTITY = re.compile(r"^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_IMAGE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._/-][a-z0-9]+)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# Values that look like credentials rather than the name of a Secret holding them.
_CREDENTIAL = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{16}$|^[0-9a-f]{40}$|^[A-Za-z0-9/+=]{40}$")

_QUANTITY_SUFFIX = {
    "": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip

DEFAULT_IMAGE = "ghcr.io/kubetune/kubetune-trainer:0.1.0"
#: model.name of a spec whose task reads no model (classical): nothing to fetch or load.
NO_MODEL = "none"


# --- field types ---------------------------------------------------------------------------


def _dns_label(value: str) -> str:
    if len(value) > MAX_NAME:
        raise ValueError(f"must be at most {MAX_NAME} characters (got {len(value)})")
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _secret_name(value: str) -> str:
    if _CREDENTIAL.match(value):
        raise ValueError(
            "looks like a credential, not a Secret name: store it in a Kubernetes Secret "
            "and give the Secret's name here"
        )
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes Secret name (DNS-1123 subdomain)")
    return value


def _subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes name (DNS-1123 subdomain)")
    return value


def _gpu_type(value: str) -> str:
    from kubetune import gpus

    exact = gpus.exact_label(value)
    if exact is not None:
        key, val = exact
        if not _LABEL_KEY.match(key) or not val or not _LABEL_VALUE.match(val):
            raise ValueError(f"{value!r} is not label=value with a valid node label key and value")
        return value
    if gpus.lookup(value) is None:
        raise ValueError(
            f"unknown GPU model {value!r}; use one of {gpus.known()}, or give the node "
            "label exactly as label=value (e.g. nvidia.com/gpu.product=NVIDIA-L4)"
        )
    return value


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a Kubernetes quantity: write e.g. '4', '500m', '32Gi'")
    return value


def _quantity(value: str | int | float) -> str:
    text = str(value)
    if not _QUANTITY.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity: write e.g. '4', '500m', '32Gi'")
    if not math.isfinite(quantity_value(text)):
        raise ValueError(f"{text[:20]!r}… is too large a quantity")
    return text


def _image(value: str) -> str:
    if not _IMAGE.match(value):
        raise ValueError(
            f"{value!r} is not an image reference: write registry/repository:tag "
            "or registry/repository@sha256:<digest>"
        )
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        if not _LABEL_KEY.match(key):
            raise ValueError(f"{key!r} is not a valid Kubernetes label key")
        if not _LABEL_VALUE.match(val):
            raise ValueError(f"{val!r} (for {key!r}) is not a valid Kubernetes label value")
    return value


def quantity_value(text: str) -> float:
    """The numeric value of a Kubernetes quantity (``'32Gi'`` → 34359738368.0)."""
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"not a quantity: {text!r}")
    return float(match.group(1)) * _QUANTITY_SUFFIX[match.group(3) or ""]


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
SecretName = Annotated[str, AfterValidator(_secret_name)]
KubeName = Annotated[str, AfterValidator(_subdomain)]
Quantity = Annotated[str | int | float, BeforeValidator(_not_bool), AfterValidator(_quantity)]
ImageRef = Annotated[str, AfterValidator(_image)]
LabelMap = Annotated[dict[str, str], AfterValidator(_labels)]
NonEmpty = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    """Shared config: unknown keys are errors, NaN and infinity are not numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


# --- sections ------------------------------------------------------------------------------


class ModelSpec(_Model):
    """The pretrained model to start from."""

    name: NonEmpty = Field(
        description="Hugging Face hub id, local directory (relative to the folder kubetune runs "
        "in), pkg:<package>/<folder> inside an installed package, or s3:// URI of the "
        "pretrained model."
    )
    revision: str | None = Field(
        None,
        description="Hub branch, tag or commit sha to pin. Required as a 40-hex commit sha "
        "when trust_remote_code is true, so the code you trust cannot change under you.",
    )
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with the checkpoint (transformers' flag)."
    )
    config_overrides: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Settings of the checkpoint's config.json to change before loading, "
        "e.g. {attention_probs_dropout_prob: 0.0}: attention dropout off lets PyTorch use its "
        "fused attention kernel, about 2x faster per step on CPU at 256 tokens. Keys must "
        "exist in the checkpoint's config.",
    )
    decoder: str | None = Field(
        None,
        description="seq2seq only: a second checkpoint to warm-start the decoder from. With it, "
        "name is the encoder and the two make an EncoderDecoderModel (e.g. bert2bert from two "
        "BERT checkpoints); the decoder gains cross-attention, trained from scratch.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Precision the weights are loaded in. bfloat16/float16 halve the memory of "
        "frozen weights, for LoRA (the adapters stay float32); full fine-tuning keeps float32 "
        "master weights (use train.precision for mixed-precision compute).",
    )
    load_in_4bit: bool = Field(
        False,
        description="QLoRA: load the base weights in 4-bit NF4 (bitsandbytes) and train LoRA "
        "adapters on top. Needs lora and a CUDA GPU.",
    )


class LongDocumentsSpec(_Model):
    """Texts longer than data.max_length, read in overlapping windows (classification)."""

    stride: int = Field(
        64,
        ge=0,
        description="Tokens each window shares with the one before it (less than max_length).",
    )
    aggregate: Literal["mean", "max", "first"] = Field(
        "mean",
        description="A document's prediction from its windows' logits: their mean, their "
        "elementwise max, or the first window's alone (what truncation gives).",
    )
    max_windows: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Read at most this many windows of a document (its start); null: all.",
    )


class DataSpec(_Model):
    """Where the examples come from and which columns hold what."""

    train: str | None = Field(
        None,
        description="Training data: a local .jsonl/.csv/.parquet file or folder, an s3:// URI, "
        "or a hub dataset id. Required by every task except zero-shot. A relative path is read "
        "from the folder kubetune runs in (as a shell would), not the spec's folder.",
    )
    eval: str | None = Field(
        None,
        description="Evaluation data, same forms as train. When absent, a seeded "
        "validation_split of train is held out.",
    )
    test: str | None = Field(None, description="Held-out test data, scored once at the end.")
    config: str | None = Field(None, description="Hub dataset configuration name.")
    revision: str | None = Field(None, description="Hub dataset revision to pin.")
    text_column: str = Field(
        "text", description="Input text (classification, causal-lm, zero-shot)."
    )
    text_pair_column: str | None = Field(
        None, description="Optional second text for sentence-pair classification."
    )
    label_column: str = Field("label", description="Class label (classification, zero-shot).")
    tokens_column: str = Field("tokens", description="List of words per example (ner).")
    tags_column: str = Field("ner_tags", description="List of BIO tags per example (ner).")
    source_column: str = Field("document", description="Input document (seq2seq).")
    target_column: str = Field("summary", description="Target text (seq2seq).")
    source_prefix: str = Field(
        "", description="Text put before every source (seq2seq), e.g. 'summarize: ' for T5."
    )
    prompt_column: str | None = Field(
        None,
        description="causal-lm: train on prompt/completion pairs, with the loss on the "
        "completion only. Absent: train on the plain text in text_column.",
    )
    completion_column: str = Field(
        "completion", description="causal-lm: the completion of each prompt (with prompt_column)."
    )
    chat_template: str | None = Field(
        None,
        description="causal-lm prompt/completion: wrap each prompt as a user message. "
        "'tokenizer' uses the tokenizer's own chat template; any other value is a Jinja2 chat "
        "template (variables: messages, add_generation_prompt, bos_token, eos_token).",
    )
    packing: bool = Field(
        False,
        description="causal-lm: concatenate examples into blocks of exactly max_length tokens "
        "(no padding; examples may span blocks).",
    )
    query_column: str = Field(
        "query", description="embedding: the query (or anchor) text of each pair."
    )
    positive_column: str = Field(
        "positive",
        description="embedding: the document that answers the query; the other rows' documents "
        "in its batch are its negatives.",
    )
    corpus: str | None = Field(
        None,
        description="embedding: the documents evaluation searches (rows with id and text; same "
        "forms as train). A query's relevant document is the one whose id is the query row's "
        "id. Absent: each split's queries search that split's own positives.",
    )
    question_column: str = Field(
        "question", description="question-answering: the question of each example."
    )
    context_column: str = Field(
        "context", description="question-answering: the passage the answer is taken from."
    )
    answers_column: str = Field(
        "answers",
        description="question-answering: the gold answers, SQuAD's form: {text: [...], "
        "answer_start: [...]} with character offsets into the context; empty lists for a "
        "question the context does not answer.",
    )
    doc_stride: int = Field(
        128,
        ge=1,
        description="question-answering: a context longer than max_length is read in windows "
        "that share this many tokens with the one before, so an answer near a window's edge "
        "is whole in the next.",
    )
    max_answer_length: int = Field(
        30, ge=1, le=4096, description="question-answering: longest answer span, in tokens."
    )
    null_threshold: float = Field(
        0.0,
        description="question-answering with unanswerable questions: answer nothing when the "
        "no-answer score beats the best span's by more than this (raise it to answer more).",
    )
    multi_label: bool = Field(
        False,
        description="classification, zero-shot, classical: label_column holds a list of labels "
        "per text (any number, none included); each label is a yes/no decision (sigmoid "
        "outputs against data.threshold).",
    )
    threshold: Annotated[float, Field(gt=0, le=1)] | Literal["tune"] = Field(
        0.5,
        description="multi_label: a label applies when its score reaches this. 'tune': each "
        "label's threshold is the one that maximises its F1 on the eval split, then applied "
        "to test. Zero-shot: with method embedding use 'tune' (a label's score is its share "
        "of the text's similarity, and the shares sum to 1, so 0.5 picks at most one label); "
        "with generate, a label the model names scores 1, so the threshold does not matter.",
    )
    long_documents: LongDocumentsSpec | None = Field(
        None,
        description="classification: read a text longer than max_length whole, in overlapping "
        "windows, at train and predict time; one prediction per document from its windows'.",
    )
    labels: list[NonEmpty] | None = Field(
        None,
        description="Label names in id order. Inferred from the training data when absent; "
        "required for zero-shot, which has no training data to infer them from.",
    )
    max_length: int = Field(128, ge=8, le=32768, description="Truncate inputs to this many tokens.")
    max_target_length: int = Field(
        128, ge=1, le=32768, description="Truncate seq2seq targets to this many tokens."
    )
    validation_split: float = Field(
        0.1, gt=0, le=0.5, description="Share of train held out for eval when eval is absent."
    )
    label_all_tokens: bool = Field(
        False,
        description="NER: label every sub-token of a word (B- becomes I- after the first) "
        "instead of only the first.",
    )
    max_train_samples: int | None = Field(
        None, ge=1, description="Use at most this many training examples (quick trials)."
    )
    max_eval_samples: int | None = Field(
        None, ge=1, description="Use at most this many evaluation examples."
    )


Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
    "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr",
    "warmup_stable_decay",
]  # fmt: skip
Strategy = Literal["no", "steps", "epoch"]


class TrainSpec(_Model):
    """Optimisation settings; names follow transformers' TrainingArguments."""

    epochs: float = Field(3.0, gt=0, le=1000, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimiser steps (overrides epochs)."
    )
    learning_rate: float = Field(5e-5, gt=0, le=1, description="Peak learning rate.")
    batch_size: int = Field(16, ge=1, le=65536, description="Training batch size per device.")
    eval_batch_size: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="Evaluation batch size per device (default: 2 × batch_size).",
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=4096, description="Micro-batches accumulated per optimiser step."
    )
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay.")
    warmup_steps: float = Field(
        0.0,
        ge=0,
        description="Warm-up: a float in [0, 1) is a fraction of total steps, an integer ≥ 1 "
        "a number of steps (transformers 5 semantics; replaces warmup_ratio).",
    )
    lr_scheduler_type: Scheduler = Field("linear", description="Learning-rate schedule.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 disables).")
    optim: Literal["adamw_torch", "adamw_torch_fused", "adafactor", "sgd"] = Field(
        "adamw_torch", description="Optimiser."
    )
    label_smoothing_factor: float = Field(0.0, ge=0, lt=1, description="Label smoothing.")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto",
        description="auto: bf16 on GPUs that support it, else fp16; on CPU bf16 autocast where "
        "the CPU has native bf16 (AVX512-BF16, AMX), else fp32.",
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    group_by_length: bool = Field(
        False, description="Batch examples of similar length together to cut padding."
    )
    eval_strategy: Strategy = Field("epoch", description="When to evaluate.")
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate every N steps (eval_strategy: steps)."
    )
    save_strategy: Strategy = Field("epoch", description="When to checkpoint.")
    save_steps: int | None = Field(
        None, ge=1, description="Checkpoint every N steps (save_strategy: steps)."
    )
    save_total_limit: int = Field(2, ge=1, le=100, description="Keep the last K checkpoints.")
    keep_optimizer_state: bool = Field(
        False,
        description="Keep the optimizer state (optimizer, scheduler, gradient scaler and RNG "
        "files) in the stored checkpoints of a completed run. Only resuming needs it, and a "
        "completed run is never resumed, so by default it is removed when the run completes "
        "(often two thirds of a checkpoint's bytes); the weights and trainer_state.json stay.",
    )
    logging_steps: int = Field(50, ge=1, description="Log training loss every N steps.")
    metric_for_best_model: str | None = Field(
        None, description="Eval metric that picks the best checkpoint and drives early stopping."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without improvement."
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0, description="Smallest improvement that resets early-stopping patience."
    )
    seed: int = Field(42, ge=0, lt=2**32, description="Seeds python, numpy, torch and data order.")
    deterministic: bool = Field(
        False, description="Use deterministic algorithms (slower; bit-identical reruns on GPU)."
    )


class GenerationSpec(_Model):
    """Decoding for seq2seq evaluation and causal-LM sample generations."""

    max_new_tokens: int = Field(64, ge=1, le=32768, description="Most tokens generated.")
    min_new_tokens: int = Field(0, ge=0, le=32768, description="Fewest tokens generated.")
    num_beams: int = Field(1, ge=1, le=64, description="Beam width (1 is greedy).")
    length_penalty: float = Field(
        1.0, description="Beam search: > 1 favours longer outputs, < 1 shorter."
    )
    no_repeat_ngram_size: int = Field(
        0, ge=0, le=32, description="Never repeat an n-gram of this size (0 allows repeats)."
    )
    samples: int = Field(
        8,
        ge=0,
        le=10000,
        description="causal-lm: eval examples to generate a sample completion for "
        "(predictions.jsonl).",
    )


class LoraSpec(_Model):
    """Low-rank adapters; names follow peft's LoraConfig."""

    r: int = Field(8, ge=1, le=1024, description="Rank of the update matrices.")
    lora_alpha: float = Field(
        16, gt=0, description="Scaling: updates are multiplied by lora_alpha / r."
    )
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[NonEmpty] | Literal["all-linear"] | None = Field(
        None,
        description="Module names to adapt, or 'all-linear'. Absent: peft's default for the "
        "architecture.",
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train.")
    modules_to_save: list[NonEmpty] | None = Field(
        None,
        description="Modules trained in full and saved beside the adapter (the task head is "
        "added automatically).",
    )
    use_rslora: bool = Field(False, description="Rank-stabilised scaling lora_alpha / sqrt(r).")
    merge: bool = Field(
        True,
        description="Save final/ as a plain model with the adapter merged in (loads without "
        "peft). false: final/ holds the adapter alone, with the task's config.json for the "
        "base model: PeftModel.from_pretrained(AutoModelFor<Task>.from_pretrained(base, "
        "config=AutoConfig.from_pretrained(final)), final). adapter/ has the adapter either way.",
    )


#: Variables a prompt template may use.
PROMPT_VARIABLES = frozenset({"text", "labels", "examples"})


def _template(value: str) -> str:
    import jinja2
    from jinja2 import meta
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment()
    try:
        ast = env.parse(value)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template line {exc.lineno}: {exc.message}") from None
    unknown = sorted(meta.find_undeclared_variables(ast) - PROMPT_VARIABLES)
    if unknown:
        raise ValueError(
            f"template uses unknown variable(s) {', '.join(unknown)}; "
            f"available: {', '.join(sorted(PROMPT_VARIABLES))}"
        )
    return value


class PromptSpec(_Model):
    """Zero/few-shot baseline: a pretrained model labels text with no training."""

    method: Literal["nli", "embedding", "generate"] = Field(
        "generate",
        description="nli: an NLI model scores 'text entails <hypothesis>' per label "
        "(transformers' zero-shot-classification pipeline). embedding: cosine similarity of "
        "sentence embeddings to each label's description, or to the mean of its few-shot "
        "examples. generate: a causal LM completes the template; the answer is matched to a "
        "label.",
    )
    template: Annotated[str, AfterValidator(_template)] | None = Field(
        None,
        description="generate: Jinja2 template of the prompt. Variables: text (the input), "
        "labels (the label names), examples (few-shot examples, each with .text and .label). "
        "With data.multi_label, .label is the names joined by ', ' and .labels their list; "
        "ask the model to list every label that applies (comma- or newline-separated).",
    )
    hypothesis_template: str = Field(
        "This example is {}.",
        description="nli: the hypothesis per label; {} is replaced by the label's description.",
    )
    label_descriptions: dict[str, NonEmpty] | None = Field(
        None,
        description="Text standing for each label (nli, embedding); default the label name.",
    )
    examples: int = Field(
        0,
        ge=0,
        le=64,
        description="Labelled examples per class drawn (seeded) from data.train: in-context "
        "examples (generate) or class prototypes (embedding). 0 is zero-shot.",
    )
    max_new_tokens: int = Field(8, ge=1, le=4096, description="generate: tokens per answer.")


class Toleration(_Model):
    """A Kubernetes toleration, in Kubernetes' own field names."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    key: str | None = Field(None, description="Taint key; empty with operator Exists matches all.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; empty tolerates all."
    )
    tolerationSeconds: int | None = Field(  # noqa: N815 - Kubernetes' name
        None, ge=0, description="How long a NoExecute taint is tolerated."
    )


class ClassicalSpec(_Model):
    """The cheap baseline of a task family, fitted (or applied) with no transformer: TF-IDF +
    logistic regression for labelling data, a CRF over word features for BIO tagging, or the
    source's lead sentences for summaries."""

    method: ClassicalMethod = Field(
        "tfidf-logreg",
        description="tfidf-logreg: TF-IDF features and logistic regression over "
        "data.text_column/label_column (scikit-learn). crf: a linear-chain CRF over word "
        "features of data.tokens_column/tags_column (CRFsuite), the classical NER baseline. "
        "lead: the first lead_sentences sentences of data.source_column as the summary, "
        "nothing fitted (the summarisation baseline). A field only other methods read is an "
        "error.",
    )
    ngram_max: int = Field(
        2, ge=1, le=5, description="tfidf-logreg: word n-grams up to this length (1: words)."
    )
    min_df: int = Field(
        2, ge=1, description="tfidf-logreg: drop terms found in fewer training texts than this."
    )
    max_features: int | None = Field(
        None, ge=1, description="tfidf-logreg: keep at most this many terms, the most frequent."
    )
    sublinear_tf: bool = Field(
        True, description="tfidf-logreg: use 1 + log(tf) for term frequencies."
    )
    c: float = Field(
        10.0,
        gt=0,
        description="tfidf-logreg: inverse regularisation strength (scikit-learn's C).",
    )
    class_weight: Literal["balanced"] | None = Field(
        None, description="tfidf-logreg: balanced weights classes inversely to their frequency."
    )
    c1: float = Field(0.1, ge=0, description="crf: L1 penalty on the feature weights.")
    c2: float = Field(0.1, ge=0, description="crf: L2 penalty on the feature weights.")
    max_iter: int = Field(
        1000, ge=1, description="tfidf-logreg, crf: most iterations of the solver."
    )
    lead_sentences: int = Field(
        1, ge=1, le=20, description="lead: how many of the source's first sentences to keep."
    )


class ResourcesSpec(_Model):
    """What each pod asks of the cluster, and where it may run."""

    gpus: int = Field(1, ge=0, le=16, description="GPUs per node (nvidia.com/gpu).")
    gpu_type: Annotated[str, AfterValidator(_gpu_type)] | None = Field(
        None,
        description="GPU model to require: a known model (t4, v100, a10g, l4, l40s, a100-40gb, "
        "a100-80gb, h100-80gb, h200), matched by whichever node label the cluster sets "
        "(nvidia.com/gpu.product from NVIDIA's GPU feature discovery, GKE's "
        "cloud.google.com/gke-accelerator, Karpenter's or EKS Auto Mode's instance-gpu-name); "
        "or an exact node label as label=value (e.g. nvidia.com/gpu.product=NVIDIA-L4).",
    )
    nodes: int = Field(
        1, ge=1, le=64, description="Nodes; > 1 makes an Indexed Job with one pod per node."
    )
    gang: Literal["job", "jobset"] = Field(
        "job",
        description="What keeps a multi-node run's pods together. job: one Indexed Job whose "
        "ranks restart together in place (torch elastic, c10d rendezvous on index 0). jobset: "
        "a JobSet (needs the JobSet controller) that recreates every pod when one fails.",
    )
    cpu: Quantity = Field("4", description="CPU request and limit per pod.")
    memory: Quantity = Field("32Gi", description="Memory request and limit per pod.")
    shm_size: Quantity = Field(
        "8Gi", description="Size of the memory-backed /dev/shm (counts against memory)."
    )
    scratch_size: Quantity = Field(
        "50Gi", description="Size limit of the local scratch volume for checkpoints and caches."
    )
    node_selector: LabelMap = Field(default_factory=dict, description="Node labels to require.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints to tolerate.")
    affinity: dict[str, Any] = Field(
        default_factory=dict,
        description="A Kubernetes affinity object (nodeAffinity, podAffinity, podAntiAffinity).",
    )
    priority_class: KubeName | None = Field(None, description="PriorityClass of the pods.")
    queue: KubeName | None = Field(
        None,
        description="Kueue LocalQueue to submit to (the Job's kueue.x-k8s.io/queue-name label). "
        "Kueue's admission webhook suspends the Job when it is created and unsuspends it when "
        "quota allows; the manifest itself never sets suspend.",
    )
    service_account: KubeName | None = Field(
        None,
        description="ServiceAccount of the pods, for cloud identity instead of a storage Secret "
        "(EKS IRSA or Pod Identity, GKE Workload Identity, Azure Workload Identity): their "
        "webhooks or metadata servers hand the pod its own credentials. The Kubernetes API "
        "token stays unmounted; the trainer never calls the API.",
    )
    image_pull_secrets: list[SecretName] = Field(
        default_factory=list,
        description="Names of Secrets (kubernetes.io/dockerconfigjson) with credentials for "
        "the registry of image.",
    )
    active_deadline_seconds: int = Field(
        3 * 24 * 3600, ge=60, description="Kill the Job after this many seconds."
    )
    backoff_limit: int = Field(
        3,
        ge=0,
        le=100,
        description="Retries for failures. Not counted: pods with a DisruptionTarget "
        "condition (scheduler preemption, drains, evictions) and trainers that stopped on "
        "SIGTERM with a stored checkpoint (exit 130), which is how a Kueue preemption or any "
        "suspend ends. A pod killed before it could stop that way counts.",
    )
    ttl_seconds_after_finished: int = Field(
        7 * 24 * 3600,
        ge=0,
        description="Delete the finished Job after this many seconds. Left out of "
        "`kubetune render --out` folders: GitOps would re-create the deleted Job and train "
        "again; there, a finished run goes when it leaves the folder.",
    )
    termination_grace_seconds: int = Field(
        120,
        ge=10,
        le=3600,
        description="Seconds between SIGTERM (preemption, drain) and SIGKILL: the trainer saves "
        "a checkpoint and finishes its upload within them, then exits to be retried.",
    )


class StorageSpec(_Model):
    """Where checkpoints, the run record and the final model go."""

    uri: NonEmpty = Field(
        description="s3://bucket/prefix (any S3-compatible store) or file:///path. Runs are "
        "written under <uri>/<sweep or name>/<run-id>/."
    )
    endpoint: str | None = Field(
        None, description="S3 endpoint URL for S3-compatible stores (e.g. http://minio:9000)."
    )
    region: str | None = Field(None, description="S3 region.")
    secret: SecretName | None = Field(
        None,
        description="Name of the Kubernetes Secret with AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY. Never the keys themselves.",
    )
    upload_concurrency: int = Field(
        8, ge=1, le=64, description="Parallel uploads (files and multipart parts) per checkpoint."
    )
    upload_queue: int = Field(
        2,
        ge=1,
        le=16,
        deprecated="storage.upload_queue is ignored: a save waits until the checkpoint before "
        "it is stored",
        description="Ignored; still read so that stored specs that carry it load and keep their "
        "run id. A save waits until the checkpoint before it is stored, so a SIGKILL loses at "
        "most the work since the last checkpoint but one.",
    )


class ReproduceSpec(_Model):
    """How `kubetune reproduce --local` judges a re-run against the record."""

    tolerance: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest relative difference |reproduced − recorded| / |recorded| of a final "
        "metric that still counts as reproduced.",
    )
    metrics: list[str] = Field(
        default_factory=list,
        description="Final metrics to compare (e.g. accuracy, f1); empty: every quality metric "
        "of the eval and test splits (not timings).",
    )


class WandbSpec(_Model):
    """Weights & Biases tracking."""

    project: NonEmpty | None = Field(None, description="W&B project (default: the job name).")
    entity: str | None = Field(None, description="W&B entity (team or user).")
    group: str | None = Field(
        None, description="W&B group (default: the sweep, i.e. the job name)."
    )
    tags: list[str] = Field(default_factory=list, description="W&B run tags.")
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto",
        description="auto: online when an API key is available (the Secret in a cluster, "
        "WANDB_API_KEY locally), offline otherwise.",
    )
    secret: SecretName | None = Field(
        None, description="Name of the Kubernetes Secret with WANDB_API_KEY. Never the key itself."
    )


class TrackingSpec(_Model):
    """Experiment tracking."""

    wandb: WandbSpec = Field(default_factory=WandbSpec, description="Weights & Biases settings.")


class SweepParam(_Model):
    """The values one spec path takes in a sweep: exactly one of the four forms."""

    values: list[Any] | None = Field(
        None, min_length=1, description="Explicit values (any method but list)."
    )
    uniform: tuple[float, float] | None = Field(
        None, description="[low, high]: random, tpe or cmaes."
    )
    log_uniform: tuple[float, float] | None = Field(
        None, description="[low, high] searched log-uniformly: random, tpe or cmaes."
    )
    int_uniform: tuple[int, int] | None = Field(
        None, description="[low, high] integers, both inclusive: random, tpe or cmaes."
    )
    when: dict[str, Any] | None = Field(
        None,
        description="Sweep this path only when other swept paths take these values, e.g. "
        "lora.r with when: {lora: {}} (LoRA on) beside lora: {values: [null, {}]}. Each key "
        "is a path swept by values; its value is one value or a list of them. Elsewhere the "
        "path keeps the spec's own value.",
    )


class ObjectiveSpec(_Model):
    """What a search optimises and a pruner compares."""

    metric: NonEmpty | None = Field(
        None,
        description="Eval metric (a key of the eval split's metrics: accuracy, f1, loss, …); "
        "default: the task's headline metric (accuracy, f1, rougeL, perplexity).",
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Default: minimize for loss and perplexity, maximize otherwise."
    )


class PrunerSpec(_Model):
    """Early stopping of losing trials at their own evaluations (rungs)."""

    type: Literal["asha", "hyperband", "median"] = Field(
        description="asha: asynchronous successive halving; hyperband: several ASHA brackets; "
        "median: stop a trial below the median of earlier trials at the same evaluation."
    )
    min_evals: int = Field(
        1,
        ge=1,
        le=1000,
        description="Evaluations every trial gets before it can be stopped (the first rung).",
    )
    reduction_factor: int = Field(
        3,
        ge=2,
        le=10,
        description="asha, hyperband: a trial goes past a rung when it is in the top "
        "1/reduction_factor of the trials that reached it; rungs are min_evals × factor^k.",
    )
    max_evals: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="hyperband: evaluations of a trial that runs in full (default: those of "
        "the first trial that finished).",
    )
    startup_trials: int = Field(
        2, ge=0, le=1000, description="median: trials that finish before any is stopped."
    )
    wait_seconds: int = Field(
        600,
        ge=5,
        le=86400,
        description="How long a trial waits at each evaluation for the driver's decision; "
        "past it the trial trains on (a driver that restarts catches up at the next one).",
    )


class BudgetSpec(_Model):
    """What the whole sweep may spend; it launches no trial that would overrun."""

    hours: float | None = Field(
        None, gt=0, le=24 * 365, description="Wall-clock hours from the sweep's first launch."
    )
    gpu_hours: float | None = Field(
        None,
        gt=0,
        le=10**7,
        description="GPU-hours of every trial together (elapsed × GPUs × nodes, from the run "
        "records). Needs runs with resources.gpus.",
    )
    cpu_hours: float | None = Field(
        None,
        gt=0,
        le=10**7,
        description="CPU-hours of every trial's trainer processes together (measured by the "
        "trainer, from the run records).",
    )


#: Sweep methods whose points are known before the first run (expanded by kubetune.sweep);
#: the others ask a sampler for each trial as results come in (kubetune.search).
STATIC_METHODS = ("grid", "random", "list")


class SweepSpec(_Model):
    """A sweep over dotted spec paths: each point becomes one run (a trial)."""

    method: Literal["grid", "random", "list", "tpe", "cmaes"] = Field(
        "grid",
        description="grid: every combination of values; random: max_runs seeded samples; "
        "list: the explicit points; tpe: Bayesian search (Optuna's TPE, conditional "
        "parameters included); cmaes: CMA-ES over the numeric parameters (Optuna).",
    )
    seed: int = Field(0, ge=0, lt=2**32, description="Seed of random sampling and of search.")
    max_runs: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="random: number of samples; tpe, cmaes: most trials; grid: upper bound on "
        "its size.",
    )
    parameters: dict[str, SweepParam] = Field(
        default_factory=dict,
        description="Dotted spec path (e.g. train.learning_rate, lora.r, task) → values. Each "
        "value is checked as that field when the spec loads. Over task, a run drops the fields "
        "its task does not read (lora on a zero-shot run), so equal runs merge.",
    )
    points: list[dict[str, Any]] = Field(
        default_factory=list,
        description="method list: each point maps dotted spec paths to values.",
    )
    objective: ObjectiveSpec = Field(
        default_factory=ObjectiveSpec, description="What tpe, cmaes and a pruner compare."
    )
    pruner: PrunerSpec | None = Field(
        None, description="Stop losing trials early (any method); they end with status pruned."
    )
    budget: BudgetSpec | None = Field(
        None, description="Stop launching trials when the next would overrun."
    )
    parallelism: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Trials at once. Default: locally 1 (one per GPU on a GPU machine); on the "
        "cluster every run of a grid, random or list sweep, and 4 for tpe and cmaes.",
    )
    retries: int = Field(
        1,
        ge=0,
        le=10,
        description="Times a driven sweep launches a failed trial again (a stopped or "
        "preempted trial resumes from its checkpoint without counting).",
    )

    @property
    def driven(self) -> bool:
        """Whether the sweep needs a driver: a process that decides as results come in
        (a search method, a pruner, a budget, a parallelism limit)."""
        return (
            self.method not in STATIC_METHODS
            or self.pruner is not None
            or self.budget is not None
            or self.parallelism is not None
        )


class JobSpec(_Model):
    """A fine-tuning job: what to train, on what, how, and where it runs."""

    name: DnsLabel = Field(
        description="Job name (DNS-1123 label, ≤ 40 chars); run ids derive from it."
    )
    task: Task = Field(
        description="classification | ner | question-answering | seq2seq | causal-lm | "
        "embedding | zero-shot | classical (TF-IDF + logistic regression). A field "
        "that only other tasks read (data.label_all_tokens beside classification, generation "
        "beside ner, …) is an error. A sweep over task may set a field any of its tasks reads: "
        "each run drops the ones its own task does not (a list point may not set them itself)."
    )
    model: ModelSpec = Field(
        default_factory=lambda: ModelSpec(name=NO_MODEL),
        description="The pretrained model. Required by every task except classical.",
    )
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    lora: LoraSpec | None = Field(
        None, description="Train low-rank adapters instead of all weights."
    )
    prompt: PromptSpec | None = Field(None, description="Prompt for the zero-shot task.")
    classical: ClassicalSpec = Field(
        default_factory=ClassicalSpec,
        description="Settings of the classical baseline (task: classical).",
    )
    generation: GenerationSpec = Field(
        default_factory=GenerationSpec,
        description="Decoding settings (seq2seq evaluation, causal-lm samples).",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    image: ImageRef = Field(
        DEFAULT_IMAGE, description="Trainer image; pin by digest (@sha256:…) for reproducibility."
    )
    storage: StorageSpec | None = Field(
        None, description="Artifact store. Required to render a Kubernetes Job."
    )
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    reproduce: ReproduceSpec = Field(default_factory=ReproduceSpec)
    sweep: SweepSpec | None = Field(None, description="Expand this spec into many runs.")


# --- cross-field rules ---------------------------------------------------------------------


def _cross_field_issues(spec: JobSpec, tasks: set[str] | None = None) -> list[tuple[Loc, str]]:
    """Rules that span fields. Every rule is here, so a reader finds them in one place.

    ``tasks``: the tasks the spec's runs have (more than its own under a sweep over task).
    """
    issues: list[tuple[Loc, str]] = []

    def add(path: str | Loc, message: str) -> None:
        issues.append((tuple(path.split(".")) if isinstance(path, str) else path, message))

    if spec.model.trust_remote_code and not _COMMIT_SHA.match(spec.model.revision or ""):
        add(
            "model.revision",
            "trust_remote_code: true requires revision to be a 40-hex commit sha, "
            "so the code you trust cannot change",
        )
    if spec.task in FINE_TUNING_TASKS and not spec.data.train:
        add("data.train", f"task {spec.task} needs training data; set data.train")
    if spec.task == "classical":
        method = spec.classical.method
        if method != "lead" and not spec.data.train:
            add("data.train", f"classical method {method} fits on training data; set data.train")
        if method == "lead" and not (spec.data.eval or spec.data.test):
            add("data.eval", "classical method lead scores data.eval or data.test; set one")
        for name in sorted(set(ClassicalSpec.model_fields) - {"method"}):
            if is_set(spec, f"classical.{name}") and name not in CLASSICAL_METHOD_FIELDS[method]:
                readers = [m for m, fields in CLASSICAL_METHOD_FIELDS.items() if name in fields]
                add(
                    f"classical.{name}",
                    f"classical method {method} does not read it ({' or '.join(readers)} "
                    "does); drop it or change classical.method",
                )
    elif spec.model.name == NO_MODEL and "model" not in spec.model_fields_set:
        add("model", f"task {spec.task} needs a pretrained model; set model.name")
    if is_set(spec, "data.threshold") and not spec.data.multi_label:
        add("data.threshold", "only multi-label tasks use it; set data.multi_label: true")
    if spec.data.multi_label and spec.data.text_pair_column:
        add("data.text_pair_column", "multi-label classification reads one text per example")
    long_docs = spec.data.long_documents
    if long_docs is not None and long_docs.stride >= spec.data.max_length // 2:
        add(
            "data.long_documents.stride",
            f"windows of data.max_length={spec.data.max_length} tokens can share at most "
            f"{max(spec.data.max_length // 2 - 1, 0)}; lower the stride",
        )
    if (
        "question-answering" in (tasks or {spec.task})
        and spec.data.doc_stride >= spec.data.max_length // 2
    ):
        add(
            "data.doc_stride",
            f"windows of data.max_length={spec.data.max_length} tokens hold the question too; "
            f"a stride below {spec.data.max_length // 2} leaves room for context; lower it",
        )
    if spec.task == "zero-shot":
        if spec.prompt is None:
            add("prompt", "task zero-shot needs a prompt section; add prompt.method")
        else:
            if spec.prompt.examples > 0 and not spec.data.train:
                add("data.train", "prompt.examples > 0 draws examples from data.train; set it")
            if spec.prompt.method == "generate" and spec.prompt.template is None:
                add("prompt.template", "method generate needs a template")
            if spec.prompt.method == "nli" and spec.prompt.examples > 0:
                add("prompt.examples", "method nli is zero-shot only; use 0 or method embedding")
            if "{}" not in spec.prompt.hypothesis_template:
                add("prompt.hypothesis_template", "put {} where the label goes")
            extra = sorted(set(spec.prompt.label_descriptions or {}) - set(spec.data.labels or []))
            if extra and spec.data.labels:
                add(
                    ("prompt", "label_descriptions", extra[0]),
                    "not one of data.labels; describe only those labels",
                )
        if not (spec.data.eval or spec.data.test):
            add("data.eval", "task zero-shot scores data.eval or data.test; set one")
        if not spec.data.labels:
            add("data.labels", "task zero-shot needs the label names; list them in data.labels")
    if spec.task == "embedding":
        if spec.lora is not None and not spec.lora.merge:
            add(
                "lora.merge",
                "task embedding saves final/ as a sentence-transformers folder with the adapter "
                "merged in (adapter/ holds the adapter alone); remove lora.merge",
            )
        if spec.model.load_in_4bit:
            add(
                "model.load_in_4bit",
                "task embedding trains float32 or half-precision weights; remove load_in_4bit",
            )
        if spec.data.query_column == spec.data.positive_column:
            add("data.positive_column", "names the same column as data.query_column")
    issues.extend(unused_fields(spec, tasks or {spec.task}))
    if spec.model.dtype != "float32" and spec.lora is None and spec.task != "zero-shot":
        add(
            "model.dtype",
            f"{spec.model.dtype} weights would take every optimiser update in half precision; "
            "keep float32 and set train.precision, or add a lora section",
        )
    if spec.model.load_in_4bit and spec.lora is None:
        add("model.load_in_4bit", "4-bit weights cannot be trained directly; add a lora section")
    if (
        spec.task == "causal-lm"
        and spec.data.chat_template is not None
        and spec.data.prompt_column is None
    ):
        add("data.chat_template", "chat templates wrap prompts; set data.prompt_column too")
    if (
        spec.generation.length_penalty != 1.0
        and spec.generation.num_beams == 1
        and _GENERATING & (tasks or {spec.task})
    ):
        add("generation.length_penalty", "only beam search uses it; set num_beams > 1")
    if spec.generation.min_new_tokens > spec.generation.max_new_tokens:
        add("generation.min_new_tokens", "must not exceed generation.max_new_tokens")
    if spec.data.labels is not None and len(set(spec.data.labels)) != len(spec.data.labels):
        add("data.labels", "label names must be unique")

    train = spec.train
    if train.warmup_steps >= 1 and not float(train.warmup_steps).is_integer():
        add("train.warmup_steps", "use a fraction in [0, 1) or a whole number of steps")
    if train.eval_strategy == "steps" and train.eval_steps is None:
        add("train.eval_steps", "eval_strategy: steps needs eval_steps")
    if train.save_strategy == "steps" and train.save_steps is None:
        add("train.save_steps", "save_strategy: steps needs save_steps")
    if train.early_stopping_patience is not None:
        if train.eval_strategy == "no":
            add(
                "train.early_stopping_patience", "early stopping needs eval_strategy steps or epoch"
            )
        elif train.save_strategy != train.eval_strategy:
            add(
                "train.save_strategy",
                "early stopping keeps the best checkpoint, so save_strategy must equal "
                f"eval_strategy ({train.eval_strategy})",
            )
        elif train.eval_strategy == "steps" and train.save_steps != train.eval_steps:
            add("train.save_steps", "early stopping needs save_steps equal to eval_steps")

    res = spec.resources
    if res.gpu_type and res.gpus < 1:
        add("resources.gpu_type", "gpu_type needs gpus >= 1")
    if quantity_value(str(res.shm_size)) >= quantity_value(str(res.memory)):
        add(
            "resources.shm_size",
            f"/dev/shm ({res.shm_size}) counts against memory ({res.memory}); make it smaller",
        )
    bad_affinity = sorted(set(res.affinity) - {"nodeAffinity", "podAffinity", "podAntiAffinity"})
    if bad_affinity:
        add(
            ("resources", "affinity", bad_affinity[0]),
            "unknown key; use nodeAffinity, podAffinity or podAntiAffinity",
        )
    for index, tol in enumerate(res.tolerations):
        if tol.operator == "Equal" and not tol.key:
            add(("resources", "tolerations", index, "key"), "operator Equal needs a key")
        if tol.operator == "Exists" and tol.value:
            add(("resources", "tolerations", index, "value"), "operator Exists takes no value")

    if spec.storage is not None:
        storage = spec.storage
        from kubetune.store import uri_problem

        problem = uri_problem(storage.uri)
        if problem is not None:
            add("storage.uri", problem)
        elif storage.uri.startswith("file://"):
            for field in ("endpoint", "secret", "region"):
                if getattr(storage, field):
                    add(f"storage.{field}", "only used with an s3:// uri; remove it")
        if storage.endpoint and not re.match(r"^https?://[^\s/]+(/\S*)?$", storage.endpoint):
            add("storage.endpoint", "use an http(s):// URL, e.g. http://minio:9000")
    return issues


def data_task(spec: JobSpec) -> str:
    """The task whose data a run of ``spec`` reads: its own, or for a classical run its
    method's family (a CRF reads NER's words and tags, a lead baseline seq2seq's texts)."""
    if spec.task == "classical":
        return CLASSICAL_FAMILIES[spec.classical.method]
    return spec.task


def is_set(model: BaseModel, path: str) -> bool:
    """Whether ``path`` (dotted, under ``model``) was written, to something but its default."""
    *sections, name = path.split(".")
    node: Any = model
    for part in sections:
        node = getattr(node, part, None)
        if node is None:
            return False
    if not isinstance(node, BaseModel) or name not in node.model_fields_set:
        return False
    default = type(node).model_fields[name].get_default(call_default_factory=True)
    return bool(getattr(node, name) != default)


def task_readers(path: str) -> frozenset[str] | None:
    """The tasks that read ``path`` or the fields under it; None for a field every task reads.

    A path inside a listed field (``prompt.template``) belongs to it; a section above listed
    fields (``generation``) is read by any task that reads one of them.
    """
    found: set[str] = set()
    for field, tasks in FIELD_TASKS.items():
        if path == field or path.startswith(field + "."):
            return tasks
        if field.startswith(path + "."):
            found |= tasks
    return frozenset(found) if found else None


def unused_message(tasks: set[str] | frozenset[str], readers: frozenset[str]) -> str:
    """What to say about a field that none of ``tasks`` reads (``readers`` read it)."""
    used = ", ".join(t for t in TASKS if t in readers)
    if len(tasks) == 1:
        return f"task {next(iter(tasks))} does not use it (only {used}); remove it"
    swept = ", ".join(t for t in TASKS if t in tasks)
    return f"none of the swept tasks ({swept}) uses it (only {used}); remove it"


def unused_fields(spec: JobSpec, tasks: set[str]) -> list[tuple[Loc, str]]:
    """A problem for each field of :data:`FIELD_TASKS` that ``spec`` sets and none of
    ``tasks`` reads."""
    return [
        (tuple(field.split(".")), unused_message(tasks, readers))
        for field, readers in FIELD_TASKS.items()
        if not readers & tasks and is_set(spec, field)
    ]


def drop_unused(data: dict[str, Any], task: str, keep: tuple[str, ...] = ()) -> None:
    """Remove from raw spec data each field that ``task`` does not read (a run of a sweep
    over task), except those under a path in ``keep``."""
    for field, readers in FIELD_TASKS.items():
        if task in readers or any(field == k or field.startswith(k + ".") for k in keep):
            continue
        *sections, name = field.split(".")
        node: Any = data
        for part in sections:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(name, None)


# --- errors: pydantic → one line each ------------------------------------------------------

#: Names users bring from elsewhere (transformers, peft, other tools) → ours.
SYNONYMS = {
    "lr": "learning_rate",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "evaluation_strategy": "eval_strategy",
    "warmup_ratio": "warmup_steps",
    "alpha": "lora_alpha",
    "dropout": "lora_dropout",
    "rank": "r",
    "gpu": "gpus",
    "mem": "memory",
    "nodeSelector": "node_selector",
    "priorityClassName": "priority_class",
    "fp16": "precision",
    "bf16": "precision",
    "scheduler": "lr_scheduler_type",
    "model_name_or_path": "name",
}
_CREDENTIAL_KEYS = re.compile(
    r"(^|_)(api_?key|access_?key(_id)?|secret(_access)?_?key|password|passwd|token|credentials?)$",
    re.IGNORECASE,
)


def _unwrap(annotation: Any) -> Any:
    """The model class inside Optional/list/dict/Annotated, if any."""
    origin = get_origin(annotation)
    if origin is None:
        return annotation
    for arg in get_args(annotation):
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def model_at(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class found at ``path`` inside JobSpec, or None (a dict, list or scalar)."""
    current: Any = JobSpec
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def did_you_mean(word: str, choices: list[str]) -> str | None:
    """The closest choice to ``word``, if one is close enough."""
    if word in SYNONYMS and SYNONYMS[word] in choices:
        return SYNONYMS[word]
    lowered = {c.lower(): c for c in choices}
    matches = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[matches[0]] if matches else None


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def dotted(loc: Loc) -> str:
    """``('resources', 'tolerations', 0, 'effect')`` → ``resources.tolerations[0].effect``.

    Keys that are not plain names (dots, spaces, line breaks) are shown quoted in brackets,
    so every path stays on one line and means one thing.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.match(part):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


def _real_loc(loc: tuple[Any, ...], kind: str) -> Loc:
    """Cut pydantic's union-branch tags (``str``, ``list[...]``) out of an error location."""
    current: Any = JobSpec
    out: list[str | int] = []
    for index, part in enumerate(loc):
        if isinstance(part, int):
            out.append(part)
            continue
        model = _unwrap(current)
        if isinstance(model, type) and issubclass(model, BaseModel):
            if part in model.model_fields:
                out.append(part)
                current = model.model_fields[part].annotation
                continue
            if kind == "extra_forbidden" and index == len(loc) - 1:
                out.append(part)
            break
        if get_origin(current) is dict:
            out.append(part)
            current = get_args(current)[1] if get_args(current) else Any
            continue
        break
    return tuple(out)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _issue_from(error: Any) -> Issue:
    """Turn one pydantic error into a one-line issue that says what to change."""
    kind = error["type"]
    loc = _real_loc(tuple(error["loc"]), kind)
    value = error.get("input")
    message = str(error["msg"])
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent = model_at(loc[:-1])
        if _CREDENTIAL_KEYS.search(key):
            where = "tracking.wandb.secret" if "wandb" in loc else "storage.secret"
            return Issue(
                dotted(loc),
                "specs never hold credentials; put them in a Kubernetes Secret "
                f"and name it in {where}",
            )
        choices = list(parent.model_fields) if parent else []
        suggestion = did_you_mean(key, choices)
        hint = (
            f"; did you mean {suggestion!r}?"
            if suggestion
            else (f"; allowed: {', '.join(choices)}" if choices else "")
        )
        return Issue(dotted(loc), f"unknown key{hint}")
    if kind == "missing":
        return Issue(dotted(loc), "required; add it")
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        options = re.findall(r"'([^']*)'", expected)
        suggestion = did_you_mean(str(value), options) if isinstance(value, str) else None
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        return Issue(
            dotted(loc), f"must be one of {', '.join(options)} (got {_short(value)}){hint}"
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return Issue(dotted(loc), f"must be a mapping of keys to values (got {_short(value)})")
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
        return Issue(dotted(loc), message)
    message = message.replace("Input should be", "must be").replace("Input", "value")
    if not isinstance(value, (dict, list)):
        message += f" (got {_short(value)})"
    return Issue(dotted(loc), message)


# --- loading -------------------------------------------------------------------------------


def validate(data: Any, source: str | None = None, lines: dict[Any, int] | None = None) -> JobSpec:
    """Validate plain data as a JobSpec, reporting every problem at once.

    Raises:
        SpecError: listing each problem with its dotted path (and line, when known).
    """
    lines = lines or {}
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise SpecError(
            [Issue("", f"a job spec is a mapping of keys to values (got {kind})")], source
        )
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise SpecError([Issue("", f"key {bad_keys[0]!r} must be a string; quote it")], source)
    issues: list[Issue] = []
    cause: ValidationError | None = None
    try:
        spec: JobSpec | None = JobSpec.model_validate(data)
    except ValidationError as exc:
        spec, cause = None, exc
        issues = _pydantic_issues(exc, lines)
    # The sweep block is checked whatever else is wrong, so every problem shows at once.
    block, tasks = _sweep_of(data)
    if spec is not None:
        problems = _cross_field_issues(spec, tasks)
        issues += [Issue(dotted(loc), message, _line(loc, lines)) for loc, message in problems]
    if block is not None:
        task = data.get("task") if isinstance(data.get("task"), str) else None
        for loc, message in block_issues(block, task, data):
            issues.append(Issue(sweep_path(loc), message, _line(loc, lines)))
    if issues or spec is None:
        raise SpecError(issues, source) from cause
    return spec


# --- the sweep block: its problems, found when the spec loads ------------------------------

#: Most runs a sweep may expand to.
MAX_POINTS = 10_000


def sweep_path(loc: Loc) -> str:
    """``('sweep', 'points', 1, 'train.lr')`` → ``sweep.points[1].train.lr``: spec paths
    inside the block stay as written."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def block_issues(
    sweep: SweepSpec, task: str | None = None, data: dict[str, Any] | None = None
) -> list[tuple[Loc, str]]:
    """Every problem of the sweep block alone, with its location in the spec: paths that
    name no field, forms and bounds, values the field would refuse, a grid too large, and
    fields that no task of the sweep reads (``task``: the spec's own). Checked when a spec
    loads, beside the rest of its problems; rules that span fields wait for each point.
    ``data``: the raw spec, for the rules of a driven sweep that read the rest of it."""
    issues: list[tuple[Loc, str]] = []
    swept_tasks = None
    if "task" in sweep.parameters:
        swept_tasks = {t for t in sweep.parameters["task"].values or [] if isinstance(t, str)}
    for path, param in sweep.parameters.items():
        where: Loc = ("sweep", "parameters", path)
        problem = check_path(path)
        if problem:
            issues.append((where, problem))
            continue
        forms = [
            n
            for n in ("values", "uniform", "log_uniform", "int_uniform")
            if getattr(param, n) is not None
        ]
        if len(forms) != 1:
            issues.append((where, "give exactly one of values, uniform, log_uniform, int_uniform"))
            continue
        form = forms[0]
        if sweep.method == "grid" and form != "values":
            issues.append((where, f"{form} needs method random, tpe or cmaes; a grid takes values"))
        given = list(getattr(param, form))
        if form != "values" and given[0] >= given[1]:
            issues.append(((*where, form), f"low must be below high (got {given})"))
        elif form == "log_uniform" and given[0] <= 0:
            issues.append(((*where, form), "log_uniform bounds must be positive"))
        else:
            for index, value in enumerate(given):
                problem = check_value(path, value)
                if problem:
                    issues.append(((*where, form, index), problem))
        readers = task_readers(path)
        tasks = swept_tasks or ({task} if task else set())
        if readers is not None and tasks and not readers & tasks:
            issues.append((where, unused_message(tasks, readers)))
    if sweep.method == "list":
        if sweep.parameters:
            issues.append((("sweep", "parameters"), "method list takes points, not parameters"))
        if not sweep.points:
            issues.append((("sweep", "points"), "method list needs at least one point"))
        for index, point in enumerate(sweep.points):
            if not point:
                issues.append(
                    (("sweep", "points", index), "an empty point; give path: value pairs")
                )
            point_task = point.get("task", task)
            for path, value in point.items():
                at: Loc = ("sweep", "points", index, str(path))
                problem = check_path(str(path)) or check_value(str(path), value)
                readers = task_readers(str(path))
                if (
                    not problem
                    and value is not None
                    and readers is not None
                    and isinstance(point_task, str)
                    and point_task not in readers
                ):
                    problem = unused_message({point_task}, readers)
                if problem:
                    issues.append((at, problem))
    else:
        if sweep.points:
            issues.append((("sweep", "points"), f"points are for method list, not {sweep.method}"))
        if not sweep.parameters:
            issues.append((("sweep", "parameters"), "add at least one parameter to sweep over"))
    if sweep.method == "random" and sweep.max_runs is None:
        issues.append(
            (("sweep", "max_runs"), "method random needs max_runs (the number of samples)")
        )
    if sweep.method == "grid" and not issues:
        size = math.prod(len(p.values or ()) for p in sweep.parameters.values())
        limit = sweep.max_runs or MAX_POINTS
        if size > limit:
            name = "max_runs" if sweep.max_runs else f"the limit of {MAX_POINTS}"
            issues.append((("sweep",), f"grid has {size} points, over {name}; trim values"))
    issues += _condition_issues(sweep, data)
    issues += _driven_issues(sweep, task, data)
    return issues


def _condition_issues(sweep: SweepSpec, data: dict[str, Any] | None) -> list[tuple[Loc, str]]:
    """``when`` of each parameter: it names other parameters swept by values, with values
    they take, without a cycle; a parameter that no point could set is an error."""
    issues: list[tuple[Loc, str]] = []
    for path, param in sweep.parameters.items():
        if not param.when:
            continue
        where: Loc = ("sweep", "parameters", path, "when")
        for other, wanted in param.when.items():
            at: Loc = (*where, other)
            parent = sweep.parameters.get(other)
            options = wanted if isinstance(wanted, list) else [wanted]
            if other == path:
                issues.append((at, "a parameter cannot depend on itself"))
            elif parent is None:
                if data is None:
                    continue  # the rest of the spec is not at hand: checked when it loads
                have = get_path(data, other) if check_path(other) is None else None
                if not any(same_value(have, o) for o in options):
                    issues.append(
                        (
                            at,
                            f"{other} is not swept and is {have!r} in the spec, so {path} is "
                            "never swept; sweep it by values or drop when",
                        )
                    )
            elif parent.values is None:
                issues.append((at, f"{other} is not swept by values; when compares values"))
            elif not any(same_value(v, o) for v in parent.values for o in options):
                issues.append(
                    (
                        at,
                        f"{other} never takes {wanted!r} (its values: {parent.values!r}), so "
                        f"{path} is never swept",
                    )
                )
    if not issues and _has_cycle(sweep):
        issues.append((("sweep", "parameters"), "when conditions form a cycle; break it"))
    return issues


def same_value(a: Any, b: Any) -> bool:
    """Values compared as JSON (1 and 1.0 alike, {} and {} alike)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or (
        isinstance(a, int | float) and isinstance(b, int | float) and a == b
    )


def _has_cycle(sweep: SweepSpec) -> bool:
    state: dict[str, int] = {}

    def visit(path: str) -> bool:
        if state.get(path) == 1:
            return True
        if state.get(path) == 2:
            return False
        state[path] = 1
        when = sweep.parameters[path].when or {}
        found = any(visit(o) for o in when if o in sweep.parameters)
        state[path] = 2
        return found

    return any(visit(p) for p in sweep.parameters)


def sweep_size(sweep: SweepSpec) -> int | None:
    """How many trials the sweep can have at most (None: bounded by its budget alone)."""
    if sweep.method == "list":
        return len(sweep.points)
    if sweep.method == "grid":
        return math.prod(len(p.values or ()) for p in sweep.parameters.values())
    return sweep.max_runs


def _driven_issues(
    sweep: SweepSpec, task: str | None, data: dict[str, Any] | None
) -> list[tuple[Loc, str]]:
    """The rules of search methods, pruners and budgets (those that read the rest of the
    spec only when ``data`` is given)."""
    issues: list[tuple[Loc, str]] = []
    whole = data is not None
    data = data or {}
    if sweep.method in ("tpe", "cmaes") and sweep.max_runs is None and sweep.budget is None:
        issues.append(
            (("sweep", "max_runs"), f"method {sweep.method} needs max_runs or a budget to end")
        )
    if (
        sweep.method == "cmaes"
        and sweep.parameters
        and all(p.values is not None for p in sweep.parameters.values())
    ):
        issues.append(
            (
                ("sweep", "method"),
                "cmaes searches numbers: give a parameter uniform, "
                "log_uniform or int_uniform, or use method tpe",
            )
        )
    if sweep.method == "list" and any(p.when for p in sweep.parameters.values()):
        issues.append((("sweep", "parameters"), "when is for parameters, not list points"))
    train: dict[str, Any] = data["train"] if isinstance(data.get("train"), dict) else {}
    resources: dict[str, Any] = data["resources"] if isinstance(data.get("resources"), dict) else {}
    pruner = sweep.pruner
    if pruner is not None:
        size = sweep_size(sweep)
        needed = pruner.startup_trials + 1 if pruner.type == "median" else pruner.reduction_factor
        if size is not None and size <= needed:
            what = {"grid": "a grid of", "list": "a list of"}.get(sweep.method, "max_runs:")
            unit = " points" if sweep.method in ("grid", "list") else ""
            rule = (
                f"stops nothing until {pruner.startup_trials} trials finished"
                if pruner.type == "median"
                else f"keeps the top 1/{pruner.reduction_factor} of the trials at each rung"
            )
            issues.append(
                (
                    ("sweep", "pruner"),
                    f"{what} {size}{unit} leaves {pruner.type} nothing to stop (it {rule}); "
                    f"sweep more than {needed} points or drop the pruner",
                )
            )
        if task == "zero-shot":
            issues.append((("sweep", "pruner"), "zero-shot runs do not train; drop the pruner"))
        if whole and train.get("eval_strategy", "epoch") == "no":
            issues.append(
                (
                    ("sweep", "pruner"),
                    "a pruner stops trials at their evaluations: set "
                    "train.eval_strategy to steps or epoch",
                )
            )
        if (
            pruner.type == "hyperband"
            and pruner.max_evals is not None
            and pruner.max_evals < pruner.min_evals * pruner.reduction_factor
        ):
            issues.append(
                (
                    ("sweep", "pruner", "max_evals"),
                    "hyperband needs max_evals of at least min_evals × reduction_factor",
                )
            )
    budget = sweep.budget
    if budget is not None:
        if budget.hours is None and budget.gpu_hours is None and budget.cpu_hours is None:
            issues.append(
                (("sweep", "budget"), "an empty budget: give hours, gpu_hours or cpu_hours")
            )
        gpus = resources.get("gpus", ResourcesSpec.model_fields["gpus"].default)
        swept = sweep.parameters.get("resources.gpus")
        some_gpus = (isinstance(gpus, int) and gpus > 0) or bool(
            swept and any(isinstance(v, int) and v > 0 for v in swept.values or ())
        )
        if whole and budget.gpu_hours is not None and not some_gpus:
            issues.append(
                (
                    ("sweep", "budget", "gpu_hours"),
                    "the runs use no GPU (resources.gpus is 0), "
                    "so there are no GPU-hours to count; give cpu_hours instead",
                )
            )
    objective = sweep.objective
    if objective.metric is not None and task in TASK_METRICS:
        section = (data or {}).get("data")
        multi = isinstance(section, dict) and section.get("multi_label") is True
        classical = (data or {}).get("classical")
        method = classical.get("method") if isinstance(classical, dict) else None
        known = (*metrics_of(task, multi, method if isinstance(method, str) else None), "loss")
        if objective.metric.removeprefix("eval_") not in known:
            issues.append(
                (
                    ("sweep", "objective", "metric"),
                    f"{task} runs report {', '.join(known)}; not {objective.metric}",
                )
            )
    return issues


def _sweep_of(data: dict[str, Any]) -> tuple[SweepSpec | None, set[str] | None]:
    """The spec's sweep block, when it is well-formed, and every task its runs have
    (None when the sweep does not vary the task)."""
    raw = data.get("sweep")
    if not isinstance(raw, dict):
        return None, None
    try:
        block = SweepSpec.model_validate(raw)
    except ValidationError:
        return None, None  # its own problems are among the spec's
    if "task" in block.parameters:
        swept = list(block.parameters["task"].values or [])
    elif any("task" in point for point in block.points):
        swept = [point.get("task", data.get("task")) for point in block.points]
    else:
        return block, None
    tasks = {t for t in swept if isinstance(t, str) and t in TASKS}
    return block, tasks or None


def _line(loc: Loc, lines: dict[Any, int]) -> int | None:
    """The line of ``loc``, or of its nearest enclosing key that has one."""
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc)


_GOT = re.compile(r" \(got .*\)$")


def _pydantic_issues(exc: ValidationError, lines: dict[Any, int]) -> list[Issue]:
    """One issue per path: the branches of a union failing together read as one message."""
    grouped: dict[str, list[Issue]] = {}
    locs: dict[str, Loc] = {}
    for error in exc.errors(include_url=False):
        issue = _issue_from(error)
        grouped.setdefault(issue.path, []).append(issue)
        locs[issue.path] = _real_loc(tuple(error["loc"]), error["type"])
    return [
        Issue(path, _joined([i.message for i in found]), _line(locs[path], lines))
        for path, found in grouped.items()
    ]


def _joined(messages: list[str]) -> str:
    """The messages of one path as one: a union's failing branches read as alternatives."""
    message = messages[0]
    if len(messages) > 1:
        got = _GOT.search(message)
        wants = [_GOT.sub("", m).removeprefix("must be ") for m in messages]
        unique = list(dict.fromkeys(wants))
        joined = unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " or " + unique[-1]
        message = f"must be {joined}{got.group(0) if got else ''}"
    return message


def loads(text: str, source: str | None = None) -> JobSpec:
    """Parse and validate a job spec from YAML text."""
    data, lines = _yaml.load(text, source)
    return validate(data, source, lines)


def load_raw(path: str | Path) -> tuple[dict[str, Any], dict[Any, int]]:
    """Read a spec file as plain data (for overrides before validation)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError([Issue("", "no such file")], source) from exc
    except UnicodeDecodeError as exc:
        raise SpecError([Issue("", "not UTF-8 text")], source) from exc
    except OSError as exc:
        raise SpecError([Issue("", exc.strerror or str(exc))], source) from exc
    data, lines = _yaml.load(text, source)
    if not isinstance(data, dict):
        validate(data, source)  # raises with the right message
    return data, lines


def load(path: str | Path) -> JobSpec:
    """Load and validate a job spec file."""
    data, lines = load_raw(path)
    return validate(data, str(path), lines)


def dump(spec: JobSpec, *, defaults: bool = True) -> str:
    """The spec as YAML in field order, for humans and the trainer.

    ``defaults=False`` writes only what differs from the defaults (:func:`explicit`): what
    a cluster manifest carries, so that a kubetune release adding a defaulted field changes
    neither an immutable ConfigMap nor what an older trainer image can read.
    A resolved run has no sweep, so its block is left out rather than written as null.
    libyaml's dumper when available: it is ~10× faster, which large sweeps notice.
    """
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    if defaults:
        data = spec.model_dump(mode="json", exclude={"sweep"} if spec.sweep is None else None)
    else:
        data = explicit(spec)
    text: str = yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True)
    return text


def explicit(spec: JobSpec) -> dict[str, Any]:
    """The spec as plain data, without any field whose value equals its default.

    Nested sections are compared field by field (a section left at its defaults vanishes;
    ``lora: {}`` stays, since its default is None), and a value written out that equals the
    default counts as not written. So a release that adds a field with a default leaves
    this, and the run ids hashed from it, unchanged. Changing an existing default does not
    re-key runs either: that is a behaviour change, and it belongs in the release notes.
    """
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    return data


def canonical_json(spec: JobSpec) -> str:
    """A byte-stable serialisation of what the spec sets (:func:`explicit`): the input of
    spec hashes and run ids."""
    return json.dumps(explicit(spec), sort_keys=True, separators=(",", ":"))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a job spec (committed at schema/jobspec.schema.json)."""
    schema = JobSpec.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://kubetune.dev/schema/jobspec.schema.json",
        **schema,
    }


# --- dotted paths (sweeps and --set) -------------------------------------------------------


def check_path(path: str) -> str | None:
    """None if ``path`` names a spec field, else a message saying what to change."""
    parts = path.split(".")
    current: type[BaseModel] | None = JobSpec
    walked: list[str] = []
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if current is None:
            # Inside a free-form mapping (node_selector, affinity): any key is fine.
            return None
        fields = list(current.model_fields)
        if part not in fields:
            suggestion = did_you_mean(part, fields)
            where = ".".join(walked) or "the spec"
            hint = f"; did you mean {'.'.join([*walked, suggestion])!r}?" if suggestion else ""
            return f"{where} has no field {part!r}{hint}"
        if part == "sweep" and not walked:
            return "a sweep cannot set the sweep block"
        annotation = current.model_fields[part].annotation
        inner = _unwrap(annotation)
        walked.append(part)
        if get_origin(annotation) is list and not last:
            return f"{'.'.join(walked)} is a list; set it whole"
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            current = inner
        elif get_origin(annotation) is dict or annotation is dict:
            current = None
        elif not last:
            return f"{'.'.join(walked)} is a value, not a section"
        else:
            current = None
    return None


@functools.lru_cache(maxsize=256)
def _field_adapter(path: str) -> TypeAdapter[Any] | None:
    """A validator of the field at ``path`` alone (None inside a free-form mapping)."""
    current: type[BaseModel] = JobSpec
    parts = path.split(".")
    for position, part in enumerate(parts):
        info = current.model_fields[part]
        inner = _unwrap(info.annotation)
        if position == len(parts) - 1:
            kind: Any = info.annotation
            if info.metadata:
                kind = Annotated[(kind, *info.metadata)]
            return TypeAdapter(kind, config=ConfigDict(allow_inf_nan=False))
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return None
        current = inner
    return None


def check_value(path: str, value: Any) -> str | None:
    """None if ``value`` is valid for the field at ``path`` (a valid :func:`check_path`),
    else what is wrong with it, in the words of a spec error. Rules that span fields are
    not checked: they need the whole spec."""
    adapter = _field_adapter(path)
    if adapter is None:
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        parts: Loc = tuple(path.split("."))
        grouped: dict[str, list[str]] = {}
        for error in exc.errors(include_url=False):
            issue = _issue_from({**error, "loc": (*parts, *error["loc"])})
            grouped.setdefault(issue.path, []).append(issue.message)
        return "; ".join(
            _joined(found) if where == path else f"{where}: {_joined(found)}"
            for where, found in grouped.items()
        )
    return None


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path in raw spec data, creating sections on the way."""
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def get_path(data: dict[str, Any], path: str) -> Any:
    """Read a dotted path from plain data (None where absent)."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
