"""The pinned run record (run.json): everything needed to say what produced a result, and
:class:`RecordWriter`, which writes it through the readers' model
(:class:`kubetune.store.record.RunRecord`). Torch is imported only to describe the hardware."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from kubetune.errors import ConfigError
from kubetune.store import RunLocation, sha256_file
from kubetune.store.record import RECORD, Compute, RunRecord, Status

PACKAGES = (
    "kubetune", "torch", "transformers", "datasets", "peft", "accelerate", "tokenizers",
    "safetensors", "wandb", "scikit-learn", "seqeval", "numpy", "boto3",
)  # fmt: skip


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(cwd: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the repository around ``cwd``, if there is one."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"sha": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    return info


def model_identity(name: str, path: str, revision: str | None) -> dict[str, Any]:
    """The model's revision, or the sha256 of every file when it is a local folder."""
    local = Path(path)
    if local.is_dir():
        files = sorted(p for p in local.rglob("*") if p.is_file())
        return {
            "name": name,
            "path": str(local),
            "files": {p.relative_to(local).as_posix(): sha256_file(p) for p in files},
        }
    return {"name": name, "revision": revision}


def env_object(name: str) -> dict[str, Any]:
    """A JSON object the pod was given in the environment variable ``name`` ({} if unset)."""
    raw = os.environ.get(name)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}: not a JSON object ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: not a JSON object")
    return data


def sweep_params(own: dict[str, Any]) -> dict[str, Any]:
    """The sweep point's parameters for run.json: the run's own when the trainer expanded the
    sweep itself, else what the launcher was given (``KUBETUNE_PARAMS``): a pod or ``kubetune
    run`` hands the trainer the point's resolved spec, which no longer says what was swept."""
    from kubetune.kube.names import PARAMS_ENV

    return own or env_object(PARAMS_ENV)


class RecordWriter:
    """run.json of this run: written when it starts, when it stops, when it ends.

    An attempt after an interruption keeps the first attempt's start time and counts itself.
    Only the main process writes. Every write is validated as a :class:`RunRecord`, so a
    field the readers would reject fails here, in the trainer, not later in ``runs list``.
    """

    def __init__(
        self, location: RunLocation, previous: RunRecord | None, *, main: bool, gpus: int = 0
    ) -> None:
        self.location = location
        self.main = main
        self.data: dict[str, Any] = {
            "started": (previous and previous.started) or now(),
            "attempt": ((previous and previous.attempt) or 0) + 1,
        }
        #: GPUs this attempt holds on every machine together: GPU time counts them all.
        self.gpus = gpus
        self.spent_before = (previous and previous.compute) or Compute()
        self.attempt_started = time.monotonic()

    def spent(self) -> Compute:
        """Every attempt's compute so far: earlier ones from the record, this one measured
        (CPU time of this process and the children it waited for)."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.monotonic() - self.attempt_started
        attempt = Compute(
            cpu_seconds=round(
                own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime, 3
            ),
            wall_seconds=round(wall, 3),
            gpu_seconds=round(wall * self.gpus, 3),
        )
        return self.spent_before.plus(attempt)

    def write(self, status: Status, **fields: Any) -> RunRecord:
        self.data.update(status=status, compute=self.spent().model_dump(), **fields)
        built = RunRecord.model_validate(self.data)
        if self.main:
            self.location.store.write_json(self.location.key(RECORD), built.dump())
        return built
