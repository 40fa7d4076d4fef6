"""Failpoints: kill the trainer at a named point, so tests can prove a restart loses nothing.

``KUBETUNE_FAILPOINT=upload:20`` makes the process SIGKILL itself when it reaches the point
``upload`` at step 20 (several points: comma-separated). Unset, a failpoint is one dictionary
lookup. SIGKILL, not an exception: nothing gets to clean up, exactly as when a node dies.
``name:step:term`` sends SIGTERM instead, as a preemption would at that moment.

The points, in the order a checkpoint passes them:

- ``signal``: at the end of an optimiser step, before the trainer decides whether to stop;
- ``step``: at the end of an optimiser step, between steps;
- ``save``: inside the Trainer's checkpoint save, after the weights, before the optimizer;
- ``upload``: in the background upload, after the checkpoint's first file is stored;
- ``manifest-before``: every file stored, the manifest not yet written;
- ``manifest-after``: the manifest written, older checkpoints not yet pruned;
- ``final``: the final model and outputs stored, run.json not yet completed (step = last step).

And in a sweep driver (:mod:`kubetune.search.driver`; "step" is the trial's number):

- ``driver-told``: a trial's end told to the study, sweep.json not yet rewritten;
- ``driver-launched``: a trial launched, sweep.json not yet rewritten.

And in a batch job (:mod:`kubetune.predict.batch`; "step" is the shard):

- ``predict-before-manifest``: the shard's files stored, its manifest not yet written.
"""

from __future__ import annotations

import os
import signal
from functools import cache

ENV = "KUBETUNE_FAILPOINT"


@cache
def _armed(setting: str) -> frozenset[str]:
    return frozenset(item.strip() for item in setting.split(",") if item.strip())


def failpoint(name: str, step: int) -> None:
    """SIGKILL this process if ``name:step`` is armed in ``$KUBETUNE_FAILPOINT``; SIGTERM it
    if ``name:step:term`` is (its handler runs before this returns, on the main thread)."""
    setting = os.environ.get(ENV)
    if not setting:
        return
    armed = _armed(setting)
    if f"{name}:{step}" in armed:
        os.kill(os.getpid(), signal.SIGKILL)
    if f"{name}:{step}:term" in armed:
        os.kill(os.getpid(), signal.SIGTERM)
