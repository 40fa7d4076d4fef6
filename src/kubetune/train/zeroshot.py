"""The zero/few-shot baseline (``task: zero-shot``): a pretrained model labels text untrained.

Three methods, chosen by ``prompt.method``:

- ``nli``: transformers' zero-shot-classification pipeline. Each label's description (default
  its name) fills ``prompt.hypothesis_template``; the label whose hypothesis the text entails
  most wins, and its score is that entailment probability (softmax over the labels).
- ``embedding``: a sentence encoder embeds texts and one target per label; a text gets the
  label of the most cosine-similar target. The encoder is sentence-transformers' own
  (:mod:`kubetune.train.sentence_encoder`): a sentence-transformers folder with every module it
  lists (its pooling mode, any Dense layer), a plain encoder with mean pooling; embeddings are
  L2-normalised. Targets are the label descriptions, or with ``prompt.examples = k`` class
  prototypes: the normalised mean embedding of k labelled examples per class. Score: that
  cosine similarity.
- ``generate``: a causal LM completes the Jinja2 ``prompt.template`` by greedy decoding, and
  :func:`parse_label` reads a label from the completion. Completions naming no label are
  unparseable: scored as wrong, counted per split in the metrics and in run.json. Score: the
  geometric-mean probability of the generated tokens.

Few-shot examples are drawn once per run from data.train, k per class in label order with
``random.Random(train.seed)``, then shuffled by the same generator: a seed names the exact
examples, and run.json lists their ids. Texts are clipped to ``data.max_length`` tokens.

Metrics have the keys of fine-tuned classification (:func:`metrics.classification_metrics`,
plus ``runtime`` and ``samples_per_second``), so ``task`` can be a sweep parameter and a
baseline sits beside fine-tuned runs.

With ``data.multi_label`` each text may carry any number of labels, and each method gives
every label its own score in [0, 1] (:data:`LABEL_SCORES`); a label applies when its score
reaches its threshold (``data.threshold``, or with ``"tune"`` each label's F1-best threshold
on the eval split, applied to eval and test). The scores:

- ``nli``: the pipeline's ``multi_label=True`` scores: for each label alone, the softmax of
  its hypothesis' entailment against contradiction logits;
- ``embedding``: the softmax over the labels of the cosine similarities to their targets
  (descriptions or prototypes) times :data:`SIMILARITY_SCALE`: the probability, under the
  contrastive objective sentence encoders are trained with, that this label is the text's
  match among the labels. Scores of one text sum to 1, so a text with two labels shares the
  mass between them: a fixed 0.5 picks at most one label, and ``"tune"`` (which put every
  threshold between 0.1 and 0.35 on BBC News) is the setting to use. Cosines themselves,
  clipped to [0, 1] or mapped to ``(cos + 1) / 2``, thresholds tuned the same way, scored 6
  to 10 points of micro-F1 below this with all-MiniLM-L6-v2 on one- and two-topic BBC News
  texts (with label descriptions and with 8 prototypes per label): a text's similarity to
  its own topics is low in absolute terms (median cosine 0.14 to its topic's description,
  0.03 to the others), and a share is comparable across texts where a cosine is not. The
  price: a text that fits no label still gives its mass to some, so "none applies" needs
  thresholds above every share it gives;
- ``generate``: 1 for every label the completion names (:func:`parse_labels`), 0 for the
  rest; any threshold in (0, 1] gives the same labels, so the threshold is moot.

Few-shot examples are then drawn k per label among the examples carrying it (an example drawn
for two labels is shown once); a template sees ``.label`` as the names joined by ", " and
``.labels`` as their list. Metrics are :func:`multilabel.metrics`'s (micro-F1 first), and
each split's rows carry the gold names, every label over its threshold with its score, and
every label's score.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import jinja2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from datasets import Dataset
from jinja2.sandbox import SandboxedEnvironment

from kubetune import events
from kubetune.errors import ConfigError
from kubetune.events import emit
from kubetune.spec import JobSpec, PromptSpec
from kubetune.train import metrics, multilabel, sentence_encoder
from kubetune.train.classification import preview
from kubetune.train.data import Splits, infer_labels, require_columns
from kubetune.train.precision import precision_args
from kubetune.train.pretrained import from_pretrained

#: How a completion becomes a label (recorded in run.json beside the unparseable counts).
PARSE_RULE = (
    "the label name that appears earliest in the output, case-insensitive, as a whole word "
    "(not inside a longer word); at the same position the longer name wins; none → unparseable"
)
#: How a completion becomes labels with data.multi_label.
PARSE_RULE_MULTI = (
    "every label name in the output, case-insensitive, as a whole word (not inside a longer "
    "word, nor overlapping the mention of a label found earlier or, at the same position, "
    "longer); none → no label applies, counted as unparseable"
)
#: Cosine similarity × this, softmaxed over the labels, is a label's multi-label embedding
#: score: the scale of sentence-transformers' MultipleNegativesRankingLoss (the loss
#: all-MiniLM-L6-v2 and most sentence encoders were trained with), so the softmax is the
#: model's own training-time probability of "this target matches" among the candidates.
SIMILARITY_SCALE = 20.0
#: prompt.method → what a label's score is with data.multi_label (recorded in run.json).
LABEL_SCORES = {
    "nli": "entailment probability of the label's hypothesis: softmax over its entailment and "
    "contradiction logits, each label on its own",
    "embedding": f"softmax over the labels of {SIMILARITY_SCALE:g} × the cosine similarity of "
    "the text to each label's target; one text's scores sum to 1",
    "generate": "1 for each label the completion names, 0 otherwise; any threshold in (0, 1] "
    "gives the same labels",
}


@dataclass(frozen=True)
class Example:
    """A labelled example as a prompt template sees it: ``.text`` and ``.label`` (with
    data.multi_label its names joined by ", "), and ``.labels``, the list of its names."""

    text: str
    label: str
    id: Any
    labels: tuple[str, ...] = ()

    @classmethod
    def of(cls, text: str, labels: list[str], row_id: Any) -> Example:
        return cls(text, ", ".join(labels), row_id, tuple(labels))


@dataclass
class Scored:
    """What the runner writes: metrics, prediction rows and artifacts, and run.json details."""

    #: split → metrics (the keys of fine-tuned classification).
    results: dict[str, dict[str, Any]]
    #: split → (prediction rows, {artifact file stem: JSON data}).
    artifacts: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]
    labels: list[str]
    #: Total parameter count of the model used.
    parameters: int
    #: Method, few-shot examples, unparseable counts, timings: run.json's ``zero_shot``.
    details: dict[str, Any]


@dataclass
class Predicted:
    """One split's answers: label ids (-1 where unparseable), scores, raw outputs (generate).

    With data.multi_label, ``label_scores`` holds every label's score (texts × labels, each
    in [0, 1]); ``ids`` and ``scores`` are then each text's best label and its score (-1 where
    a completion names no label)."""

    ids: list[int]
    scores: list[float]
    outputs: list[str] | None = None
    label_scores: np.ndarray | None = None


@dataclass
class Scorer:
    """A loaded method: ``predict(texts)`` and what run.json should say about it."""

    predict: Callable[[list[str]], Predicted]
    parameters: int
    details: dict[str, Any] = field(default_factory=dict)


def score(spec: JobSpec, splits: Splits, model_path: str) -> Scored:
    """Label the eval and test splits with the spec's prompt method and score the answers."""
    prompt, names = spec.prompt, spec.data.labels
    if prompt is None or not names:  # validate() rejects these; say so for hand-built specs
        raise ConfigError("prompt: task zero-shot needs a prompt section and data.labels")
    d = spec.data
    k = prompt.examples
    used = Splits(
        splits.train if k else None, splits.eval, splits.test, splits.fingerprint, splits.sources
    )
    require_columns(used, {"text_column": d.text_column, "label_column": d.label_column})
    # Every label is listed; with multi_label every row holds a list of them.
    infer_labels(used, d.label_column, names, sequence=d.multi_label)
    if d.multi_label and d.threshold == "tune" and splits.eval is None:
        raise ConfigError(
            "data.threshold: 'tune' picks each label's threshold on the eval split; set "
            "data.eval, or give a number"
        )

    started = time.perf_counter()
    examples = draw_examples(splits.train, spec) if k else []
    scorer = LOADERS[prompt.method](spec, model_path, names, examples)
    emit(events.Model(0, scorer.parameters, len(names)))
    unparseable: dict[str, int] = {}
    seconds_taken = {"setup": round(time.perf_counter() - started, 3)}
    answers: dict[str, tuple[Dataset, Predicted, float]] = {}
    for split, raw in (("eval", splits.eval), ("test", splits.test)):
        if raw is None:
            continue
        began = time.perf_counter()
        predicted = scorer.predict([str(text) for text in raw[d.text_column]])
        seconds = time.perf_counter() - began
        answers[split] = raw, predicted, seconds
        unparseable[split] = predicted.ids.count(-1)
        seconds_taken[split] = round(seconds, 3)

    generate = prompt.method == "generate"
    results: dict[str, dict[str, Any]] = {}
    artifacts: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    labelling: dict[str, Any] = {}
    if d.multi_label:
        thresholds = _thresholds(spec, answers, names)
        record = multilabel.threshold_record(thresholds, names, tuned=d.threshold == "tune")
        labelling = {
            "multi_label": True,
            "label_scores": LABEL_SCORES[prompt.method],
            "thresholds": record,  # as the classical baseline records them
        }
        for split, (raw, predicted, seconds) in answers.items():
            results[split], artifacts[split] = _evaluate_multi(
                raw, predicted, spec, names, seconds, thresholds, record, generate=generate
            )
    else:
        for split, (raw, predicted, seconds) in answers.items():
            results[split], artifacts[split] = _evaluate(
                raw, predicted, spec, names, seconds, generate=generate
            )
    details = {
        "method": prompt.method,
        "examples_per_class": k,
        "examples": [
            {"id": e.id, "label": list(e.labels) if d.multi_label else e.label} for e in examples
        ],
        **scorer.details,  # after predicting: generate records its first prompt
        **labelling,
        "unparseable": unparseable,
        "seconds": seconds_taken,
    }
    return Scored(results, artifacts, list(names), scorer.parameters, details)


def _evaluate(
    raw: Dataset,
    predicted: Predicted,
    spec: JobSpec,
    names: list[str],
    seconds: float,
    *,
    generate: bool,
) -> tuple[dict[str, Any], tuple[list[dict[str, Any]], dict[str, Any]]]:
    """Metrics, prediction rows and the confusion matrix of one split."""
    gold = np.array([names.index(_label_name(v, names)) for v in raw[spec.data.label_column]])
    guess = np.array(predicted.ids)
    found = metrics.classification_metrics(gold, guess, names)
    confusion = metrics.confusion(gold, guess, names)
    if generate:
        missed = int((guess < 0).sum())
        found["unparseable"] = missed
        found["unparseable_rate"] = missed / len(guess)
        # Unparseable answers have no column in the matrix; count them per true label.
        confusion["unparseable"] = [
            int(((gold == c) & (guess < 0)).sum()) for c in range(len(names))
        ]
    _timing(found, len(guess), seconds)

    rows: list[dict[str, Any]] = []
    for i, (row_id, text, truth, answer) in enumerate(
        zip(_ids(raw), raw[spec.data.text_column], gold, guess, strict=True)
    ):
        row = {
            "id": row_id,
            "text": preview(text),
            "label": names[int(truth)],
            "prediction": names[int(answer)] if answer >= 0 else None,
            "score": round(float(predicted.scores[i]), 6),
        }
        if predicted.outputs is not None:
            row["output"] = predicted.outputs[i]
        rows.append(row)
    return found, (rows, {"confusion_matrix": confusion})


def _thresholds(
    spec: JobSpec, answers: dict[str, tuple[Dataset, Predicted, float]], names: list[str]
) -> np.ndarray:
    """Each label's threshold: data.threshold, or with "tune" the F1-best on the eval split."""
    if spec.data.threshold != "tune":
        return multilabel.thresholds_for(spec.data.threshold, len(names))
    raw, predicted, _ = answers["eval"]  # score() checked that there is an eval split
    gold = multilabel.multi_hot(list(raw[spec.data.label_column]), names)
    assert predicted.label_scores is not None
    return multilabel.tune_thresholds(predicted.label_scores, gold)


def _evaluate_multi(
    raw: Dataset,
    predicted: Predicted,
    spec: JobSpec,
    names: list[str],
    seconds: float,
    thresholds: np.ndarray,
    record: dict[str, Any],
    *,
    generate: bool,
) -> tuple[dict[str, Any], tuple[list[dict[str, Any]], dict[str, Any]]]:
    """Multi-label metrics, prediction rows, per-label counts and the thresholds of a split.

    A row's ``label`` is its gold names (in data.labels order), ``prediction`` every label
    over its threshold with its score (highest first), ``scores`` every label's score."""
    scores = predicted.label_scores
    assert scores is not None, "a multi-label scorer gives every label's score"
    gold = multilabel.multi_hot(list(raw[spec.data.label_column]), names)
    chosen = multilabel.decide(scores, thresholds)
    found = multilabel.metrics(gold, chosen, names)
    if generate:  # a completion naming no label: none applies (right where none should)
        missed = predicted.ids.count(-1)
        found["unparseable"] = missed
        found["unparseable_rate"] = missed / len(gold)
    _timing(found, len(gold), seconds)

    over = multilabel.labels_over(scores, thresholds, names)
    rows: list[dict[str, Any]] = []
    for i, (row_id, text) in enumerate(zip(_ids(raw), raw[spec.data.text_column], strict=True)):
        row = {
            "id": row_id,
            "text": preview(text),
            "label": [names[j] for j in np.flatnonzero(gold[i])],
            "prediction": over[i],
            "scores": {name: round(float(v), 6) for name, v in zip(names, scores[i], strict=True)},
        }
        if predicted.outputs is not None:
            row["output"] = predicted.outputs[i]
        rows.append(row)
    return found, (rows, {"label_counts": _label_counts(gold, chosen, names), "thresholds": record})


def _label_counts(gold: np.ndarray, chosen: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per label, its yes/no decisions counted against the gold labels (the multi-label
    counterpart of a confusion matrix)."""
    return {
        name: {
            "true_positive": int(((gold[:, j] == 1) & (chosen[:, j] == 1)).sum()),
            "false_positive": int(((gold[:, j] == 0) & (chosen[:, j] == 1)).sum()),
            "false_negative": int(((gold[:, j] == 1) & (chosen[:, j] == 0)).sum()),
            "true_negative": int(((gold[:, j] == 0) & (chosen[:, j] == 0)).sum()),
        }
        for j, name in enumerate(names)
    }


def _timing(found: dict[str, Any], count: int, seconds: float) -> None:
    found["runtime"] = round(seconds, 4)
    found["samples_per_second"] = round(count / max(seconds, 1e-9), 3)


def _ids(raw: Dataset) -> list[Any]:
    """The split's ``id`` column, else row numbers from 0."""
    return list(raw["id"]) if "id" in raw.column_names else list(range(len(raw)))


def _label_name(value: Any, names: list[str]) -> str:
    """A data label as a name: ids index data.labels, anything else is its own name."""
    if isinstance(value, int) and not isinstance(value, bool):
        return names[value]
    return str(value)


def _label_names(value: Any, names: list[str]) -> list[str]:
    """A data row's labels as names: a list (data.multi_label) or one label."""
    return [_label_name(v, names) for v in (value if isinstance(value, list) else [value])]


# --- few-shot examples ---------------------------------------------------------------------


def draw_examples(train: Dataset | None, spec: JobSpec) -> list[Example]:
    """``prompt.examples`` labelled examples per class from data.train, seeded by train.seed.

    With data.multi_label a label's pool is every example carrying it; an example drawn for
    two labels is kept once (its first draw), so a label may end with more than k examples.
    """
    assert spec.prompt is not None and spec.data.labels
    names, k, d = spec.data.labels, spec.prompt.examples, spec.data
    if train is None:
        raise ConfigError("data.train: prompt.examples > 0 draws examples from data.train; set it")
    labels = [_label_names(value, names) for value in train[d.label_column]]
    pools: dict[str, list[int]] = {name: [] for name in names}
    for index, own in enumerate(labels):
        for name in own:
            pools[name].append(index)
    rng = random.Random(spec.train.seed)
    chosen: list[int] = []
    for name in names:
        if len(pools[name]) < k:
            raise ConfigError(
                f"prompt.examples: data.train has {len(pools[name])} examples labelled "
                f"{name!r}, fewer than {k}; lower prompt.examples"
            )
        chosen += rng.sample(pools[name], k)
    chosen = list(dict.fromkeys(chosen))  # drawn for two labels (multi_label): shown once
    rng.shuffle(chosen)
    rows = train.select(chosen)
    ids = rows["id"] if "id" in rows.column_names else chosen
    return [
        Example.of(str(text), labels[index], row_id)
        for text, index, row_id in zip(rows[d.text_column], chosen, ids, strict=True)
    ]


# --- shared helpers ------------------------------------------------------------------------


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _batch_size(spec: JobSpec) -> int:
    return spec.train.eval_batch_size or 2 * spec.train.batch_size


def _tokenizer(spec: JobSpec, model_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        model_path, revision=spec.model.revision, trust_remote_code=spec.model.trust_remote_code
    )


def compute_dtype(spec: JobSpec) -> torch.dtype | None:
    """The autocast dtype that train.precision means on this machine (None: fp32): the same
    choice as fine-tuning, so a baseline's time compares with a fine-tuned run's."""
    chosen = precision_args(spec.train.precision)
    return torch.bfloat16 if chosen["bf16"] else torch.float16 if chosen["fp16"] else None


@contextlib.contextmanager
def _inference(dtype: torch.dtype | None) -> Iterator[None]:
    """No autograd, and autocast to ``dtype`` when one is given."""
    with (
        torch.inference_mode(),
        torch.autocast(_device().type, dtype=dtype, enabled=dtype is not None),
    ):
        yield


def _precision(dtype: torch.dtype | None) -> str:
    return "bf16" if dtype == torch.bfloat16 else "fp16" if dtype == torch.float16 else "fp32"


def _ready(model: Any) -> Any:
    """The model on this machine's accelerator, in inference mode (no dropout)."""
    return model.to(_device()).eval()


def _count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _positions(model: Any) -> int | None:
    value = getattr(model.config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None


def _check_max_length(spec: JobSpec, model: Any) -> None:
    positions = _positions(model)
    if positions is not None and spec.data.max_length > positions:
        raise ConfigError(
            f"data.max_length: {spec.data.max_length} tokens is more than this model's "
            f"{positions} positions; lower it"
        )


def _descriptions(prompt: PromptSpec, names: list[str]) -> list[str]:
    """The text standing for each label; two labels with one text could not be told apart."""
    given = prompt.label_descriptions or {}
    texts = [given.get(name, name) for name in names]
    owner: dict[str, str] = {}
    for name, text in zip(names, texts, strict=True):
        if text in owner:
            raise ConfigError(
                f"prompt.label_descriptions.{name}: same text as label {owner[text]!r}; "
                "give each label its own description"
            )
        owner[text] = name
    return texts


def _batches(lengths: list[int], size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (longest first, so memory runs out early if at
    all): far less padding than data order, and the same batches on every run."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _pad(tokenizer: Any, encoded: dict[str, list[Any]], batch: list[int]) -> Any:
    """The rows ``batch`` of a tokenizer's unpadded output as a padded tensor batch."""
    keys = [k for k in tokenizer.model_input_names if k in encoded]
    rows = {k: [encoded[k][i] for i in batch] for k in keys}
    return tokenizer.pad(rows, return_tensors="pt").to(_device())


# --- embedding -----------------------------------------------------------------------------


def embed(
    model: Any, texts: list[str], size: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """L2-normalised sentence embeddings of ``texts``, in their order, on the CPU: the
    ``SentenceTransformer``'s own ``encode`` (which batches texts of similar length together
    and puts the vectors back in input order)."""
    with _inference(dtype):
        vectors = model.encode(
            texts,
            batch_size=size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return F.normalize(vectors.float().cpu(), dim=-1)


def load_embedding(
    spec: JobSpec, model_path: str, names: list[str], examples: list[Example]
) -> Scorer:
    """Cosine similarity to label descriptions (zero-shot) or to class prototypes."""
    assert spec.prompt is not None
    model = sentence_encoder.load(spec, model_path, device=_device().type)
    model.eval()
    _check_max_length(spec, sentence_encoder.transformer(model))
    dtype = compute_dtype(spec)

    def encode(texts: list[str]) -> torch.Tensor:
        return embed(model, texts, _batch_size(spec), dtype)

    if examples:
        vectors = encode([e.text for e in examples])
        members = [[i for i, e in enumerate(examples) if name in e.labels] for name in names]
        targets = F.normalize(torch.stack([vectors[m].mean(dim=0) for m in members]), dim=-1)
    else:
        targets = encode(_descriptions(spec.prompt, names))
    multi = spec.data.multi_label

    def predict(texts: list[str]) -> Predicted:
        similarity = encode(texts) @ targets.T
        best = similarity.max(dim=-1)
        # Multi-label: each label's share of the text's similarity (module docstring).
        each = None
        if multi:
            each = torch.softmax(similarity.double() * SIMILARITY_SCALE, dim=-1).numpy()
        return Predicted(best.indices.tolist(), best.values.tolist(), label_scores=each)

    return Scorer(
        predict,
        _count(model),
        {
            **sentence_encoder.describe(model),
            "targets": "prototypes" if examples else "descriptions",
            "precision": _precision(dtype),
        },
    )


# --- nli -----------------------------------------------------------------------------------


def load_nli(spec: JobSpec, model_path: str, names: list[str], examples: list[Example]) -> Scorer:
    """transformers' zero-shot-classification pipeline over the label descriptions."""
    from transformers import AutoModelForSequenceClassification, pipeline

    assert spec.prompt is not None
    prompt = spec.prompt
    model = from_pretrained(AutoModelForSequenceClassification, spec, model_path)
    classes = list(model.config.label2id)
    if not any(name.lower().startswith("entail") for name in classes):
        raise ConfigError(
            f"model.name: {spec.model.name} is not an NLI model (its classes {', '.join(classes)} "
            "have no 'entailment'); use an NLI checkpoint or method embedding"
        )
    _check_max_length(spec, model)
    tokenizer = _tokenizer(spec, model_path)
    # The pipeline truncates the text (never the hypothesis) to the tokenizer's maximum.
    tokenizer.model_max_length = spec.data.max_length
    descriptions = _descriptions(prompt, names)
    to_id = {text: i for i, text in enumerate(descriptions)}
    dtype = compute_dtype(spec)
    classify = pipeline(
        "zero-shot-classification",
        model=model.eval(),
        tokenizer=tokenizer,
        device=_device(),
        batch_size=_batch_size(spec),
    )

    multi = spec.data.multi_label

    def predict(texts: list[str]) -> Predicted:
        with _inference(dtype):
            out = classify(
                texts,
                candidate_labels=descriptions,
                hypothesis_template=prompt.hypothesis_template,
                # Multi-label: each label's entailment against its contradiction, on its own.
                multi_label=multi,
            )
        answers = out if isinstance(out, list) else [out]
        each = None
        if multi:
            each = np.zeros((len(answers), len(names)))
            for row, answer in enumerate(answers):
                for text, value in zip(answer["labels"], answer["scores"], strict=True):
                    each[row, to_id[text]] = value
        return Predicted(
            [to_id[a["labels"][0]] for a in answers],
            [float(a["scores"][0]) for a in answers],
            label_scores=each,
        )

    entailment = next(name for name in classes if name.lower().startswith("entail"))
    return Scorer(
        predict,
        _count(model),
        {
            "hypothesis_template": prompt.hypothesis_template,
            "entailment_class": entailment,
            "precision": _precision(dtype),
        },
    )


# --- generate ------------------------------------------------------------------------------


def _whole_word(name: str) -> str:
    return rf"(?<!\w){re.escape(name)}(?!\w)"


def parse_label(output: str, names: list[str]) -> int | None:
    """The index of the label a completion names, or None (unparseable). See PARSE_RULE.

    Whole word means not touching a letter, digit or underscore on either side, so labels that
    begin or end with punctuation ("c++") match too, and "sport" is not found in "sports".
    """
    best: tuple[int, int, int] | None = None  # (position, -length, index)
    for index, name in enumerate(names):
        found = re.search(_whole_word(name), output, flags=re.IGNORECASE)
        if found is not None:
            key = (found.start(), -len(name), index)
            best = key if best is None or key < best else best
    return None if best is None else best[2]


def parse_labels(output: str, names: list[str]) -> list[int]:
    """The indices of every label a completion names, in data.labels order (see
    PARSE_RULE_MULTI): whole words, case-insensitive, read left to right, the longer name
    first at one position; a name inside a mention already read ("sci" in "sci-fi") does not
    count."""
    found = [
        (match.start(), -len(name), index)
        for index, name in enumerate(names)
        for match in re.finditer(_whole_word(name), output, flags=re.IGNORECASE)
    ]
    named: set[int] = set()
    end = -1  # where the last accepted mention ends
    for start, negative_length, index in sorted(found):  # leftmost, then longest, first
        if start >= end:
            named.add(index)
            end = start - negative_length
    return sorted(named)


def compile_template(source: str) -> jinja2.Template:
    """A sandboxed template: prompts are data from a spec, and must not reach Python."""
    env = SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    return env.from_string(source)


def render_prompt(
    template: jinja2.Template, text: str, labels: list[str], examples: list[Example]
) -> str:
    """The prompt for one text. Template errors (an unknown attribute, unsafe access) are the
    spec's: a ConfigError naming prompt.template."""
    try:
        return template.render(text=text, labels=labels, examples=examples)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"prompt.template: {type(exc).__name__}: {exc}") from exc


def clip(tokenizer: Any, texts: list[str], max_length: int) -> list[str]:
    """Each text cut to its first ``max_length`` tokens, at a character boundary where the
    tokenizer gives offsets, so the template sees the original characters."""
    if not texts:
        return []
    fast = bool(getattr(tokenizer, "is_fast", False))
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=fast)
    out = []
    for i, text in enumerate(texts):
        ids = encoded["input_ids"][i]
        if len(ids) <= max_length:
            out.append(text)
        elif fast:
            out.append(text[: encoded["offset_mapping"][i][max_length - 1][1]])
        else:
            out.append(tokenizer.decode(ids[:max_length]))
    return out


def _stop_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def load_generate(
    spec: JobSpec, model_path: str, names: list[str], examples: list[Example]
) -> Scorer:
    """A causal LM completes the prompt template greedily; the completion is parsed."""
    from transformers import AutoModelForCausalLM

    prompt, max_length = spec.prompt, spec.data.max_length
    assert prompt is not None and prompt.template is not None
    tokenizer = _tokenizer(spec, model_path)
    tokenizer.padding_side = "left"  # generation continues from the last real token
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(
                f"model.name: {spec.model.name}'s tokenizer has no pad or end-of-text token "
                "to pad batches with"
            )
        tokenizer.pad_token = tokenizer.eos_token
    model = _ready(from_pretrained(AutoModelForCausalLM, spec, model_path))
    template = compile_template(prompt.template)
    clipped = clip(tokenizer, [e.text for e in examples], max_length)
    shown = [replace(e, text=t) for t, e in zip(clipped, examples, strict=True)]
    dtype = compute_dtype(spec)
    multi = spec.data.multi_label
    details: dict[str, Any] = {
        "parse_rule": PARSE_RULE_MULTI if multi else PARSE_RULE,
        "max_new_tokens": prompt.max_new_tokens,
        "precision": _precision(dtype),
    }
    stops = _stop_ids(model)

    def predict(texts: list[str]) -> Predicted:
        prompts = [
            render_prompt(template, t, names, shown) for t in clip(tokenizer, texts, max_length)
        ]
        details.setdefault("first_prompt", prompts[0])
        encoded = tokenizer(prompts)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        positions = _positions(model)
        if positions is not None and max(lengths) + prompt.max_new_tokens > positions:
            raise ConfigError(
                f"data.max_length: prompts reach {max(lengths)} tokens, and with "
                f"prompt.max_new_tokens ({prompt.max_new_tokens}) exceed the model's {positions} "
                "positions; lower data.max_length, prompt.examples or prompt.max_new_tokens"
            )
        outputs: list[str] = [""] * len(prompts)
        scores: list[float] = [0.0] * len(prompts)
        for batch in _batches(lengths, _batch_size(spec)):
            inputs = _pad(tokenizer, encoded, batch)
            with _inference(dtype):
                out = model.generate(
                    **inputs,
                    max_new_tokens=prompt.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=tokenizer.pad_token_id,
                    return_dict_in_generate=True,
                    output_scores=True,
                )
            # Log-probabilities in fp32 even when the logits came out of autocast.
            logprobs = model.compute_transition_scores(
                out.sequences, tuple(step.float() for step in out.scores), normalize_logits=True
            )
            width = inputs["input_ids"].shape[1]
            for row, index in enumerate(batch):
                new = out.sequences[row, width:].tolist()
                # Up to and including the first end token; later steps only pad.
                size = next((j + 1 for j, t in enumerate(new) if t in stops), len(new))
                outputs[index] = tokenizer.decode(new[:size], skip_special_tokens=True)
                scores[index] = float(logprobs[row, :size].mean().exp()) if size else 0.0
        if multi:
            named = [parse_labels(text, names) for text in outputs]
            each = np.zeros((len(outputs), len(names)))
            for row, found in enumerate(named):
                each[row, found] = 1.0
            # The first label named (in data.labels order) stands for the text; -1: none.
            first = [found[0] if found else -1 for found in named]
            return Predicted(first, scores, outputs, label_scores=each)
        ids = [parse_label(text, names) for text in outputs]
        return Predicted([-1 if i is None else i for i in ids], scores, outputs)

    return Scorer(predict, _count(model), details)


Loader = Callable[[JobSpec, str, list[str], list[Example]], Scorer]

#: prompt.method → the function that loads it.
LOADERS: dict[str, Loader] = {
    "nli": load_nli,
    "embedding": load_embedding,
    "generate": load_generate,
}
