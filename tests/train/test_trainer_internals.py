"""The Trainer internals kubetune relies on still exist in the installed transformers, and
nothing outside :mod:`kubetune.train.trainer_internals` reaches for them.

No training: these read the installed Trainer's code, so an upgrade of transformers that
renames, removes or reorders any of them fails here, in seconds.
"""

from __future__ import annotations

import ast
import inspect
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from kubetune.store.checkpoints import RESUME_ONLY
from kubetune.train import trainer_internals
from kubetune.train.trainer_internals import (
    OVERRIDDEN,
    RUNNING_LOSS,
    RunningLoss,
    TrainerHooks,
    checkpoint_dir,
    checkpoint_steps,
    restore_running_loss,
    running_loss,
    whole_run_train_loss,
)

ROOT = Path(__file__).resolve().parents[2]


def hf_trainer() -> Any:
    """transformers' trainer module, imported when a test runs: imported at collection it
    would cost every worker of the fast suite ten seconds."""
    from transformers import trainer

    return trainer


def _methods() -> dict[str, ast.FunctionDef]:
    """The installed Trainer's methods, parsed."""
    tree = ast.parse(inspect.getsource(hf_trainer()))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer"]
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _self_attributes(node: ast.AST, stored: bool) -> list[ast.Attribute]:
    """``self.<name>`` in ``node``: the ones assigned (``stored``), else the ones read
    (``self.x += y`` both reads and assigns x)."""
    found = []
    for n in ast.walk(node):
        if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Attribute) and not stored:
            found.append(n.target)
        if not (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)):
            continue
        if n.value.id == "self" and isinstance(n.ctx, ast.Store) == stored:
            found.append(n)
    return found


def test_the_running_loss_is_set_by_the_training_loop_before_on_train_begin() -> None:
    """ResumeExactly restores the running loss at on_train_begin: the Trainer must have set
    it afresh by then, in the method that calls on_train_begin, or the restore is undone."""
    methods = _methods()
    (loop,) = [
        m
        for m in methods.values()
        if "on_train_begin" in {a.attr for a in ast.walk(m) if isinstance(a, ast.Attribute)}
    ]
    begin = min(
        a.lineno
        for a in ast.walk(loop)
        if isinstance(a, ast.Attribute) and a.attr == "on_train_begin"
    )
    for name in RUNNING_LOSS:
        set_at = [a.lineno for a in _self_attributes(loop, stored=True) if a.attr == name]
        assert set_at, f"Trainer.{loop.name} no longer sets self.{name}"
        assert min(set_at) < begin, f"self.{name} is set after on_train_begin"
    # _tr_loss is a tensor: running_loss() calls .item() and the restore adds in place.
    (tensor,) = [
        n.value
        for n in ast.walk(loop)
        if isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "_tr_loss" for t in n.targets)
    ]
    assert isinstance(tensor, ast.Call) and ast.unparse(tensor.func) == "torch.tensor"


def test_the_running_loss_is_what_logging_and_train_loss_read() -> None:
    """The loss logs and the final train_loss come from these attributes: restoring them is
    what makes a resumed run log and report what an unbroken run does."""
    methods = _methods()
    read = {
        name: {a.attr for a in _self_attributes(m, stored=False)} for name, m in methods.items()
    }
    log = methods["_maybe_log_save_evaluate"]
    assert {"_total_loss_scalar", "_globalstep_last_logged"} <= read[log.name]
    (final,) = [
        m
        for m in methods.values()
        if "train_loss" in {n.id for n in ast.walk(m) if isinstance(n, ast.Name)}
    ]
    assert {"_total_loss_scalar", "_tr_loss"} <= read[final.name]
    stored = {a.attr for a in _self_attributes(final, stored=True)}
    assert "_total_loss_scalar" in stored, "the last unlogged losses are added before train_loss"


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
@pytest.mark.parametrize("class_name", ["Trainer", "Seq2SeqTrainer"])
def test_the_overridden_methods_exist_with_the_same_parameters(name: str, class_name: str) -> None:
    import transformers

    cls = getattr(transformers, class_name)
    theirs = getattr(cls, name, None)
    assert theirs is not None, f"{cls.__name__}.{name} is gone: TrainerHooks overrides nothing"
    assert tuple(inspect.signature(theirs).parameters) == OVERRIDDEN[name]
    assert tuple(inspect.signature(getattr(TrainerHooks, name)).parameters) == OVERRIDDEN[name]


def test_the_overridden_methods_are_still_called_by_the_trainer() -> None:
    source = inspect.getsource(hf_trainer())
    for name in OVERRIDDEN:
        assert f"self.{name}" in source.replace(f"def {name}", ""), f"Trainer never calls {name}"


def test_the_hooks_override_only_what_the_adapter_names() -> None:
    private = {n for n in vars(TrainerHooks) if n.startswith("_") and not n.startswith("__")}
    assert private == set(OVERRIDDEN)


def test_checkpoint_folders_and_resume_only_files_have_the_names_kubetune_expects(
    tmp_path: Path,
) -> None:
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    assert trainer_internals.PREFIX_CHECKPOINT_DIR == PREFIX_CHECKPOINT_DIR
    assert checkpoint_dir(tmp_path, 25) == tmp_path / "checkpoint-25"
    for step in (5, 25, 100):
        checkpoint_dir(tmp_path, step).mkdir()
    assert checkpoint_steps(tmp_path) == [5, 25, 100]

    import transformers

    trainer_module = hf_trainer()
    # kubetune.store.checkpoints trims these from completed runs without importing
    # transformers: they must be exactly the Trainer's resume-only files.
    for name in ("OPTIMIZER_NAME", "OPTIMIZER_NAME_BIN", "SCHEDULER_NAME", "SCALER_NAME"):
        assert RESUME_ONLY.fullmatch(getattr(trainer_module, name)), name
    for name in ("TRAINER_STATE_NAME", "TRAINING_ARGS_NAME"):
        assert not RESUME_ONLY.fullmatch(getattr(trainer_module, name)), name
    assert not RESUME_ONLY.fullmatch(transformers.utils.SAFE_WEIGHTS_NAME)
    rng = inspect.getsource(trainer_module.Trainer._save_rng_state)
    assert '"rng_state.pth"' in rng and "rng_state_{" in rng
    assert RESUME_ONLY.fullmatch("rng_state.pth") and RESUME_ONLY.fullmatch("rng_state_3.pth")


def test_the_running_loss_round_trips_through_a_checkpoint() -> None:
    import torch

    state = SimpleNamespace(global_step=12)
    saved = SimpleNamespace(
        _tr_loss=torch.tensor(0.75),
        _total_loss_scalar=6.5,
        _globalstep_last_logged=10,
        state=state,
    )
    carried = RunningLoss.from_json(running_loss(saved).to_json())
    assert carried == RunningLoss(total=6.5, unlogged=0.75, last_logged=10)

    # A resumed Trainer, as _inner_training_loop leaves it before on_train_begin.
    fresh = torch.tensor(0.0)
    resumed = SimpleNamespace(
        _tr_loss=fresh, _total_loss_scalar=0.0, _globalstep_last_logged=10, state=state
    )
    restore_running_loss(resumed, carried)
    assert resumed._tr_loss is fresh, "the training loop holds this tensor: added in place"
    assert running_loss(resumed) == carried
    assert whole_run_train_loss(resumed) == 6.5 / 12


def test_nothing_else_in_kubetune_touches_trainer_internals() -> None:
    names = {*RUNNING_LOSS, *OVERRIDDEN, "_load_rng_state", "_save_rng_state", "_past"}
    pattern = re.compile(r"\btrainer\._[a-z]|" + "|".join(rf"\.{re.escape(n)}\b" for n in names))
    adapter = Path(inspect.getfile(trainer_internals)).resolve()
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "src" / "kubetune").rglob("*.py"))
        if path.resolve() != adapter
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_the_train_extra_caps_transformers_at_the_tested_major_version() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    import transformers

    (wanted,) = [r for r in map(Requirement, extras["train"]) if r.name == "transformers"]
    installed = Version(transformers.__version__)
    assert installed in wanted.specifier
    assert not wanted.specifier.contains(f"{installed.major + 1}.0.0"), (
        f"train extra allows transformers {installed.major + 1}: its internals are untested"
    )
