"""The trainer end to end on tiny real models: outputs, resume, determinism, W&B, LoRA."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kubetune import preflight, spec, sweep

from tiny import tiny_spec, write_yaml

#: Most tests here train the tiny models; the fast suite trains nothing.
pytestmark = pytest.mark.slow

EVENT = "@@kubetune "


def train(
    spec_path: Path, store: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubetune.train", str(spec_path)],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "KUBETUNE_STORE": f"file://{store}",
            "WANDB_DIR": str(store / "wandb"),
            **(env or {}),
        },
        timeout=600,
    )


def events(stdout: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[len(EVENT) :]) for line in stdout.splitlines() if line.startswith(EVENT)
    ]


def run_dir(store: Path, data: dict[str, Any]) -> Path:
    (run,) = sweep.expand(spec.validate(data))
    return store / run.sweep / run.run_id


@pytest.fixture(scope="module")
def cls_run(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One finished tiny classification run, shared by the assertions below."""
    tmp = tmp_path_factory.mktemp("cls")
    # group_by_length as the examples use it: evaluation must still keep row order.
    data = tiny_spec(
        tiny,
        model={"config_overrides": {"attention_probs_dropout_prob": 0.0}},
        train={"save_strategy": "steps", "save_steps": 20, "save_total_limit": 2,
               "group_by_length": True},
    )  # fmt: skip
    path = write_yaml(tmp / "job.yaml", data)
    proc = train(path, tmp / "store")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "data": data,
        "path": path,
        "store": tmp / "store",
        "proc": proc,
        "dir": run_dir(tmp / "store", data),
    }


def test_run_writes_the_store_layout(cls_run: dict[str, Any]) -> None:
    out: Path = cls_run["dir"]
    expected = ["spec.yaml", "run.json", "metrics.json", "predictions.jsonl",
                "test_predictions.jsonl", "confusion_matrix.json", "final/config.json",
                "final/model.safetensors", "final/tokenizer.json"]  # fmt: skip
    for name in expected:
        assert (out / name).is_file(), name
    assert spec.loads((out / "spec.yaml").read_text()) == spec.validate(cls_run["data"])
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step-000180", "step-000200"], "keeps the last save_total_limit=2"
    manifest = json.loads((out / "checkpoints" / "step-000200" / "MANIFEST.json").read_text())
    assert manifest["step"] == 200
    assert {f["path"] for f in manifest["files"]} >= {"model.safetensors", "trainer_state.json"}


def test_config_overrides_reach_the_trained_model(cls_run: dict[str, Any]) -> None:
    config = json.loads((cls_run["dir"] / "final" / "config.json").read_text())
    assert config["attention_probs_dropout_prob"] == 0.0
    assert config["hidden_dropout_prob"] == 0.1, "only the named setting changes"


def test_run_record_is_pinned(cls_run: dict[str, Any]) -> None:
    record = json.loads((cls_run["dir"] / "run.json").read_text())
    (run,) = sweep.expand(spec.validate(cls_run["data"]))
    assert record["status"] == "completed"
    assert record["run_id"] == run.run_id and record["spec_hash"] == run.spec_hash
    assert record["seed"] == 7
    assert record["packages"]["torch"].startswith("2.13.0")
    assert record["packages"]["transformers"]
    assert len(record["data"]["fingerprint"]) == 64
    # What `kubetune run` compares before it calls a finished run done.
    assert record["data"]["fingerprints"] == preflight.local_prints(run.spec)
    assert record["data"]["rows"] == {"train": 100, "eval": 25, "test": 25}
    assert set(record["model"]["files"]) >= {"config.json", "model.safetensors"}
    assert record["hardware"]["cpu_count"] >= 1
    assert record["started"] < record["finished"]
    assert record["labels"] == ["money", "sport", "tech"]
    assert (
        record["metrics"]["test"]["accuracy"]
        == json.loads((cls_run["dir"] / "metrics.json").read_text())["test"]["accuracy"]
    )


def test_metrics_and_predictions_are_consistent(cls_run: dict[str, Any]) -> None:
    metrics = json.loads((cls_run["dir"] / "metrics.json").read_text())
    rows = [json.loads(x) for x in (cls_run["dir"] / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 25
    accuracy = sum(r["label"] == r["prediction"] for r in rows) / len(rows)
    assert metrics["eval"]["accuracy"] == pytest.approx(accuracy)
    assert {"macro_f1", "f1_money", "f1_sport", "f1_tech"} <= set(metrics["eval"])
    matrix = json.loads((cls_run["dir"] / "confusion_matrix.json").read_text())
    assert matrix["labels"] == ["money", "sport", "tech"]
    assert sum(map(sum, matrix["matrix"])) == 25
    assert sum(matrix["matrix"][i][i] for i in range(3)) == sum(
        r["label"] == r["prediction"] for r in rows
    )


def test_final_model_loads_in_a_pipeline_and_predicts_sensibly(
    cls_run: dict[str, Any], tiny: dict[str, Path]
) -> None:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(cls_run["dir"] / "final"), device="cpu")
    rows = [json.loads(x) for x in (tiny["cls"] / "test.jsonl").read_text().splitlines()]
    out = classify([r["text"] for r in rows], truncation=True, max_length=48)
    hits = sum(o["label"] == r["label"] for o, r in zip(out, rows, strict=True))
    assert hits / len(rows) >= 0.9, "a trained model, not chance (1/3)"
    assert {o["label"] for o in out} == {"money", "sport", "tech"}


def test_predictions_pair_each_row_with_its_own_prediction(
    cls_run: dict[str, Any], tiny: dict[str, Path]
) -> None:
    from transformers import pipeline

    raw = [json.loads(x) for x in (tiny["cls"] / "test.jsonl").read_text().splitlines()]
    saved = [
        json.loads(x) for x in (cls_run["dir"] / "test_predictions.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in saved] == [r["id"] for r in raw]
    assert [r["label"] for r in saved] == [r["label"] for r in raw]
    classify = pipeline("text-classification", model=str(cls_run["dir"] / "final"), device="cpu")
    out = classify([r["text"] for r in raw], truncation=True, max_length=48)
    assert [o["label"] for o in out] == [r["prediction"] for r in saved]


def test_progress_events_reach_stdout(cls_run: dict[str, Any]) -> None:
    kinds = [e["event"] for e in events(cls_run["proc"].stdout)]
    assert kinds[0] == "model" and kinds[-1] == "done"
    assert {"train_begin", "step", "eval", "checkpoint"} <= set(kinds)
    steps = [e for e in events(cls_run["proc"].stdout) if e["event"] == "step"]
    assert steps[-1]["step"] == steps[-1]["max_steps"] == 200


def test_a_finished_run_is_not_retrained(cls_run: dict[str, Any]) -> None:
    before = (cls_run["dir"] / "run.json").read_text()
    proc = train(cls_run["path"], cls_run["store"])
    assert proc.returncode == 0
    assert "already finished" in proc.stdout
    assert not [e for e in events(proc.stdout) if e["event"] == "step"]
    assert (cls_run["dir"] / "run.json").read_text() == before


def test_same_spec_same_metrics_and_predictions(cls_run: dict[str, Any], tmp_path: Path) -> None:
    proc = train(cls_run["path"], tmp_path / "again")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = run_dir(tmp_path / "again", cls_run["data"])
    for name in ("predictions.jsonl", "test_predictions.jsonl", "confusion_matrix.json"):
        assert (again / name).read_bytes() == (cls_run["dir"] / name).read_bytes(), name

    def stable(path: Path) -> dict[str, Any]:
        metrics = json.loads(path.read_text())
        return {s: {k: v for k, v in m.items() if "runtime" not in k and "per_second" not in k}
                for s, m in metrics.items()}  # fmt: skip

    assert stable(again / "metrics.json") == stable(cls_run["dir"] / "metrics.json")


def test_interrupted_run_resumes_from_its_checkpoint(tiny: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_spec(
        tiny,
        train={"save_strategy": "steps", "save_steps": 10, "epochs": 30, "logging_steps": 5},
        tracking={"wandb": {"mode": "offline", "project": "p"}},
    )
    path = write_yaml(tmp_path / "job.yaml", data)
    store = tmp_path / "store"
    env = {**os.environ, "KUBETUNE_STORE": f"file://{store}", "WANDB_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "kubetune.train", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(EVENT) and json.loads(line[len(EVENT) :]).get("step", 0) >= 15:
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    stopped = [e for e in events(rest) if e["event"] == "interrupted"]
    assert stopped and 15 <= stopped[0]["step"] < 300
    out = run_dir(store, data)
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    saved = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").iterdir())
    assert saved[-1] == stopped[0]["step"]

    resumed = train(path, store)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resume_events = [e for e in events(resumed.stdout) if e["event"] == "resume"]
    assert resume_events == [{"event": "resume", "step": stopped[0]["step"]}]
    first_step = next(e for e in events(resumed.stdout) if e["event"] == "step")
    assert first_step["step"] == stopped[0]["step"] + 1
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["resumed_from_step"] == stopped[0]["step"]
    assert record["attempt"] == 2

    # Both attempts log to one W&B run: the same id, the second picking up after the stop.
    attempts = sorted(tmp_path.rglob(f"run-{out.name}.wandb"), key=lambda p: p.parent.name)
    assert len(attempts) == 2
    first, second = (read_wandb(p) for p in attempts)
    assert first["run"]["run_id"] == second["run"]["run_id"] == out.name
    steps = [row["train/global_step"] for row in second["history"]]
    assert steps and min(steps) > stopped[0]["step"]


def test_ner_run_scores_entities_and_reconstructs_spans(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import pipeline

    data = tiny_spec(tiny, "ner", train={"epochs": 10})
    proc = train(write_yaml(tmp_path / "job.yaml", data), tmp_path / "store")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir(tmp_path / "store", data)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"precision", "recall", "f1", "f1_loc", "f1_person"} <= set(metrics["test"])
    assert metrics["test"]["f1"] > 0.8
    rows = [json.loads(x) for x in (out / "test_predictions.jsonl").read_text().splitlines()]
    for row in rows:
        text = " ".join(row["tokens"])
        assert len(row["predicted"]) == len(row["tokens"])
        for entity in row["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
    tagger = pipeline(
        "token-classification", model=str(out / "final"), aggregation_strategy="first"
    )
    found = {
        (e["entity_group"], e["word"].lower()) for e in tagger("yesterday john smith visited paris")
    }
    assert ("loc", "paris") in found


def test_lora_trains_few_parameters_and_saves_a_loadable_model(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import pipeline

    data = tiny_spec(tiny, lora={"r": 4, "target_modules": ["query", "value"]}, train={"epochs": 4})
    proc = train(write_yaml(tmp_path / "job.yaml", data), tmp_path / "store")
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_event = next(e for e in events(proc.stdout) if e["event"] == "model")
    assert 0 < model_event["trainable"] < model_event["total"] / 2
    out = run_dir(tmp_path / "store", data)
    assert (out / "adapter" / "adapter_config.json").is_file()
    record = json.loads((out / "run.json").read_text())
    assert record["parameters"]["trainable"] == model_event["trainable"]
    classify = pipeline("text-classification", model=str(out / "final"), device="cpu")
    assert classify("goal match team")[0]["label"] in {"sport", "money", "tech"}


def test_lora_without_merge_saves_the_adapter_as_final(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification

    data = tiny_spec(tiny, lora={"r": 4, "merge": False}, train={"epochs": 1})
    proc = train(write_yaml(tmp_path / "job.yaml", data), tmp_path / "store")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir(tmp_path / "store", data)
    assert (out / "final" / "adapter_config.json").is_file()
    assert not (out / "final" / "model.safetensors").exists(), "no merged copy"
    record = json.loads((out / "run.json").read_text())
    assert record["lora"]["target_modules"] == ["query", "value"], "peft's BERT default"
    adapter = json.loads((out / "final" / "adapter_config.json").read_text())
    config = AutoConfig.from_pretrained(str(out / "final"))
    base = AutoModelForSequenceClassification.from_pretrained(
        adapter["base_model_name_or_path"], config=config
    )
    model = PeftModel.from_pretrained(base, str(out / "final"))
    assert model.config.id2label == {0: "money", 1: "sport", 2: "tech"}


def test_default_lora_targets_follow_the_architecture(tiny: dict[str, Path]) -> None:
    from transformers import AutoConfig, EncoderDecoderConfig, GPT2Config

    from kubetune.train.lora import default_lora_targets

    bert = AutoConfig.from_pretrained(str(tiny["model"]))
    assert default_lora_targets(SimpleNamespace(config=bert)) == ["query", "value"]
    assert default_lora_targets(SimpleNamespace(config=GPT2Config())) == ["c_attn"]
    bert2gpt = EncoderDecoderConfig.from_encoder_decoder_configs(bert, GPT2Config())
    assert default_lora_targets(SimpleNamespace(config=bert2gpt)) == ["c_attn", "query", "value"]
    bert.model_type = "unheard-of"
    assert default_lora_targets(SimpleNamespace(config=bert)) == "all-linear"


def test_wandb_offline_run_records_what_was_logged(tiny: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_spec(
        tiny, train={"epochs": 2}, tracking={"wandb": {"mode": "offline", "project": "p"}}
    )
    proc = train(write_yaml(tmp_path / "job.yaml", data), tmp_path / "store")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = sweep.expand(spec.validate(data))
    (run_file,) = (tmp_path / "store" / "wandb").rglob(f"run-{run.run_id}.wandb")
    records = read_wandb(run_file)
    assert records["run"]["run_id"] == run.run_id
    assert records["run"]["group"] == run.sweep and records["run"]["job_type"] == "classification"
    assert records["config"]["name"] == "tiny-cls" and records["config"]["train"]["seed"] == 7
    assert any("loss" in h for h in records["history"])
    metrics = json.loads((tmp_path / "store" / run.sweep / run.run_id / "metrics.json").read_text())
    assert records["summary"]["test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def wandb_records(path: Path) -> Iterator[bytes]:
    """Records of a W&B run file: a ':W&B' header, then LevelDB-log framing in 32 KiB blocks
    (per record: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind in (2, 3):
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def read_wandb(path: Path) -> dict[str, Any]:
    """Decode an offline W&B run file: run header, config, history rows, summary."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}, "run": {}}
    for data in wandb_records(path):
        record = pb.Record()  # type: ignore[attr-defined]  # generated protobuf, no stubs
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out["run"] = {"run_id": run.run_id, "group": run.run_group, "job_type": run.job_type}
            for item in run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            row = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json)
                for i in record.history.item
            }
            out["history"].append(row)
        elif kind == "summary":
            for item in record.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def test_config_errors_exit_2_with_one_line(tiny: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_spec(tiny, data={"text_column": "body"})
    proc = train(write_yaml(tmp_path / "job.yaml", data), tmp_path / "store")
    assert proc.returncode == 2
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "data.text_column: column 'body' is not in the train data" in line
    data = tiny_spec(tiny, model={"config_overrides": {"attention_dropout": 0.0}})
    proc = train(write_yaml(tmp_path / "job2.yaml", data), tmp_path / "store")
    assert proc.returncode == 2
    assert (
        "error: model.config_overrides.attention_dropout: not a setting of this bert "
        "checkpoint's config (did you mean attention_probs_dropout_prob?)"
    ) in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: nope\n")
    proc = train(bad, tmp_path / "store")
    assert proc.returncode == 2 and "task: must be one of" in proc.stderr
    # A Job whose run id is not its spec's would write another run's folder.
    proc = train(write_yaml(tmp_path / "job3.yaml", tiny_spec(tiny)), tmp_path / "store",
                 {"KUBETUNE_RUN_ID": "tiny-cls-00000000"})  # fmt: skip
    assert proc.returncode == 2
    assert "error: KUBETUNE_RUN_ID=tiny-cls-00000000 is not a run of" in proc.stderr


def test_own_rows_keeps_the_splits_rows_in_order_and_drops_the_fill() -> None:
    """What 2 processes gathered for a split of 4 rows: its rows, then the last batch's fill."""
    from kubetune.train.runner import own_rows

    gathered = [[10, 11], [20, 21], [30, 31], [40, 41], [10, 11], [20, 21], [30, 31], [40, 41]]
    assert own_rows(gathered, 4).tolist() == gathered[:4]
    assert own_rows(gathered[:3], 4).tolist() == gathered[:3]  # too few stays too few: zip says so
