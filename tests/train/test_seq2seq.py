"""Seq2seq on tiny random T5, BART and a bert2bert warm-started from two tiny BERTs.

Each model gets a word-level tokenizer trained here (no sentencepiece). The data is learnable:
a document's words come from one topic, and its summary is that topic's fixed phrase. Unit
tests call ``seq2seq.build`` and train nothing (the fast suite runs them); end-to-end tests,
marked slow, run the real trainer (``python -m kubetune.train SPEC``) with a file:// store and
read what it wrote. Each test imports torch and the trainer's modules itself, so collecting
this module costs the fast suite's other workers nothing.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from kubetune import spec
from kubetune.errors import ConfigError

from tiny import train_together, with_overrides

TOPICS = {
    "sport": ("goal match team player coach league", "a match report"),
    "tech": ("chip code robot phone software data", "new gadget review out now"),
    "money": ("bank market price shares profit trade", "markets moved"),
}
FILLER = ["the", "of", "and", "in", "to", "on"]
PREFIX = "summarize: "
METRICS = {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "gen_len"}
#: Special tokens per family, in id order, and the template that adds them to a text.
FAMILIES: dict[str, tuple[list[str], str]] = {
    "t5": (["<pad>", "</s>", "<unk>"], "$A </s>"),
    "bart": (["<s>", "<pad>", "</s>", "<unk>"], "<s> $A </s>"),
    "bert": (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[CLS] $A [SEP]"),
}


def _rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        topic = sorted(TOPICS)[i % len(TOPICS)]
        words = [rng.choice(TOPICS[topic][0].split()) for _ in range(rng.randint(3, 8))]
        words += [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
        rng.shuffle(words)
        rows.append({"id": i, "document": " ".join(words), "summary": TOPICS[topic][1]})
    rng.shuffle(rows)
    return rows


def _tokenizer(family: str, corpus: list[str]) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials, template = FAMILIES[family]
    unk = next(s for s in specials if "unk" in s.lower())
    tok = Tokenizer(models.WordLevel(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=specials))
    used = [s for s in specials if s in template]
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, tok.token_to_id(s)) for s in used]
    )
    roles = {
        "<pad>": "pad_token",
        "[PAD]": "pad_token",
        "</s>": "eos_token",
        "<s>": "bos_token",
        "[CLS]": "cls_token",
        "[SEP]": "sep_token",
        "[MASK]": "mask_token",
    }
    named = {roles[s]: s for s in specials if s in roles}
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk, **named)


@pytest.fixture(scope="module")
def tiny_s2s(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random T5 and BART checkpoints, two tiny BERT encoders, and the data."""
    import torch
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertConfig,
        BertModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    root = tmp_path_factory.mktemp("s2s")
    rows = _rows(random.Random(0), 150)
    (root / "data").mkdir()
    for name, part in (("train", rows[:120]), ("eval", rows[120:135]), ("test", rows[135:])):
        text = "".join(json.dumps(r) + "\n" for r in part)
        (root / "data" / f"{name}.jsonl").write_text(text, encoding="utf-8")
    corpus = [r["document"] + " " + r["summary"] for r in rows] + [PREFIX] * 5

    def starts_at(token: int) -> dict[str, Any]:
        # Not among the typed arguments of T5Config/BartConfig: PreTrainedConfig's kwargs.
        return {"decoder_start_token_id": token}

    small: dict[str, Any] = {
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    }

    torch.manual_seed(0)
    t5 = _tokenizer("t5", corpus)
    T5ForConditionalGeneration(
        T5Config(
            vocab_size=len(t5),
            d_model=32,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=1,
            **starts_at(0),
        )
    ).save_pretrained(root / "t5")
    t5.save_pretrained(root / "t5")

    bart = _tokenizer("bart", corpus)
    BartForConditionalGeneration(
        BartConfig(
            vocab_size=len(bart),
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=64,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            dropout=0.0,
            **starts_at(2),
        )
    ).save_pretrained(root / "bart")
    bart.save_pretrained(root / "bart")

    bert = _tokenizer("bert", corpus)
    for name in ("encoder", "decoder"):
        config = BertConfig(vocab_size=len(bert), hidden_size=32, num_hidden_layers=2, **small)
        BertModel(config).save_pretrained(root / name)
        bert.save_pretrained(root / name)
    wide = BertConfig(vocab_size=len(bert) + 7, hidden_size=32, num_hidden_layers=2, **small)
    BertModel(wide).save_pretrained(root / "other-vocab")
    return {
        name: root / name for name in ("data", "t5", "bart", "encoder", "decoder", "other-vocab")
    }


def s2s_spec(tiny_s2s: dict[str, Path], family: str = "t5", **overrides: Any) -> dict[str, Any]:
    folder = tiny_s2s["data"]
    warm = family == "bert2bert"
    data: dict[str, Any] = {
        "name": f"tiny-{family}",
        "task": "seq2seq",
        "model": {"name": str(tiny_s2s["encoder" if warm else family])}
        | ({"decoder": str(tiny_s2s["decoder"])} if warm else {}),
        "data": {
            "train": str(folder / "train.jsonl"),
            "eval": str(folder / "eval.jsonl"),
            "test": str(folder / "test.jsonl"),
            "max_length": 24,
            "max_target_length": 8,
        },
        "train": {
            "epochs": 8,
            "learning_rate": 3e-3,
            "batch_size": 8,
            "logging_steps": 15,
            "save_strategy": "no",
            "seed": 5,
        },
        "generation": {"max_new_tokens": 8},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    return with_overrides(data, overrides)


def build(tiny_s2s: dict[str, Path], tmp_path: Path, family: str = "t5", **overrides: Any) -> Any:
    """``seq2seq.build`` in this process, with the tokenizer the runner would load."""
    from transformers import AutoTokenizer

    from kubetune.train import seq2seq
    from kubetune.train.data import load_splits

    job = spec.validate(s2s_spec(tiny_s2s, family, **overrides))
    splits = load_splits(job, tmp_path / "cache")
    tokenizer = AutoTokenizer.from_pretrained(job.model.name)
    return seq2seq.build(job, splits, tokenizer, job.model.name), tokenizer


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- build, in process ---------------------------------------------------------------------


def test_labels_are_padded_with_ignore_index(tiny_s2s: dict[str, Path], tmp_path: Path) -> None:
    import torch

    from kubetune.train.seq2seq import IGNORE

    task, tokenizer = build(tiny_s2s, tmp_path)
    train = task.tokenized["train"]
    assert train.column_names == ["input_ids", "attention_mask", "labels"]
    lengths = [len(x) for x in train["labels"]]
    short, long = lengths.index(min(lengths)), lengths.index(max(lengths))
    assert min(lengths) < max(lengths)
    batch = task.collator([train[short], train[long]])
    labels = batch["labels"]
    assert labels.shape == (2, max(lengths))
    assert labels[0, min(lengths) :].tolist() == [IGNORE] * (max(lengths) - min(lengths))
    assert labels[0, : min(lengths)].tolist() == train[short]["labels"]
    assert IGNORE not in labels[1].tolist()
    assert train[short]["labels"][-1] == tokenizer.eos_token_id  # T5 targets end with </s>
    # Inputs pad with the pad token, masked out; decoder inputs are the labels shifted right
    # behind the decoder start token (T5's is the pad token), -100 turned back into padding.
    inputs = batch["input_ids"]
    assert (inputs == tokenizer.pad_token_id).sum() == (batch["attention_mask"] == 0).sum()
    assert batch["decoder_input_ids"][:, 0].tolist() == [0, 0]
    shifted = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE, tokenizer.pad_token_id)
    assert torch.equal(batch["decoder_input_ids"][:, 1:], shifted)


def test_source_prefix_goes_before_each_source_and_lengths_are_capped(
    tiny_s2s: dict[str, Path], tmp_path: Path
) -> None:
    task, tokenizer = build(
        tiny_s2s, tmp_path, data={"source_prefix": PREFIX, "max_length": 8, "max_target_length": 3}
    )
    raw = rows_of(tiny_s2s["data"] / "train.jsonl")
    first = task.tokenized["train"][0]
    expected = tokenizer(PREFIX + raw[0]["document"], truncation=True, max_length=8)["input_ids"]
    assert first["input_ids"] == expected
    assert tokenizer.decode(first["input_ids"]).startswith("summarize :")
    assert all(len(ids) <= 8 for ids in task.tokenized["train"]["input_ids"])
    # Summaries are 2 to 5 words + </s>: at most 3 tokens, ending with </s> (T5 truncation).
    assert all(len(ids) == 3 for ids in task.tokenized["train"]["labels"])
    assert first["labels"][-1] == tokenizer.eos_token_id


def test_generation_settings_reach_the_generation_config(
    tiny_s2s: dict[str, Path], tmp_path: Path
) -> None:
    wanted = {
        "num_beams": 3,
        "max_new_tokens": 7,
        "min_new_tokens": 2,
        "length_penalty": 0.6,
        "no_repeat_ngram_size": 2,
    }
    task, _ = build(tiny_s2s, tmp_path, "bart", generation=wanted)
    config = task.model.generation_config
    assert {k: getattr(config, k) for k in wanted} == wanted
    # The checkpoint's special tokens stay: BART starts decoding from </s>.
    assert (config.decoder_start_token_id, config.eos_token_id, config.pad_token_id) == (2, 2, 1)
    assert task.generate and task.default_metric == "rougeL" and task.labels == []
    assert task.peft_task == "SEQ_2_SEQ_LM"

    # The checkpoint's own decoding settings give way to the spec's, as bart-large-cnn's beam
    # search would: a greedy config that kept its length_penalty would not even save.
    own = tmp_path / "bart-cnn-like"
    shutil.copytree(tiny_s2s["bart"], own)
    cnn = {
        "num_beams": 4,
        "length_penalty": 2.0,
        "min_length": 5,
        "max_length": 60,
        "no_repeat_ngram_size": 3,
        "early_stopping": True,
        "decoder_start_token_id": 2,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "forced_bos_token_id": 0,
    }
    (own / "generation_config.json").write_text(json.dumps(cnn))
    greedy, _ = build(tiny_s2s, tmp_path, "bart", model={"name": str(own)})
    config = greedy.model.generation_config
    assert (config.num_beams, config.length_penalty, config.no_repeat_ngram_size) == (1, 1.0, 0)
    assert not config.early_stopping and config.min_new_tokens is None
    assert config.max_new_tokens == 8 and config.min_length in (None, 0)
    assert config.forced_bos_token_id == 0, "special tokens the checkpoint forces are kept"
    config.save_pretrained(tmp_path / "gen")
    saved = json.loads((tmp_path / "gen" / "generation_config.json").read_text())
    assert saved["num_beams"] == 1 and saved["max_new_tokens"] == 8


def test_bert2bert_is_warm_started_for_a_bert_tokenizer(
    tiny_s2s: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    from transformers import BertModel, EncoderDecoderModel, PretrainedConfig

    from kubetune.train import seq2seq

    task, tokenizer = build(tiny_s2s, tmp_path, "bert2bert", data={"max_target_length": 3})
    model = task.model
    assert isinstance(model, EncoderDecoderModel)
    decoder = model.config.decoder
    assert isinstance(decoder, PretrainedConfig)
    assert decoder.is_decoder and decoder.add_cross_attention
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    assert (model.config.decoder_start_token_id, model.config.pad_token_id) == (cls, pad)
    assert model.config.vocab_size == len(tokenizer)
    gen = model.generation_config
    assert (gen.decoder_start_token_id, gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (
        cls,
        cls,
        sep,
        pad,
    )
    # Each half holds its own checkpoint's weights; the decoder gained cross-attention.
    for half, module in (("encoder", model.encoder), ("decoder", model.decoder.bert)):
        assert isinstance(module, BertModel)
        loaded = BertModel.from_pretrained(tiny_s2s[half])
        assert torch.equal(
            module.embeddings.word_embeddings.weight, loaded.embeddings.word_embeddings.weight
        ), half
    encoder, decoder_half = model.encoder, model.decoder.bert
    assert isinstance(encoder, BertModel) and isinstance(decoder_half, BertModel)
    assert not torch.equal(
        encoder.embeddings.word_embeddings.weight, decoder_half.embeddings.word_embeddings.weight
    ), "two checkpoints"
    names = dict(model.named_parameters())
    assert any("crossattention" in n for n in names if n.startswith("decoder."))
    assert not any("crossattention" in n for n in names if n.startswith("encoder."))
    # Labels drop the leading [CLS] (the decoder starts from it) and end with [SEP], within
    # max_target_length even when the summary is longer (2 to 5 words, then [SEP]).
    for labels in task.tokenized["train"]["labels"]:
        assert len(labels) == 3 and labels[0] != cls and labels[-1] == sep
    assert seq2seq.decoder_labels([cls, 7, sep], cls, sep, 8) == [7, sep]
    assert seq2seq.decoder_labels([7, 8, 9], cls, sep, 3) == [7, 8, sep]


def test_config_errors_name_the_field(tiny_s2s: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^model\.name: .* is a bert checkpoint, not an "
        r"encoder-decoder; set model\.decoder",
    ):
        build(tiny_s2s, tmp_path, "encoder")
    other = {"name": str(tiny_s2s["encoder"]), "decoder": str(tiny_s2s["other-vocab"])}
    with pytest.raises(ConfigError, match=r"^model\.decoder: its vocabulary \(\d+ tokens\)"):
        build(tiny_s2s, tmp_path, "bert2bert", model=other)
    missing = {"name": str(tiny_s2s["encoder"]), "decoder": "pkg:no_such_package/model"}
    with pytest.raises(ConfigError, match=r"^model\.decoder: pkg:no_such_package/model needs"):
        build(tiny_s2s, tmp_path, "bert2bert", model=missing)
    with pytest.raises(ConfigError, match=r"^data\.target_column: column 'headline' is not"):
        build(tiny_s2s, tmp_path, data={"target_column": "headline"})
    rows = [{"document": "goal match", "summary": None}, {"document": "chip", "summary": "x"}]
    (tmp_path / "holes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    holes = {"train": str(tmp_path / "holes.jsonl"), "eval": str(tmp_path / "holes.jsonl")}
    with pytest.raises(
        ConfigError,
        match=r"^data\.target_column: row 0 of the train data has "
        r"NoneType in column 'summary', not text$",
    ):
        build(tiny_s2s, tmp_path, data=holes)


# --- the trainer end to end ----------------------------------------------------------------

#: The runs below, each a real ``python -m kubetune.train`` (per-family tweaks to the spec).
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    # T5 evaluates after every epoch, as a default spec does.
    "t5": ("t5", {"train": {"epochs": 4}}),
    "bart": ("bart", {"train": {"epochs": 6, "learning_rate": 1e-2, "eval_strategy": "no"}}),
    "bert2bert": ("bert2bert", {"train": {"epochs": 5, "eval_strategy": "no"}}),
    "t5-lora": ("t5", {"lora": {"r": 4}, "train": {"epochs": 3, "eval_strategy": "no"}}),
}


@pytest.fixture(scope="module")
def runs(tiny_s2s: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The runs of :data:`RUNS`, finished. They start together, one thread each: most of a
    tiny run is the trainer importing its stack, which two cores do twice as fast in parallel."""

    specs = {}
    for key, (family, tweaks) in RUNS.items():
        data = s2s_spec(tiny_s2s, family, **tweaks)
        data["name"] = f"tiny-{key}"
        data["data"]["source_prefix"] = PREFIX
        data["train"]["precision"] = "fp32"  # autocast only slows models this small
        specs[key] = (data, tmp_path_factory.mktemp(key))
    return train_together(specs)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["t5", "bart", "bert2bert"])
def test_each_model_learns_and_writes_metrics_and_predictions(
    runs: dict[str, Any], key: str
) -> None:
    from kubetune.train import metrics

    out: Path = runs[key]["dir"]
    scores = json.loads((out / "metrics.json").read_text())
    for split, n in (("eval", 15), ("test", 15)):
        assert set(scores[split]) >= METRICS, split
        name = "predictions.jsonl" if split == "eval" else "test_predictions.jsonl"
        rows = rows_of(out / name)
        assert len(rows) == n
        assert all(list(r) == ["id", "source", "reference", "generated"] for r in rows)
        # metrics.json scores exactly these rows: the raw references, the generated texts.
        again = metrics.generation_metrics(
            [r["generated"] for r in rows], [r["reference"] for r in rows]
        )
        assert {k: scores[split][k] for k in again} == pytest.approx(again)
    raw = {r["id"]: r for r in rows_of(Path(runs[key]["data"]["data"]["test"]))}
    for row in rows_of(out / "test_predictions.jsonl"):
        assert row["source"] == raw[row["id"]]["document"]  # the text, without the prefix
        assert row["reference"] == raw[row["id"]]["summary"]
    # Learnt, not guessed: the likeliest single phrase for all would score about 33 ROUGE-L.
    assert scores["test"]["rougeL"] > 80, scores["test"]
    assert 0 < scores["test"]["gen_len"] <= 8
    record = json.loads((out / "run.json").read_text())
    assert record["task"] == "seq2seq" and record["labels"] == []
    assert record["parameters"]["trainable"] == record["parameters"]["total"]


@pytest.mark.slow
def test_evaluation_during_training_generates(runs: dict[str, Any]) -> None:
    from train.test_runner import events

    evals = [e for e in events(runs["t5"]["stdout"]) if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [15, 30, 45, 60], "after each of the 4 epochs"
    assert all(e["metric"] == "rougeL" and 0 <= e["value"] <= 100 for e in evals)
    assert evals[-1]["value"] > evals[0]["value"]


@pytest.mark.slow
@pytest.mark.parametrize("key", ["t5", "bart", "bert2bert", "t5-lora"])
def test_final_model_reloads_and_generates_what_predictions_say(
    runs: dict[str, Any], key: str
) -> None:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    final = runs[key]["dir"] / "final"
    saved = json.loads((final / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == 8 and saved["num_beams"] == 1
    # transformers 5 removed the summarization pipeline; this is what it did: load, generate.
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    rows = rows_of(runs[key]["dir"] / "test_predictions.jsonl")
    batch = tokenizer(
        [PREFIX + r["source"] for r in rows],
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=24,
    )
    with torch.no_grad():
        ids = reloaded.generate(**batch)
    texts = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    assert texts == [r["generated"] for r in rows]


@pytest.mark.slow
def test_lora_trains_few_parameters_and_the_adapter_loads_with_peft(
    runs: dict[str, Any], tiny_s2s: dict[str, Path]
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from kubetune.train import seq2seq

    from train.test_runner import events

    run = runs["t5-lora"]
    model_event = next(e for e in events(run["stdout"]) if e["event"] == "model")
    assert 0 < model_event["trainable"] < model_event["total"] / 10
    record = json.loads((run["dir"] / "run.json").read_text())
    assert record["lora"]["target_modules"] == ["q", "v"]  # peft's default for T5
    assert record["parameters"]["trainable"] == model_event["trainable"]
    assert set(json.loads((run["dir"] / "metrics.json").read_text())["test"]) >= METRICS

    # The adapter on the untouched checkpoint generates what the run predicted (final/ holds
    # the same model merged: see test_final_model_reloads_and_generates_what_predictions_say).
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_s2s["t5"])
    base.generation_config = seq2seq.generation_config(base, spec.validate(run["data"]).generation)
    adapted = PeftModel.from_pretrained(base, run["dir"] / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(run["dir"] / "final")
    rows = rows_of(run["dir"] / "test_predictions.jsonl")
    batch = tokenizer([PREFIX + r["source"] for r in rows], return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = adapted.generate(**batch)
    texts = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    assert texts == [r["generated"] for r in rows]


def test_lora_targets_both_halves_of_a_warm_started_model(
    tiny_s2s: dict[str, Path], tmp_path: Path
) -> None:
    """What the runner does with ``lora: {r: 4}`` on bert2bert, in process: peft's BERT
    targets (query, value) in the encoder and the decoder's self-attention, and the decoder's
    new random layers (cross-attention, the LM head's transform) trained in full."""
    import torch

    from kubetune.train.lora import default_lora_targets, with_lora

    task, tokenizer = build(tiny_s2s, tmp_path, "bert2bert", lora={"r": 4})
    assert default_lora_targets(task.model) == ["query", "value"]
    job = spec.validate(s2s_spec(tiny_s2s, "bert2bert", lora={"r": 4}))
    model = with_lora(task.model, job, task.peft_task)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    adapters = [n for n in trained if ".lora_" in n]
    in_full = [n for n in trained if ".lora_" not in n]
    for part in (
        "encoder.encoder.layer.0.attention.self.query",
        "decoder.bert.encoder.layer.1.attention.self.value",
    ):
        assert any(part in n for n in adapters), part
    assert not any("crossattention" in n for n in adapters), "trained in full instead"
    assert in_full and all("crossattention" in n or ".transform." in n for n in in_full)
    assert any("crossattention" in n and "output.dense" in n for n in in_full), "all of it"
    assert any("predictions.transform" in n and ".dense." in n for n in in_full)
    batch = task.collator([task.tokenized["train"][i] for i in range(4)])
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert ids[:, 0].tolist() == [tokenizer.cls_token_id] * 4
