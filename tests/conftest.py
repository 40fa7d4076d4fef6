"""Shared fixtures: small valid specs written to disk, and an S3 server (moto over HTTP)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
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
        "data": {"train": "s3://data/bbc/train.jsonl", "eval": "s3://data/bbc/validation.jsonl"},
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free local port, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (here and in subprocesses) at the moto server, with a bucket ``runs``."""
    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    if "runs" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket="runs")
    return s3_endpoint


@pytest.fixture(scope="module")
def kube_server() -> Iterator[Any]:
    """A fake Kubernetes API server over HTTP (tests/kubefake.py), one per test module."""
    import kubefake

    with kubefake.serve() as fake:
        yield fake
