"""The kubetune command as a user runs it: real exit codes and output, through the console
script's entry point; in this process (conftest.run_cli), except where the process itself is
the point (what it imports, pure stdout, `python -m kubetune.cli`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import spec, sweep

from conftest import ROOT, base_spec, cli_sequence, run_cli

KUBETUNE = [sys.executable, "-m", "kubetune.cli"]


def kubetune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**os.environ, "COLUMNS": "200", **(env or {})}, cwd=ROOT)


def kubetune_process(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KUBETUNE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=ROOT,
        timeout=120,
    )


def test_validate_ok_and_bad_files_together(write_spec: Any, tmp_path: Path) -> None:
    good = write_spec(base_spec(), "good.yaml")
    bad = write_spec(base_spec(train={"lr": 1e-5, "epochs": -1}), "bad.yaml")
    proc = kubetune("validate", str(good), str(bad))
    assert proc.returncode == 2
    assert "good.yaml: bbc-topic (classification, 1 run)" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert any("bad.yaml:" in e and "train.lr: unknown key; did you mean 'learning_rate'?" in e
               for e in errors)  # fmt: skip
    assert any("train.epochs: must be greater than 0" in e for e in errors)
    assert "Traceback" not in proc.stderr


def test_validate_reports_a_model_error_and_a_sweep_error_at_once(write_spec: Any) -> None:
    data = base_spec(
        model={"name": "sentence-transformers/all-MiniLM-L6-v2", "revison": "main"},
        sweep={"parameters": {"train.learning_rate": {"values": [3e-5, 5]}, "lora.rr": {
            "values": [8]}}},
    )  # fmt: skip
    proc = kubetune("validate", str(write_spec(data)))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, proc.stderr
    assert "job.yaml:5: model.revison: unknown key; did you mean 'revision'?" in errors[0]
    assert (
        "job.yaml:22: sweep.parameters.train.learning_rate.values[1]: "
        "must be less than or equal to 1 (got 5)" in errors[1]
    )
    assert "sweep.parameters.lora.rr: lora has no field 'rr'; did you mean 'lora.r'?" in errors[2]
    assert "Traceback" not in proc.stderr


def test_user_error_is_one_line_and_debug_shows_the_traceback(write_spec: Any) -> None:
    path = write_spec(base_spec(task="clasification"))
    proc = kubetune_process("render", str(path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "task: must be one of" in line and "did you mean 'classification'?" in line
    debug = kubetune_process("render", str(path), env={"KUBETUNE_DEBUG": "1"})
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "SpecError" in debug.stderr


def test_missing_file_is_a_user_error() -> None:
    proc = kubetune("validate", "no/such/job.yaml")
    assert proc.returncode == 2
    assert "no/such/job.yaml: no such file" in proc.stderr


def test_render_to_stdout_is_pure_yaml(write_spec: Any) -> None:
    proc = kubetune_process("render", str(write_spec(base_spec())), "-n", "ml")
    assert proc.returncode == 0, proc.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(proc.stdout) if d]
    assert kinds == ["NetworkPolicy", "ConfigMap", "Job"]


def test_render_set_overrides_and_run_selection(write_spec: Any, tmp_path: Path) -> None:
    data = base_spec(sweep={"parameters": {"train.seed": {"values": [1, 2, 3]}}})
    path = write_spec(data)
    proc = kubetune("render", str(path), "--set", "train.learning_rate=2e-5", "--set",
                    "resources.gpus=2", "--out", str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifests = sorted((tmp_path / "out").glob("bbc-topic-*.yaml"))
    assert len(manifests) == 3
    docs = list(yaml.safe_load_all(manifests[0].read_text()))
    resolved = spec.loads(docs[1]["data"]["spec.yaml"])
    assert resolved.train.learning_rate == 2e-5 and resolved.resources.gpus == 2

    run_id = manifests[1].stem
    one = kubetune("render", str(path), "--set", "train.learning_rate=2e-5", "--set",
                   "resources.gpus=2", "--run", run_id)  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert next(d["metadata"]["name"] for d in yaml.safe_load_all(one.stdout) if d) == run_id

    bad = kubetune("render", str(path), "--set", "train.lr=1", "--run", "nope")
    assert bad.returncode == 2
    assert "--set train.lr=1: train has no field 'lr'; did you mean 'train.learning_rate'?" in (
        bad.stderr
    )
    missing = kubetune("render", str(path), "--run", "nope")
    assert missing.returncode == 2 and "--run nope: no such run" in missing.stderr


def test_render_without_a_store_names_the_field(write_spec: Any) -> None:
    proc = kubetune("render", str(write_spec(base_spec(storage=None))))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: storage.uri:")


def test_sweep_table_lists_every_run(write_spec: Any) -> None:
    data = base_spec(sweep={"parameters": {"train.learning_rate": {"values": [1e-5, 3e-5]},
                                           "lora.r": {"values": [4, 8]}}})  # fmt: skip
    proc = kubetune("sweep", str(write_spec(data)))
    assert proc.returncode == 0, proc.stderr
    assert "bbc-topic: 4 runs" in proc.stdout
    assert proc.stdout.count("bbc-topic-") == 4
    assert "train.learning_rate" in proc.stdout and "lora.r" in proc.stdout


def test_schema_command_matches_the_committed_schema() -> None:
    proc = kubetune("schema")
    assert proc.returncode == 0
    committed = (ROOT / "schema" / "jobspec.schema.json").read_text()
    assert proc.stdout == committed, "run: kubetune schema > schema/jobspec.schema.json"
    assert json.loads(proc.stdout)["additionalProperties"] is False


def test_usage_errors_exit_2() -> None:
    proc = kubetune("render")
    assert proc.returncode == 2
    assert "Missing argument" in proc.stderr


#: What the laptop path never imports: ML frameworks, and a GUI toolkit for matplotlib.
ML_PACKAGES = ("torch", "transformers", "datasets", "peft", "accelerate", "wandb", "tensorflow",
               "jax", "tkinter")  # fmt: skip


def test_laptop_path_never_imports_an_ml_framework(
    write_spec: Any, kube_server: Any, tmp_path: Path
) -> None:
    """One process runs every laptop command in turn -- spec, render, submit, status, the
    stored runs, reproduce --render, the report and its plots: an ML framework (or a GUI
    toolkit for matplotlib) is never loaded, so a command that tries to import one is caught
    however many ran before it."""
    from test_report import TRAINED, history, scores, write_run
    from test_reproduce import store_run

    from kubefake import write_kubeconfig

    path = str(write_spec(base_spec(sweep={"parameters": {"lora.r": {"values": [4, 8]}}})))
    stored = store_run(tmp_path / "runs", sweep.expand(spec.load(path))[0])
    run_id, (rate, eval_acc, test_acc) = next(iter(TRAINED.items()))  # one run: its loss plot
    write_run(tmp_path / "report", "bbc-lr", run_id, params={"train.learning_rate": rate},
              metrics=scores(eval_acc, test_acc), history=history(rate * 1000))  # fmt: skip
    kube_server.reset()
    config = write_kubeconfig(tmp_path / "kubeconfig", kube_server.url)
    commands = [["validate", path], ["sweep", path], ["render", path, "--out", str(tmp_path)],
                ["schema"], ["--help"], ["submit", path, "-n", "ml"], ["status", path, "-n", "ml"],
                ["runs", "list", f"file://{tmp_path}/runs"], ["runs", "show", stored],
                ["reproduce", stored, "--render"],
                ["report", f"file://{tmp_path}/report", "--out", f"{tmp_path}/r.html"]]  # fmt: skip
    report = cli_sequence(
        commands, forbidden=ML_PACKAGES, env={**os.environ, "KUBECONFIG": str(config)}
    )
    assert [r["attempted"] for r in report] == [[]] * len(commands)
    assert len(kube_server.objects) > 0, "submit reached the cluster"
    assert (tmp_path / "r.html").is_file() and "<img" in (tmp_path / "r.html").read_text()


# --- Ctrl-C: one line, exit 130, in every command ---------------------------------------


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``kubetune ARGS`` through the console-script entry point, in this process."""
    from kubetune import cli

    monkeypatch.setattr(sys, "argv", ["kubetune", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    code = exited.value.code
    assert isinstance(code, int)
    return code


def press(stop: BaseException) -> Any:
    """A stand-in for the library call a command is blocked in when the user stops it."""

    def blocked(*args: Any, **kwargs: Any) -> Any:
        raise stop

    return blocked


@pytest.mark.parametrize(
    ("args", "module", "blocked_in"),
    [
        (["schema"], "kubetune.spec", "json_schema"),
        (["validate", "job.yaml"], "kubetune.spec", "load_raw"),
        (["sweep", "job.yaml"], "kubetune.spec", "load_raw"),
        (["runs", "list", "file://./runs"], "kubetune.runs", "find"),
        (["data", "prepare", "bbc-news", "out"], "kubetune.prepare", "prepare"),
        (["report", "file://./runs"], "kubetune.report", "build_report"),
        (["list"], "kubetune.kube.client", "connect"),
    ],
)
def test_ctrl_c_in_a_command_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    module: str,
    blocked_in: str,
) -> None:
    monkeypatch.setattr(f"{module}.{blocked_in}", press(KeyboardInterrupt()))
    assert run_main(monkeypatch, *args) == 130
    out, err = capsys.readouterr()
    assert (out, err) == ("", "interrupted\n")


def test_ctrl_c_with_debug_shows_the_traceback_and_still_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBETUNE_DEBUG", "1")
    monkeypatch.setattr("kubetune.spec.json_schema", press(KeyboardInterrupt()))
    assert run_main(monkeypatch, "schema") == 130
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyboardInterrupt" in err
    assert err.rstrip().endswith("kubetune.errors.Interrupted: interrupted")


def test_an_abort_is_a_stop_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    monkeypatch.setattr("kubetune.spec.json_schema", press(typer.Abort()))
    assert run_main(monkeypatch, "schema") == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_a_commands_own_exit_code_passes_through_untouched(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    monkeypatch.setattr("kubetune.spec.json_schema", press(typer.Exit(130)))
    assert run_main(monkeypatch, "schema") == 130
    assert capsys.readouterr().err == ""


def test_debug_keeps_the_cause_of_a_user_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("name: [unclosed\n", encoding="utf-8")
    monkeypatch.setenv("KUBETUNE_DEBUG", "1")
    assert run_main(monkeypatch, "render", str(spec_file)) == 2
    err = capsys.readouterr().err
    assert "direct cause of the following exception" in err and "yaml" in err


def test_sweep_table_at_60_columns_keeps_run_ids_and_values_whole(write_spec: Any) -> None:
    data = base_spec(name="bbc-news-grid", sweep={"parameters": {
        "train.learning_rate": {"values": [2e-5, 1e-4]}, "train.weight_decay": {"values": [0.01]},
        "lora.r": {"values": [4, 16]}}})  # fmt: skip
    path = write_spec(data)
    proc = kubetune("sweep", str(path), env={"COLUMNS": "60"})
    assert proc.returncode == 0, proc.stderr
    run_ids = [r.run_id for r in sweep.expand(spec.load(path), str(path))]
    rows = [line for line in proc.stdout.splitlines() if "bbc-news-grid-" in line]
    assert len(rows) == 4 and all(any(f" {r} " in line for line in rows) for r in run_ids)
    assert {v for line in rows for v in ("2e-05", "0.0001", "0.01", "16") if v in line} == {
        "2e-05", "0.0001", "0.01", "16"}  # fmt: skip
