"""Safe YAML loading that remembers where every key was.

PyYAML's ``SafeLoader`` already refuses ``!!python/object`` tags. On top of it this module:

* reads ``5e-5`` as a float (YAML 1.1 wants ``5.0e-5``; every learning rate is written the
  short way, and a string would slip through sweep values unnoticed);
* rejects duplicate keys, which PyYAML silently resolves to the last one;
* bounds the size of the document after alias expansion (a "billion laughs" spec);
* records the line of every key so errors can point at it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from kubetune.errors import Issue, SpecError

Path = tuple[str | int, ...]

#: Most nodes a spec may expand to (aliases counted each time they are used).
MAX_NODES = 100_000
#: Largest spec file accepted, in bytes.
MAX_BYTES = 1 << 20

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_scalar(text: str) -> Any:
    """Parse one ``--set`` value the way it would read inside a spec file."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def load(text: str, source: str | None = None) -> tuple[Any, dict[Path, int]]:
    """Parse ``text`` into plain data and a map from key path to 1-based line number.

    Raises:
        SpecError: on a syntax error, a forbidden tag, a duplicate key, or an oversized spec.
    """
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise SpecError([Issue("", f"spec is larger than {MAX_BYTES // 1024} KiB")], source)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[Path, int] = {}
        _walk(node, (), lines, [0])
        data = loader.construct_document(node)
    except yaml.constructor.ConstructorError as exc:
        raise SpecError([_constructor_issue(exc)], source) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError([Issue("", f"invalid YAML: {problem}", line)], source) from None
    except yaml.YAMLError as exc:
        raise SpecError([Issue("", f"invalid YAML: {exc}")], source) from None
    except RecursionError:
        raise SpecError([Issue("", "YAML nests too deeply")], source) from None
    except SpecError as exc:
        raise SpecError(exc.issues, source) from None
    finally:
        loader.dispose()
    return data, lines


def _constructor_issue(exc: yaml.constructor.ConstructorError) -> Issue:
    line = exc.problem_mark.line + 1 if exc.problem_mark else None
    problem = exc.problem or "cannot be read"
    match = re.search(r"tag '([^']+)'", problem)
    if match:
        tag = match.group(1).replace("tag:yaml.org,2002:", "!!")
        return Issue(
            "",
            f"YAML tag {tag!r} is not allowed: a job spec is plain data "
            "(mappings, lists, strings, numbers, booleans)",
            line,
        )
    return Issue("", f"invalid YAML: {problem}", line)


def _walk(node: yaml.Node, path: Path, lines: dict[Path, int], count: list[int]) -> None:
    """Record key lines, reject duplicate keys, and bound the expanded size."""
    count[0] += 1
    if count[0] > MAX_NODES:
        raise SpecError([Issue("", f"spec expands to more than {MAX_NODES} YAML nodes")])
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _walk(value_node, path, lines, count)
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                raise SpecError(
                    [Issue(dotted, f"duplicate key (first on line {seen[key]}); keep one", line)]
                )
            if key is not None:
                seen[key] = line
                lines.setdefault((*path, key), line)
            _walk(value_node, (*path, key) if key is not None else path, lines, count)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, count)
