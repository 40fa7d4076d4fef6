"""A sweep block as Optuna sees it: the search space, the sampler, the pruner, the objective.

The same dotted-path parameters and forms as static sweeps: ``values`` is a categorical
choice (values that Optuna cannot hold, such as a ``lora`` section, are chosen by their JSON
text), ``uniform``/``log_uniform``/``int_uniform`` are float, log-float and int ranges. A
parameter with ``when`` is suggested only when its condition holds for the values suggested
before it (define-by-run, which TPE models with ``group=True``).

The sampler is made again for every trial, seeded by the sweep's seed and the trial's
number: a driver that restarts asks the same next trial as one that never stopped, given the
same finished trials, and Optuna's samplers keep no other state between asks (CMA-ES keeps
its own in the trials' system attributes).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any, Literal

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kubetune.headline import TASK_METRICS, higher_is_better, metrics_of
from kubetune.spec import JobSpec, SweepParam, SweepSpec
from kubetune.sweep import is_active, ordered_parameters

optuna.logging.set_verbosity(optuna.logging.WARNING)
# TPE's multivariate and group modes are marked experimental; they are what conditional
# parameters need, and the warning would reach every user of every sweep.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

#: Categorical values Optuna stores as they are; others are chosen by their JSON text.
_PLAIN = (type(None), bool, int, float, str)


def objective(spec: JobSpec) -> tuple[str, Literal["maximize", "minimize"]]:
    """(eval metric, "maximize" | "minimize") of the sweep."""
    assert spec.sweep is not None
    chosen = spec.sweep.objective
    known = (
        metrics_of(spec.task, spec.data.multi_label, spec.classical.method)
        if spec.task in TASK_METRICS
        else ("loss",)
    )
    metric = chosen.metric or known[0]
    metric = metric.removeprefix("eval_")
    if chosen.direction is not None:
        return metric, chosen.direction
    return metric, "maximize" if higher_is_better(metric) else "minimize"


def _plain(values: list[Any]) -> bool:
    return all(isinstance(v, _PLAIN) for v in values)


def distribution(param: SweepParam) -> BaseDistribution:
    """The Optuna distribution of one parameter."""
    if param.values is not None:
        values = param.values
        choices = values if _plain(values) else [json.dumps(v, sort_keys=True) for v in values]
        return CategoricalDistribution(choices)
    if param.uniform is not None:
        return FloatDistribution(*param.uniform)
    if param.log_uniform is not None:
        return FloatDistribution(*param.log_uniform, log=True)
    assert param.int_uniform is not None
    return IntDistribution(*param.int_uniform)


def suggest(trial: optuna.Trial, sweep: SweepSpec) -> dict[str, Any]:
    """Ask ``trial`` for a point of the sweep: ``{dotted path: value}``, conditional
    parameters only where their condition holds."""
    point: dict[str, Any] = {}
    for path in ordered_parameters(sweep):
        if not is_active(sweep, path, point):
            continue
        param = sweep.parameters[path]
        dist = distribution(param)
        value: Any
        if isinstance(dist, CategoricalDistribution):
            value = trial.suggest_categorical(path, list(dist.choices))
            if not _plain(param.values or []):
                value = json.loads(value)
        elif isinstance(dist, FloatDistribution):
            value = trial.suggest_float(path, dist.low, dist.high, log=dist.log)
            value = float(f"{value:.6g}")  # as static sweeps round: readable, stable run ids
        else:
            assert isinstance(dist, IntDistribution)
            value = trial.suggest_int(path, dist.low, dist.high)
        point[path] = value
    return point


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s sampler: the sweep's seed and the number, hashed."""
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def startup_trials(sweep: SweepSpec) -> int:
    """Random trials before the model-based sampler takes over: a quarter of the trials,
    between 3 and 10 (Optuna's default of 10 would leave a 12-trial sweep random)."""
    return max(3, min(10, (sweep.max_runs or 40) // 4))


def sampler(sweep: SweepSpec, number: int) -> optuna.samplers.BaseSampler:
    """The sampler that asks trial ``number``."""
    seed = trial_seed(sweep.seed, number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _sampler(sweep, seed)


def _sampler(sweep: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    if sweep.method == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=startup_trials(sweep),
            multivariate=True,
            group=True,
            constant_liar=True,  # trials in flight count as bad guesses: parallel asks spread
        )
    if sweep.method == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            n_startup_trials=startup_trials(sweep),
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
        )
    # grid, random, list: the points are planned (kubetune.sweep); nothing is sampled.
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(sweep: SweepSpec) -> optuna.pruners.BasePruner:
    """The sweep's pruner; rungs are evaluations (a trial's n-th evaluation is step n)."""
    spec = sweep.pruner
    if spec is None:
        return optuna.pruners.NopPruner()
    if spec.type == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.min_evals,
            reduction_factor=spec.reduction_factor,
            min_early_stopping_rate=0,
        )
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_evals,
            max_resource=spec.max_evals if spec.max_evals is not None else "auto",
            reduction_factor=spec.reduction_factor,
        )
    # The median pruner may stop a trial from step n_warmup_steps on; rungs count from 1.
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec.startup_trials, n_warmup_steps=spec.min_evals
    )
