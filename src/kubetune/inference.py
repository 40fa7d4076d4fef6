"""``final/kubetune.json``: how a trained model is applied, kept beside its weights.

A model folder alone does not say everything inference needs: which labels a multi-label
classifier gives at which threshold (tuned on the eval split after training), how a
long-document classifier windows a text and joins its windows, how a question-answering
model picks spans. The trainer writes these settings into ``final/`` with the model, so
``kubetune predict``, ``kubetune serve`` and a served pod read one folder and apply the model
exactly as its run evaluated it. A folder without the file (an older run, a plain
transformers checkpoint) is applied with the defaults below.

No ML framework here: the laptop path may read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kubetune.errors import ConfigError
from kubetune.spec import JobSpec, LongDocumentsSpec

#: Its name inside final/.
FILE = "kubetune.json"


class Inference(BaseModel):
    """The settings of ``final/kubetune.json``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    task: str
    max_length: int | None = None
    #: Labelling tasks: labels per text are decided one by one against ``thresholds``.
    multi_label: bool = False
    #: data.threshold when it is a number; per label (``thresholds``) when it was tuned.
    threshold: float = 0.5
    thresholds: dict[str, float] | None = None
    #: Classification of texts longer than max_length: windows and how they are joined.
    long_documents: LongDocumentsSpec | None = None
    #: Question answering: window overlap, longest answer, no-answer margin.
    doc_stride: int | None = None
    max_answer_length: int | None = None
    null_threshold: float | None = None
    #: Whether "no answer" may be the answer (False: the training data had none to learn it).
    allow_null: bool | None = None


def for_spec(spec: JobSpec, **extra: Any) -> Inference:
    """The settings a run of ``spec`` applies its model with; ``extra``: what training
    decided (tuned thresholds)."""
    d = spec.data
    fields: dict[str, Any] = {"task": spec.task, "max_length": d.max_length}
    if spec.task in ("classification", "zero-shot", "classical"):
        fields["multi_label"] = d.multi_label
        if isinstance(d.threshold, float):
            fields["threshold"] = d.threshold
    if spec.task == "classification":
        fields["long_documents"] = d.long_documents
    if spec.task == "question-answering":
        fields |= {
            "doc_stride": d.doc_stride,
            "max_answer_length": d.max_answer_length,
            "null_threshold": d.null_threshold,
        }
    return Inference(**(fields | extra))


def label_thresholds(settings: Inference | None, labels: list[str]) -> list[float]:
    """Each label's threshold, in label order: tuned ones where recorded, else the global."""
    if settings is None:
        return [0.5] * len(labels)
    tuned = settings.thresholds or {}
    return [float(tuned.get(label, settings.threshold)) for label in labels]


def write(folder: Path, settings: Inference) -> None:
    (folder / FILE).write_text(
        json.dumps(settings.model_dump(mode="json", exclude_none=True), indent=2) + "\n",
        encoding="utf-8",
    )


def read(folder: str | Path) -> Inference | None:
    """The settings in ``folder``, or None when it has none.

    Raises:
        ConfigError: the file is there but unreadable.
    """
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    try:
        return Inference.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as exc:
        raise ConfigError(
            f"{path}: not kubetune's inference settings ({str(exc).splitlines()[0]}); "
            "delete it to apply the model with the defaults"
        ) from exc
