"""Causal language modelling: plain text, or prompt/completion pairs with the loss on the
completion only.

Data shapes (``spec.data``):

- plain text in ``text_column``: every token is a label. EOS is appended when the text fits in
  ``max_length`` (a text cut short did not end, so it gets no EOS).
- prompt/completion (``prompt_column`` set): the prompt is tokenised with the tokenizer's
  special tokens (or rendered by a chat template as one user message with the generation
  prompt, whose text carries its own special tokens), the completion without them and
  followed by EOS, so the model learns where an answer stops. Prompt tokens are labelled -100.
  The two halves are tokenised apart, as generation sees them: the prompt's tokens, then the
  model's. Pairs longer than ``max_length`` are cut on the right.

Packing (``data.packing``) concatenates the tokenised training examples and cuts blocks of
exactly ``max_length`` tokens (labels keep their prompt masks; the tail shorter than a block is
dropped, per 1,000 examples, as transformers' run_clm does). Only train is packed: eval and
test keep one row per example, so their loss is comparable with or without packing and
predictions.jsonl pairs each example with its own loss.

Metrics: the Trainer's loss, ``perplexity = exp(loss)`` (:func:`derived_metrics`) and
``token_accuracy``, the share of labelled tokens whose next-token argmax is right.
:func:`token_scores` reduces each batch's logits to two numbers per position before the
Trainer gathers them, so a vocabulary-wide tensor never piles up over the eval set.

Predictions: one row per example with its own loss and perplexity; the first
``generation.samples`` rows also get a greedy (or beam) sample generation beside the
reference. For plain text the prompt is the first half of the words (at least one) and the
reference the rest, cut so that ``prompt + reference == text``; an empty text has nothing to
continue and gets no generation. Prompts are left-padded in batches of ``eval_batch_size``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, EvalPrediction

from kubetune.errors import ConfigError
from kubetune.headline import headline
from kubetune.spec import DataSpec, GenerationSpec, JobSpec
from kubetune.train.data import Splits, require_columns
from kubetune.train.pretrained import from_pretrained
from kubetune.train.task import Task, pad_multiple

PEFT_TASK = "CAUSAL_LM"
IGNORE = -100
#: Examples concatenated per packing batch; at most one partial block is dropped per batch.
PACK_BATCH = 1000


# --- tokenizer and prompts -----------------------------------------------------------------


def prepare_tokenizer(tokenizer: Any, chat_template: str | None) -> None:
    """EOS doubles as padding where the tokenizer has no pad token (GPT-2); padding goes on
    the left, which batched generation needs (training pads on its own, see
    :class:`Collator`); a chat template from the spec is installed on the tokenizer, so
    final/ carries it."""
    if tokenizer.eos_token_id is None:
        raise ConfigError(
            "model.name: this tokenizer has no EOS token; causal-lm needs one to end "
            "completions and to pad"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if chat_template == "tokenizer":
        if not tokenizer.chat_template:
            raise ConfigError(
                "data.chat_template: the tokenizer of model.name has no chat template; "
                "give a Jinja2 chat template instead of 'tokenizer'"
            )
    elif chat_template is not None:
        tokenizer.chat_template = chat_template


def render_prompts(tokenizer: Any, prompts: list[str]) -> list[str]:
    """Each prompt as a user message in the tokenizer's chat template, ready for the answer."""
    import jinja2

    conversations = [[{"role": "user", "content": p}] for p in prompts]
    try:
        rendered = tokenizer.apply_chat_template(
            conversations, tokenize=False, add_generation_prompt=True
        )
    except (jinja2.TemplateError, ValueError, TypeError) as exc:
        raise ConfigError(f"data.chat_template: rendering failed: {exc}") from exc
    for prompt, text in zip(prompts, rendered, strict=True):
        if prompt.strip() not in text:
            raise ConfigError(
                "data.chat_template: the template drops the message text; render each "
                "message's content (message['content'])"
            )
    return list(rendered)


def prompt_ids(tokenizer: Any, prompts: list[str], chat: bool) -> list[list[int]]:
    """Token ids of prompts. Rendered chat prompts already hold their special tokens."""
    texts = render_prompts(tokenizer, prompts) if chat else prompts
    encoded: list[list[int]] = tokenizer(texts, add_special_tokens=not chat)["input_ids"]
    return encoded


def split_text(text: str) -> tuple[str, str]:
    """A plain text's sample prompt (its first half of words, at least one) and reference
    (the rest, with its leading space), so that ``prompt + reference == text``."""
    words = text.split()
    if not words:
        return "", text
    keep = max(1, len(words) // 2)
    end = 0
    for word in words[:keep]:
        end = text.index(word, end) + len(word)
    return text[:end], text[end:]


# --- tokenising ----------------------------------------------------------------------------


def encode_text(
    tokenizer: Any, texts: list[str], max_length: int | None
) -> dict[str, list[list[int]]]:
    """Plain text: every token a label, EOS appended where it fits (``None``: no limit)."""
    eos = tokenizer.eos_token_id
    rows: list[list[int]] = []
    for ids in tokenizer(texts)["input_ids"]:
        if not ids or ids[-1] != eos:
            ids = [*ids, eos]
        if max_length is not None and len(ids) > max_length:
            ids = ids[:max_length]
        rows.append(ids)
    return {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows], "labels": rows}


def encode_pairs(
    tokenizer: Any,
    prompts: list[str],
    completions: list[str],
    max_length: int | None,
    *,
    chat: bool,
) -> dict[str, list[list[int]]]:
    """Prompt then completion + EOS; only the completion and EOS carry labels."""
    eos = tokenizer.eos_token_id
    answers = tokenizer(completions, add_special_tokens=False)["input_ids"]
    out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for prompt, answer in zip(prompt_ids(tokenizer, prompts, chat), answers, strict=True):
        ids = [*prompt, *answer, eos]
        labels = [IGNORE] * len(prompt) + [*answer, eos]
        if max_length is not None:
            ids, labels = ids[:max_length], labels[:max_length]
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(labels)
    return out


def pack(batch: dict[str, list[list[int]]], block: int) -> dict[str, list[list[int]]]:
    """Concatenate examples and cut blocks of exactly ``block`` tokens (the tail is dropped)."""
    ids = list(chain.from_iterable(batch["input_ids"]))
    labels = list(chain.from_iterable(batch["labels"]))
    usable = len(ids) // block * block
    starts = range(0, usable, block)
    return {
        "input_ids": [ids[s : s + block] for s in starts],
        "attention_mask": [[1] * block for _ in starts],
        "labels": [labels[s : s + block] for s in starts],
    }


def tokenize(tokenizer: Any, data: Dataset, d: DataSpec, *, packed: bool) -> Dataset:
    """One split as model inputs; ``packed`` concatenates it into blocks (training only)."""
    limit = None if packed else d.max_length

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        if d.prompt_column is None:
            return encode_text(tokenizer, batch[d.text_column], limit)
        return encode_pairs(
            tokenizer,
            batch[d.prompt_column],
            batch[d.completion_column],
            limit,
            chat=d.chat_template is not None,
        )

    encoded = data.map(encode, batched=True, remove_columns=data.column_names)
    if not packed:
        return encoded
    blocks = encoded.map(
        lambda batch: pack(batch, d.max_length), batched=True, batch_size=PACK_BATCH
    )
    if len(blocks) == 0:
        tokens = sum(len(ids) for ids in encoded["input_ids"])
        raise ConfigError(
            f"data.packing: the train data holds {tokens} tokens, less than one block of "
            f"data.max_length={d.max_length}; lower max_length or turn packing off"
        )
    return blocks


@dataclass
class Collator:
    """Pads on the right: input ids with the pad token, attention with 0, labels with -100.

    Right padding keeps every example's positions starting at 0 in training whatever the
    tokenizer's padding side (left, for generation).
    """

    pad_token_id: int
    #: Pad each batch's length up to a multiple of this (task.pad_multiple: on a GPU).
    multiple: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE}
        return {
            key: torch.tensor(
                [list(f[key]) + [value] * (longest - len(f[key])) for f in features],
                dtype=torch.long,
            )
            for key, value in fill.items()
        }


# --- metrics -------------------------------------------------------------------------------


def token_scores(logits: Any, labels: torch.Tensor) -> torch.Tensor:
    """Per position t: ``[predicted id of token t, loss of token t]``, float32, B × T × 2.

    The prediction comes from the logits at t - 1 (argmax), the loss is the cross-entropy of
    the label at t; positions without a label (and t = 0, which nothing predicts) hold -100.
    Both halves travel in one array because the runner hands the predictor one array: the
    loss feeds per-row perplexity, the prediction token accuracy.
    """
    if isinstance(logits, tuple):
        logits = logits[0]
    targets = labels[:, 1:]
    shifted = logits[:, :-1, :]
    predicted = shifted.argmax(dim=-1).float()
    losses = torch.nn.functional.cross_entropy(
        shifted.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none"
    )
    unlabelled = targets == IGNORE
    predicted = predicted.masked_fill(unlabelled, IGNORE)
    losses = losses.masked_fill(unlabelled, IGNORE)
    first = torch.full_like(predicted[:, :1], IGNORE)
    return torch.stack(
        [torch.cat([first, predicted], dim=1), torch.cat([first, losses], dim=1)], dim=-1
    )


def token_accuracy(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Share of labelled tokens whose next-token prediction is right."""
    scored = scores[..., 1] >= 0
    if not scored.any():
        return {}
    right = scores[..., 0][scored] == labels[scored]
    return {"token_accuracy": float(right.mean())}


def compute_metrics(pred: EvalPrediction) -> dict[str, Any]:
    scores = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return token_accuracy(np.asarray(scores), np.asarray(pred.label_ids))


def derived_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Perplexity from the Trainer's loss (mean token cross-entropy)."""
    loss = metrics.get("loss")
    if not isinstance(loss, (int, float)):
        return {}
    return {"perplexity": perplexity(float(loss))}


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def row_losses(scores: np.ndarray) -> list[tuple[float | None, int]]:
    """Each row's mean token loss (None without labelled tokens) and its labelled tokens."""
    out: list[tuple[float | None, int]] = []
    for row in scores[..., 1]:
        labelled = row[row >= 0]
        out.append((float(labelled.mean()) if labelled.size else None, int(labelled.size)))
    return out


# --- generation ----------------------------------------------------------------------------


def _batches(items: list[list[int]], size: int) -> Iterator[list[list[int]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    settings: GenerationSpec,
    batch_size: int,
) -> list[str]:
    """Decode a continuation of each prompt (token ids), left-padded in batches."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    options: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "min_new_tokens": settings.min_new_tokens,
        "num_beams": settings.num_beams,
        "do_sample": False,
        "pad_token_id": pad,
        "eos_token_id": eos,
    }
    if settings.num_beams > 1:
        options["length_penalty"] = settings.length_penalty
    if settings.no_repeat_ngram_size:
        options["no_repeat_ngram_size"] = settings.no_repeat_ngram_size
    device = next(model.parameters()).device
    model.eval()
    texts: list[str] = []
    for chunk in _batches(prompts, batch_size):
        longest = max(len(p) for p in chunk)
        ids = [[pad] * (longest - len(p)) + p for p in chunk]
        mask = [[0] * (longest - len(p)) + [1] * len(p) for p in chunk]
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor(ids, device=device),
                attention_mask=torch.tensor(mask, device=device),
                **options,
            )
        texts += tokenizer.batch_decode(out[:, longest:], skip_special_tokens=True)
    return texts


def sample_prompts(
    tokenizer: Any, raw: Dataset, d: DataSpec, count: int
) -> tuple[list[str], list[str], list[list[int]]]:
    """The first ``count`` rows' prompts, references and prompt ids (as training saw them)."""
    if count == 0:
        return [], [], []
    head = raw.select(range(count))
    if d.prompt_column is not None:
        prompts = [str(p) for p in head[d.prompt_column]]
        references = [str(c) for c in head[d.completion_column]]
        ids = prompt_ids(tokenizer, prompts, d.chat_template is not None)
    else:
        halves = [split_text(str(text)) for text in head[d.text_column]]
        prompts = [prompt for prompt, _ in halves]
        references = [reference for _, reference in halves]
        ids = tokenizer(prompts)["input_ids"]
    return prompts, references, [list(p[: d.max_length]) for p in ids]


# --- the task ------------------------------------------------------------------------------


def build(spec: JobSpec, splits: Splits, tokenizer: Any, model_path: str) -> Task:
    """Tokenise the splits (packing train if asked) and load the causal LM."""
    d = spec.data
    if d.prompt_column is None:
        require_columns(splits, {"text_column": d.text_column})
    else:
        require_columns(
            splits,
            {"prompt_column": d.prompt_column, "completion_column": d.completion_column},
        )
    prepare_tokenizer(tokenizer, d.chat_template)
    tokenized = {
        split: tokenize(tokenizer, data, d, packed=d.packing and split == "train")
        for split, data in splits.present().items()
    }
    model = from_pretrained(AutoModelForCausalLM, spec, model_path)
    if getattr(model, "loss_type", None) is None:
        # transformers names a model's loss after its class; GPT-2's GPT2LMHeadModel matches
        # none, so the Trainer counts position 0 of every row as a target (it is not: labels
        # are shifted) and reports loss and perplexity ~5% low on short rows. The model falls
        # back to this very loss already; naming it makes the Trainer count right.
        model.loss_type = "ForCausalLM"
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    batch_size = spec.train.eval_batch_size or 2 * spec.train.batch_size

    def predictions(
        raw: Dataset, scores: np.ndarray, trained: Any
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        count = min(spec.generation.samples, len(raw))
        prompts, references, ids = sample_prompts(tokenizer, raw, d, count)
        usable = [i for i in range(count) if ids[i]]  # an empty text has nothing to continue
        generated = generate(
            trained, tokenizer, [ids[i] for i in usable], spec.generation, batch_size
        )
        samples = {
            i: {"prompt": prompts[i], "reference": references[i], "generation": text}
            for i, text in zip(usable, generated, strict=True)
        }
        names = raw["id"] if "id" in raw.column_names else range(len(raw))
        rows = []
        for i, (name, (loss, tokens)) in enumerate(zip(names, row_losses(scores), strict=True)):
            rows.append(
                {
                    "id": name,
                    **samples.get(i, {}),
                    "loss": loss,
                    "perplexity": None if loss is None else perplexity(loss),
                    "tokens": tokens,
                }
            )
        return rows, {}

    return Task(
        model=model,
        labels=[],
        tokenized=tokenized,
        collator=Collator(tokenizer.pad_token_id, pad_multiple()),
        compute_metrics=compute_metrics,
        predictions=predictions,
        default_metric=headline("causal-lm").metric,
        peft_task=PEFT_TASK,
        greater_is_better=headline("causal-lm").higher_is_better,
        preprocess_logits=token_scores,
        derived_metrics=derived_metrics,
    )
