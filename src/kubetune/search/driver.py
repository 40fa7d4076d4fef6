"""The sweep driver: one loop, the same locally and in a pod, that launches a driven sweep's
trials, reports their evaluations to the pruner, counts the budget and resumes from the store.

A driven sweep (``SweepSpec.driven``: a search method, a pruner, a budget or a parallelism
limit) keeps an Optuna study in the store (:mod:`~kubetune.search.journal`) and asks it, one
trial at a time, through ask-and-tell. Each turn of the loop (:meth:`Driver.step`):

1. every running trial is reconciled with its run's record and its executor: new rungs are
   reported to the pruner and answered (:mod:`~kubetune.search.rungs`); a completed run
   tells the study its objective, a pruned one tells ``PRUNED``; an interrupted run, or one
   the executor no longer knows (a driver that restarted), is launched again and resumes
   from its checkpoint; a failed one is retried ``sweep.retries`` times, then told ``FAIL``;
2. while fewer than ``parallelism`` trials run, and the plan, ``max_runs`` and the budget
   allow one more, the next trial is asked and launched: the next planned point of a grid,
   random or list sweep, or the sampler's suggestion (:mod:`~kubetune.search.space`);
3. ``sweep.json`` is rewritten (:mod:`~kubetune.search.state`).

Nothing lives only in the driver: the study, the rungs and the records are in the store, so
a driver killed anywhere and started again finishes the same sweep, trains no finished
trial again, and, with one trial at a time, asks the same trials as one that never stopped.
A trial the sampler asks twice (same resolved spec, same run id) is trained once: the second
trial shares the first one's result.

The :class:`Executor` is where trials run: subprocesses here
(:class:`~kubetune.search.local.LocalExecutor`) or Jobs in the cluster
(:class:`~kubetune.search.cluster.JobExecutor`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from kubetune import sweep as sweepmod
from kubetune.errors import ConfigError, SpecError
from kubetune.faults import failpoint
from kubetune.search import journal, rungs, space
from kubetune.search.state import Spent, SweepState, TrialRow, now, read_state, write_state
from kubetune.spec import JobSpec, canonical_json, sweep_size
from kubetune.store import RunLocation, Store
from kubetune.store.record import RunFolder, read_run
from kubetune.sweep import ResolvedRun

#: What an executor knows of a run it launched: still going, or how its process ended.
#: "unknown": it never launched it (a driver that restarted) or its Job is gone.
Running = Literal["running", "succeeded", "interrupted", "config-error", "failed", "unknown"]

#: Seconds between turns of the loop.
POLL_SECONDS = 2.0
#: Trials at once on the cluster for tpe and cmaes when the spec says nothing: enough to
#: keep a small GPU pool busy, few enough for the sampler to learn between asks.
CLUSTER_SEARCH_PARALLELISM = 4

_RUN_ID = "run_id"
_POINT = "point"
_LAUNCHES = "launches"
_FAILURES = "failures"
_SAME_AS = "same_as"
_INDEX = "index"


class Executor(Protocol):
    """Where trials run. ``launch`` must be idempotent for a run id: a driver that restarted
    launches a run again when it cannot tell whether it still runs."""

    def launch(self, run: ResolvedRun) -> None: ...
    def state(self, run_id: str) -> Running: ...
    def close(self) -> None: ...


@dataclass
class Cost:
    """What driving costs: decisions made (a rung answered, a trial asked, a trial told),
    and the CPU time (of the driver's own thread) and wall time its turns took."""

    decisions: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


@dataclass
class Result:
    """How a drive ended."""

    state: SweepState
    interrupted: bool = False


class Driver:
    """Drive the sweep of ``spec`` (a spec with a driven sweep block) to its end."""

    def __init__(
        self,
        spec: JobSpec,
        store: Store,
        executor: Executor,
        *,
        parallelism: int,
        where: str = "local",
        poll: float = POLL_SECONDS,
        rung_wait: float | None = None,
        on_change: Callable[[SweepState, TrialRow | None], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        assert spec.sweep is not None
        self.spec = spec
        self.sweep = spec.sweep
        self.store = store
        self.executor = executor
        self.parallelism = parallelism
        self.where = where
        self.poll = poll
        self.on_change = on_change
        self.clock = clock
        self.stop_requested = threading.Event()
        self.metric, self.direction = space.objective(spec)
        wait = (
            rung_wait
            if rung_wait is not None
            else (self.sweep.pruner.wait_seconds if self.sweep.pruner else 0)
        )
        self.rung_settings = (
            rungs.Settings(self.metric, float(wait)).dump() if self.sweep.pruner else ""
        )
        self.cost = Cost()
        self._written: dict[str, object] | None = None
        self.planned: list[ResolvedRun] | None = None
        if self.sweep.method in ("grid", "random", "list"):
            self.planned = sweepmod.expand(spec)
        self.limit = len(self.planned) if self.planned is not None else sweep_size(self.sweep)
        self._runs: dict[int, ResolvedRun] = {}
        #: The last rung this driver answered, per trial number.
        self._answered: dict[int, int] = {}
        self.state = self._start_state()
        self.study = optuna.create_study(
            storage=journal.study_storage(store, spec.name),
            study_name=spec.name,
            direction=self.direction,
            sampler=space.sampler(self.sweep, 0),
            pruner=space.pruner(self.sweep),
            load_if_exists=True,
        )
        self._rebuild_rows()
        for orphan in self._running():
            if _POINT not in orphan.user_attrs:
                self.study.sampler = space.sampler(self.sweep, orphan.number)
                self._give_point(optuna.Trial(self.study, orphan._trial_id))

    def _rebuild_rows(self) -> None:
        """The summary's rows from the study, which is the truth: a driver that died after
        telling a trial but before writing sweep.json left that row behind."""
        ended = {
            TrialState.COMPLETE: "completed",
            TrialState.PRUNED: "pruned",
            TrialState.FAIL: "failed",
        }
        for trial in self._trials():
            if _POINT not in trial.user_attrs:
                continue  # asked, then the driver died before it was given a point
            row = self._row(trial.number, self._run_id(trial), dict(trial.user_attrs[_POINT]))
            row.launches = int(trial.user_attrs.get(_LAUNCHES, row.launches))
            if trial.user_attrs.get(_SAME_AS) is not None:
                row.same_as = int(trial.user_attrs[_SAME_AS])
            if trial.state in ended:
                row.state = ended[trial.state]  # type: ignore[assignment]
                if trial.state == TrialState.COMPLETE:
                    row.value = trial.value
                elif trial.intermediate_values:
                    row.value = trial.intermediate_values[max(trial.intermediate_values)]
                    row.rungs = max(trial.intermediate_values)

    # --- the sweep's identity -----------------------------------------------------------------

    def _start_state(self) -> SweepState:
        spec_hash = hashlib.sha256(canonical_json(self.spec).encode()).hexdigest()
        found = read_state(self.store, self.spec.name)
        if found is not None and found.spec_hash != spec_hash:
            raise ConfigError(
                f"{self.store.url(self.spec.name)} holds sweep {self.spec.name} started from "
                "another spec; rename the spec (name) or remove that folder to start afresh"
            )
        budget = self.sweep.budget.model_dump(exclude_none=True) if self.sweep.budget else {}
        started = found.started if found is not None else now()
        return SweepState(
            sweep=self.spec.name,
            method=self.sweep.method,
            seed=self.sweep.seed,
            spec_hash=spec_hash,
            metric=self.metric,
            direction=self.direction,
            parallelism=self.parallelism,
            started=started,
            updated=now(),
            budget=budget,
            driver=self.where,
            trials=found.trials if found is not None else [],
        )

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> Result:
        """Drive until every trial has ended and no more may start. Ctrl-C launches nothing
        more and waits while the trials (which got the same signal) store a checkpoint; the
        same command resumes the sweep."""
        try:
            while True:
                self.step()
                if self.finished():
                    break
                self.stop_requested.wait(self.poll)
        except KeyboardInterrupt:
            self.stop_requested.set()
            self._drain()
            return Result(self._write(), interrupted=True)
        finally:
            self.executor.close()
        self.state.finished = self.state.finished or now()
        return Result(self._write())

    def _drain(self) -> None:
        """Wait until no trial's process runs (a second Ctrl-C ends the wait)."""
        try:
            while any(self.executor.state(self._run_id(t)) == "running" for t in self._running()):
                self.stop_requested.wait(0.5)
        except KeyboardInterrupt:
            return

    def step(self) -> None:
        """One turn: reconcile the running trials, launch what may start, write the summary."""
        cpu, wall = time.thread_time(), time.monotonic()
        try:
            self._step()
        finally:
            self.cost.cpu_seconds += time.thread_time() - cpu
            self.cost.wall_seconds += time.monotonic() - wall

    def _step(self) -> None:
        for trial in self._running():
            self._reconcile(trial)
        while not self.stop_requested.is_set():
            reason = self._launch_blocked()
            if reason is None:
                self._launch_next()
                continue
            if reason != "parallelism" and not self._running():
                self.state.stopped = self.state.stopped or reason
            break
        self._write()

    def finished(self) -> bool:
        return not self._running() and self._launch_blocked() not in (None, "parallelism")

    # --- trials -------------------------------------------------------------------------------

    def _trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def _running(self) -> list[FrozenTrial]:
        return [t for t in self._trials() if t.state == TrialState.RUNNING]

    def _run_id(self, trial: FrozenTrial) -> str:
        return str(trial.user_attrs[_RUN_ID])

    def _location(self, run_id: str) -> RunLocation:
        return RunLocation(self.store, self.spec.name, run_id)

    def _run(self, trial: FrozenTrial) -> ResolvedRun:
        """The trial's run, resolved again from its point (a restarted driver has only the
        study): the same point gives the same run id."""
        if trial.number not in self._runs:
            point = dict(trial.user_attrs[_POINT])
            if self.planned is not None:
                run = self.planned[int(trial.user_attrs[_INDEX])]
            else:
                run = sweepmod.resolve(self.spec, point, trial.number)
            self._runs[trial.number] = replace(run, rungs=self.rung_settings)
        return self._runs[trial.number]

    def _launch_blocked(self) -> str | None:
        """Why no trial may start now (None: one may)."""
        trials = self._trials()
        if self.limit is not None and len(trials) >= self.limit:
            if self.planned is not None:
                return f"all {self.limit} planned trials launched"
            return f"max_runs ({self.limit}) reached"
        over = self._over_budget(trials)
        if over:
            return over
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        return "parallelism" if running >= self.parallelism else None

    def _launch_next(self) -> None:
        number = len(self._trials())
        self.study.sampler = space.sampler(self.sweep, number)
        self.cost.decisions += 1
        self._give_point(self.study.ask())

    def _give_point(self, trial: optuna.Trial) -> None:
        """Give an asked trial its point and run, and launch it (unless its run is another
        trial's). A trial asked by a driver that died before this is given its point again:
        the sampler is seeded by the trial's number, and what was suggested stays."""
        number = trial.number
        if self.planned is not None:
            run = self.planned[number]
            self.study._storage.set_trial_user_attr(trial._trial_id, _INDEX, number)
            point = run.params
        else:
            point = space.suggest(trial, self.sweep)
            try:
                run = sweepmod.resolve(self.spec, point, trial.number)
            except SpecError as exc:
                # A point the rest of the spec refuses: the search learns to avoid it.
                self._set(trial, {_POINT: point, _RUN_ID: "", _LAUNCHES: 0})
                self.study.tell(trial, state=TrialState.FAIL)
                refused = self._row(trial.number, "", point)
                refused.state, refused.error = "failed", "; ".join(exc.lines())
                refused.refused = True
                self._notify(refused)
                return
        self._set(trial, {_POINT: point, _RUN_ID: run.run_id, _LAUNCHES: 0})
        twin = self._twin(trial.number, run.run_id)
        row = self._row(trial.number, run.run_id, point)
        if twin is not None:
            self._set(trial, {_SAME_AS: twin})
            row.same_as = twin
            frozen = self.study._storage.get_trial(trial._trial_id)
            self._reconcile(frozen)  # a twin of a finished trial ends now
            return
        self._launch(self.study._storage.get_trial(trial._trial_id))

    def _twin(self, number: int, run_id: str) -> int | None:
        for other in self._trials():
            if other.number != number and other.user_attrs.get(_RUN_ID) == run_id:
                return int(other.user_attrs.get(_SAME_AS, other.number))
        return None

    def _set(self, trial: optuna.Trial | FrozenTrial, attrs: dict[str, object]) -> None:
        for key, value in attrs.items():
            self.study._storage.set_trial_user_attr(trial._trial_id, key, value)

    def _launch(self, trial: FrozenTrial) -> None:
        launches = int(trial.user_attrs.get(_LAUNCHES, 0)) + 1
        self._set(trial, {_LAUNCHES: launches})
        row = self._row(trial.number, self._run_id(trial), dict(trial.user_attrs[_POINT]))
        row.launches = launches
        self.executor.launch(self._run(trial))
        failpoint("driver-launched", trial.number)
        self._notify(row)

    def _reconcile(self, trial: FrozenTrial) -> None:
        """Bring one running trial up to date with its run (see the module docstring)."""
        run_id = self._run_id(trial)
        location = self._location(run_id)
        same_as = trial.user_attrs.get(_SAME_AS)
        if self.sweep.pruner is not None and same_as is None:
            self._answer_rungs(trial, location)
        # The executor first: a trainer writes its final record before it exits, so a run
        # seen ended has the record it ended with.
        running = self.executor.state(run_id) if same_as is None else "running"
        folder = read_run(location)
        status = folder.record.status if folder.state == "written" else None
        row = self._sync_row(trial, folder)
        if status == "completed":
            value = folder.record.value("eval", self.metric)
            if value is None:
                row.state, row.error = "failed", f"its record has no eval {self.metric}"
                self.study.tell(trial.number, state=TrialState.FAIL)
            else:
                row.state, row.value = "completed", value
                self.study.tell(trial.number, value)
            self.cost.decisions += 1
            failpoint("driver-told", trial.number)
            self._notify(row)
            return
        if status == "pruned":
            row.state = "pruned"
            self.study.tell(trial.number, state=TrialState.PRUNED)
            self.cost.decisions += 1
            failpoint("driver-told", trial.number)
            self._notify(row)
            return
        if same_as is not None:
            # Its twin's run is the one that trains; a twin that failed fails it too.
            twin = self.study._storage.get_trial_id_from_study_id_trial_number(
                self.study._study_id, int(same_as)
            )
            if self.study._storage.get_trial(twin).state == TrialState.FAIL:
                row.state = "failed"
                self.study.tell(trial.number, state=TrialState.FAIL)
                self._notify(row)
            return
        if running == "running" or self.stop_requested.is_set():
            return
        if running in ("interrupted", "unknown") and status != "failed":
            self._launch(trial)  # resumes from its checkpoint
            return
        failures = int(trial.user_attrs.get(_FAILURES, 0)) + 1
        self._set(trial, {_FAILURES: failures})
        if running != "config-error" and failures <= self.sweep.retries:
            self._launch(trial)
            return
        row.state = "failed"
        row.refused = running == "config-error"
        row.error = folder.record.error or (
            "the spec or data of this point was refused" if row.refused else None
        )
        self.study.tell(trial.number, state=TrialState.FAIL)
        self._notify(row)

    def _answer_rungs(self, trial: FrozenTrial, location: RunLocation) -> None:
        """Report the trial's new rungs to its pruner and write each decision. Rungs already
        answered by this driver are not read again (one GET per trial per turn when nothing
        is new); a driver that restarted reads them once, and answers what was left open."""
        reported = max(trial.intermediate_values, default=0)
        live = optuna.Trial(self.study, trial._trial_id)
        after = self._answered.get(trial.number, 0)
        for rung in rungs.read_rungs(location, after=after):
            decided = rungs.read_decision(location, rung.number)
            if rung.number <= reported and decided is not None:
                continue
            prune = False
            if rung.value is not None:
                if rung.number > reported:
                    live.report(rung.value, rung.number)
                    reported = rung.number
                prune = bool(live.should_prune())  # numpy.bool_ from some pruners
            if decided is None:
                rungs.write_decision(location, rung.number, prune=prune, trial=trial.number)
                self.cost.decisions += 1
            self._answered[trial.number] = rung.number
            row = self._row(trial.number, self._run_id(trial), dict(trial.user_attrs[_POINT]))
            row.rungs = max(row.rungs, rung.number)
            if rung.value is not None:
                row.value = rung.value

    # --- the summary --------------------------------------------------------------------------

    def _row(self, number: int, run_id: str, point: dict[str, object]) -> TrialRow:
        for row in self.state.trials:
            if row.number == number:
                return row
        row = TrialRow(number=number, run_id=run_id, params=dict(point))
        self.state.trials.append(row)
        return row

    def _sync_row(self, trial: FrozenTrial, folder: RunFolder) -> TrialRow:
        """The trial's row with its run's compute so far (from ``folder``, its record)."""
        row = self._row(trial.number, self._run_id(trial), dict(trial.user_attrs[_POINT]))
        compute = folder.record.compute if folder.state == "written" else None
        if compute is not None:
            row.cpu_seconds = compute.cpu_seconds
            row.gpu_seconds = compute.gpu_seconds
            row.wall_seconds = compute.wall_seconds
        return row

    def _notify(self, row: TrialRow | None) -> None:
        if self.on_change is not None:
            self.on_change(self._write(), row)

    def _write(self) -> SweepState:
        by_number = {t.number: t for t in self._trials()}
        for row in self.state.trials:
            trial = by_number.get(row.number)
            if trial is None or row.same_as is None:
                continue
            twin = next((r for r in self.state.trials if r.number == row.same_as), None)
            if twin is not None and trial.state != TrialState.RUNNING:
                row.state, row.value = twin.state, twin.value
        self.state.trials.sort(key=lambda r: r.number)
        self.state.spent = self._spent()
        # Written when something but the clock changed: a turn every few seconds would
        # otherwise be a PUT every few seconds.
        shown = self.state.model_dump(mode="json", exclude={"updated", "spent"})
        shown["trial_costs"] = self.state.spent.cpu_hours + self.state.spent.gpu_hours
        if shown != self._written:
            self.state.updated = now()
            write_state(self.store, self.state)
            self._written = shown
        return self.state

    # --- the budget ---------------------------------------------------------------------------

    def _spent(self) -> Spent:
        own = [r for r in self.state.trials if r.same_as is None]
        started = datetime.fromisoformat(self.state.started)
        return Spent(
            cpu_hours=round(sum(r.cpu_seconds for r in own) / 3600, 6),
            gpu_hours=round(sum(r.gpu_seconds for r in own) / 3600, 6),
            hours=round((self.clock() - started).total_seconds() / 3600, 6),
        )

    def _over_budget(self, trials: list[FrozenTrial]) -> str | None:
        """Why the next trial would overrun the budget, or None. A trial's cost is estimated
        as the mean of the trials that ran in full (else of every finished one); trials in
        flight are counted at that estimate, since their records are written as they end."""
        budget = self.sweep.budget
        if budget is None:
            return None
        spent = self._spent()
        finished = [
            r for r in self.state.trials if r.same_as is None and r.state in ("completed", "pruned")
        ]
        full = [r for r in finished if r.state == "completed"] or finished
        in_flight = sum(1 for t in trials if t.state == TrialState.RUNNING)
        checks = (
            ("hours", budget.hours, spent.hours, "wall_seconds"),
            ("gpu_hours", budget.gpu_hours, spent.gpu_hours, "gpu_seconds"),
            ("cpu_hours", budget.cpu_hours, spent.cpu_hours, "cpu_seconds"),
        )
        for name, limit, used, field in checks:
            if limit is None:
                continue
            estimate = sum(getattr(r, field) for r in full) / len(full) / 3600 if full else 0.0
            if name == "hours":
                # Wall-clock: trials in flight run beside the next one, not before it.
                projected = used + estimate / max(1, self.parallelism)
            else:
                projected = used + estimate * (in_flight + 1)
            if used >= limit or projected > limit:
                return f"budget: {name} {limit:g} (spent {used:.3g}, next trial ≈ {estimate:.3g})"
        return None


def parallelism_for(spec: JobSpec, *, cluster: bool, gpus_here: int = 0) -> int:
    """Trials at once: the spec's, else locally one (one per GPU of this machine), else on the
    cluster every planned trial of a static sweep and a few for a search."""
    assert spec.sweep is not None
    if spec.sweep.parallelism is not None:
        return spec.sweep.parallelism
    if not cluster:
        per_trial = max(1, spec.resources.gpus)
        return max(1, gpus_here // per_trial) if gpus_here else 1
    if spec.sweep.method in ("grid", "random", "list"):
        return sweep_size(spec.sweep) or CLUSTER_SEARCH_PARALLELISM
    return CLUSTER_SEARCH_PARALLELISM
