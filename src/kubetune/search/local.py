"""Trials of a driven sweep as subprocesses on this machine (``kubetune run``).

Each trial runs through :func:`kubetune.local.run_one`, the launch line a Job uses, on its
own thread, so the driver's loop goes on while trials train. With more than one GPU here and
trials of fewer GPUs each, every trial gets its own GPUs (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from kubetune import local
from kubetune.local import Display, Outcome
from kubetune.search.driver import Running
from kubetune.sweep import ResolvedRun

_STATES: dict[str, Running] = {
    "completed": "succeeded",
    "already-completed": "succeeded",
    "pruned": "succeeded",
    "interrupted": "interrupted",
    "config-error": "config-error",
    "failed": "failed",
}


class LocalExecutor:
    """Run trials here, each in a thread that waits on its trainer subprocess."""

    def __init__(
        self,
        store: str,
        display: Callable[[], Display],
        *,
        gpus_here: int = 0,
        gpus_per_trial: int = 0,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.store = store
        self.display = display
        self.on_outcome = on_outcome
        self.threads: dict[str, threading.Thread] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.lock = threading.Lock()
        per = max(1, gpus_per_trial)
        #: Free GPU groups (each a CUDA_VISIBLE_DEVICES value); none on a CPU machine.
        self.free = (
            [
                ",".join(str(g) for g in range(start, start + per))
                for start in range(0, gpus_here - per + 1, per)
            ]
            if gpus_here and gpus_per_trial
            else []
        )
        self.held: dict[str, str] = {}

    def launch(self, run: ResolvedRun) -> None:
        with self.lock:
            current = self.threads.get(run.run_id)
            if current is not None and current.is_alive():
                return  # launched already: launching is idempotent per run
            self.outcomes.pop(run.run_id, None)
            env: dict[str, str] = {}
            if self.free:
                self.held[run.run_id] = self.free.pop(0)
                env["CUDA_VISIBLE_DEVICES"] = self.held[run.run_id]
            thread = threading.Thread(
                target=self._run, args=(run, env), name=f"trial-{run.run_id}", daemon=True
            )
            self.threads[run.run_id] = thread
        thread.start()

    def _run(self, run: ResolvedRun, env: dict[str, str]) -> None:
        try:
            outcome = local.run_one(run, self.store, self.display(), extra_env=env)
        except Exception as exc:  # the thread must leave an outcome, or the run hangs
            outcome = Outcome(run, "failed", errors=[f"{type(exc).__name__}: {exc}"])
        with self.lock:
            self.outcomes[run.run_id] = outcome
            group = self.held.pop(run.run_id, None)
            if group is not None:
                self.free.append(group)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def state(self, run_id: str) -> Running:
        with self.lock:
            thread = self.threads.get(run_id)
            outcome = self.outcomes.get(run_id)
        if thread is None:
            return "unknown"
        if outcome is None:
            return "running"
        return _STATES.get(outcome.status, "failed")

    def close(self) -> None:
        """Trials still running are left to end (after Ctrl-C they are storing checkpoints)."""
        for thread in list(self.threads.values()):
            thread.join(timeout=0)
