"""Sequence to sequence (summarization, translation, any text → text), scored by generating.

The model is any ``AutoModelForSeq2SeqLM`` checkpoint (T5, BART, mT5, …) or, with
``model.decoder``, an ``EncoderDecoderModel`` warm-started from two checkpoints: bert2bert from
BERT encoders, say. The warm-started decoder gains cross-attention layers that start at random
and are learnt from scratch, so it needs more steps than a pretrained seq2seq model.

Inputs are ``data.source_prefix`` + the source, truncated to ``data.max_length`` tokens; targets
are truncated to ``data.max_target_length`` (``tokenizer(text_target=…)``), and
DataCollatorForSeq2Seq pads labels with -100 so the loss skips padding. For a warm-started
model the labels drop the tokenizer's leading [CLS]/<s> (the decoder starts from it anyway)
and always end with [SEP]/</s>, so the decoder learns where to stop.

Evaluation generates (the runner's Seq2SeqTrainer with ``predict_with_generate``) under
``spec.generation``, which replaces the checkpoint's own decoding settings in the model's
generation_config, so final/ generates the same way. Scores: ROUGE-1/2/L/Lsum, BLEU and chrF
(:func:`kubetune.train.metrics.generation_metrics`, 0–100) and ``gen_len``, the mean number
of generated tokens that are not special tokens or padding.

References: during training the Trainer holds only token ids, so eval scores compare with the
references decoded from the (truncated) labels. The final eval and test scores in metrics.json
are computed against the raw target text, the ``reference`` of each row in predictions.jsonl,
so the two files agree and a target longer than ``max_target_length`` is scored whole.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    DataCollatorForSeq2Seq,
    EncoderDecoderModel,
    EvalPrediction,
    GenerationConfig,
)

from kubetune.errors import ConfigError
from kubetune.headline import headline
from kubetune.spec import GenerationSpec, JobSpec
from kubetune.train import metrics
from kubetune.train.data import Splits, require_columns
from kubetune.train.pretrained import from_pretrained, load_config, resolve_model_path
from kubetune.train.task import FINAL_METRICS, Task, pad_multiple

PEFT_TASK = "SEQ_2_SEQ_LM"
IGNORE = -100


def build(spec: JobSpec, splits: Splits, tokenizer: Any, model_path: str) -> Task:
    """Tokenise sources and targets, load (or warm-start) the model, set its decoding."""
    d = spec.data
    fields = {"source_column": d.source_column, "target_column": d.target_column}
    require_columns(splits, fields)
    require_text(splits, fields)
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"model.name: the tokenizer of {spec.model.name} has no pad token")
    model = load_model(spec, tokenizer, model_path)
    model.generation_config = generation_config(model, spec.generation)
    # A warm-started decoder's labels are rewritten; a seq2seq checkpoint's are its tokenizer's.
    # Also when model.name is a saved warm start (final/ of an earlier bert2bert run): it
    # decodes from [CLS] just the same, so its labels must not begin with one.
    warm = spec.model.decoder is not None or model.config.model_type == "encoder-decoder"
    start, end = model.config.decoder_start_token_id, model.config.eos_token_id

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        sources = [d.source_prefix + text for text in batch[d.source_column]]
        enc = tokenizer(sources, truncation=True, max_length=d.max_length)
        targets = tokenizer(
            text_target=batch[d.target_column],
            truncation=True,
            max_length=d.max_target_length + 1 if warm else d.max_target_length,
        )["input_ids"]
        if warm:
            targets = [decoder_labels(ids, start, end, d.max_target_length) for ids in targets]
        enc["labels"] = targets
        return dict(enc)

    def tokenize(data: Dataset) -> Dataset:
        return data.map(encode, batched=True, remove_columns=data.column_names)

    special = np.array(sorted(set(tokenizer.all_special_ids)))

    def decode(ids: np.ndarray) -> list[str]:
        ids = np.where(ids == IGNORE, tokenizer.pad_token_id, ids)
        return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def scores(ids: np.ndarray, references: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = metrics.generation_metrics(decode(ids), references)
        out["gen_len"] = float((~np.isin(ids, special) & (ids != IGNORE)).sum(axis=1).mean())
        return out

    def compute_metrics(pred: EvalPrediction) -> dict[str, Any]:
        ids = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return scores(np.asarray(ids), decode(np.asarray(pred.label_ids)))

    def predictions(
        raw: Dataset, ids: np.ndarray, model: Any
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        generated = decode(ids)
        sources, references = raw[d.source_column], raw[d.target_column]
        keys = raw["id"] if "id" in raw.column_names else range(len(raw))
        rows = [
            {"id": key, "source": source, "reference": reference, "generated": text}
            for key, source, reference, text in zip(
                keys, sources, references, generated, strict=True
            )
        ]
        # Scored against the raw target text (see the module docstring).
        return rows, {FINAL_METRICS: scores(ids, list(references))}

    return Task(
        model=model,
        labels=[],
        tokenized={split: tokenize(data) for split, data in splits.present().items()},
        # With the model, the collator also builds decoder_input_ids from the labels, which
        # label smoothing needs (the Trainer then takes the labels away from the model).
        collator=DataCollatorForSeq2Seq(
            tokenizer, model=model, label_pad_token_id=IGNORE, pad_to_multiple_of=pad_multiple()
        ),
        compute_metrics=compute_metrics,
        predictions=predictions,
        default_metric=headline("seq2seq").metric,
        peft_task=PEFT_TASK,
        generate=True,
    )


def require_text(splits: Splits, fields: dict[str, str]) -> None:
    """Every source and target is a string: a missing one would otherwise train as "None"."""
    for split, data in splits.present().items():
        for field_name, column in fields.items():
            for row, value in enumerate(data[column]):
                if not isinstance(value, str):
                    raise ConfigError(
                        f"data.{field_name}: row {row} of the {split} data has "
                        f"{type(value).__name__} in column {column!r}, not text"
                    )


def decoder_labels(ids: list[int], start: int, end: int, max_length: int) -> list[int]:
    """Labels of a warm-started decoder: the text's tokens without a leading ``start``,
    cut to leave room for ``end``, then ``end``."""
    body = ids[1:] if ids[:1] == [start] else ids
    if body[-1:] == [end]:
        body = body[:-1]
    return [*body[: max_length - 1], end]


def load_model(spec: JobSpec, tokenizer: Any, model_path: str) -> Any:
    """The seq2seq checkpoint at ``model_path``, or an encoder-decoder warm-started from it
    and ``model.decoder``."""
    if spec.model.decoder is not None:
        return warm_start(spec, tokenizer, model_path)
    config = load_config(spec, model_path)
    if not getattr(config, "is_encoder_decoder", False):
        raise ConfigError(
            f"model.name: {spec.model.name} is a {config.model_type} checkpoint, not an "
            "encoder-decoder; set model.decoder to warm-start one from it (e.g. bert2bert)"
        )
    return from_pretrained(AutoModelForSeq2SeqLM, spec, model_path)


def warm_start(spec: JobSpec, tokenizer: Any, model_path: str) -> Any:
    """An EncoderDecoderModel from ``model.name`` (encoder) and ``model.decoder``.

    Both halves load through :func:`~kubetune.train.pretrained.from_pretrained`, so
    ``model.config_overrides`` apply to each (a key must exist in both configs) and 4-bit
    loading to both. ``model.revision`` pins ``model.name``; the decoder uses it too only when
    it is the same checkpoint. The special tokens are set for the encoder's tokenizer, which
    also tokenises the targets: the decoder starts from [CLS] (or <s>) and stops at [SEP] (or
    </s>), pads with [PAD].
    """
    assert spec.model.decoder is not None
    try:
        decoder_path = resolve_model_path(spec.model.decoder)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("model.name:", "model.decoder:", 1)) from exc
    decoder_spec = spec
    if decoder_path != model_path:
        unpinned = spec.model.model_copy(update={"revision": None})
        decoder_spec = spec.model_copy(update={"model": unpinned})

    start = first_id(tokenizer, "bos_token_id", "cls_token_id")
    end = first_id(tokenizer, "eos_token_id", "sep_token_id")
    if start is None or end is None:
        raise ConfigError(
            f"model.name: the tokenizer of {spec.model.name} has no start token (bos or cls) "
            "or no end token (eos or sep) to begin and end the decoder's text with"
        )
    encoder = from_pretrained(AutoModel, spec, model_path)
    try:
        decoder = from_pretrained(
            AutoModelForCausalLM,
            decoder_spec,
            decoder_path,
            is_decoder=True,
            add_cross_attention=True,
        )
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        raise ConfigError(
            f"model.decoder: {spec.model.decoder} has no decoder (causal-LM) form in transformers"
        ) from exc
    vocab = decoder.config.vocab_size
    if vocab != encoder.config.vocab_size:
        raise ConfigError(
            f"model.decoder: its vocabulary ({vocab} tokens) is not model.name's "
            f"({encoder.config.vocab_size}); model.name's tokenizer tokenises the targets too, "
            "so the decoder must share it"
        )
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(
        encoder_model=encoder, decoder_model=decoder
    )
    model.config.decoder_start_token_id = start
    model.config.bos_token_id = start
    model.config.eos_token_id = end
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.vocab_size = vocab
    return model


def first_id(tokenizer: Any, *names: str) -> int | None:
    """The first of the tokenizer's special-token ids ``names`` that it has."""
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return None


def generation_config(model: Any, generation: GenerationSpec) -> GenerationConfig:
    """A fresh GenerationConfig: the spec's decoding, the model's special tokens.

    The checkpoint's own decoding settings (bart-large-cnn's beam search with min_length 56
    and length_penalty 2, say) are dropped, so a run generates as its spec says; kept beside
    greedy decoding they would also stop the config from saving (transformers refuses a
    greedy config with beam-only settings, as the spec refuses length_penalty without beams).
    """
    old, config = model.generation_config, model.config

    def token(name: str) -> Any:
        value = getattr(old, name, None)
        return value if value is not None else getattr(config, name, None)

    return GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=generation.max_new_tokens,
        min_new_tokens=generation.min_new_tokens or None,
        num_beams=generation.num_beams,
        length_penalty=generation.length_penalty,
        no_repeat_ngram_size=generation.no_repeat_ngram_size,
        decoder_start_token_id=token("decoder_start_token_id"),
        bos_token_id=token("bos_token_id"),
        eos_token_id=token("eos_token_id"),
        pad_token_id=token("pad_token_id"),
        # Multilingual checkpoints (mBART, NLLB) force the target language's token first.
        forced_bos_token_id=token("forced_bos_token_id"),
        forced_eos_token_id=token("forced_eos_token_id"),
    )
