"""Sweep expansion: pure, deterministic, deduplicated, and every point a valid whole spec."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from pydantic import Field

from kubetune import spec, sweep
from kubetune.errors import SpecError

from conftest import base_spec

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

BASE = """\
name: bbc-topic
task: classification
model: {name: sentence-transformers/all-MiniLM-L6-v2}
data: {train: data/bbc/train.jsonl, eval: data/bbc/validation.jsonl}
"""

ZERO_SHOT_TEMPLATE = "Topic of: {{ text }}. One of: {{ labels | join(', ') }}. Answer:"


def with_sweep(sweep_block: dict[str, Any], base: str = BASE) -> spec.JobSpec:
    return spec.loads(base + yaml.safe_dump({"sweep": sweep_block}, sort_keys=False))


def expand(sweep_block: dict[str, Any], base: str = BASE) -> list[sweep.ResolvedRun]:
    return sweep.expand(with_sweep(sweep_block, base))


def summary(runs: list[sweep.ResolvedRun]) -> list[tuple[str, int, dict[str, Any]]]:
    return [(run.run_id, run.index, run.params) for run in runs]


def random_points(parameters: dict[str, Any], seed: int, n: int = 50) -> list[dict[str, Any]]:
    block = {"method": "random", "seed": seed, "max_runs": n, "parameters": parameters}
    loaded = with_sweep(block)
    assert loaded.sweep is not None
    return sweep.points(loaded.sweep)


# --- grid ----------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_order() -> None:
    runs = expand(
        {
            "parameters": {
                "train.learning_rate": {"values": [1e-5, 3e-5]},
                "lora.r": {"values": [4, 8, 16]},
            }
        }
    )
    assert [run.params for run in runs] == [
        {"train.learning_rate": 1e-5, "lora.r": 4},
        {"train.learning_rate": 1e-5, "lora.r": 8},
        {"train.learning_rate": 1e-5, "lora.r": 16},
        {"train.learning_rate": 3e-5, "lora.r": 4},
        {"train.learning_rate": 3e-5, "lora.r": 8},
        {"train.learning_rate": 3e-5, "lora.r": 16},
    ]
    assert [run.index for run in runs] == list(range(6))
    assert len({run.run_id for run in runs}) == 6
    for run in runs:
        assert run.sweep == "bbc-topic"
        assert run.spec.train.learning_rate == run.params["train.learning_rate"]
        assert run.spec.lora is not None and run.spec.lora.r == run.params["lora.r"]


def test_grid_points_follow_parameter_order() -> None:
    loaded = with_sweep(
        {"parameters": {"lora.r": {"values": [8, 16]}, "train.seed": {"values": [1, 2]}}}
    )
    assert loaded.sweep is not None
    assert sweep.points(loaded.sweep) == [
        {"lora.r": 8, "train.seed": 1},
        {"lora.r": 8, "train.seed": 2},
        {"lora.r": 16, "train.seed": 1},
        {"lora.r": 16, "train.seed": 2},
    ]


def test_fifty_point_grid_expands_to_fifty_runs() -> None:
    runs = expand(
        {
            "parameters": {
                "train.learning_rate": {"values": [1e-5, 2e-5, 3e-5, 5e-5, 1e-4]},
                "train.seed": {"values": list(range(10))},
            }
        }
    )
    assert len(runs) == 50
    assert len({run.run_id for run in runs}) == 50
    assert {(r.spec.train.learning_rate, r.spec.train.seed) for r in runs} == {
        (lr, seed) for lr in (1e-5, 2e-5, 3e-5, 5e-5, 1e-4) for seed in range(10)
    }


def test_grid_within_max_runs_is_fine() -> None:
    runs = expand({"max_runs": 4, "parameters": {"lora.r": {"values": [4, 8, 16, 32]}}})
    assert [run.spec.lora.r for run in runs if run.spec.lora] == [4, 8, 16, 32]


def test_grid_over_the_global_limit_is_refused_before_expanding() -> None:
    block = {
        "parameters": {
            "train.seed": {"values": list(range(101))},
            "train.batch_size": {"values": list(range(1, 101))},
        }
    }
    with pytest.raises(SpecError) as info:
        expand(block)
    assert info.value.lines() == [
        "sweep: grid has 10100 points, over the limit of 10000; trim values"
    ]


def test_grid_into_a_free_form_mapping() -> None:
    runs = expand({"parameters": {"resources.node_selector.pool": {"values": ["a100", "h100"]}}})
    assert [run.spec.resources.node_selector for run in runs] == [
        {"pool": "a100"},
        {"pool": "h100"},
    ]


def test_params_report_resolved_values() -> None:
    runs = expand({"parameters": {"train.learning_rate": {"values": ["2e-5"]}}})
    [run] = runs
    assert run.params == {"train.learning_rate": 2e-5}
    assert isinstance(run.params["train.learning_rate"], float)


# --- no sweep ------------------------------------------------------------------------------


def test_a_spec_without_a_sweep_is_one_run() -> None:
    loaded = spec.loads(BASE)
    [run] = sweep.expand(loaded)
    assert run.index == 0 and run.params == {} and run.sweep == "bbc-topic"
    assert run.spec == loaded
    assert run.run_id == sweep.run_id(loaded)


# --- run ids and determinism ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["bbc-topic", "a", "x" * 40, "0-leading-digit-9"])
def test_run_ids_are_dns_labels_starting_with_the_name(name: str) -> None:
    runs = expand(
        {"parameters": {"train.seed": {"values": [1, 2, 3]}}},
        BASE.replace("name: bbc-topic", f"name: {name}"),
    )
    for run in runs:
        assert DNS_LABEL.match(run.run_id), run.run_id
        assert len(run.run_id) <= 63
        assert run.run_id.startswith(name + "-")
        assert re.fullmatch(r"[0-9a-f]{8}", run.run_id.removeprefix(name + "-"))


def test_run_id_is_the_hash_of_the_resolved_spec() -> None:
    for run in expand({"parameters": {"lora.r": {"values": [4, 8]}}}):
        digest = hashlib.sha256(spec.canonical_json(run.spec).encode()).hexdigest()
        assert run.spec_hash == sweep.spec_hash(run.spec) == digest
        assert run.run_id == f"{run.spec.name}-{digest[:8]}"


def test_run_id_ignores_how_the_spec_was_written() -> None:
    terse = spec.loads(BASE + "train: {learning_rate: 5e-5}\n")
    explicit = spec.loads(BASE + "train: {learning_rate: 0.00005, epochs: 3, batch_size: 16}\n")
    assert sweep.run_id(terse) == sweep.run_id(explicit) == sweep.run_id(spec.loads(BASE))


def test_resolved_specs_round_trip_to_the_same_run_id() -> None:
    for run in expand({"parameters": {"lora": {"values": [None, {"r": 8}]}}}):
        again = spec.loads(spec.dump(run.spec))
        assert again == run.spec
        assert sweep.run_id(again) == run.run_id


DETERMINISM_SPEC = (
    BASE
    + """\
resources: {node_selector: {pool: gpu, zone: b}}
lora: {r: 8, target_modules: [q, v]}
sweep:
  method: random
  seed: 7
  max_runs: 6
  parameters:
    train.learning_rate: {log_uniform: [1e-6, 1e-3]}
    train.warmup_steps: {uniform: [0.0, 0.2]}
    train.batch_size: {int_uniform: [8, 64]}
    lora.target_modules: {values: [[q, v], all-linear, [q, k, v, o]]}
"""
)
GRID_SPEC = (
    BASE
    + """\
sweep:
  parameters:
    train.learning_rate: {values: [1e-5, 3e-5]}
    lora: {values: [null, {r: 8}]}
    resources.node_selector: {values: [{}, {pool: gpu, zone: b}]}
"""
)

_CHILD = """
import json, sys
from kubetune import spec, sweep
out = {}
for key, text in json.load(sys.stdin).items():
    out[key] = [[r.run_id, r.index, r.params] for r in sweep.expand(spec.loads(text))]
print(json.dumps(out))
"""


def _in_process() -> dict[str, Any]:
    return {
        key: [[r.run_id, r.index, r.params] for r in sweep.expand(spec.loads(text))]
        for key, text in {"random": DETERMINISM_SPEC, "grid": GRID_SPEC}.items()
    }


def test_expansion_is_repeatable_in_process() -> None:
    first = _in_process()
    assert first == _in_process()
    assert len(first["random"]) == 6 and len(first["grid"]) == 8


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_expansion_is_identical_across_processes_and_hash_seeds(hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps({"random": DETERMINISM_SPEC, "grid": GRID_SPEC}),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    expected = json.loads(json.dumps(_in_process()))
    assert json.loads(child.stdout) == expected


# --- deduplication -------------------------------------------------------------------------


def test_identical_points_are_one_run() -> None:
    runs = expand({"parameters": {"train.learning_rate": {"values": [1e-5, 0.00001]}}})
    assert len(runs) == 1
    assert runs[0].params == {"train.learning_rate": 1e-5}


def test_duplicates_keep_the_first_and_renumber() -> None:
    runs = expand({"parameters": {"train.learning_rate": {"values": [1e-5, 3e-5, 1e-5, 3e-5]}}})
    assert [(r.index, r.params["train.learning_rate"]) for r in runs] == [(0, 1e-5), (1, 3e-5)]


def test_points_equal_to_the_defaults_are_one_run() -> None:
    runs = expand(
        {
            "method": "list",
            "points": [{"train.epochs": 3}, {"train.batch_size": 16}, {"lora": None}],
        }
    )
    assert len(runs) == 1
    assert runs[0].run_id == sweep.run_id(spec.loads(BASE))


# --- random --------------------------------------------------------------------------------


PARAMS = {
    "train.learning_rate": {"log_uniform": [1e-6, 1e-2]},
    "train.warmup_steps": {"uniform": [0.0, 0.3]},
    "train.batch_size": {"int_uniform": [8, 10]},
    "train.lr_scheduler_type": {"values": ["linear", "cosine"]},
}


def test_random_points_are_seeded() -> None:
    assert random_points(PARAMS, seed=1) == random_points(PARAMS, seed=1)
    assert random_points(PARAMS, seed=1) != random_points(PARAMS, seed=2)


def test_random_sweep_samples_max_runs_points() -> None:
    assert len(random_points(PARAMS, seed=3, n=17)) == 17


def test_random_values_stay_within_bounds() -> None:
    points = random_points(PARAMS, seed=5, n=200)
    lrs = [p["train.learning_rate"] for p in points]
    warmups = [p["train.warmup_steps"] for p in points]
    sizes = [p["train.batch_size"] for p in points]
    assert all(isinstance(v, float) and 1e-6 <= v <= 1e-2 for v in lrs)
    assert all(isinstance(v, float) and 0.0 <= v <= 0.3 for v in warmups)
    assert all(type(v) is int for v in sizes)
    assert set(sizes) == {8, 9, 10}, "int_uniform includes both ends"
    assert {p["train.lr_scheduler_type"] for p in points} == {"linear", "cosine"}


def test_log_uniform_samples_on_a_log_scale() -> None:
    lrs = [p["train.learning_rate"] for p in random_points(PARAMS, seed=11, n=200)]
    # Log-uniform over [1e-6, 1e-2]: about half fall below the geometric midpoint 1e-4,
    # where a plain uniform draw would put about 1%.
    below = sum(v < 1e-4 for v in lrs)
    assert 60 <= below <= 140
    assert min(lrs) < 1e-5


def test_random_values_are_rounded_to_six_significant_digits() -> None:
    for point in random_points(PARAMS, seed=13, n=30):
        for key in ("train.learning_rate", "train.warmup_steps"):
            value = point[key]
            assert float(f"{value:.6g}") == value


def test_random_sweep_expands_to_valid_runs() -> None:
    runs = expand({"method": "random", "seed": 3, "max_runs": 12, "parameters": PARAMS})
    assert 1 <= len(runs) <= 12
    for run in runs:
        assert 1e-6 <= run.spec.train.learning_rate <= 1e-2
        assert run.spec.train.batch_size in (8, 9, 10)
        assert run.spec.sweep is None


def test_log_uniform_bounds_edge() -> None:
    points = random_points({"train.learning_rate": {"log_uniform": [1e-5, 1e-5 * 1.0001]}}, 0)
    assert all(math.isclose(p["train.learning_rate"], 1e-5, rel_tol=2e-4) for p in points)


# --- task and lora as parameters -----------------------------------------------------------


def test_list_sweep_with_a_zero_shot_arm_beside_fine_tuning_arms() -> None:
    base = BASE + "lora: {r: 16}\n"
    runs = expand(
        {
            "method": "list",
            "points": [
                {
                    "task": "zero-shot",
                    "model.name": "google/flan-t5-small",
                    "prompt": {"template": ZERO_SHOT_TEMPLATE},
                    "data.labels": ["business", "sport", "tech"],
                    "lora": None,
                },
                {"train.learning_rate": 3e-5},
                {"lora.r": 8, "train.learning_rate": 1e-4},
            ],
        },
        base,
    )
    assert [run.spec.task for run in runs] == ["zero-shot", "classification", "classification"]
    zero, full, small = (run.spec for run in runs)
    assert zero.lora is None
    assert zero.prompt is not None and zero.prompt.template == ZERO_SHOT_TEMPLATE
    assert zero.data.labels == ["business", "sport", "tech"]
    assert zero.model.name == "google/flan-t5-small"
    assert full.prompt is None and full.lora is not None and full.lora.r == 16
    assert full.train.learning_rate == 3e-5
    assert small.lora is not None and small.lora.r == 8 and small.train.learning_rate == 1e-4
    assert runs[0].params["lora"] is None
    assert runs[0].params["task"] == "zero-shot"


def test_grid_over_lora_on_and_off() -> None:
    runs = expand({"parameters": {"lora": {"values": [None, {"r": 8}]}}})
    assert len(runs) == 2
    off, on = (run.spec for run in runs)
    assert off.lora is None
    assert on.lora is not None
    assert (on.lora.r, on.lora.lora_alpha, on.lora.lora_dropout) == (8, 16, 0.05)
    assert runs[0].params == {"lora": None}
    assert runs[1].params["lora"]["r"] == 8
    assert runs[0].run_id == sweep.run_id(spec.loads(BASE))


def test_grid_over_task() -> None:
    runs = expand({"parameters": {"task": {"values": ["classification", "ner"]}}})
    assert [run.spec.task for run in runs] == ["classification", "ner"]


def test_a_sweep_over_task_drops_from_each_run_what_its_task_does_not_read() -> None:
    base = BASE.replace("data: {", "data: {label_all_tokens: true, ")
    runs = expand(
        {
            "parameters": {
                "task": {"values": ["classification", "ner"]},
                "lora.r": {"values": [4, 8]},
            }
        },
        base,
    )
    tasks = [(run.spec.task, run.spec.data.label_all_tokens) for run in runs]
    assert tasks == [("classification", False), ("classification", False), ("ner", True),
                     ("ner", True)]  # fmt: skip
    for run in runs:  # what a run stores loads again as it is
        assert spec.loads(spec.dump(run.spec, defaults=False)) == run.spec


def test_runs_of_a_task_sweep_that_differ_only_in_dropped_fields_are_one_run() -> None:
    runs = expand(
        {
            "parameters": {
                "task": {"values": ["classification", "ner"]},
                "data.label_all_tokens": {"values": [True, False]},
            }
        }
    )
    assert [(r.spec.task, r.spec.data.label_all_tokens) for r in runs] == [
        ("classification", False),
        ("ner", True),
        ("ner", False),
    ]


def test_a_field_no_swept_task_reads_is_an_error() -> None:
    base = BASE.replace("data: {", "data: {max_target_length: 64, ")
    with pytest.raises(SpecError) as info:
        expand({"parameters": {"task": {"values": ["classification", "ner"]}}}, base)
    assert [str(i) for i in info.value.issues] == [
        "data.max_target_length: none of the swept tasks (classification, ner) uses it "
        "(only seq2seq); remove it"
    ]


# --- invalid sweeps and points -------------------------------------------------------------


def test_invalid_points_are_all_reported_with_their_parameters() -> None:
    block = {
        "parameters": {
            "train.learning_rate": {"values": [5e-5, 5, 2]},
            "lora.r": {"values": [8]},
        }
    }
    text = BASE + yaml.safe_dump({"sweep": block}, sort_keys=False)
    with pytest.raises(SpecError) as info:
        spec.loads(text, "sweep.yaml")
    # Each value where it is written, found when the spec loads: no point is expanded.
    assert info.value.lines() == [
        "sweep.yaml:10: sweep.parameters.train.learning_rate.values[1]: "
        "must be less than or equal to 1 (got 5)",
        "sweep.yaml:11: sweep.parameters.train.learning_rate.values[2]: "
        "must be less than or equal to 1 (got 2)",
    ]


def test_a_point_breaking_a_cross_field_rule_is_reported_with_its_parameters() -> None:
    block = {"parameters": {"train.eval_strategy": {"values": ["epoch", "steps"]}}}
    with pytest.raises(SpecError) as info:
        sweep.expand(with_sweep(block), "sweep.yaml")
    assert info.value.lines() == [
        "sweep.yaml: train.eval_steps: eval_strategy: steps needs eval_steps "
        "(in sweep point 1 {train.eval_strategy: 'steps'})",
    ]


def test_a_zero_shot_arm_without_labels_is_reported_with_its_point() -> None:
    block = {"method": "list", "points": [{"task": "zero-shot", "prompt": {"template": "x"}}]}
    with pytest.raises(SpecError) as info:
        expand(block)
    [issue] = info.value.issues
    assert issue.path == "data.labels"
    assert issue.message.startswith("task zero-shot needs the label names")
    assert issue.message.endswith(
        "(in sweep point 0 {task: 'zero-shot', prompt: {'template': 'x'}})"
    )


def test_zero_shot_arm_without_removing_lora_is_reported() -> None:
    block = {
        "method": "list",
        "points": [
            {"task": "zero-shot", "prompt": {"template": "{{ text }}"}, "data.labels": ["a"]}
        ],
    }
    with pytest.raises(SpecError) as info:
        expand(block, BASE + "lora: {r: 8}\n")
    assert [i.path for i in info.value.issues] == ["lora"]


def test_sweep_block_problems_are_all_reported_at_once() -> None:
    block = {
        "method": "random",
        "parameters": {
            "train.lr": {"values": [1]},
            "train.epochs": {"uniform": [3, 1]},
            "train.seed": {"log_uniform": [-1, 10]},
            "lora.r": {},
        },
    }
    with pytest.raises(SpecError) as info:
        expand(block)
    assert [(i.path, i.message) for i in info.value.issues] == [
        (
            "sweep.parameters.train.lr",
            "train has no field 'lr'; did you mean 'train.learning_rate'?",
        ),
        ("sweep.parameters.train.epochs.uniform", "low must be below high (got [3.0, 1.0])"),
        ("sweep.parameters.train.seed.log_uniform", "log_uniform bounds must be positive"),
        (
            "sweep.parameters.lora.r",
            "give exactly one of values, uniform, log_uniform, int_uniform",
        ),
        ("sweep.max_runs", "method random needs max_runs (the number of samples)"),
    ]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"parameters": {}}, "sweep.parameters: add at least one parameter to sweep over"),
        (
            {"method": "list", "points": [{"lora.r": 8}], "parameters": {"x": {"values": [1]}}},
            "sweep.parameters: method list takes points, not parameters",
        ),
        ({"method": "list", "points": [{}]},
         "sweep.points[0]: an empty point; give path: value pairs"),
        (
            {"method": "random", "max_runs": 2, "points": [{"lora.r": 8}],
             "parameters": {"lora.r": {"values": [8]}}},
            "sweep.points: points are for method list, not random",
        ),
    ],
)  # fmt: skip
def test_sweep_shape_errors(block: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        expand(block)
    assert message in [str(issue) for issue in info.value.issues]


def test_points_raises_for_an_inconsistent_sweep() -> None:
    block = {"method": "random", "parameters": {"lora.r": {"int_uniform": [4, 8]}}}
    with pytest.raises(SpecError) as info:
        sweep.points(spec.SweepSpec.model_validate(block))
    assert [i.path for i in info.value.issues] == ["sweep.max_runs"]


def test_list_sweep_cannot_set_the_sweep_block() -> None:
    with pytest.raises(SpecError) as info:
        expand({"method": "list", "points": [{"sweep.seed": 3}]})
    assert [str(i) for i in info.value.issues] == [
        "sweep.points[0].sweep.seed: a sweep cannot set the sweep block"
    ]


@pytest.mark.parametrize("path", ["name.name", "train.seed.seed"])
def test_a_path_below_a_value_is_a_sweep_error_not_a_point_error(path: str) -> None:
    # Bug (spec.check_path): a value field followed by its own name passes the path check,
    # so the mistake surfaces as a confusing invalid point instead of a bad parameter path.
    with pytest.raises(SpecError) as info:
        expand({"parameters": {path: {"values": [1]}}})
    assert [i.path for i in info.value.issues] == [f"sweep.parameters.{path}"]


# --- resolved specs ------------------------------------------------------------------------


def test_resolved_specs_carry_no_sweep_block() -> None:
    loaded = with_sweep({"parameters": {"lora.r": {"values": [4, 8]}}})
    assert loaded.sweep is not None
    for run in sweep.expand(loaded):
        assert run.spec.sweep is None
        assert run.spec.model_dump()["sweep"] is None
        assert "parameters" not in spec.canonical_json(run.spec)


def test_expansion_does_not_touch_the_input_spec() -> None:
    loaded = with_sweep(
        {"parameters": {"train.seed": {"values": [1, 2]}, "lora.r": {"values": [4]}}}
    )
    before = loaded.model_dump()
    sweep.expand(loaded)
    assert loaded.model_dump() == before
    assert loaded.lora is None and loaded.train.seed == 42


# --- run ids across kubetune releases ---------------------------------------------------------


class _NewerTrain(spec.TrainSpec):
    """TrainSpec as a later release might have it: one more field, with a default."""

    ema_decay: float | None = None


class _NewerJobSpec(spec.JobSpec):
    """JobSpec with a new defaulted top-level section and a new nested field."""

    train: _NewerTrain = Field(default_factory=_NewerTrain)
    profiling: bool = False


def test_a_release_adding_defaulted_fields_keeps_run_ids_and_manifests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubetune import render

    data = base_spec(
        train={"learning_rate": 3e-5, "epochs": 3.0},  # epochs written out at its default
        lora={},  # a section at its defaults is not the same as no section
        sweep={"parameters": {"train.seed": {"values": [1, 2]}}},
    )
    before = sweep.expand(spec.validate(data))
    manifests = [r.documents for r in render.render(before, "ml")]
    monkeypatch.setattr(spec, "JobSpec", _NewerJobSpec)
    after = sweep.expand(spec.validate(data))
    assert isinstance(after[0].spec, _NewerJobSpec)
    assert [r.run_id for r in after] == [r.run_id for r in before]
    assert [r.spec_hash for r in after] == [r.spec_hash for r in before]
    # Nor do the objects change: the ConfigMap (immutable) holds only what the spec sets.
    assert [r.documents for r in render.render(after, "ml")] == manifests
    # What the spec sets still counts: the new fields, set, are a new run.
    data["train"]["ema_decay"] = 0.999
    assert sweep.expand(spec.validate(data))[0].run_id != before[0].run_id


def test_run_ids_hash_only_what_differs_from_the_defaults() -> None:
    plain = sweep.expand(spec.validate(base_spec()))[0]
    spelled = base_spec(train={"epochs": 3, "learning_rate": 5e-5}, generation={"num_beams": 1})
    assert sweep.expand(spec.validate(spelled))[0].run_id == plain.run_id
    with_lora = sweep.expand(spec.validate(base_spec(lora={})))[0]
    assert with_lora.run_id != plain.run_id
    assert "train" not in json.loads(spec.canonical_json(plain.spec))
