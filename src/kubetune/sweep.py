"""Expand a spec's sweep into concrete runs.

Pure and deterministic: the same spec gives the same runs in the same order on any machine.
Each point is applied to the validated base spec, re-validated as a whole spec (an invalid
point is reported by its parameters), and named ``<name>-<8 hex of its resolved spec>``;
points that resolve to the same spec are one run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from kubetune import spec as specmod
from kubetune.errors import Issue, SpecError
from kubetune.spec import JobSpec, SweepParam, SweepSpec, block_issues, sweep_path


@dataclass(frozen=True)
class ResolvedRun:
    """One run: a full spec with no sweep block, and where it came from."""

    run_id: str
    sweep: str
    index: int
    spec: JobSpec
    params: dict[str, Any] = field(default_factory=dict)
    #: Staged local inputs (:mod:`kubetune.stage`): field → {source, uri, sha256}.
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    #: A trial of a sweep with a pruner: its rung settings as JSON (names.RUNGS_ENV).
    rungs: str = ""

    @property
    def spec_hash(self) -> str:
        """sha256 of the canonical resolved spec."""
        return spec_hash(self.spec)


def spec_hash(spec: JobSpec) -> str:
    """sha256 (hex) of a spec's canonical JSON."""
    return hashlib.sha256(specmod.canonical_json(spec).encode()).hexdigest()


def run_id(spec: JobSpec) -> str:
    """``<name>-<8 hex>``: a DNS-1123 label of at most 49 characters."""
    return f"{spec.name}-{spec_hash(spec)[:8]}"


def _round(value: float) -> float:
    """Six significant digits: readable, and identical on every libm."""
    return float(f"{value:.6g}")


def _sample(param: SweepParam, rng: random.Random) -> Any:
    if param.values is not None:
        return param.values[rng.randrange(len(param.values))]
    if param.uniform is not None:
        return _round(rng.uniform(*param.uniform))
    if param.log_uniform is not None:
        low, high = (math.log(b) for b in param.log_uniform)
        return _round(math.exp(rng.uniform(low, high)))
    assert param.int_uniform is not None
    return rng.randint(*param.int_uniform)


def points(sweep: SweepSpec) -> list[dict[str, Any]]:
    """The sweep's points as ``{dotted path: value}`` in a stable order; none for a search
    method (tpe, cmaes), whose points come from its sampler as results come in.

    A parameter with ``when`` is left out of a point where its condition does not hold (the
    run keeps the spec's value), so grid points that differ only there are one point.

    Raises:
        SpecError: if the sweep block itself is inconsistent.
    """
    issues = block_issues(sweep)
    if issues:
        raise SpecError([Issue(sweep_path(loc), message) for loc, message in issues])
    if sweep.method == "list":
        return [dict(p) for p in sweep.points]
    if sweep.method not in specmod.STATIC_METHODS:
        return []
    paths = ordered_parameters(sweep)
    if sweep.method == "grid":
        grids = [sweep.parameters[p].values or [] for p in paths]
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        for combo in itertools.product(*grids):
            point = active_point(sweep, dict(zip(paths, combo, strict=True)))
            key = json.dumps(point, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                found.append(point)
        return found
    rng = random.Random(sweep.seed)
    assert sweep.max_runs is not None
    sampled = []
    for _ in range(sweep.max_runs):
        sample: dict[str, Any] = {}
        for path in paths:
            value = _sample(sweep.parameters[path], rng)  # drawn either way: stable stream
            if is_active(sweep, path, sample):
                sample[path] = value
        sampled.append(sample)
    return sampled


def ordered_parameters(sweep: SweepSpec) -> list[str]:
    """The sweep's paths, each after the paths its ``when`` names (otherwise as written)."""
    done: list[str] = []
    pending = list(sweep.parameters)
    while pending:
        for path in pending:
            when = sweep.parameters[path].when or {}
            if all(o in done or o not in sweep.parameters for o in when):
                done.append(path)
                pending.remove(path)
                break
        else:  # a cycle: block_issues reports it
            done += pending
            break
    return done


def is_active(sweep: SweepSpec, path: str, point: dict[str, Any]) -> bool:
    """Whether ``path`` is swept given the values ``point`` has so far (its ``when`` paths
    come first in :func:`ordered_parameters`). A condition on a path the sweep does not set
    holds: the spec's own value was checked against it when the spec loaded."""
    for other, wanted in (sweep.parameters[path].when or {}).items():
        if other not in sweep.parameters:
            continue
        if other not in point:
            return False
        options = wanted if isinstance(wanted, list) else [wanted]
        if not any(specmod.same_value(point[other], o) for o in options):
            return False
    return True


def active_point(sweep: SweepSpec, point: dict[str, Any]) -> dict[str, Any]:
    """``point`` without the parameters whose conditions it does not meet."""
    kept: dict[str, Any] = {}
    for path in ordered_parameters(sweep):
        if path in point and is_active(sweep, path, kept):
            kept[path] = point[path]
    return {p: kept[p] for p in point if p in kept}


def _describe(point: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in point.items()) + "}"


def expand(spec: JobSpec, source: str | None = None) -> list[ResolvedRun]:
    """Every run of ``spec``: one for a spec without a sweep, one per distinct point otherwise.

    Raises:
        SpecError: for an inconsistent sweep block or any invalid point (all reported).
    """
    base = _base(spec)
    if spec.sweep is None:
        return [base_run(spec)]
    try:
        sweep_points = points(spec.sweep)
    except SpecError as exc:
        raise SpecError(exc.issues, source) from exc

    runs: list[ResolvedRun] = []
    seen: set[str] = set()
    issues: list[Issue] = []
    over_task = any("task" in point for point in sweep_points)
    for index, point in enumerate(sweep_points):
        try:
            resolved = resolve(spec, point, len(runs), base=base, over_task=over_task)
        except SpecError as exc:
            issues.extend(
                Issue(i.path, f"{i.message} (in sweep point {index} {_describe(point)})")
                for i in exc.issues
            )
            continue
        if resolved.run_id in seen:
            continue
        seen.add(resolved.run_id)
        runs.append(resolved)
    if issues:
        raise SpecError(issues, source)
    return runs


def resolve(
    spec: JobSpec,
    point: dict[str, Any],
    index: int,
    *,
    base: dict[str, Any] | None = None,
    over_task: bool | None = None,
) -> ResolvedRun:
    """One point of ``spec``'s sweep as a run (a trial of a search is resolved alone).

    Raises:
        SpecError: the point makes an invalid spec (its problems, without the point).
    """
    assert spec.sweep is not None
    data = _deep_copy(base if base is not None else _base(spec))
    for path, value in point.items():
        # A copy: a later path inside this value (lora.r after lora) must not change the point.
        specmod.set_path(data, path, _deep_copy(value))
    if over_task is None:
        over_task = "task" in point
    if over_task and isinstance(data.get("task"), str):
        # Each run of a sweep over task drops what its task does not read; a list
        # point that sets such a field itself is the user's mistake and stays to be told.
        keep = tuple(point) if spec.sweep.method == "list" else ()
        specmod.drop_unused(data, data["task"], keep)
    resolved = specmod.validate(data)
    dumped = resolved.model_dump(mode="json")
    params = {path: _as_given(point[path], specmod.get_path(dumped, path)) for path in point}
    return ResolvedRun(run_id(resolved), spec.name, index, resolved, params)


def base_run(spec: JobSpec) -> ResolvedRun:
    """The spec without its sweep block, as one run: what every trial of a search shares
    (its data and model are checked and staged through it)."""
    alone = specmod.validate(_base(spec))
    return ResolvedRun(run_id(alone), spec.name, 0, alone, {})


def _base(spec: JobSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude={"sweep"})


def _as_given(given: Any, resolved: Any) -> Any:
    """The resolved value, narrowed to the keys the point gave (for a section like lora)."""
    if isinstance(given, dict) and isinstance(resolved, dict):
        return {k: resolved.get(k) for k in given}
    return resolved


def _deep_copy(data: Any) -> Any:
    # Plain JSON data: faster than copy.deepcopy, which dominated large sweeps.
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
