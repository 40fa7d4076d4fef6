"""The pinned run record (run.json): everything needed to say what produced a result."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from kubetune.errors import ConfigError
from kubetune.store import sha256_file

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
