"""``kubetune report`` on synthetic run folders written as the trainer writes them."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import report
from kubetune.errors import ConfigError

from conftest import ROOT

SWEEP = "bbc-lr"
#: run id → (learning rate, eval accuracy, test accuracy); the middle one is best.
TRAINED = {
    "bbc-lr-0a1b2c3d": (1e-5, 0.7912, 0.8133),
    "bbc-lr-1b2c3d4e": (1e-4, 0.9287, 0.9411),
    "bbc-lr-2c3d4e5f": (1e-3, 0.6054, 0.6218),
}
BASELINE = "bbc-lr-3d4e5f60"
INTERRUPTED = "bbc-lr-4e5f6071"
HOSTILE = '<script>alert("owned")</script> | *not bold* [link](#x)'
FINGERPRINT = "f" * 64
CHROMIUM = shutil.which("chromium")


def write_run(
    store: Path,
    sweep: str,
    run_id: str,
    *,
    task: str = "classification",
    status: str = "completed",
    params: dict[str, Any] | None = None,
    metrics: dict[str, dict[str, float]] | None = None,
    history: list[dict[str, Any]] | None = None,
    predictions: list[dict[str, Any]] | None = None,
    **record: Any,
) -> Path:
    """A run folder as the trainer leaves it: spec.yaml and run.json always, the rest if given."""
    folder = store / sweep / run_id
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump({"name": sweep, "task": task}))
    record = {
        "status": status,
        "run_id": run_id,
        "sweep": sweep,
        "params": params or {},
        "task": task,
        "seed": 42,
        "started": "2026-01-01T10:00:00Z",
        "data": {"fingerprint": FINGERPRINT},
        **record,
    }
    if metrics is not None:
        record["metrics"] = metrics
        (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "run.json").write_text(json.dumps(record))
    if history is not None:
        (folder / "history.json").write_text(json.dumps(history))
    if predictions is not None:
        lines = [json.dumps(row) for row in predictions]
        (folder / "test_predictions.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def history(rate: float, steps: int = 60) -> list[dict[str, Any]]:
    """The HF Trainer's log_history: training rows every 5 steps, eval rows every 20."""
    rows: list[dict[str, Any]] = []
    for step in range(5, steps + 1, 5):
        rows.append({"step": step, "epoch": step / 20, "loss": 1.6 * math.exp(-rate * step)})
        if step % 20 == 0:
            rows.append(
                {
                    "step": step,
                    "epoch": step / 20,
                    "eval_loss": 1.7 * math.exp(-rate * step),
                    "eval_accuracy": 1 - 0.8 * math.exp(-rate * step),
                }
            )
    return rows


def classified(run_id: str, rows: int = 8) -> list[dict[str, Any]]:
    labels = ["business", "sports", "tech", "politics"]
    out = []
    for i in range(rows):
        text = HOSTILE if i == 0 else f"article {i} of {run_id} " + "word " * 100
        label = labels[i % 4]
        prediction = label if i % 3 else labels[(i + 1) % 4]
        out.append({"id": f"{label}/{i:03d}.txt", "text": report._clip(text),
                    "label": label, "prediction": prediction, "score": 0.5 + i / 20})  # fmt: skip
    return out


def scores(eval_accuracy: float, test_accuracy: float) -> dict[str, dict[str, float]]:
    return {
        "eval": {"accuracy": eval_accuracy, "macro_f1": eval_accuracy - 0.01, "runtime": 1.5},
        "test": {"accuracy": test_accuracy, "macro_f1": test_accuracy - 0.02, "runtime": 1.5},
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep of three trained runs, a zero-shot baseline and an interrupted run."""
    root = tmp_path_factory.mktemp("store")
    for run_id, (rate, eval_acc, test_acc) in TRAINED.items():
        metrics = scores(eval_acc, test_acc)
        metrics["train"] = {"train_runtime": 754.0, "train_loss": 0.4}
        write_run(root, SWEEP, run_id, params={"train.learning_rate": rate}, metrics=metrics,
                  history=history(rate * 1000), predictions=classified(run_id),
                  finished="2026-01-01T10:13:00Z")  # fmt: skip
    write_run(root, SWEEP, BASELINE, task="zero-shot", params={"task": "zero-shot"},
              metrics=scores(0.7001, 0.7102), predictions=classified(BASELINE),
              zero_shot={"method": "embedding", "examples_per_class": 0},
              finished="2026-01-01T10:01:05Z")  # fmt: skip
    write_run(root, SWEEP, INTERRUPTED, status="interrupted", step=40,
              params={"train.learning_rate": 3e-4}, history=history(0.3, steps=40))  # fmt: skip
    return root


@dataclass
class Built:
    result: report.Report
    html: str
    markdown: str


@pytest.fixture(scope="module")
def built(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("out") / "report.html"
    result = report.build_report(f"file://{store}/{SWEEP}", out)
    return Built(result, out.read_text(encoding="utf-8"), result.markdown.read_text())


class Page(HTMLParser):
    """Tables (by id: rows of cell texts, header first), images and paragraphs of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str]] = []
        self.paragraphs: dict[str, str] = {}
        self.table: str | None = None
        self.cell: list[str] | None = None
        self.paragraph: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "table":
            self.table = found.get("id", f"table-{len(self.tables)}")
            self.tables[self.table] = []
        elif tag == "tr" and self.table:
            self.tables[self.table].append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "img":
            self.images.append(found)
        elif tag == "p" and "id" in found:
            self.paragraph = found["id"]
            self.paragraphs[self.paragraph] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.table = None
        elif tag in ("td", "th") and self.cell is not None and self.table:
            self.tables[self.table][-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "p":
            self.paragraph = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        if self.paragraph is not None:
            self.paragraphs[self.paragraph] += data


def rows_by_run(table: list[list[str]]) -> dict[str, dict[str, str]]:
    header, *rows = table
    return {row[0].removeprefix("★ "): dict(zip(header, row, strict=True)) for row in rows}


def test_writes_html_and_markdown_beside_it(built: Built) -> None:
    assert built.result.runs == 5
    assert built.result.html.name == "report.html"
    assert built.result.markdown == built.result.html.with_suffix(".md")
    assert built.html.startswith("<!doctype html>")
    assert built.markdown.startswith(f"# kubetune report: {SWEEP}")


def test_metrics_table_holds_every_run_with_its_numbers(built: Built) -> None:
    rows = rows_by_run(Page(built.html).tables[f"metrics-{SWEEP}"])
    assert set(rows) == {*TRAINED, BASELINE, INTERRUPTED}
    for run_id, (rate, eval_acc, test_acc) in TRAINED.items():
        row = rows[run_id]
        assert (row["status"], row["task"]) == ("completed", "classification")
        assert row["train.learning_rate"] == f"{rate:g}"
        assert row["eval accuracy"] == f"{eval_acc:.4f}"
        assert row["test accuracy"] == f"{test_acc:.4f}"
        assert row["test macro_f1"] == f"{test_acc - 0.02:.4f}"
        assert row["time"] == "12m 34s"
    assert rows[BASELINE]["task"] == "zero-shot" and rows[BASELINE]["test accuracy"] == "0.7102"
    assert rows[BASELINE]["time"] == "1m 05s"  # no training: the whole run
    stopped = rows[INTERRUPTED]
    assert stopped["status"] == "interrupted at step 40"
    assert stopped["test accuracy"] == stopped["eval macro_f1"] == "—"
    # The Markdown carries the same rows.
    for run_id, (_, _, test_acc) in TRAINED.items():
        line = next(x for x in built.markdown.splitlines() if x.startswith(f"| {run_id} |")
                    or x.startswith(f"| ★ {run_id} |"))  # fmt: skip
        assert f"| {test_acc:.4f} |" in line


def test_best_run_is_named_and_marked(built: Built) -> None:
    page = Page(built.html)
    best = "bbc-lr-1b2c3d4e"
    sentence = page.paragraphs[f"best-sweep-{SWEEP}"]
    assert sentence.startswith(f"Best run: {best}, test accuracy 0.9411 (highest of 4 runs)")
    marked = [row[0] for row in page.tables[f"metrics-{SWEEP}"] if row[0].startswith("★")]
    assert marked == [f"★ {best}"]
    assert rows_by_run(page.tables["best-runs"])[SWEEP]["best run"] == best
    assert f"**Best run: {best}, test accuracy 0.9411" in built.markdown


def test_lower_perplexity_is_better(tmp_path: Path) -> None:
    for run_id, rate, ppl in (("lm-aaaa", 1e-4, 31.7), ("lm-bbbb", 5e-4, 18.25),
                              ("lm-cccc", 2e-3, 44.0)):  # fmt: skip
        metrics = {split: {"perplexity": ppl, "token_accuracy": 0.3, "loss": math.log(ppl)}
                   for split in ("eval", "test")}  # fmt: skip
        write_run(tmp_path / "store", "lm", run_id, task="causal-lm", metrics=metrics,
                  params={"train.learning_rate": rate},
                  predictions=[{"id": i, "prompt": "Once upon", "reference": " a time",
                                "generation": " a hill", "loss": 2.9, "perplexity": 18.2,
                                "tokens": 12} for i in range(6)])  # fmt: skip
    result = report.build_report(f"file://{tmp_path}/store", tmp_path / "lm.html")
    page = Page(result.html.read_text())
    sentence = page.paragraphs["best-sweep-lm"]
    assert sentence.startswith("Best run: lm-bbbb, test perplexity 18.25 (lowest of 3 runs)")
    assert any("test perplexity against train.learning_rate" in i["alt"] for i in page.images)
    (_, *examples) = page.tables["examples-lm-aaaa"]
    assert examples[0][:3] == ["Once upon", "a time", "a hill [perplexity 18.20 over 12 tokens]"]


def embedded(images: list[dict[str, str]]) -> list[bytes]:
    prefix = "data:image/png;base64,"
    assert all(i["src"].startswith(prefix) for i in images)
    return [base64.b64decode(i["src"][len(prefix) :], validate=True) for i in images]


def test_every_plot_is_an_embedded_png(built: Built) -> None:
    images = Page(built.html).images
    alts = [i["alt"] for i in images]
    expected = [
        "bar chart of test accuracy, macro_f1 for 4 baseline and fine-tuned runs",
        f"training and eval loss against step for 4 runs of {SWEEP}",
        f"eval accuracy against step for 4 runs of {SWEEP}",
        f"test accuracy against train.learning_rate for 3 runs of {SWEEP}",
    ]
    assert alts == expected
    pngs = embedded(images)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000 for png in pngs)
    # The Markdown links the same PNGs, written beside it.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", built.markdown)
    folder = built.result.markdown.parent
    assert [(folder / link).read_bytes() for link in links] == pngs
    assert all(link.startswith("report_files/") for link in links)


def test_the_baseline_sits_beside_the_fine_tuned_runs(built: Built) -> None:
    page = Page(built.html)
    (table,) = [t for name, t in page.tables.items() if name.startswith("baseline-")]
    rows = rows_by_run(table)
    assert list(rows) == [BASELINE, *TRAINED]  # baselines first
    assert rows[BASELINE]["kind"] == "zero-shot (embedding)"
    assert rows["bbc-lr-1b2c3d4e"]["kind"] == "fine-tuned (classification)"
    assert rows["bbc-lr-1b2c3d4e"]["test accuracy"] == "0.9411"
    assert "test accuracy 0.7102 → 0.9411 (+0.2309)" in built.html


def test_five_examples_per_run_with_inputs_escaped(built: Built) -> None:
    page = Page(built.html)
    for run_id in [*TRAINED, BASELINE]:
        header, *examples = page.tables[f"examples-{run_id}"]
        assert header[:3] == ["input", "reference", "prediction"]
        assert len(examples) == 5
        assert examples[0][0] == HOSTILE  # shown as text, exactly
        long = examples[1][0]
        assert long.startswith(f"article 1 of {run_id} word") and long.endswith("…")
        assert len(long) <= report.FIELD_CHARS
        assert examples[1][1:] == ["sports", "sports (0.55)", "✓"]
        assert examples[0][1:] == ["business", "sports (0.50)", "✗"]
    assert f"examples-{INTERRUPTED}" not in page.tables
    assert "<script" not in built.html.lower()
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in built.html
    assert "<script" not in built.markdown
    assert (
        r'&lt;script&gt;alert("owned")&lt;/script&gt; \| \*not bold\* \[link\](#x)'
        in built.markdown
    )


def test_no_reference_leaves_the_page(built: Built) -> None:
    for text in (built.html, built.markdown):
        assert "http://" not in text and "https://" not in text
    sources = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", built.html)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources)
    assert "@import" not in built.html and "url(" not in built.html


def test_unfinished_and_broken_runs_are_listed_not_fatal(store: Path, tmp_path: Path) -> None:
    messy = tmp_path / "store"
    shutil.copytree(store, messy)
    write_run(messy, "messy", "messy-failed", status="failed", error="CUDA out of memory <gpu 0>")
    write_run(messy, "messy", "messy-running", status="running",
              history=[{"step": 5, "loss": 2.0}, {"step": 10, "loss": "nan?"}])  # fmt: skip
    bare = messy / "messy" / "messy-bare"
    bare.mkdir()
    (bare / "spec.yaml").write_text("task: ner\n")  # started, no run.json yet
    broken = write_run(messy, "messy", "messy-broken", metrics={"test": {"accuracy": 0.5}})
    (broken / "metrics.json").write_text("{not json")
    (broken / "test_predictions.jsonl").write_text('{"id": 1, "label": "a", "prediction": "a"}\n{')

    result = report.build_report(f"file://{messy}", tmp_path / "all.html")
    assert result.runs == 9
    page = Page(result.html.read_text())
    rows = rows_by_run(page.tables["metrics-messy"])
    assert rows["messy-failed"]["status"] == "failed: CUDA out of memory <gpu 0>"
    assert rows["messy-running"]["status"] == "running"
    assert (rows["messy-bare"]["status"], rows["messy-bare"]["task"]) == ("starting", "ner")
    # metrics.json unreadable: run.json's copy of the metrics stands in.
    broken_row = rows["messy-broken"]
    assert broken_row["status"].startswith("completed (metrics.json unreadable")
    assert broken_row["test accuracy"] == "0.5000"
    assert len(page.tables["examples-messy-broken"]) == 2  # header and the one good row
    assert rows_by_run(page.tables["best-runs"])["messy"]["best run"] == "messy-broken"
    assert set(rows_by_run(page.tables[f"metrics-{SWEEP}"])) == {*TRAINED, BASELINE, INTERRUPTED}


def test_ner_and_seq2seq_rows_become_examples() -> None:
    ner = report.to_example({"id": 3, "tokens": ["Visit", "New", "York", "now"],
                             "tags": ["O", "B-loc", "I-loc", "O"],
                             "predicted": ["O", "B-loc", "O", "O"]})  # fmt: skip
    assert ner == report.Example("Visit New York now", "New York [loc]", "New [loc]", False)
    seq = report.to_example({"id": 1, "source": "a " * 400, "reference": "r", "generated": "g"})
    assert len(seq.input) <= report.FIELD_CHARS and seq.input.endswith("…")
    assert (seq.reference, seq.prediction, seq.correct) == ("r", "g", None)


def test_question_answering_rows_become_examples() -> None:
    right = report.to_example({"id": "q1", "question": "Who wrote it?", "context_id": "c1",
                               "answer": "Ada Lovelace", "start": 4, "end": 16, "score": 0.91,
                               "gold": {"text": ["Ada Lovelace", "Lovelace"],
                                        "answer_start": [4, 8]}})  # fmt: skip
    assert right == report.Example(
        "Who wrote it?", "Ada Lovelace | Lovelace", "Ada Lovelace (0.91)", True
    )
    gold = {"text": ["1843"], "answer_start": [9]}
    wrong = report.to_example({"id": "q2", "question": "When?", "answer": "", "score": 0.4,
                               "gold": gold})  # fmt: skip
    assert (wrong.prediction, wrong.correct) == ("(no answer) (0.40)", False)
    unanswerable = report.to_example({"id": "q3", "question": "Why?", "answer": "",
                                      "gold": {"text": [], "answer_start": []}})  # fmt: skip
    assert (unanswerable.reference, unanswerable.correct) == ("(no answer)", True)


@pytest.mark.parametrize(
    ("param", "values", "expected"),
    [
        ("train.learning_rate", [1e-5, 1e-4, 1e-3], True),
        ("train.learning_rate", [2e-5, 5e-5], False),  # within a decade: linear reads fine
        ("train.weight_decay", [0.001, 0.1], True),
        ("lora.r", [4, 8, 16], False),
        ("train.warmup_steps", [1, 10_000], True),  # anything spanning three decades
        ("train.weight_decay", [0.0, 0.1], False),  # zero has no logarithm
        ("task", ["zero-shot", "classification"], False),
    ],
)
def test_log_scale_for_rates_spanning_decades(
    param: str, values: list[Any], expected: bool
) -> None:
    assert report.log_scale(param, values) is expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://example.com/runs", "use file://./runs, file:///abs/path or s3://bucket/prefix"),
        ("file:///nonexistent/kubetune-runs", "no runs there"),
    ],
)
def test_a_uri_without_runs_is_a_config_error(uri: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        report.build_report(uri, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_out_names_the_html_page(store: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name the HTML page"):
        report.build_report(f"file://{store}", tmp_path / "r.md")


def test_without_matplotlib_the_error_names_the_extra(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what a laptop install has
    with pytest.raises(ConfigError, match=re.escape("pip install 'kubetune[report]'")):
        report.build_report(f"file://{store}", tmp_path / "r.html")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium missing (make test installs it)")
def test_the_page_renders_in_headless_chromium(built: Built, tmp_path: Path) -> None:
    png = tmp_path / "shot.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check-report.py"), str(built.result.html),
         "--png", str(png), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["images"] == len(Page(built.html).images) == 4
    assert found["decoded"] == found["images"]
    assert found["title"] == f"kubetune report: {SWEEP}"
    assert found["height"] > 1500  # tables, four plots and five examples tables laid out
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(header[16:20], "big") == 1280
    assert int.from_bytes(header[20:24], "big") == found["height"]


# --- the cheap baseline against fine-tuning ------------------------------------------------

BASES = "bbc-base"
CLASSICAL_RUN, ZERO_SHOT_RUN, TUNED_RUN = (
    "bbc-base-c1a551ca",
    "bbc-base-2e405407",
    "bbc-base-f17e7e0d",
)


def compute(cpu: float, wall: float, gpus: int = 0) -> dict[str, float]:
    return {"cpu_seconds": cpu, "wall_seconds": wall, "gpu_seconds": wall * gpus}


def baseline_store(root: Path, *, tuned_test: float = 0.9865, gpus: int = 0) -> Path:
    """A zero-shot arm, a classical arm and a fine-tuned arm of one sweep, with what each
    run cost as the trainer records it."""
    write_run(root, BASES, ZERO_SHOT_RUN, task="zero-shot", params={"task": "zero-shot"},
              metrics=scores(0.8001, 0.7982), compute=compute(61.0, 40.0),
              zero_shot={"method": "embedding", "examples_per_class": 0},
              finished="2026-01-01T10:00:40Z")  # fmt: skip
    write_run(root, BASES, CLASSICAL_RUN, task="classical", params={"task": "classical"},
              metrics=scores(0.9686, 0.9731), compute=compute(17.0, 12.5),
              classical={"features": 95641, "fit_seconds": 1.2},
              predictions=classified(CLASSICAL_RUN), finished="2026-01-01T10:00:13Z")  # fmt: skip
    metrics = scores(0.9731, tuned_test)
    metrics["train"] = {"train_runtime": 3400.0, "train_loss": 0.2}
    write_run(root, BASES, TUNED_RUN, params={"task": "classification"}, metrics=metrics,
              compute=compute(3604.0, 3610.0 if not gpus else 190.0, gpus),
              history=history(0.1), finished="2026-01-01T11:00:10Z")  # fmt: skip
    return root


def comparison_page(root: Path, out: Path) -> tuple[Page, str]:
    result = report.build_report(f"file://{root}", out / "report.html")
    return Page(result.html.read_text()), result.markdown.read_text()


def test_fine_tuning_is_weighed_against_the_classical_baseline(tmp_path: Path) -> None:
    page, markdown = comparison_page(baseline_store(tmp_path / "store"), tmp_path)
    (verdict,) = [t for name, t in page.paragraphs.items() if name.startswith("verdict-")]
    assert verdict == (
        "Fine-tuning beat the cheap baseline by 1.3 points at 212× the CPU time (test accuracy "
        f"0.9731 → 0.9865; baseline {CLASSICAL_RUN} (classical (TF-IDF + logistic regression)), "
        f"fine-tuned {TUNED_RUN}; CPU time of each whole run: 17s against 1h 00m)."
    )
    assert f"**{report.markdown_escape(verdict)}**" in markdown
    (table,) = [t for name, t in page.tables.items() if name.startswith("baseline-")]
    rows = rows_by_run(table)
    assert list(rows) == [ZERO_SHOT_RUN, CLASSICAL_RUN, TUNED_RUN]  # baselines first
    assert rows[CLASSICAL_RUN]["kind"] == "classical (TF-IDF + logistic regression)"
    assert rows[CLASSICAL_RUN]["test accuracy"] == "0.9731"
    # The sweep's own table: a baseline's time is its whole run.
    assert rows_by_run(page.tables[f"metrics-{BASES}"])[CLASSICAL_RUN]["time"] == "13s"


def test_fine_tuning_that_loses_says_so(tmp_path: Path) -> None:
    page, _ = comparison_page(baseline_store(tmp_path / "store", tuned_test=0.9686), tmp_path)
    (verdict,) = [t for name, t in page.paragraphs.items() if name.startswith("verdict-")]
    assert verdict.startswith(
        "Fine-tuning lost to the cheap baseline by 0.4 points at 212× the CPU time "
        "(test accuracy 0.9731 → 0.9686;"
    )


def test_a_gpu_run_is_weighed_by_wall_clock_time_with_its_gpus_named(tmp_path: Path) -> None:
    page, _ = comparison_page(baseline_store(tmp_path / "store", gpus=2), tmp_path)
    (verdict,) = [t for name, t in page.paragraphs.items() if name.startswith("verdict-")]
    # CPU time would hide the GPUs' work: 190 s on two GPUs against 12.5 s on a CPU.
    assert verdict.startswith("Fine-tuning beat the cheap baseline by 1.3 points at 15× the "
                              "wall-clock time (")  # fmt: skip
    assert verdict.endswith(
        "wall-clock time of each whole run: 12s against 3m 10s; the fine-tuned run held "
        "2 GPUs (6m 20s of GPU time))."
    )


def view(run_id: str, task: str, test: float, **record: Any) -> report.RunView:
    from kubetune.store.record import RunRecord

    metrics = {"test": {"accuracy": test}}
    return report.RunView(BASES, run_id, f"file:///s/{run_id}", RunRecord(task=task, **record),
                          "completed", task, metrics, [], [], None)  # fmt: skip


def test_without_a_classical_run_the_best_baseline_is_named() -> None:
    tuned = view(TUNED_RUN, "classification", 0.95, compute=compute(900.0, 950.0, 1))
    few = view(ZERO_SHOT_RUN, "zero-shot", 0.9, compute=compute(10.0, 9.5, 1),
               zero_shot={"method": "embedding", "examples_per_class": 8})  # fmt: skip
    zero = view("bbc-base-0", "zero-shot", 0.7, zero_shot={"method": "nli"})
    line = report.verdict(tuned, [zero, few], "test", "accuracy")
    assert line == (
        "Fine-tuning beat the best baseline, 8-shot (embedding), by 5.0 points at 100× the GPU "
        f"time (test accuracy 0.9000 → 0.9500; baseline {ZERO_SHOT_RUN} (8-shot (embedding)), "
        f"fine-tuned {TUNED_RUN}; GPU time of each whole run: 10s against 15m 50s)."
    )


def test_a_classical_run_is_the_cheap_baseline_even_when_another_scores_higher() -> None:
    tuned = view(TUNED_RUN, "classification", 0.95)
    line = report.verdict(
        tuned,
        [view(ZERO_SHOT_RUN, "zero-shot", 0.96), view(CLASSICAL_RUN, "classical", 0.95)],
        "test",
        "accuracy",
    )
    assert line == (
        "Fine-tuning tied with the cheap baseline (test accuracy 0.9500 → 0.9500; baseline "
        f"{CLASSICAL_RUN} (classical (TF-IDF + logistic regression)), fine-tuned {TUNED_RUN}; "
        "neither record says what its run cost)."
    )


def test_a_tagging_baseline_is_weighed_on_the_ner_metrics_and_named_by_its_method() -> None:
    """A CRF arm of a NER sweep: its columns are NER's (its method's family), not accuracy,
    and its kind says which classical method it was."""
    from kubetune.store.record import RunRecord

    def tagger(run_id: str, task: str, f1: float, **record: Any) -> report.RunView:
        metrics = {"test": {"f1": f1, "precision": f1, "recall": f1}}
        return report.RunView("tags", run_id, f"file:///s/{run_id}",
                              RunRecord(task=task, **record), "completed", task, metrics, [],
                              [], None)  # fmt: skip

    crf = tagger("tags-c", "classical", 0.85, classical={"method": "crf", "features": 10})
    tuned = tagger("tags-t", "ner", 0.91)
    assert report.metric_columns([crf, tuned]) == ["f1", "precision", "recall"]
    assert report.run_kind(crf) == "classical (CRF over word features)"
    assert report.verdict(tuned, [crf], "test", "f1") == (
        "Fine-tuning beat the cheap baseline by 6.0 points (test f1 0.8500 → 0.9100; baseline "
        "tags-c (classical (CRF over word features)), fine-tuned tags-t; neither record says "
        "what its run cost)."
    )
    lead = tagger("tags-l", "classical", 0.2, classical={"method": "lead"})
    assert report.run_kind(lead) == "classical (lead sentence)"
    older = tagger("tags-o", "classical", 0.2, classical={"features": 3})
    assert report.run_kind(older) == "classical (TF-IDF + logistic regression)"


@pytest.mark.parametrize(
    ("ratio", "shown"), [(212.4, "212×"), (1234.0, "1,234×"), (3.41, "3.4×"), (0.518, "0.52×")]
)
def test_cost_ratios_read_at_a_glance(ratio: float, shown: str) -> None:
    assert report.format_ratio(ratio) == shown


def test_multi_label_runs_show_their_metrics_and_label_sets(tmp_path: Path) -> None:
    multi = {split: {"micro_f1": value, "macro_f1": value - 0.05, "subset_accuracy": value - 0.2,
                     "micro_precision": 0.9, "f1_bug": 1.0}
             for split, value in (("eval", 0.91), ("test", 0.88))}  # fmt: skip
    rows = [
        {"id": 1, "text": "crash asap", "label": ["bug", "urgent"],
         "prediction": [{"label": "bug", "score": 0.766351}, {"label": "urgent", "score": 0.54}]},
        {"id": 2, "text": "the app", "label": [], "prediction": []},
        {"id": 3, "text": "wish", "label": ["feature"],
         "prediction": [{"label": "bug", "score": 0.61}]},
    ]  # fmt: skip
    write_run(tmp_path / "store", "feedback", "feedback-c1", task="classical", metrics=multi,
              predictions=rows, finished="2026-01-01T10:00:09Z")  # fmt: skip
    result = report.build_report(f"file://{tmp_path}/store", tmp_path / "r.html")
    page = Page(result.html.read_text())
    header, *_ = page.tables["metrics-feedback"]
    shown = ("micro_f1", "macro_f1", "subset_accuracy")  # the multi-label headline first
    assert header[3:] == [f"{s} {m}" for s in ("eval", "test") for m in shown] + ["time"]
    assert page.paragraphs["best-sweep-feedback"].startswith(
        "Best run: feedback-c1, test micro_f1 0.8800"
    )
    _, *examples = page.tables["examples-feedback-c1"]
    assert [e[1:] for e in examples] == [
        ["bug, urgent", "bug (0.77), urgent (0.54)", "✓"],
        ["(none)", "(none)", "✓"],
        ["feature", "bug (0.61)", "✗"],
    ]
