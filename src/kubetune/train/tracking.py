"""Weights & Biases: one W&B run per kubetune run, grouped by sweep.

mode ``auto`` means online when an API key is available (``WANDB_API_KEY``, which the chart
fills from the Secret), offline otherwise; ``disabled`` opens nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubetune.spec import JobSpec


def resolve_mode(spec: JobSpec) -> str:
    mode = spec.tracking.wandb.mode
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


def start(spec: JobSpec, run_id: str, sweep: str, directory: Path) -> Any | None:
    """Open the W&B run, or None when tracking is disabled."""
    mode = resolve_mode(spec)
    if mode == "disabled":
        return None
    import wandb

    w = spec.tracking.wandb
    directory.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=w.project or spec.name,
        entity=w.entity,
        group=w.group or sweep,
        job_type=spec.task,
        id=run_id,
        name=run_id,
        tags=list(w.tags),
        # The resolved spec holds no secret values: only the names of Kubernetes Secrets.
        config=spec.model_dump(mode="json", exclude={"sweep"}),
        mode=mode,  # type: ignore[arg-type]
        dir=str(directory),
        resume="allow",
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
    )


def finish(run: Any | None, summary: dict[str, Any]) -> None:
    if run is None:
        return
    for key, value in summary.items():
        run.summary[key] = value
    run.finish()
