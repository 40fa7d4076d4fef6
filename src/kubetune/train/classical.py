"""The classical baselines (``task: classical``): what ``classical.method`` names, fitted
with no transformer (:func:`fit_and_score`). ``tfidf-logreg`` (the default, here) labels
texts; ``crf`` (:mod:`kubetune.train.crf`) tags words; ``lead`` (:mod:`kubetune.train.lead`)
summarises with the source's first sentences. Each is scored with its family's metrics and
rows, and each final/ holds :data:`SETTINGS_FILE` naming its method, which :func:`load_final`
reads to apply it.

TF-IDF features and logistic regression:
What experienced engineers fit before any transformer: scikit-learn's ``TfidfVectorizer``
(word n-grams up to ``classical.ngram_max``, ``min_df``, ``max_features``, ``sublinear_tf``)
feeding a ``LogisticRegression`` (``C = classical.c``, ``class_weight``, ``max_iter``;
multinomial over the labels, Newton-CG), fitted on data.train in one call, seeded with
train.seed. With ``data.multi_label`` each label gets its own binary logistic regression
(one-vs-rest) and its probability is compared with the label's threshold
(:mod:`kubetune.train.multilabel`: ``data.threshold``, or tuned per label on the eval split).

It scores the eval and test splits as fine-tuned classification does: the same metric keys
(:func:`metrics.classification_metrics`, or :func:`multilabel.metrics`, plus ``runtime`` and
``samples_per_second``), the same prediction rows (id, text preview, label, prediction,
score) and the confusion matrix, so ``task: classical`` is one arm of a sweep over task and
the report can say what fine-tuning bought over it.

Its model is the fitted pipeline, stored in final/ (:func:`save_final`) as a skops file,
whose loader (:func:`load_final`) builds only scikit-learn's own types: a final/ read from a
shared store cannot run code the way a pickle can. Nothing here imports torch: a stored
classical model is applied with scikit-learn alone. (:func:`evaluate` borrows the zero-shot
baseline's result type and the row preview, importing them when it runs, in the trainer.)
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kubetune import events, inference
from kubetune.errors import ConfigError
from kubetune.events import emit
from kubetune.spec import ClassicalSpec, JobSpec
from kubetune.store import RunLocation, checkpoints
from kubetune.train import metrics, multilabel

if TYPE_CHECKING:
    from datasets import Dataset

    from kubetune.train.crf import Tagger
    from kubetune.train.data import Splits
    from kubetune.train.lead import Lead
    from kubetune.train.zeroshot import Scored

#: final/'s files: the fitted pipeline (skops), and what applying it needs besides.
PIPELINE_FILE = "pipeline.skops"
SETTINGS_FILE = "classical.json"
#: scikit-learn types a pipeline of :func:`build_pipeline` may hold that skops does not trust
#: by default: one-vs-rest's stand-in for a label that training always or never saw.
OWN_TYPES = ("sklearn.multiclass._ConstantPredictor",)
#: scikit-learn's solver of every logistic regression here.
SOLVER = "newton-cg"


@dataclass
class Classifier:
    """A fitted TF-IDF + logistic regression pipeline and how it labels texts: final/."""

    #: sklearn Pipeline: ``tfidf`` (TfidfVectorizer) then ``classifier`` (LogisticRegression,
    #: or OneVsRestClassifier of them for multi-label).
    pipeline: Any
    labels: list[str]
    multi_label: bool
    text_column: str
    #: Multi-label: each label's threshold (data.threshold, or tuned on eval by
    #: :func:`evaluate`); None for one label per text.
    thresholds: np.ndarray | None = None
    #: Whether the thresholds were tuned on the eval split.
    tuned: bool = False
    #: How the fit went (run.json's ``classical``): features, seconds, iterations.
    fit_details: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> int:
        """The TF-IDF vocabulary size: one feature per kept n-gram."""
        return len(self.pipeline.named_steps["tfidf"].vocabulary_)

    @property
    def regressions(self) -> list[Any]:
        """The fitted logistic regressions: one, or one per label that training saw both
        with and without (scikit-learn answers a label that is always or never there with
        a constant instead)."""
        model = self.pipeline.named_steps["classifier"]
        return [r for r in getattr(model, "estimators_", [model]) if hasattr(r, "coef_")]

    @property
    def parameters(self) -> int:
        """The count of coefficients and intercepts of every logistic regression."""
        return int(sum(r.coef_.size + r.intercept_.size for r in self.regressions))

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(texts × labels) probabilities, columns in :attr:`labels` order. One label per
        text: a softmax over the labels seen in training (0 for a listed label that was not);
        multi-label: each label's own sigmoid."""
        model = self.pipeline.named_steps["classifier"]
        found = np.asarray(self.pipeline.predict_proba(list(texts)), dtype=np.float64)
        if self.multi_label:
            return found
        out = np.zeros((found.shape[0], len(self.labels)))
        out[:, np.asarray(model.classes_, dtype=np.int64)] = found
        return out

    method = "tfidf-logreg"

    def rows(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """``kubetune predict``'s rows (and ``kubetune serve``'s results) for ``texts``, as a
        fine-tuned classifier answers them: scikit-learn alone, no torch."""
        from kubetune.predict.rows import label_row, labels_row

        probs = self.probabilities(texts)
        if not self.multi_label:
            return [label_row(self.labels, row.tolist()) for row in probs]
        assert self.thresholds is not None
        thresholds = [float(t) for t in self.thresholds]
        return [labels_row(self.labels, row.tolist(), thresholds) for row in probs]

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Per text, what a prediction row says: ``prediction`` (a label name) and ``score``
        (its probability); multi-label: ``prediction`` is every label over its threshold,
        with its score, highest first."""
        scores = self.probabilities(texts)
        if self.multi_label:
            assert self.thresholds is not None
            return [
                {"prediction": chosen}
                for chosen in multilabel.labels_over(scores, self.thresholds, self.labels)
            ]
        best = scores.argmax(axis=-1)
        return [
            {"prediction": self.labels[int(i)], "score": round(float(row[i]), 6)}
            for i, row in zip(best, scores, strict=True)
        ]


def build_pipeline(settings: ClassicalSpec, *, multi_label: bool, seed: int) -> Any:
    """The unfitted pipeline the spec describes (TF-IDF ▸ logistic regression)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import Pipeline

    vectorizer = TfidfVectorizer(
        ngram_range=(1, settings.ngram_max),
        min_df=settings.min_df,
        max_features=settings.max_features,
        sublinear_tf=settings.sublinear_tf,
        strip_accents="unicode",
    )
    # Multinomial over the labels (scikit-learn's only multi-class form since 1.7). Newton-CG,
    # not the default lbfgs: on BBC News' 96k bigram features it converges in 4 iterations
    # to a tighter optimum, in less than half lbfgs's CPU time.
    regression = LogisticRegression(
        C=settings.c,
        class_weight=settings.class_weight,
        max_iter=settings.max_iter,
        solver=SOLVER,
        random_state=seed,
    )
    classifier = OneVsRestClassifier(regression) if multi_label else regression
    return Pipeline([("tfidf", vectorizer), ("classifier", classifier)])


def fit(spec: JobSpec, splits: Splits) -> Classifier:
    """The pipeline fitted on data.train (thresholds at data.threshold; :func:`evaluate`
    tunes them on eval when data.threshold is "tune")."""
    from sklearn.exceptions import ConvergenceWarning

    from kubetune.train.data import infer_labels, require_columns

    d, settings = spec.data, spec.classical
    if splits.train is None:  # validate() requires data.train; say so for hand-built specs
        raise ConfigError("data.train: task classical fits on training data; set data.train")
    require_columns(splits, {"text_column": d.text_column, "label_column": d.label_column})
    names = [str(n) for n in infer_labels(splits, d.label_column, d.labels, sequence=d.multi_label)]
    texts = _texts(splits.train, d.text_column, "train")
    values = list(splits.train[d.label_column])
    target = multilabel.multi_hot(values, names) if d.multi_label else _label_ids(values, names)
    if not d.multi_label and len(set(target.tolist())) < 2:
        raise ConfigError(
            f"data.train: every training text has the label {names[int(target[0])]!r}; "
            "logistic regression needs examples of at least two labels"
        )
    pipeline = build_pipeline(settings, multi_label=d.multi_label, seed=spec.train.seed)
    started = time.perf_counter()
    try:
        features = pipeline.named_steps["tfidf"].fit_transform(texts)
    except ValueError as exc:  # no word in any text, or none kept by min_df/max_features
        raise ConfigError(
            f"classical.min_df: no terms are left from the {len(texts)} training texts "
            f"({exc}); lower classical.min_df, or check data.text_column"
        ) from exc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipeline.named_steps["classifier"].fit(features, target)
    seconds = time.perf_counter() - started
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        print(
            f"kubetune: logistic regression stopped at classical.max_iter={settings.max_iter} "
            "iterations before converging; raise classical.max_iter",
            file=sys.stderr,
            flush=True,
        )
    classifier = Classifier(
        pipeline,
        names,
        d.multi_label,
        d.text_column,
        thresholds=multilabel.thresholds_for(d.threshold, len(names)) if d.multi_label else None,
    )
    fitted = classifier.regressions
    classifier.fit_details = {
        "features": classifier.features,
        "fit_seconds": round(seconds, 3),
        "iterations": max((int(np.max(r.n_iter_)) for r in fitted), default=0),
        "converged": converged,
        "train_rows": len(texts),
    }
    if d.multi_label:
        # A label every training text has, or none has: predicted always, or never.
        counts = target.sum(axis=0)
        constant = [n for n, c in zip(names, counts, strict=True) if c in (0, len(texts))]
        classifier.fit_details["constant_labels"] = constant
    emit(events.Model(0, classifier.parameters, len(names)))
    return classifier


def evaluate(spec: JobSpec, splits: Splits, classifier: Classifier) -> Scored:
    """Metrics, prediction rows and artifacts of the eval and test splits; with
    data.threshold "tune", each label's threshold is first tuned on eval (and kept in
    ``classifier``, so final/ applies what test was scored with)."""
    from sklearn import __version__ as sklearn_version

    from kubetune.train.zeroshot import Scored

    d = spec.data
    names = classifier.labels
    scored: dict[str, tuple[np.ndarray, float]] = {}
    for split, raw in (("eval", splits.eval), ("test", splits.test)):
        if raw is not None:
            began = time.perf_counter()
            probabilities = classifier.probabilities(_texts(raw, d.text_column, split))
            scored[split] = (probabilities, time.perf_counter() - began)
    if classifier.multi_label and d.threshold == "tune":
        if splits.eval is None or "eval" not in scored:
            raise ConfigError("data.threshold: 'tune' tunes on the eval split; give data.eval")
        gold = multilabel.multi_hot(list(splits.eval[d.label_column]), names)
        classifier.thresholds = multilabel.tune_thresholds(scored["eval"][0], gold)
        classifier.tuned = True

    results: dict[str, dict[str, Any]] = {}
    artifacts: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    for split, (probabilities, seconds) in scored.items():
        raw = splits.eval if split == "eval" else splits.test
        assert raw is not None
        results[split], artifacts[split] = _split_outputs(
            raw, probabilities, classifier, d.label_column, seconds
        )
    details: dict[str, Any] = {
        "method": "tfidf-logreg",
        **classifier.fit_details,
        "classifier": (
            f"one-vs-rest logistic regression ({SOLVER}), one per label"
            if classifier.multi_label
            else f"multinomial logistic regression ({SOLVER})"
        ),
        "multi_label": classifier.multi_label,
        "settings": spec.classical.model_dump(mode="json"),
        "seconds": {"fit": classifier.fit_details.get("fit_seconds")}
        | {split: round(seconds, 3) for split, (_, seconds) in scored.items()},
        "scikit_learn": sklearn_version,
    }
    if classifier.multi_label:
        assert classifier.thresholds is not None
        details["thresholds"] = multilabel.threshold_record(
            classifier.thresholds, names, classifier.tuned
        )
    return Scored(results, artifacts, list(names), classifier.parameters, details)


def score(spec: JobSpec, splits: Splits) -> Scored:
    """Fit on data.train, then score eval and test (:func:`fit`, :func:`evaluate`)."""
    return evaluate(spec, splits, fit(spec, splits))


def fit_and_score(
    spec: JobSpec, splits: Splits, scratch: Path
) -> tuple[Scored, Callable[[Path], None]]:
    """The baseline ``classical.method`` names, fitted and scored, and what writes its
    final/ into a folder: TF-IDF + logistic regression here, a CRF (:mod:`.crf`) or the
    lead sentences (:mod:`.lead`). ``scratch``: where a CRF's model file is written first."""
    method = spec.classical.method
    if method == "crf":
        from kubetune.train import crf

        tagger = crf.fit(spec, splits, scratch)
        save = partial(crf.save_final, tagger, spec)
        return crf.evaluate(spec, splits, tagger), partial(_save_settings, save)
    if method == "lead":
        from kubetune.train import lead

        return lead.evaluate(spec, splits), partial(_save_settings, partial(lead.save_final, spec))
    classifier = fit(spec, splits)
    return evaluate(spec, splits, classifier), partial(save_final, classifier)


def _save_settings(save: Callable[[Path], dict[str, Any]], folder: Path) -> None:
    """final/ of a CRF or lead run: what ``save`` puts there, the settings it returns as
    :data:`SETTINGS_FILE`, and kubetune.json."""
    settings = save(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    inference.write(folder, inference.Inference(task="classical"))


def _split_outputs(
    raw: Dataset,
    probabilities: np.ndarray,
    classifier: Classifier,
    label_column: str,
    seconds: float,
) -> tuple[dict[str, Any], tuple[list[dict[str, Any]], dict[str, Any]]]:
    """One split's metrics, prediction rows and artifacts."""
    from kubetune.train.classification import preview

    names = classifier.labels
    values = list(raw[label_column])
    ids = raw["id"] if "id" in raw.column_names else list(range(len(raw)))
    texts = list(raw[classifier.text_column])
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any]
    if classifier.multi_label:
        assert classifier.thresholds is not None
        gold = multilabel.multi_hot(values, names)
        found = multilabel.metrics(
            gold, multilabel.decide(probabilities, classifier.thresholds), names
        )
        chosen = multilabel.labels_over(probabilities, classifier.thresholds, names)
        for i, row_id in enumerate(ids):
            rows.append(
                {
                    "id": row_id,
                    "text": preview(texts[i]),
                    "label": [names[j] for j in np.flatnonzero(gold[i])],
                    "prediction": chosen[i],
                }
            )
        extra = {
            "thresholds": multilabel.threshold_record(
                classifier.thresholds, names, classifier.tuned
            )
        }
    else:
        truth = _label_ids(values, names)
        guess = probabilities.argmax(axis=-1)
        found = metrics.classification_metrics(truth, guess, names)
        for i, row_id in enumerate(ids):
            rows.append(
                {
                    "id": row_id,
                    "text": preview(texts[i]),
                    "label": names[int(truth[i])],
                    "prediction": names[int(guess[i])],
                    "score": round(float(probabilities[i, guess[i]]), 6),
                }
            )
        extra = {"confusion_matrix": metrics.confusion(truth, guess, names)}
    found["runtime"] = round(seconds, 4)
    found["samples_per_second"] = round(len(rows) / max(seconds, 1e-9), 3)
    return found, (rows, extra)


def _texts(raw: Dataset, column: str, split: str) -> list[str]:
    """The split's texts; a row without one is the data's mistake."""
    texts = list(raw[column])
    missing = next((i for i, t in enumerate(texts) if t is None), None)
    if missing is not None:
        raise ConfigError(
            f"data.text_column: row {missing + 1} of the {split} data has no {column!r}; "
            "give every row a text, or leave the row out"
        )
    return [str(t) for t in texts]


def _label_ids(values: Sequence[Any], names: list[str]) -> np.ndarray:
    """One label per text as ids: an id indexes data.labels, anything else is a name."""
    to_id = {name: i for i, name in enumerate(names)}
    return np.array(
        [v if isinstance(v, int) and not isinstance(v, bool) else to_id[str(v)] for v in values],
        dtype=np.int64,
    )


# --- final/ ---------------------------------------------------------------------------------


def save_final(classifier: Classifier, folder: Path) -> None:
    """final/: the fitted pipeline (:data:`PIPELINE_FILE`), its labels, text column and
    thresholds (:data:`SETTINGS_FILE`), and kubetune.json, as for every final/."""
    from sklearn import __version__ as sklearn_version

    sio = _skops_io()

    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(classifier.pipeline, folder / PIPELINE_FILE)
    thresholds = (
        None
        if classifier.thresholds is None
        else {n: float(t) for n, t in zip(classifier.labels, classifier.thresholds, strict=True)}
    )
    settings = {
        "method": "tfidf-logreg",
        "pipeline": PIPELINE_FILE,
        "format": "skops",
        "labels": classifier.labels,
        "multi_label": classifier.multi_label,
        "thresholds": thresholds,
        "tuned": classifier.tuned,
        "text_column": classifier.text_column,
        "fit": classifier.fit_details,
        "versions": {"scikit-learn": sklearn_version, "skops": version("skops")},
    }
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    inference.write(
        folder,
        inference.Inference(
            task="classical", multi_label=classifier.multi_label, thresholds=thresholds
        ),
    )


def store_final(
    save: Callable[[Path], None], location: RunLocation, final: Path, pool: ThreadPoolExecutor
) -> None:
    """final/ written (``save``, from :func:`fit_and_score`) and uploaded to the run's folder
    in the store, in place of any earlier one: ``outputs.Finished.save_model`` with the first
    two bound."""
    save(final)
    location.store.delete_prefix(location.key("final"))
    checkpoints.upload_tree(location.store, final, location.key("final"), pool)


def load_final(folder: str | Path) -> Classifier | Tagger | Lead:
    """What a classical run stored in final/ (:func:`save_final`, ``crf.save_final``,
    ``lead.save_final``): each answers ``rows(texts)`` as ``kubetune predict`` writes them.

    Raises:
        ConfigError: the folder is not a classical final/, or its pipeline file holds types
            other than scikit-learn's and numpy's own (skops refuses to build them).
    """
    root = Path(folder)
    path = root / SETTINGS_FILE
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        method = settings.get("method", "tfidf-logreg")
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{root}: not a classical model folder ({type(exc).__name__}: {exc}); give the "
            "final/ of a task: classical run"
        ) from exc
    if method == "crf":
        from kubetune.train import crf

        return crf.load_final(root, settings)
    if method == "lead":
        from kubetune.train import lead

        return lead.load_final(root, settings)
    if method != "tfidf-logreg":
        raise ConfigError(
            f"{path}: method {method!r} is not one this kubetune knows (tfidf-logreg, crf, "
            "lead); apply it with the kubetune version that trained it"
        )
    sio = _skops_io()
    try:
        pipeline_path = root / str(settings["pipeline"])
        labels = [str(name) for name in settings["labels"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{root}: not a classical model folder ({type(exc).__name__}: {exc}); give the "
            "final/ of a task: classical run"
        ) from exc
    untrusted = sorted(set(sio.get_untrusted_types(file=pipeline_path)) - set(OWN_TYPES))
    if untrusted:
        raise ConfigError(
            f"{pipeline_path}: holds types outside scikit-learn and numpy "
            f"({', '.join(untrusted)}); kubetune loads only the pipelines it writes"
        )
    thresholds = settings.get("thresholds")
    return Classifier(
        pipeline=sio.load(pipeline_path, trusted=list(OWN_TYPES)),
        labels=labels,
        multi_label=bool(settings.get("multi_label")),
        text_column=str(settings.get("text_column", "text")),
        thresholds=None if thresholds is None else np.array([thresholds[n] for n in labels]),
        tuned=bool(settings.get("tuned")),
        fit_details=dict(settings.get("fit") or {}),
    )


def _skops_io() -> Any:
    """skops.io (it ships no type information), imported where final/ is written or read."""
    import skops.io  # type: ignore[import-untyped]

    return skops.io
