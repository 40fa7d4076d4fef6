"""The exception tree drawn in kubetune.errors' docstring is the real one."""

from __future__ import annotations

import importlib
import pkgutil
import re

import kubetune
from kubetune import errors
from kubetune.errors import KubetuneError

_DRAWN = re.compile(r"^    (?P<indent>(?:[│ ]   )*)(?:[├└]── )?(?P<name>[A-Z]\w+)\b")


def _drawn_tree() -> list[tuple[str, str | None]]:
    """(class, parent) for each class in the docstring's drawing, parent None at the root."""
    assert errors.__doc__ is not None
    found: list[tuple[str, str | None]] = []
    stack: list[str] = []
    for line in errors.__doc__.splitlines():
        match = _DRAWN.match(line)
        if not match:
            continue
        depth = len(match["indent"]) // 4 + (1 if "──" in line else 0)
        del stack[depth:]
        found.append((match["name"], stack[-1] if stack else None))
        stack.append(match["name"])
    return found


def _real_tree() -> list[tuple[str, str | None]]:
    # Every module outside train/ (which needs torch) may define errors: import them all.
    for module in pkgutil.walk_packages(kubetune.__path__, "kubetune."):
        if not module.name.startswith("kubetune.train"):
            importlib.import_module(module.name)
    found: list[tuple[str, str | None]] = [("KubetuneError", None)]
    pending = [KubetuneError]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            found.append((sub.__name__, cls.__name__))
            pending.append(sub)
    return found


def test_the_docstring_draws_every_error_under_its_parent() -> None:
    assert sorted(_drawn_tree(), key=str) == sorted(_real_tree(), key=str)


def test_the_drawing_is_read_as_a_tree() -> None:
    drawn = dict(_drawn_tree())
    assert drawn["KubetuneError"] is None
    assert drawn["InputsError"] == "SpecError"
    assert drawn["Interrupted"] == "KubetuneError"
    assert drawn["WriterConflictError"] == "CheckpointError"
