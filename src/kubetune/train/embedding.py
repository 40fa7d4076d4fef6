"""Bi-encoder fine-tuning (``task: embedding``): queries and the documents that answer them.

A sentence encoder (a sentence-transformers folder like all-MiniLM-L6-v2's, or a plain
transformers encoder with mean pooling; :mod:`kubetune.train.sentence_encoder`) learns from
(query, positive) pairs with in-batch negatives: sentence-transformers'
``MultipleNegativesRankingLoss``, where each query's positive must outscore every other
document of its batch. Batches never hold one text twice (the library's no-duplicates
sampler), since a duplicate would be a negative equal to the positive. Training runs in
``SentenceTransformerTrainer``, a ``transformers.Trainer``: kubetune's checkpoints, exact
resume, callbacks, early stopping and W&B work as for every family
(:class:`~kubetune.train.task.OwnTrainer`).

Data is a retrieval set: rows ``{"id", "query", "positive"}`` (``data.query_column``,
``data.positive_column``) and optionally ``data.corpus``, documents ``{"id", "text"}``. The
eval and test splits are scored as retrieval: each query searches the whole corpus (or,
without one, its split's own positives, keyed by row id; row numbers stand in for missing
ids), and its relevant document is the one with the query row's id. Metrics come from
sentence-transformers' ``InformationRetrievalEvaluator``, named as
:data:`kubetune.headline.TASK_METRICS` lists them: ``ndcg@10`` (the headline; best
checkpoint, early stopping and sweeps compare it), ``mrr@10``, ``recall@1/5/10``; beside them
``loss``, the in-batch ranking loss of the split's pairs. Each query's prediction row holds
the ten best documents and the rank of its relevant one (null past ten).

The final scores of eval and test also hold BM25 and hybrid (BM25 and dense search fused by
reciprocal rank) search of the same queries and corpus, ``bm25_ndcg@10``, ``hybrid_recall@10``
and so on, from :func:`kubetune.retrieval.compare.compare`: the bar a fine-tuned encoder should
clear, and what fusing it with BM25 would add. The final evaluation encodes the corpus, which
eval and test both search, once for the evaluator and the comparison together.

final/ is a sentence-transformers folder (``SentenceTransformer(final)`` loads it). With LoRA
(peft adapters on the Transformer module's model, added through sentence-transformers'
``add_adapter``, so checkpoints hold the adapter and resume like any run) adapter/ holds the
adapter alone and final/ the model with it merged in: loading it needs no peft.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from kubetune.errors import ConfigError
from kubetune.headline import TASK_METRICS, headline
from kubetune.spec import JobSpec
from kubetune.train import sentence_encoder
from kubetune.train.classification import preview
from kubetune.train.data import Splits, require_columns
from kubetune.train.lora import lora_config
from kubetune.train.pretrained import from_pretrained
from kubetune.train.task import OwnTrainer, Task
from kubetune.train.trainer_internals import TrainerHooks

PEFT_TASK = "FEATURE_EXTRACTION"
#: The metrics an evaluation reports (``loss`` and timings besides), headline first.
METRICS = TASK_METRICS["embedding"]
#: Ranks the metrics look at; a prediction row lists this many best documents.
TOP_K = 10
#: The columns of the pairs the loss reads, in its order: anchor, then positive.
PAIR_COLUMNS = ("anchor", "positive")
#: The searches of kubetune.retrieval.compare reported beside the encoder's own, as
#: ``<method>_<metric>``.
BASELINES = ("bm25", "hybrid")


class EmbeddingTrainer(TrainerHooks, SentenceTransformerTrainer):
    """sentence-transformers' Trainer with kubetune's hooks (the failpoint between a
    checkpoint's weights and its optimizer state)."""


@dataclass(frozen=True)
class Retrieval:
    """One split as a retrieval problem, in the shape ``InformationRetrievalEvaluator`` takes."""

    #: query id → query text, in the split's row order.
    queries: dict[str, str]
    #: document id → text: data.corpus, or the split's own positives.
    corpus: dict[str, str]
    #: query id → the ids of the documents that answer it (the one with the query's id).
    relevant: dict[str, set[str]]


class RetrievalEvaluator(InformationRetrievalEvaluator):
    """The library's evaluator at kubetune's cut-offs, reporting :data:`METRICS` by their
    plain names (``ndcg@10``, not ``cosine_ndcg@10``: the similarity is the model's own), and
    keeping the last evaluation's ranking of each query (:attr:`rankings`)."""

    def __init__(self, problem: Retrieval, batch_size: int, corpus_embeddings: Any = None) -> None:
        queries: dict[str, Any] = dict(problem.queries)
        corpus: dict[str, Any] = dict(problem.corpus)
        super().__init__(
            queries,
            corpus,
            problem.relevant,
            batch_size=batch_size,
            mrr_at_k=[TOP_K],
            ndcg_at_k=[TOP_K],
            accuracy_at_k=[1],
            precision_recall_at_k=[1, 5, TOP_K],
            map_at_k=[TOP_K],
            show_progress_bar=False,
            write_csv=False,
        )
        #: Per query (in :attr:`queries_ids` order): the best documents, each
        #: ``{"corpus_id", "score"}``, best first.
        self.rankings: list[list[dict[str, Any]]] = []
        #: The corpus already encoded by the model evaluated, in :attr:`corpus_ids` order.
        self.corpus_embeddings = corpus_embeddings

    def compute_metrics(self, queries_result_list: list[Any]) -> dict[str, Any]:
        self.rankings = queries_result_list
        scores: dict[str, Any] = super().compute_metrics(queries_result_list)
        return scores

    def __call__(
        self,
        model: Any,
        output_path: str | None = None,
        epoch: float = -1,
        steps: int = -1,
        *args: Any,
        **kwargs: Any,
    ) -> dict[str, float]:
        if self.corpus_embeddings is not None:
            kwargs = {**kwargs, "corpus_embeddings": self.corpus_embeddings}
        found = super().__call__(model, output_path, epoch, steps, *args, **kwargs)  # type: ignore[arg-type]
        # Keys are "<similarity>_<metric>": cosine_ndcg@10 for a cosine model.
        plain = {key.split("_", 1)[-1]: float(value) for key, value in found.items()}
        return {name: plain[name] for name in METRICS}


def texts(data: Dataset, column: str, field: str, where: str) -> list[str]:
    """The column's values, each checked to be text (``field`` names it in an error)."""
    values = list(data[column])
    for row, value in enumerate(values, 1):
        if not isinstance(value, str):
            raise ConfigError(
                f"data.{field}: row {row} of {where} holds {value!r}, not text; "
                "every row needs a text there"
            )
    return values


def _unique(ids: list[str], field: str, where: str) -> None:
    seen: dict[str, int] = {}
    for row, value in enumerate(ids, 1):
        if value in seen:
            raise ConfigError(
                f"{field}: id {value!r} is on rows {seen[value]} and {row} of {where}; "
                "give each row its own id"
            )
        seen[value] = row


def load_corpus(splits: Splits) -> dict[str, str] | None:
    """data.corpus as document id → text (None without one)."""
    corpus = splits.corpus
    if corpus is None:
        return None
    where = splits.sources.get("corpus", "data.corpus")
    for column in ("id", "text"):
        if column not in corpus.column_names:
            raise ConfigError(
                f"data.corpus: column {column!r} is not in {where}; a corpus row is "
                f'{{"id": ..., "text": ...}} (columns: {", ".join(corpus.column_names)})'
            )
    ids = [str(value) for value in corpus["id"]]
    _unique(ids, "data.corpus", where)
    return dict(zip(ids, texts(corpus, "text", "corpus", where), strict=True))


def retrieval(
    spec: JobSpec, split: str, data: Dataset, where: str, corpus: dict[str, str] | None
) -> Retrieval:
    """A split's queries against the corpus (or its own positives), each answered by the
    document with its row's id."""
    d = spec.data
    queries = texts(data, d.query_column, "query_column", where)
    if "id" in data.column_names:
        ids = [str(value) for value in data["id"]]
    elif corpus is not None:
        raise ConfigError(
            f"data.{split}: {where} has no id column; with data.corpus, a row's id names the "
            "document that answers its query"
        )
    else:
        ids = [str(row) for row in range(len(data))]
    _unique(ids, f"data.{split}", where)
    if corpus is None:
        corpus = dict(
            zip(ids, texts(data, d.positive_column, "positive_column", where), strict=True)
        )
    else:
        missing = next((i for i in ids if i not in corpus), None)
        if missing is not None:
            raise ConfigError(
                f"data.corpus: no document has id {missing!r}, the id of a query in {where}; "
                "a query's relevant document is the corpus row with its id"
            )
    return Retrieval(dict(zip(ids, queries, strict=True)), corpus, {i: {i} for i in ids})


def pairs(spec: JobSpec, data: Dataset, where: str) -> Dataset:
    """A split's (query, positive) pairs, the only columns the loss may see (the library's
    collator would tokenize any other, ids included)."""
    d = spec.data
    anchor, positive = PAIR_COLUMNS
    return Dataset.from_dict(
        {
            anchor: texts(data, d.query_column, "query_column", where),
            positive: texts(data, d.positive_column, "positive_column", where),
        }
    )


def prediction_rows(problem: Retrieval, evaluator: RetrievalEvaluator) -> list[dict[str, Any]]:
    """One row per query: its id and text, the document that answers it, that document's rank
    among the best :data:`TOP_K` (null below them), and those documents with their scores."""
    rows = []
    for query_id, ranked in zip(evaluator.queries_ids, evaluator.rankings, strict=True):
        relevant = problem.relevant[query_id]
        hits = [{"id": hit["corpus_id"], "score": round(float(hit["score"]), 6)} for hit in ranked]
        rank = next((i for i, hit in enumerate(hits, 1) if hit["id"] in relevant), None)
        rows.append(
            {
                "id": query_id,
                "query": preview(problem.queries[query_id]),
                "relevant": sorted(relevant)[0] if len(relevant) == 1 else sorted(relevant),
                "rank": rank,
                "hits": hits,
            }
        )
    return rows


def baselines(encode: Any, problem: Retrieval) -> dict[str, float]:
    """BM25 and hybrid search of a split's queries and corpus (:data:`BASELINES`), scored like
    the encoder, as ``<method>_<metric>``."""
    from kubetune.retrieval.compare import compare

    report = compare(
        encode,
        list(problem.corpus),
        list(problem.corpus.values()),
        list(problem.queries),
        list(problem.queries.values()),
        problem.relevant,
    )
    return {
        f"{method}_{name}": float(report[method][name]) for method in BASELINES for name in METRICS
    }


def build(spec: JobSpec, splits: Splits, tokenizer: Any, model_path: str) -> Task:
    """The encoder, the pairs of each split, and the retrieval problems of eval and test.

    ``tokenizer`` (the runner's) goes unused: the encoder tokenizes with its own, which
    sentence-transformers loads with it and saves into every checkpoint and final/.
    """
    d = spec.data
    require_columns(splits, {"query_column": d.query_column, "positive_column": d.positive_column})
    corpus = load_corpus(splits)
    wheres = {
        split: f"the {split} data ({splits.sources.get(split, split)})"
        for split in splits.present()
    }
    problems = {
        split: retrieval(spec, split, data, wheres[split], corpus)
        for split, data in splits.present().items()
        if split in ("eval", "test")
    }
    paired = {split: pairs(spec, data, wheres[split]) for split, data in splits.present().items()}
    model = sentence_encoder.load(spec, model_path)
    batch_size = spec.train.eval_batch_size or 2 * spec.train.batch_size
    during_training = (
        RetrievalEvaluator(problems["eval"], batch_size) if "eval" in problems else None
    )

    def trainer(model: Any, args: Any, callbacks: list[Any]) -> Any:
        return EmbeddingTrainer(
            model=model,
            args=args,
            train_dataset=paired.get("train"),
            eval_dataset=paired.get("eval"),
            loss=MultipleNegativesRankingLoss(model),
            evaluator=during_training,
            callbacks=callbacks,
        )

    def add_lora(model: Any) -> list[str]:
        inner = sentence_encoder.transformer(model)
        try:
            model.add_adapter(lora_config(inner, spec, PEFT_TASK))
        except ValueError as exc:
            raise ConfigError(f"lora.target_modules: {exc}") from exc
        return sorted(inner.peft_config["default"].target_modules)

    #: The trained encoder's embedding of each text the final evaluation met (its model no
    #: longer changes): eval and test search one corpus, encoded once.
    encoded: dict[str, np.ndarray] = {}

    def evaluate(
        trainer: Any, split: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        problem, model = problems[split], trainer.model
        model.eval()

        def encode(texts: Sequence[str]) -> np.ndarray:
            todo = [t for t in dict.fromkeys(texts) if t not in encoded]
            if todo:
                vectors = model.encode(
                    todo,
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                encoded.update(zip(todo, vectors.astype(np.float32), strict=True))
            return np.stack([encoded[t] for t in texts])

        corpus = torch.from_numpy(encode(list(problem.corpus.values()))).to(model.device)
        # Trainer.predict scores the split's pairs (its loss, its timings) and runs the
        # trainer's evaluator: for the final scores, this split's own.
        evaluator = RetrievalEvaluator(problem, batch_size, corpus_embeddings=corpus)
        saved, trainer.evaluator = trainer.evaluator, evaluator
        try:
            output = trainer.predict(paired[split], metric_key_prefix=split)
        finally:
            trainer.evaluator = saved
        metrics = {k.removeprefix(f"{split}_"): v for k, v in (output.metrics or {}).items()}
        if not evaluator.rankings:
            return metrics, [], {}  # another process ran the evaluator; the main one saves
        metrics.update(baselines(encode, problem))
        return metrics, prediction_rows(problem, evaluator), {}

    def save(model: Any, final: Path, adapter: Path | None) -> None:
        if adapter is not None:
            from peft import PeftModel
            from transformers import AutoModel

            # peft's format (adapter_config.json, adapter_model.safetensors), which
            # PeftModel.from_pretrained reads: it merges the adapter into the base model here.
            sentence_encoder.transformer(model).save_pretrained(str(adapter))
            base = from_pretrained(AutoModel, spec, model_path)
            merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
            model[0].model = merged
        model.save_pretrained(str(final))

    return Task(
        model=model,
        labels=[],
        tokenized=paired,
        default_metric=headline("embedding").metric,
        peft_task=PEFT_TASK,
        own=OwnTrainer(
            arguments_class=SentenceTransformerTrainingArguments,
            arguments={"batch_sampler": BatchSamplers.NO_DUPLICATES},
            trainer=trainer,
            add_lora=add_lora,
            evaluate=evaluate,
            save=save,
        ),
    )
