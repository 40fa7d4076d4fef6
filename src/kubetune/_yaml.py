"""Safe YAML loading that remembers where every key was.

PyYAML's ``SafeLoader`` already refuses ``!!python/object`` tags. On top of it this module:

* follows YAML 1.2 where 1.1 surprises: ``5e-5`` is a float (1.1 wants ``5.0e-5``, and every
  learning rate is written the short way), ``no``/``yes``/``on``/``off`` stay strings (so
  ``eval_strategy: no`` means what it says), and dates stay strings;
* accepts plain data only: mappings with string keys, lists, strings, numbers, booleans, null
  (``!!python/*`` tags, ``!!binary``, ``!!set``, timestamps are refused);
* rejects duplicate keys, which PyYAML silently resolves to the last one;
* bounds the size of the document after alias expansion (a "billion laughs" spec) and its
  depth;
* records the line of every key so errors can point at it.

Speed: with libyaml's parser (PyYAML's C extension) this loader reads a spec four to six times
faster than with the pure-Python one (``make bench`` prints both). libyaml's composer
recurses in C, though, so a document nested thousands deep would crash the process: the nesting
is first measured on libyaml's event stream, which keeps no stack. A document libyaml refuses
is parsed again by the pure-Python loader, whose messages are the ones users have always read.
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
#: Deepest nesting accepted; a job spec needs under 15.
MAX_DEPTH = 64

_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_STR_TAG = "tag:yaml.org,2002:str"
_DROPPED = {_BOOL_TAG, _FLOAT_TAG, "tag:yaml.org,2002:timestamp"}
_PLAIN = (str, int, float, bool, type(None))

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and floats, and no implicit timestamps."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))


_OPENS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSES = (yaml.MappingEndEvent, yaml.SequenceEndEvent)

if yaml.__with_libyaml__:

    class _CLoader(yaml.CSafeLoader):
        """:class:`_Loader`'s rules over libyaml's parser."""

    _CLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node graph and the loader that will construct it: libyaml's when it is
    installed and accepts the text, else the pure-Python one (whose errors then propagate)."""
    if yaml.__with_libyaml__:
        try:
            depth = 0
            for event in yaml.parse(text, Loader=yaml.CSafeLoader):
                if isinstance(event, _OPENS):
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise SpecError([Issue("", f"YAML nests deeper than {MAX_DEPTH} levels")])
                elif isinstance(event, _CLOSES):
                    depth -= 1
            return _single_node(_CLoader(text))
        except yaml.YAMLError:
            pass  # parsed again below, for the pure-Python loader's message
    return _single_node(_Loader(text))


def _single_node(loader: Any) -> tuple[yaml.Node | None, Any]:
    try:
        return loader.get_single_node(), loader
    except BaseException:
        loader.dispose()
        raise


def load_rendered(text: str) -> Any:
    """Parse a document kubetune or Helm wrote (a manifest, Chart.yaml) with PyYAML's safe rules,
    by libyaml where installed: ten times faster, and the parse holds the GIL that submit's
    worker threads share. Not for a user's spec: :func:`load` is."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


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
    loader: Any = None
    try:
        node, loader = _compose(text)
        if node is None:
            return None, {}
        lines: dict[Path, int] = {}
        _walk(node, (), lines, [0], 0)
        data = loader.construct_document(node)
        _check_plain(data, (), lines)
    except yaml.reader.ReaderError as exc:
        raise SpecError(
            [Issue("", f"invalid YAML: character {exc.character!r} is not allowed in YAML text")],
            source,
        ) from exc
    except yaml.constructor.ConstructorError as exc:
        raise SpecError([_constructor_issue(exc)], source) from exc
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError([Issue("", f"invalid YAML: {problem}", line)], source) from exc
    except yaml.YAMLError as exc:
        raise SpecError([Issue("", f"invalid YAML: {exc}")], source) from exc
    except RecursionError as exc:
        raise SpecError([Issue("", "YAML nests too deeply")], source) from exc
    except SpecError as exc:
        raise SpecError(exc.issues, source) from exc
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
        # PyYAML's constructors raise these for explicit tags with bad values (!!int 1.5).
        raise SpecError([Issue("", f"invalid YAML value: {exc}")], source) from exc
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


def _constructor_issue(exc: yaml.constructor.ConstructorError) -> Issue:
    line = exc.problem_mark.line + 1 if exc.problem_mark else None
    problem = exc.problem or "cannot be read"
    match = re.search(r"tag '([^']+)'", problem)
    if match:
        return _tag_issue(match.group(1), line)
    return Issue("", f"invalid YAML: {problem}", line)


def _tag_issue(tag: str, line: int | None) -> Issue:
    shown = tag.replace("tag:yaml.org,2002:", "!!")
    return Issue(
        "",
        f"YAML tag {shown!r} is not allowed: a job spec is plain data "
        "(mappings, lists, strings, numbers, booleans)",
        line,
    )


def _walk(
    node: yaml.Node, path: Path, lines: dict[Path, int], count: list[int], depth: int
) -> None:
    """Record key lines, reject duplicate and non-string keys, bound size and depth."""
    count[0] += 1
    if count[0] > MAX_NODES:
        raise SpecError([Issue("", f"spec expands to more than {MAX_NODES} YAML nodes")])
    if depth > MAX_DEPTH:
        raise SpecError([Issue("", f"YAML nests deeper than {MAX_DEPTH} levels")])
    if node.tag.startswith("tag:yaml.org,2002:python/"):
        raise SpecError([_tag_issue(node.tag, node.start_mark.line + 1)])
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _walk(value_node, path, lines, count, depth + 1)
                continue
            line = key_node.start_mark.line + 1
            if key_node.tag.startswith("tag:yaml.org,2002:python/"):
                raise SpecError([_tag_issue(key_node.tag, line)])
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "[…]"
                raise SpecError([Issue("", f"key {shown!r} must be a string; quote it", line)])
            key = key_node.value
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                raise SpecError(
                    [Issue(dotted, f"duplicate key (first on line {seen[key]}); keep one", line)]
                )
            seen[key] = line
            lines.setdefault((*path, key), line)
            _walk(value_node, (*path, key), lines, count, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, count, depth + 1)


def _check_plain(data: Any, path: Path, lines: dict[Path, int]) -> None:
    """Refuse values that are not plain data (bytes, sets, dates from explicit tags)."""
    if isinstance(data, dict):
        for key, value in data.items():
            _check_plain(value, (*path, key), lines)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            _check_plain(value, (*path, index), lines)
    elif not isinstance(data, _PLAIN):
        kind = type(data).__name__
        raise SpecError(
            [Issue("", f"a {kind} value is not allowed: a job spec is plain data", lines.get(path))]
        )
