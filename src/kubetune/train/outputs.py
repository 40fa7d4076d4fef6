"""What a finished run leaves in the store: final/ (and adapter/), metrics.json, predictions,
history.json, then run.json, which says the run is done; then the W&B summary and the done
event. Fine-tuned runs and zero-shot baselines finish the same way."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune import events, inference
from kubetune.events import emit
from kubetune.faults import failpoint
from kubetune.inference import Inference
from kubetune.spec import JobSpec
from kubetune.store import RunLocation, StoreError, checkpoints
from kubetune.store.record import HISTORY, METRICS
from kubetune.train import record, tracking
from kubetune.train.context import RunContext


@dataclass
class Finished:
    """What a finished run hands to :func:`finish`."""

    results: dict[str, Any]
    artifacts: dict[str, Any]
    labels: list[str]
    parameters: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)
    resumed_step: int | None = None
    save_model: Callable[[Path, ThreadPoolExecutor], None] | None = None
    history: list[dict[str, Any]] | None = None
    step: int = 0
    #: train.keep_optimizer_state: False removes it from the stored checkpoints at the end.
    keep_optimizer_state: bool = True


def finish(ctx: RunContext, finished: Finished, pool: ThreadPoolExecutor | None) -> None:
    """final/ (when there is a model), metrics, history, predictions, then run.json: the run
    is done. Then what only a resume needs goes, since a completed run is never resumed
    (:func:`kubetune.train.runner.run` returns at once): tombstones of pruned checkpoints,
    and unless the spec keeps it, the checkpoints' optimizer state, whose size run.json
    records."""
    location = ctx.location
    if finished.save_model is not None and pool is not None:
        finished.save_model(ctx.work / "final", pool)
    save_outputs(location, finished.results, finished.artifacts)
    if finished.history is not None:
        location.store.write_json(location.key(HISTORY), finished.history)
    failpoint("final", finished.step)
    ctx.record.write(
        "completed",
        labels=finished.labels,
        parameters=finished.parameters,
        finished=record.now(),
        resumed_from_step=finished.resumed_step,
        metrics=finished.results,
        **finished.extra,
    )
    checkpoints.drop_tombstones(location)
    if not finished.keep_optimizer_state:
        _remove_optimizer_state(ctx)


def _remove_optimizer_state(ctx: RunContext) -> None:
    """Trim the completed run's checkpoints and record the bytes freed. The run is complete
    whatever happens here: a store that fails now leaves the state in place, with a warning."""
    try:
        trimmed = checkpoints.trim_resume_state(ctx.location)
        if trimmed.steps:
            ctx.record.write("completed", **{checkpoints.STATE_REMOVED: trimmed.record()})
    except StoreError as exc:
        print(
            f"kubetune: the run is complete, but its checkpoints keep their optimizer state: {exc}",
            file=sys.stderr,
            flush=True,
        )


def save_model(
    model: Any,
    spec: JobSpec,
    tokenizer: Any,
    location: RunLocation,
    final: Path,
    pool: ThreadPoolExecutor,
    write: Callable[[Any, Path, Path | None], None] | None = None,
    settings: Inference | None = None,
) -> None:
    """final/: the trained model and tokenizer. With LoRA the adapter goes to adapter/, and
    final/ holds the merged plain model (lora.merge) or the adapter alone. ``write``: a
    family's own writer of final/ and adapter/ (:attr:`kubetune.train.task.OwnTrainer.save`);
    ``settings``: how the model is applied (final/kubetune.json, :mod:`kubetune.inference`)."""
    adapter = final.parent / "adapter" if spec.lora is not None else None
    if write is not None:
        write(model, final, adapter)
    else:
        if spec.lora is not None and adapter is not None:
            model.save_pretrained(str(adapter))
            if spec.lora.merge:
                model = model.merge_and_unload()
            else:
                # The adapter alone; its config.json keeps the task head's shape and labels,
                # which the base checkpoint does not know.
                model.get_base_model().config.save_pretrained(str(final))
        model.save_pretrained(str(final))
        tokenizer.save_pretrained(str(final))
    if settings is not None:
        inference.write(final, settings)
    if adapter is not None:
        checkpoints.upload_tree(location.store, adapter, location.key("adapter"), pool)
    location.store.delete_prefix(location.key("final"))
    checkpoints.upload_tree(location.store, final, location.key("final"), pool)


def save_outputs(location: RunLocation, results: dict[str, Any], artifacts: dict[str, Any]) -> None:
    """metrics.json, predictions per split and each split's extra artifacts."""
    location.store.write_json(location.key(METRICS), results)
    for split, (rows, extra) in artifacts.items():
        name = "predictions.jsonl" if split == "eval" else f"{split}_predictions.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        location.store.write_text(location.key(name), text)
        for stem, data in extra.items():
            suffix = "" if split == "eval" else f"_{split}"
            location.store.write_json(location.key(f"{stem}{suffix}.json"), data)


def start_tracking(ctx: RunContext) -> Any:
    """The W&B run of this run id (None when tracking is disabled)."""
    wandb_dir = Path(os.environ.get("WANDB_DIR") or ctx.work / "wandb")
    return tracking.start(ctx.spec, ctx.resolved.run_id, ctx.location.sweep, wandb_dir)


def close(ctx: RunContext, wandb_run: Any, results: dict[str, Any]) -> None:
    """After run.json: final metrics as W&B summary (``<split>/<metric>``), the done event,
    and the scratch folder removed."""
    summary = {
        f"{split}/{k}": v
        for split, m in results.items()
        for k, v in m.items()
        if isinstance(v, (int, float))
    }
    tracking.finish(wandb_run, summary)
    emit(events.Done(already=False, url=ctx.location.url, metrics=results))
    shutil.rmtree(ctx.work, ignore_errors=True)
