"""Batched inference of a stored run's classifier or tagger over many texts, fast on a CPU.

What ``transformers.pipeline`` does per example, this does per corpus:

- every text is tokenized at once by the fast tokenizer (Rust, no padding);
- texts are sorted by length and cut into batches of about ``tokens`` tokens, each padded
  only to its own longest text, so almost no compute goes to padding (a pipeline pads a
  batch of articles in input order to the longest one among them);
- the model runs under ``torch.inference_mode``, in bfloat16 where the CPU or GPU computes
  it natively, and results go back in input order.

Classification gives each text its label, that label's probability and every label's
probability; token classification gives entity spans with character offsets (a word's
first sub-token decides its tag, as training labels it); seq2seq and causal-LM models give
the text they generate (:func:`generate`), batched by length the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kubetune import inference
from kubetune.errors import ConfigError
from kubetune.inference import Inference
from kubetune.predict.rows import label_row, labels_row

#: Tokens per batch (texts × padded length). On 2 CPU cores 4,096 beat 8,192 and 16,384
#: (bench_predict: smaller batches stay in cache, int8 ones most of all); GPUs want more.
TOKENS_PER_BATCH = 4_096
#: A question-answering model's windows and answers where its final/ does not say
#: (transformers' question-answering pipeline's defaults).
QA_STRIDE = 128
QA_MAX_ANSWER = 30


@dataclass(frozen=True)
class Loaded:
    """A model folder loaded for inference: the model, its tokenizer, its labels."""

    model: Any
    tokenizer: Any
    labels: list[str]
    task: str  # classification | ner | question-answering | seq2seq | causal-lm
    max_length: int
    #: final/kubetune.json: thresholds of a multi-label classifier, a long-document
    #: classifier's windows (None: a plain checkpoint, applied with the defaults).
    settings: Inference | None = None

    @property
    def multi_label(self) -> bool:
        if self.settings is not None and self.settings.multi_label:
            return True
        return getattr(self.model.config, "problem_type", None) == "multi_label_classification"


def load(
    folder: str, *, max_length: int | None = None, device: str | None = None, int8: bool = False
) -> Loaded:
    """The model of ``final/`` (a classifier, a token classifier, a seq2seq or causal LM) in
    eval mode; with ``int8`` (CPU only) its Linear layers dynamically quantized to int8,
    about twice as fast on a CPU without native bf16 (measured: 2.0× a pipeline, the same
    label on 300 of 300 BBC News articles)."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForQuestionAnswering,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    config = AutoConfig.from_pretrained(folder)
    task = family(config)
    auto = {
        "ner": AutoModelForTokenClassification,
        "question-answering": AutoModelForQuestionAnswering,
        "seq2seq": AutoModelForSeq2SeqLM,
        "causal-lm": AutoModelForCausalLM,
    }.get(task, AutoModelForSequenceClassification)
    model = auto.from_pretrained(folder).eval()
    if int8:
        import warnings

        with warnings.catch_warnings():
            # torch.ao's quantization API is deprecated in favour of torchao, not installed.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                model, {torch.nn.Linear}, dtype=torch.qint8
            )
    elif device:
        model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    settings = inference.read(folder)
    # The length the run trained and evaluated at (a long document's window), else all the
    # model reads.
    trained = settings.max_length if settings is not None else None
    limit = max_length or trained or min(tokenizer.model_max_length, _positions(config))
    if task == "causal-lm":
        # Rows are continued from their end: pad on the left so every row's last token is
        # the last position of the batch.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model, tokenizer, labels, task, limit, settings)


def _positions(config: Any) -> int:
    """Positions the model can read (an encoder-decoder's encoder's); 512 if it says none."""
    config = getattr(config, "encoder", None) or config
    for name in ("max_position_embeddings", "n_positions", "max_source_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 512


def family(config: Any) -> str:
    """The task family of a saved model's config: its architecture's head."""
    architectures = config.architectures or []
    if any("TokenClassification" in a for a in architectures):
        return "ner"
    if any("QuestionAnswering" in a for a in architectures):
        return "question-answering"
    if getattr(config, "is_encoder_decoder", False) or any(
        "ConditionalGeneration" in a for a in architectures
    ):
        return "seq2seq"
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "causal-lm"
    return "classification"


def fast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where the hardware computes it natively (a CUDA GPU that supports it, a CPU
    with AMX or AVX512-BF16); None (fp32) elsewhere, where emulated bf16 is slower."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        flags = _cpu_flags()
        if {"amx_bf16"} & flags or {"avx512_bf16"} & flags:
            return torch.bfloat16
    return None


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def batches(lengths: Sequence[int], tokens: int = TOKENS_PER_BATCH) -> Iterator[list[int]]:
    """Indices of texts in batches of about ``tokens`` padded tokens, shortest texts first.
    A batch's padded size is its count times its longest length (they are sorted)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    for index in order:
        longest = lengths[index]  # sorted: the newest is the longest
        if batch and (len(batch) + 1) * longest > tokens:
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def padded(rows: Sequence[Sequence[int]], fill: int, *, left: bool = False) -> torch.Tensor:
    """A batch's rows as one tensor, each padded with ``fill`` to the longest (on the left
    for a causal LM, whose rows are continued from their end)."""
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for number, row in enumerate(rows):
        if row:
            where = slice(width - len(row), width) if left else slice(0, len(row))
            out[number, where] = torch.tensor(row, dtype=torch.long)
    return out


def mask(lengths: Sequence[int], *, left: bool = False) -> torch.Tensor:
    """The attention mask of :func:`padded` rows of these lengths."""
    return padded([[1] * n for n in lengths], 0, left=left)


def predict(
    loaded: Loaded,
    texts: Sequence[str],
    *,
    tokens: int = TOKENS_PER_BATCH,
    bf16: bool | None = None,
) -> list[dict[str, Any]]:
    """One result per text, in order (see the module docstring)."""
    windows = loaded.settings.long_documents if loaded.settings is not None else None
    if loaded.task == "classification" and (windows is not None or loaded.multi_label):
        return classify(loaded, texts, tokens=tokens, bf16=bf16)
    tokenizer, model = loaded.tokenizer, loaded.model
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=loaded.max_length,
        return_offsets_mapping=loaded.task == "ner",
    )
    ids: list[list[int]] = encoded["input_ids"]
    lengths = [len(x) for x in ids]
    device = next(model.parameters()).device
    dtype = fast_dtype(device) if bf16 is None else (torch.bfloat16 if bf16 else None)
    results: list[dict[str, Any]] = [{} for _ in texts]
    pad = tokenizer.pad_token_id or 0
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
    ):
        for batch in batches(lengths, tokens):
            input_ids = padded([ids[i] for i in batch], pad)
            attention = mask([lengths[i] for i in batch])
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention.to(device)
            ).logits
            probs = logits.float().softmax(-1).cpu()
            for row, index in enumerate(batch):
                if loaded.task == "classification":
                    results[index] = label_row(loaded.labels, probs[row].tolist())
                else:
                    results[index] = {
                        "entities": _entities(
                            loaded.labels,
                            probs[row, : lengths[index]],
                            encoded.word_ids(index),
                            encoded["offset_mapping"][index],
                            texts[index],
                        )
                    }
    return results


def classify(
    loaded: Loaded,
    texts: Sequence[str],
    *,
    tokens: int = TOKENS_PER_BATCH,
    bf16: bool | None = None,
) -> list[dict[str, Any]]:
    """Labels of each text, in order, as its run evaluated them: a long text read whole in
    overlapping windows whose logits are joined (final/kubetune.json's long_documents), and
    a multi-label classifier's every label over its threshold."""
    tokenizer, model = loaded.tokenizer, loaded.model
    settings = loaded.settings
    windows = settings.long_documents if settings is not None else None
    extra: dict[str, Any] = {}
    if windows is not None:
        extra = {"stride": windows.stride, "return_overflowing_tokens": True}
    encoded = tokenizer(list(texts), truncation=True, max_length=loaded.max_length, **extra)
    ids: list[list[int]] = encoded["input_ids"]
    owner = list(range(len(ids)))
    if windows is not None:
        owner = list(encoded["overflow_to_sample_mapping"])
    keep = _first_windows(owner, windows.max_windows if windows is not None else None)
    lengths = [len(ids[i]) for i in keep]
    device = next(model.parameters()).device
    dtype = fast_dtype(device) if bf16 is None else (torch.bfloat16 if bf16 else None)
    logits = torch.zeros(len(keep), len(loaded.labels))
    pad = tokenizer.pad_token_id or 0
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
    ):
        for batch in batches(lengths, tokens):
            input_ids = padded([ids[keep[i]] for i in batch], pad)
            attention = mask([lengths[i] for i in batch])
            out = model(input_ids=input_ids.to(device), attention_mask=attention.to(device))
            logits[batch] = out.logits.float().cpu()
    joined = join_windows(
        logits, [owner[i] for i in keep], len(texts), windows.aggregate if windows else "first"
    )
    if not loaded.multi_label:
        return [label_row(loaded.labels, row.softmax(-1).tolist()) for row in joined]
    thresholds = inference.label_thresholds(settings, loaded.labels)
    return [labels_row(loaded.labels, row.tolist(), thresholds) for row in joined.sigmoid()]


def answer(
    loaded: Loaded,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    tokens: int = TOKENS_PER_BATCH,
    bf16: bool | None = None,
) -> list[dict[str, Any]]:
    """Each question's answer in its context, in order, as its run evaluated them (final/
    kubetune.json's doc_stride, max_answer_length, null_threshold): the context read in
    overlapping windows, the best span over all of them, or no answer (:mod:`qa_windows`).
    transformers 5 removed the question-answering pipeline; this is what it did, with the
    windows and span choice the run was scored with.

    Raises:
        ConfigError: a question that leaves its context no room in a window.
    """
    from kubetune.train import qa_windows

    settings, stride = loaded.settings, _qa_stride(loaded)
    problem = crowded_questions(loaded, questions)
    if problem is not None:
        raise ConfigError(problem)
    encoded = qa_windows.encode(
        loaded.tokenizer, questions, contexts, max_length=loaded.max_length, stride=stride
    )
    features = encoded.features
    lengths = [len(ids) for ids in features["input_ids"]]
    width = max(lengths, default=0)
    starts = np.full((len(lengths), width), -1e4, dtype=np.float32)
    ends = np.full((len(lengths), width), -1e4, dtype=np.float32)
    model = loaded.model
    device = next(model.parameters()).device
    dtype = fast_dtype(device) if bf16 is None else (torch.bfloat16 if bf16 else None)
    pad = loaded.tokenizer.pad_token_id or 0
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
    ):
        for batch in batches(lengths, tokens):
            inputs = {
                name: padded([rows[i] for i in batch], pad if name == "input_ids" else 0)
                for name, rows in features.items()
            }
            out = model(**{k: v.to(device) for k, v in inputs.items()})
            for row, index in enumerate(batch):
                n = lengths[index]
                starts[index, :n] = out.start_logits[row, :n].float().cpu().numpy()
                ends[index, :n] = out.end_logits[row, :n].float().cpu().numpy()
    found = qa_windows.best_answers(
        encoded.windows,
        starts,
        ends,
        contexts,
        max_answer_length=settings.max_answer_length
        if settings and settings.max_answer_length
        else QA_MAX_ANSWER,
        null_threshold=settings.null_threshold
        if settings and settings.null_threshold is not None
        else 0.0,
        allow_null=bool(settings.allow_null)
        if settings and settings.allow_null is not None
        else True,
    )
    return [
        {"answer": a.text, "start": a.start, "end": a.end, "score": round(a.score, 4)}
        for a in found
    ]


def _qa_stride(loaded: Loaded) -> int:
    settings = loaded.settings
    return settings.doc_stride if settings and settings.doc_stride else QA_STRIDE


def crowded_questions(loaded: Loaded, questions: Sequence[str]) -> str | None:
    """One line naming the first question too long to leave its context room in a window
    (more than the window overlap), or None: what :func:`answer` refuses."""
    from kubetune.train import qa_windows

    stride = _qa_stride(loaded)
    crowded = qa_windows.crowded_question(loaded.tokenizer, questions, loaded.max_length, stride)
    if crowded is None:
        return None
    index, room = crowded
    return (
        f"question {index + 1} leaves {room} of {loaded.max_length} tokens for its "
        f"context, not more than the window overlap ({stride}); shorten the question"
    )


def _first_windows(owner: Sequence[int], most: int | None) -> list[int]:
    """Indices of the windows to read: each text's first ``most`` (all when None)."""
    seen: dict[int, int] = {}
    keep = []
    for index, text in enumerate(owner):
        seen[text] = seen.get(text, 0) + 1
        if most is None or seen[text] <= most:
            keep.append(index)
    return keep


def join_windows(logits: torch.Tensor, owner: Sequence[int], texts: int, how: str) -> torch.Tensor:
    """One row of logits per text from its windows' rows (in order): their mean, their
    elementwise max, or the first window's."""
    out = torch.empty(texts, logits.shape[1])
    rows: dict[int, list[int]] = {}
    for index, text in enumerate(owner):
        rows.setdefault(text, []).append(index)
    for text, indices in rows.items():
        part = logits[indices]
        if how == "mean":
            out[text] = part.mean(0)
        elif how == "max":
            out[text] = part.max(0).values
        else:
            out[text] = part[0]
    return out


def generate(
    loaded: Loaded,
    texts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    num_beams: int = 1,
    tokens: int = TOKENS_PER_BATCH,
) -> list[dict[str, Any]]:
    """The text a seq2seq or causal-LM model generates for each input, in order: batches by
    length as :func:`predict`, greedy or beam search, the input left out of a causal LM's
    output."""
    tokenizer, model = loaded.tokenizer, loaded.model
    causal = loaded.task == "causal-lm"
    limit = loaded.max_length - max_new_tokens if causal else loaded.max_length
    if limit < 1:
        raise ValueError(
            f"generation.max_new_tokens ({max_new_tokens}) leaves no room for the input in "
            f"{loaded.max_length} positions; lower it"
        )
    ids: list[list[int]] = tokenizer(list(texts), truncation=True, max_length=limit)["input_ids"]
    lengths = [len(x) for x in ids]
    device = next(model.parameters()).device
    results: list[dict[str, Any]] = [{} for _ in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Every row of a batch generates up to max_new_tokens: count them in its budget.
    budget = max(tokens, max(lengths, default=1) + max_new_tokens)
    with torch.inference_mode():
        for batch in batches([n + max_new_tokens for n in lengths], budget):
            input_ids = padded([ids[i] for i in batch], pad, left=causal)
            width = input_ids.shape[1]
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask([lengths[i] for i in batch], left=causal).to(device),
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                do_sample=False,
                pad_token_id=pad,
            )
            if causal:
                out = out[:, width:]
            decoded = tokenizer.batch_decode(out, skip_special_tokens=True)
            for row, index in enumerate(batch):
                results[index] = {"generated": decoded[row].strip()}
    return results


def _entities(
    labels: list[str],
    probs: torch.Tensor,
    word_ids: list[int | None],
    offsets: list[tuple[int, int]],
    text: str,
) -> list[dict[str, Any]]:
    """BIO tags of each word's first sub-token, joined into spans with character offsets;
    a span's score is the mean probability of its words' tags."""
    spans: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    seen: set[int] = set()
    best = probs.argmax(-1).tolist()
    for position, word in enumerate(word_ids):
        if word is None or word in seen:
            if word is not None and current is not None:
                current["end"] = offsets[position][1]
            continue
        seen.add(word)
        tag = labels[best[position]]
        score = float(probs[position, best[position]])
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        starts = tag.startswith("B-") or (
            tag.startswith("I-") and (current is None or current["type"] != kind)
        )
        if current is not None and (kind is None or starts):
            spans.append(_close(current, text))
            current = None
        if kind is not None and current is None:
            current = {"type": kind, "start": offsets[position][0], "end": offsets[position][1],
                       "scores": [score]}  # fmt: skip
        elif kind is not None and current is not None:
            current["end"] = offsets[position][1]
            current["scores"].append(score)
    if current is not None:
        spans.append(_close(current, text))
    return spans


def _close(span: dict[str, Any], text: str) -> dict[str, Any]:
    scores = span.pop("scores")
    span["text"] = text[span["start"] : span["end"]]
    span["score"] = round(math.fsum(scores) / len(scores), 6)
    return span
