"""Shared fixtures: small valid specs written to disk, and an S3 server (moto over HTTP)."""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

# pytest caches each test module as it rewrote its asserts, and Python each kubetune module it
# compiled, beside the source (git ignores __pycache__) -- unless bytecode writing is off, as
# PYTHONDONTWRITEBYTECODE turns it off on these machines: then every worker of every run
# parses and rewrites the whole suite again, ten seconds of each fast run. Tests only read
# the caches; a changed file is compiled again. (Hypothesis, a pytest plugin whose modules pytest
# rewrites too, is imported after this line, in pytest_configure, so it is cached as well.)
sys.dont_write_bytecode = False

ROOT = Path(__file__).resolve().parents[1]
DIGEST_IMAGE = "ghcr.io/kubetune/kubetune-trainer@sha256:" + "ab" * 32


#: libyaml's safe loader (seven times faster than PyYAML's on a 50-run sweep's manifests).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_docs(text: str) -> list[Any]:
    """The non-empty documents of a YAML stream (rendered manifests), parsed by libyaml."""
    return [d for d in yaml.load_all(text, Loader=SAFE_LOADER) if d]


#: A module whose every test is slow says so once, at the top (``pytestmark``).
ALL_SLOW = re.compile(r"^pytestmark = \[?\s*pytest\.mark\.slow\b", re.MULTILINE)


#: Examples per property test (tests/test_spec.py's fuzzing): the full suite, which CI runs,
#: draws 200; the fast suite a developer runs (``-m "not slow"``) draws 50 of the same
#: strategies. ``--hypothesis-profile`` chooses either by name.
FUZZ_EXAMPLES = {"full": 200, "fast": 50}


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


#: What collecting the fast suite must leave unimported: each costs every xdist worker seconds
#: of CPU before a test runs. A test that needs one imports it in its body.
HEAVY = ("torch", "transformers", "datasets", "accelerate", "peft", "evaluate", "matplotlib")


def _heavy_loaded() -> set[str]:
    return {name for name in HEAVY if name in sys.modules}


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Under ``-m "not slow"``, a test module whose import pulls in a :data:`HEAVY` module is a
    collection error naming it (xdist reports it as it reports any module that fails to
    import)."""
    before = _heavy_loaded()
    report = yield
    checked = isinstance(collector, pytest.Module) and fast_run(collector.config)
    if checked and report.passed and (loaded := sorted(_heavy_loaded() - before)):
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.path.name} imports {', '.join(loaded)} when collected: the fast "
            "suite's every worker would pay for it; import it inside the tests that use it"
        )
    return report


#: The xdist group of the fast tests that import torch and transformers in the test process
#: (the trainer's modules; about 10 s of CPU): one worker imports them, not every worker.
ML_GROUP = "imports-torch"


#: The xdist group of the modules that stage the examples (tests/test_jobs.py and
#: tests/test_gitops.py): they share the examples' store, so in one worker, against one moto,
#: the packaged model (91 MB) is uploaded once for both, as it would be for a user.
EXAMPLES_GROUP = "examples-store"


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


@pytest.hookimpl(tryfirst=True)  # the profiles exist before hypothesis's plugin loads one
def pytest_configure(config: pytest.Config) -> None:
    from hypothesis import settings

    # The test processes hold large heaps (torch and transformers in one worker, moto's and
    # hypothesis's objects in all): at Python's default thresholds the collector made about
    # 5,000 passes, 26 of them full, 9 s of the fast suite's CPU; these make it about 600.
    gc.set_threshold(10_000, 20, 20)
    for name, examples in FUZZ_EXAMPLES.items():
        settings.register_profile(name, max_examples=examples)
    if config.getoption("--hypothesis-profile", None) is None:
        settings.load_profile("fast" if fast_run(config) else "full")

    # kubernetes_validate reads and parses its schema files (1.4 MB of definitions) again on
    # every call; the files never change, so parse each once per process. Validation itself
    # is untouched: a fresh validator checks every document, strict as asked.
    import kubernetes_validate.utils

    contents = kubernetes_validate.utils.schema_contents
    if not hasattr(contents, "cache_info"):
        kubernetes_validate.utils.schema_contents = functools.cache(contents)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Freeze what is alive out of the collector's reach before pytest's last collections.

    At unconfigure pytest collects garbage twice to report unraisable exceptions; over the
    torch worker's heap (millions of long-lived objects) those passes took four seconds, the
    fast suite's whole tail. Frozen, they walk nothing. What they could still have found, a
    cycle made garbage by the last tests whose finaliser raises, is left unreported."""
    gc.freeze()


#: ``kubetune`` commands run one after another in one Python process, through the console
#: script's entry point: argv[1] is a JSON list of argument lists, argv[2] a JSON list of
#: top-level packages the process may not import. The last line on stderr is ``REPORT=`` and
#: a JSON list: each command, its exit code, and the forbidden imports it tried.
CLI_SEQUENCE = """
import json, sys
forbidden, attempted = set(json.loads(sys.argv[2])), []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in forbidden:
            attempted.append(name)
            raise ImportError('this command must not import ' + name)
sys.meta_path.insert(0, Block())
from kubetune import cli
report = []
for args in json.loads(sys.argv[1]):
    sys.argv = ['kubetune', *args]
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
    report.append({'args': args, 'code': code, 'attempted': attempted[:]})
    del attempted[:]
print('REPORT=' + json.dumps(report), file=sys.stderr)
"""


def cli_sequence(
    commands: list[list[str]],
    *,
    forbidden: tuple[str, ...] = (),
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run ``kubetune`` COMMANDS in one new process (:data:`CLI_SEQUENCE`), for tests about a
    process (what it imports, output that must not depend on the hash seed or the locale)
    that need several commands: one interpreter start, not one per command. Returns the
    report, one entry per command; fails the test unless every command exits 0."""
    proc = subprocess.run(
        [sys.executable, "-c", CLI_SEQUENCE, json.dumps(commands), json.dumps(forbidden)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("REPORT=")]
    report: list[dict[str, Any]] = json.loads(line.removeprefix("REPORT="))
    assert [r["args"] for r in report] == commands
    for ran in report:
        assert ran["code"] in (0, None), (ran, proc.stderr)
    return report


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


@pytest.fixture(params=["file", "s3"])
def file_or_s3_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """An empty store, once as a folder and once on S3 (moto over HTTP)."""
    from kubetune.store import open_store

    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    request.getfixturevalue("s3_env")
    return open_store(f"s3://runs/{tmp_path.name}")


@pytest.fixture(scope="module")
def kube_server() -> Iterator[Any]:
    """A fake Kubernetes API server over HTTP (tests/kubefake.py), one per test module."""
    import kubefake

    with kubefake.serve() as fake:
        yield fake
