"""Shared fixtures: small valid specs written to disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DIGEST_IMAGE = "ghcr.io/kubetune/kubetune-trainer@sha256:" + "ab" * 32


def base_spec(**overrides: Any) -> dict[str, Any]:
    """A minimal valid, renderable spec as plain data."""
    data: dict[str, Any] = {
        "name": "bbc-topic",
        "task": "classification",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"train": "data/bbc/train.jsonl", "eval": "data/bbc/validation.jsonl"},
        "image": DIGEST_IMAGE,
        "storage": {"uri": "s3://runs/kubetune", "secret": "kubetune-s3"},
        "tracking": {"wandb": {"project": "p", "secret": "wandb-key"}},
    }
    data.update(overrides)
    return data


@pytest.fixture
def write_spec(tmp_path: Path) -> Any:
    """Write spec data (or text) to a YAML file and return its path."""

    def write(data: dict[str, Any] | str, name: str = "job.yaml") -> Path:
        path = tmp_path / name
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random BERT with its tokenizer, and learnable classification/NER splits."""
    import tiny as builder

    return builder.build(tmp_path_factory.mktemp("tiny"))
