"""Progress events: the wire format both the trainer and ``kubetune run`` read."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kubetune import events

EXAMPLES: list[events.Event] = [
    events.Model(trainable=10, total=100, labels=4),
    events.Resume(step=20),
    events.TrainBegin(step=0, max_steps=50, peak_rss=1 << 20),
    events.Step(step=3, max_steps=50, loss=0.25, elapsed=1.5, peak_rss=1 << 20, peak_gpu=7),
    events.Eval(step=10, metric="accuracy", value=0.875),
    events.Checkpoint(step=10, url="s3://b/r", bytes=1234, seconds=0.5, pruned=[5]),
    events.CheckpointWait(step=20, waiting_for=10),
    events.CheckpointRejected(step=10, reason="sha256 of model.safetensors differs"),
    events.Interrupted(step=12, url="file:///runs/x"),
    events.Pruned(step=30, rung=3, url="file:///runs/x", value=0.41),
    events.Done(already=False, url="file:///runs/x", metrics={"test": {"accuracy": 0.9}}),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.kind)
def test_every_event_survives_a_line(event: events.Event) -> None:
    line = event.line()
    assert line.startswith(events.PREFIX) and "\n" not in line
    assert json.loads(line[len(events.PREFIX) :])["event"] == event.kind
    assert events.parse(line + "\n") == event


def test_every_kind_is_known_to_the_reader() -> None:
    assert {type(e) for e in EXAMPLES} == set(events.KINDS.values())


def test_log_lines_and_broken_json_are_not_events() -> None:
    assert events.parse("step 3: loss 0.2\n") is None
    assert events.parse(events.PREFIX + "{not json\n") is None
    assert events.parse(events.PREFIX + "[1, 2]\n") is None


def test_a_newer_trainers_extra_fields_and_kinds_do_not_break_the_reader() -> None:
    extra = events.PREFIX + json.dumps({"event": "resume", "step": 4, "source": "s3"})
    assert events.parse(extra) == events.Resume(step=4)
    new = events.parse(events.PREFIX + json.dumps({"event": "warmup", "lr": 0.1}))
    assert new == events.Other(name="warmup", fields={"lr": 0.1})
    short = events.parse(events.PREFIX + json.dumps({"event": "eval", "step": 1}))
    assert isinstance(short, events.Other) and short.name == "eval"


def test_emit_prints_one_flushed_line(capsys: pytest.CaptureFixture[str]) -> None:
    events.emit(events.Resume(step=7))
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and events.parse(out) == events.Resume(step=7)
    assert dataclasses.is_dataclass(events.parse(out))
