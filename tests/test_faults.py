"""Failpoints: a SIGKILL or, with ``:term``, a SIGTERM at a named point of a named step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from kubetune.faults import ENV

PROGRAM = """
import signal, sys
from kubetune.faults import failpoint
signal.signal(signal.SIGTERM, lambda *_: print("handled SIGTERM", flush=True))
for step in (1, 2, 3):
    failpoint("signal", step)
    print(f"after step {step}", flush=True)
"""


@pytest.mark.parametrize(
    ("armed", "out", "code"),
    [
        ("", "after step 1\nafter step 2\nafter step 3\n", 0),
        ("signal:2", "after step 1\n", -signal.SIGKILL),
        ("save:2,signal:2:term", "after step 1\nhandled SIGTERM\nafter step 2\nafter step 3\n", 0),
    ],
)
def test_a_failpoint_kills_or_signals_at_its_step(armed: str, out: str, code: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True, text=True, timeout=60, env={**os.environ, ENV: armed},
    )  # fmt: skip
    assert (proc.stdout, proc.returncode) == (out, code), proc.stderr
