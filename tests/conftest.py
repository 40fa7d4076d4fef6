"""Shared fixtures: small valid specs written to disk, and an S3 server (moto over HTTP)."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings

# pytest caches each test module as it rewrote its asserts, and Python each kubetune module it
# compiled, beside the source (git ignores __pycache__) -- unless bytecode writing is off, as
# PYTHONDONTWRITEBYTECODE turns it off on these machines: then every worker of every run
# parses and rewrites the whole suite again, ten seconds of each fast run. Tests only read
# the caches; a changed file is compiled again.
sys.dont_write_bytecode = False

ROOT = Path(__file__).resolve().parents[1]
DIGEST_IMAGE = "ghcr.io/kubetune/kubetune-trainer@sha256:" + "ab" * 32


#: A module whose every test is slow says so once, at the top (``pytestmark``).
ALL_SLOW = re.compile(r"^pytestmark = \[?\s*pytest\.mark\.slow\b", re.MULTILINE)


#: Examples per property test (tests/test_spec.py's fuzzing): the full suite, which CI runs,
#: draws 200; the fast suite a developer runs (``-m "not slow"``) draws 50 of the same
#: strategies. ``--hypothesis-profile`` chooses either by name.
FUZZ_EXAMPLES = {"full": 200, "fast": 50}
for _name, _examples in FUZZ_EXAMPLES.items():
    settings.register_profile(_name, max_examples=_examples)


def fast_run(config: pytest.Config) -> bool:
    """Whether this run is the fast suite: ``pytest -m "not slow"``."""
    return " ".join(config.option.markexpr.split()) == "not slow"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under ``-m "not slow"``, leave unimported the modules whose every test is slow:
    they import torch and transformers at the top (seconds of CPU in every xdist worker) only
    for their tests to be deselected."""
    if collection_path.suffix != ".py" or not fast_run(config):
        return None
    if ALL_SLOW.search(collection_path.read_text(encoding="utf-8")):
        return True
    return None


#: The xdist group of the fast tests that import torch and transformers in the test process
#: (the trainer's modules; about 10 s of CPU): one worker imports them, not every worker.
ML_GROUP = "imports-torch"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group tests for xdist's workers: a module's tests go to one worker, as with
    ``--dist loadfile``, so its module fixtures (a fake API server, a prepared dataset) start
    once; the fast tests of tests/train join :data:`ML_GROUP`. Training tests keep their
    modules' groups, so two of them run at once."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        path = Path(str(item.path))
        in_train = path.parent.name == "train" and path.parent.parent == ROOT / "tests"
        if in_train and item.get_closest_marker("slow") is None:
            group = ML_GROUP
        else:
            group = path.relative_to(ROOT).as_posix()
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--hypothesis-profile", None) is None:
        settings.load_profile("fast" if fast_run(config) else "full")

    # kubernetes_validate reads and parses its schema files (1.4 MB of definitions) again on
    # every call; the files never change, so parse each once per process. Validation itself
    # is untouched: a fresh validator checks every document, strict as asked.
    import kubernetes_validate.utils

    contents = kubernetes_validate.utils.schema_contents
    if not hasattr(contents, "cache_info"):
        kubernetes_validate.utils.schema_contents = functools.cache(contents)


def run_cli(
    *args: str, cwd: Path | str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``kubetune ARGS`` run in this process as the console script runs it
    (:func:`kubetune.cli.main`): its exit code, stdout and stderr, as ``subprocess.run(...,
    capture_output=True, text=True)`` gives them, without starting Python and importing the
    CLI again for every call. ``env``, if given, is the whole environment, as for
    ``subprocess.run``; ``cwd`` the working folder. Tests about the process itself (signals,
    what it imports, byte-stable output across processes) start a real one instead."""
    from kubetune import cli

    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    stderr = io.StringIO()
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, Path.cwd()
    code: int | str | None = 0
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        sys.argv = ["kubetune", *args]
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code
                if isinstance(code, str):
                    print(code, file=sys.stderr)
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    out = raw.getvalue().decode("utf-8")
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(["kubetune", *args], returncode, out, stderr.getvalue())


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
