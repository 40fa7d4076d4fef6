"""Causal LM on a tiny random GPT-2 with a byte-level BPE tokenizer trained here.

Unit tests call ``causal_lm.build`` on it and train nothing (the fast suite runs them);
end-to-end tests, marked slow, run the real trainer (``python -m kubetune.train SPEC``) with a
file:// store and read what it wrote. Each test imports torch and the trainer's modules itself,
so collecting this module costs the fast suite's other workers nothing.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from kubetune import spec
from kubetune.errors import ConfigError

from tiny import with_overrides, write_yaml

if TYPE_CHECKING:
    import torch

EOS = "<|endoftext|>"
FOODS = {"red": "apple", "yellow": "banana", "green": "pear", "purple": "grape",
         "orange": "carrot", "white": "rice"}  # fmt: skip
ASKS = ["name a {} food", "which food is {}", "a {} thing to eat", "tell me a {} food"]
ANIMALS = ["cat", "dog", "bird", "fish", "horse"]
VERBS = ["sees", "likes", "chases", "finds"]
PLACES = ["in the park", "on the hill", "by the river", "at home"]
OWN_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
SPEC_TEMPLATE = (
    "{% for m in messages %}### Question: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}### Answer:{% endif %}"
)


def _pair_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    colours = sorted(FOODS)
    return [
        {"id": i, "prompt": rng.choice(ASKS).format(colour), "completion": f" {FOODS[colour]}"}
        for i, colour in ((i, colours[i % len(colours)]) for i in range(n))
    ]


def _text_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    def sentence() -> str:
        return f"the {rng.choice(ANIMALS)} {rng.choice(VERBS)} the {rng.choice(ANIMALS)} " + (
            f"{rng.choice(PLACES)} ."
        )

    return [{"id": i, "text": " ".join(sentence() for _ in range(rng.randint(1, 3)))}
            for i in range(n)]  # fmt: skip


def _write(folder: Path, rows: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True)
    for name, part in (("train", rows[:120]), ("eval", rows[120:144]), ("test", rows[144:])):
        text = "".join(json.dumps(r) + "\n" for r in part)
        (folder / f"{name}.jsonl").write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random 2-layer GPT-2 (hidden 32) whose tokenizer has no pad token, as GPT-2's."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("gpt2")
    rng = random.Random(0)
    pairs, texts = _pair_rows(rng, 168), _text_rows(rng, 168)
    _write(root / "pairs", pairs)
    _write(root / "text", texts)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [r["prompt"] + r["completion"] for r in pairs] + [r["text"] for r in texts]
    corpus += ["User: Assistant: ### Question: Answer:"] * 20
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS
    )
    fast.chat_template = OWN_TEMPLATE
    eos = tok.token_to_id(EOS)
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=128, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(root / "model")
    fast.save_pretrained(root / "model")
    return {"root": root, "model": root / "model", "pairs": root / "pairs", "text": root / "text"}


def clm_spec(gpt2: dict[str, Path], kind: str = "pairs", **overrides: Any) -> dict[str, Any]:
    folder = gpt2[kind]
    columns = {"prompt_column": "prompt"} if kind == "pairs" else {"text_column": "text"}
    data: dict[str, Any] = {
        "name": f"tiny-clm-{kind}",
        "task": "causal-lm",
        "model": {"name": str(gpt2["model"])},
        "data": {
            "train": str(folder / "train.jsonl"),
            "eval": str(folder / "eval.jsonl"),
            "test": str(folder / "test.jsonl"),
            "max_length": 48,
            **columns,
        },
        "train": {
            "epochs": 12,
            "learning_rate": 5e-3,
            "batch_size": 16,
            "eval_batch_size": 64,
            "logging_steps": 10,
            "seed": 7,
            # fp32, not auto: this CPU has bf16, and the tests compare losses with fp32 reloads.
            "precision": "fp32",
            "eval_strategy": "no",
            "save_strategy": "no",
        },
        "generation": {"max_new_tokens": 4, "samples": 6},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    return with_overrides(data, overrides)


def build(
    gpt2: dict[str, Path], kind: str = "pairs", tokenizer: Any = None, **overrides: Any
) -> tuple[Any, Any]:
    from transformers import AutoTokenizer

    from kubetune.train import causal_lm
    from kubetune.train.data import load_splits

    job = spec.validate(clm_spec(gpt2, kind, **overrides))
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(gpt2["model"]))
    splits = load_splits(job, gpt2["root"] / "cache")
    return causal_lm.build(job, splits, tokenizer, str(gpt2["model"])), tokenizer


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def raw_rows(gpt2: dict[str, Path], kind: str, split: str) -> list[dict[str, Any]]:
    return read_rows(gpt2[kind] / f"{split}.jsonl")


def prompt_tokens(row: dict[str, list[int]]) -> list[int]:
    from kubetune.train.causal_lm import IGNORE

    return [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label == IGNORE]


# --- tokenising ----------------------------------------------------------------------------


def test_prompt_and_padding_carry_no_labels_completion_and_eos_do(gpt2: dict[str, Path]) -> None:
    import torch

    from kubetune.train.causal_lm import IGNORE

    task, tokenizer = build(gpt2)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id, "GPT-2 has no pad: EOS pads"
    assert tokenizer.padding_side == "left", "batched generation pads on the left"
    rows = [task.tokenized["train"][i] for i in range(10)]
    batch = task.collator(rows)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert (labels[mask == 0] == IGNORE).all(), "padding got a label"
    assert (mask == 0).any() and (mask[:, 0] == 1).all(), "training pads on the right"
    for i, raw in enumerate(raw_rows(gpt2, "pairs", "train")[:10]):
        prompt = len(tokenizer(raw["prompt"])["input_ids"])
        length = int(mask[i].sum())
        assert (labels[i, :prompt] == IGNORE).all(), "a prompt token got a label"
        assert torch.equal(labels[i, prompt:length], ids[i, prompt:length])
        assert labels[i, length - 1] == tokenizer.eos_token_id, "EOS ends each completion"
        assert tokenizer.decode(ids[i, prompt : length - 1]) == raw["completion"]
        assert tokenizer.decode(ids[i, :prompt]) == raw["prompt"]


def test_plain_text_labels_every_token_and_ends_with_eos_when_it_fits(
    gpt2: dict[str, Path],
) -> None:
    task, tokenizer = build(gpt2, "text", data={"max_length": 24})
    eos = tokenizer.eos_token_id
    texts = [r["text"] for r in raw_rows(gpt2, "text", "train")]
    cut = whole = 0
    for text, row in zip(texts, task.tokenized["train"], strict=True):
        assert row["labels"] == row["input_ids"]
        full = tokenizer(text)["input_ids"]
        if len(full) + 1 <= 24:
            assert row["input_ids"] == [*full, eos]
            whole += 1
        else:
            assert row["input_ids"] == full[:24], "a text cut short gets no EOS"
            cut += 1
    assert cut and whole, "the data exercises both cases"


def test_chat_template_from_a_jinja2_string(gpt2: dict[str, Path]) -> None:
    from kubetune.train.causal_lm import IGNORE

    task, tokenizer = build(gpt2, data={"chat_template": SPEC_TEMPLATE})
    assert tokenizer.chat_template == SPEC_TEMPLATE, "installed, so final/ carries it"
    raw = raw_rows(gpt2, "pairs", "train")[0]
    row = task.tokenized["train"][0]
    prompt = prompt_tokens(row)
    assert tokenizer.decode(prompt) == f"### Question: {raw['prompt']}\n### Answer:"
    answer = [t for t in row["labels"] if t != IGNORE]
    assert tokenizer.decode(answer) == raw["completion"] + EOS


def test_chat_template_of_the_tokenizer(gpt2: dict[str, Path]) -> None:
    task, tokenizer = build(gpt2, data={"chat_template": "tokenizer"})
    raw = raw_rows(gpt2, "pairs", "eval")[3]
    row = task.tokenized["eval"][3]
    prompt = prompt_tokens(row)
    assert tokenizer.decode(prompt) == f"{EOS}User: {raw['prompt']}\nAssistant:"
    assert prompt[0] == tokenizer.eos_token_id, "the template's bos_token, added once"


def test_a_tokenizer_without_a_chat_template_is_a_config_error(gpt2: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gpt2["model"]))
    tokenizer.chat_template = None
    with pytest.raises(ConfigError, match=r"^data\.chat_template: .*no chat template"):
        build(gpt2, tokenizer=tokenizer, data={"chat_template": "tokenizer"})


def test_a_chat_template_that_drops_the_message_is_a_config_error(gpt2: dict[str, Path]) -> None:
    broken = "{% for m in messages %}Q: {{ m['text'] }}{% endfor %}"
    with pytest.raises(ConfigError, match=r"^data\.chat_template: .*drops the message"):
        build(gpt2, data={"chat_template": broken})


def test_packing_cuts_train_into_full_blocks_that_keep_the_prompt_masks(
    gpt2: dict[str, Path],
) -> None:
    from kubetune.train.causal_lm import IGNORE

    packed, _ = build(gpt2, data={"packing": True, "max_length": 16})
    whole, _ = build(gpt2, data={"max_length": 128})  # nothing truncated
    blocks = packed.tokenized["train"]
    assert all(len(r["input_ids"]) == 16 == sum(r["attention_mask"]) for r in blocks)
    flat_ids = [t for r in whole.tokenized["train"] for t in r["input_ids"]]
    flat_labels = [t for r in whole.tokenized["train"] for t in r["labels"]]
    assert len(blocks) == len(flat_ids) // 16
    assert [t for r in blocks for t in r["input_ids"]] == flat_ids[: len(blocks) * 16]
    assert [t for r in blocks for t in r["labels"]] == flat_labels[: len(blocks) * 16]
    assert any(IGNORE in r["labels"] for r in blocks) and any(
        t != IGNORE for r in blocks for t in r["labels"]
    )
    assert len(packed.tokenized["eval"]) == 24, "eval keeps one row per example"
    batch = packed.collator([blocks[i] for i in range(4)])
    assert batch["input_ids"].shape == (4, 16) and bool(batch["attention_mask"].all())


def test_packing_needs_a_block_of_data(gpt2: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"^data\.packing: .*less than one block"):
        build(gpt2, data={"packing": True, "max_length": 32768})


# --- metrics and generation ----------------------------------------------------------------


def test_token_scores_hold_next_token_predictions_and_losses() -> None:
    import torch

    from kubetune.train import causal_lm
    from kubetune.train.causal_lm import IGNORE

    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 1.0, 0.0], [5.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, 2, 1, IGNORE]])
    scores = causal_lm.token_scores((logits, "past"), labels).numpy()
    assert scores.shape == (1, 4, 2)
    assert scores[0, :, 0].tolist() == [IGNORE, 0, 2, IGNORE]
    expected = torch.nn.functional.cross_entropy(logits[0, :2], labels[0, 1:3], reduction="none")
    assert scores[0, 1:3, 1] == pytest.approx(expected.tolist())
    assert scores[0, [0, 3], 1].tolist() == [IGNORE, IGNORE]
    # token 2 predicted 0 (wrong: 2), token 3 predicted 2 (wrong: 1)
    assert causal_lm.token_accuracy(scores, labels.numpy()) == {"token_accuracy": 0.0}
    scores[0, 2, 0] = 1
    assert causal_lm.token_accuracy(scores, labels.numpy()) == {"token_accuracy": 0.5}
    (loss, tokens), = causal_lm.row_losses(scores)  # fmt: skip
    assert tokens == 2 and loss == pytest.approx(float(expected.mean()))
    assert causal_lm.derived_metrics({"loss": 2.0}) == {"perplexity": pytest.approx(math.e**2)}


def test_batched_generation_matches_one_prompt_at_a_time(gpt2: dict[str, Path]) -> None:
    from kubetune.train import causal_lm

    task, tokenizer = build(gpt2)
    settings = spec.GenerationSpec(max_new_tokens=6)
    texts = ["the", "the cat sees the dog", "name a red food please and tell me now"]
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    assert len({len(p) for p in prompts}) == 3
    alone = [causal_lm.generate(task.model, tokenizer, [p], settings, 1)[0] for p in prompts]
    together = causal_lm.generate(task.model, tokenizer, prompts, settings, 3)
    assert together == alone
    assert all(text for text in alone)


def test_plain_text_sample_prompt_is_the_first_half_of_the_words() -> None:
    from kubetune.train import causal_lm

    text = "the  cat sees\tthe dog ."
    prompt, reference = causal_lm.split_text(text)
    assert (prompt, reference) == ("the  cat sees", "\tthe dog .")
    assert causal_lm.split_text("alone") == ("alone", "")
    assert causal_lm.split_text("") == ("", "")


# --- the trainer end to end ----------------------------------------------------------------


def run_job(tmp: Path, data: dict[str, Any]) -> tuple[Any, Path]:
    # One thread: a model this small gains nothing from two, and two threads contending with
    # other work on a 2-core machine make each step ~20x slower.
    from train.test_runner import run_dir, train

    proc = train(write_yaml(tmp / "job.yaml", data), tmp / "store", {"OMP_NUM_THREADS": "1"})
    return proc, run_dir(tmp / "store", data)


@pytest.fixture(scope="module")
def text_job(
    gpt2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[dict[str, Any]]]:
    """A finished plain-text run: its folder in the store and its progress events."""
    from train.test_runner import events

    data = clm_spec(gpt2, "text", train={"eval_strategy": "epoch"})
    proc, out = run_job(tmp_path_factory.mktemp("text"), data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, events(proc.stdout)


@pytest.fixture
def text_run(text_job: tuple[Path, list[dict[str, Any]]]) -> Path:
    return text_job[0]


def sequence_loss(model: Any, ids: list[int]) -> float:
    import torch

    with torch.no_grad():
        tensor = torch.tensor([ids])
        return float(model(input_ids=tensor, labels=tensor).loss)


@pytest.mark.slow
def test_plain_text_run_reports_loss_perplexity_and_token_accuracy(
    text_job: tuple[Path, list[dict[str, Any]]],
) -> None:
    text_run, progress = text_job
    metrics = json.loads((text_run / "metrics.json").read_text())
    for split in ("eval", "test"):
        m = metrics[split]
        assert m["perplexity"] == pytest.approx(math.exp(m["loss"]), rel=1e-12)
        assert 0.3 < m["token_accuracy"] <= 1, "learned, far above chance (1/400)"
    record = json.loads((text_run / "run.json").read_text())
    assert record["task"] == "causal-lm" and record["labels"] == []
    evals = [e for e in progress if e["event"] == "eval"]
    assert len(evals) == 12 and {e["metric"] for e in evals} == {"perplexity"}
    assert evals[-1]["value"] < evals[0]["value"] / 5, "perplexity falls as it trains"
    rows = read_rows(text_run / "predictions.jsonl")
    assert len(rows) == 24 and len(read_rows(text_run / "test_predictions.jsonl")) == 24
    # One eval batch holds every row, so the Trainer's loss is the token-weighted row mean.
    weighted = sum(r["loss"] * r["tokens"] for r in rows) / sum(r["tokens"] for r in rows)
    assert metrics["eval"]["loss"] == pytest.approx(weighted, rel=1e-5)


@pytest.mark.slow
def test_plain_text_predictions_sample_the_trained_model(
    text_run: Path, gpt2: dict[str, Path]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = read_rows(text_run / "predictions.jsonl")
    raw = raw_rows(gpt2, "text", "eval")
    assert [r["id"] for r in rows] == [r["id"] for r in raw]
    for row, source in zip(rows[:6], raw, strict=False):
        assert row["prompt"] + row["reference"] == source["text"]
        assert isinstance(row["generation"], str) and row["generation"]
    assert all("generation" not in r for r in rows[6:])

    final = AutoModelForCausalLM.from_pretrained(str(text_run / "final")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(text_run / "final"))
    ids = [*tokenizer(raw[0]["text"])["input_ids"], tokenizer.eos_token_id]
    assert rows[0]["loss"] == pytest.approx(sequence_loss(final, ids), rel=1e-4)
    assert rows[0]["perplexity"] == pytest.approx(math.exp(rows[0]["loss"]))
    assert rows[0]["tokens"] == len(ids) - 1

    untrained = AutoModelForCausalLM.from_pretrained(str(gpt2["model"])).eval()
    before = np.mean(
        [sequence_loss(untrained, [*tokenizer(r["text"])["input_ids"], tokenizer.eos_token_id])
         for r in raw]
    )  # fmt: skip
    after = np.mean([r["loss"] for r in rows])
    assert math.exp(after) < math.exp(before) / 10, (before, after)


@pytest.fixture(scope="module")
def pairs_run(gpt2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = clm_spec(gpt2, data={"chat_template": SPEC_TEMPLATE}, train={"epochs": 40})
    proc, out = run_job(tmp_path_factory.mktemp("pairs"), data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_prompt_completion_run_learns_to_answer(pairs_run: Path, gpt2: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    metrics = json.loads((pairs_run / "metrics.json").read_text())
    m = metrics["test"]
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]), rel=1e-12)
    assert m["token_accuracy"] > 0.9, "the answer word and EOS follow from the colour"
    rows = read_rows(pairs_run / "predictions.jsonl")
    raw = raw_rows(gpt2, "pairs", "eval")
    samples = rows[:6]
    assert [(r["prompt"], r["reference"]) for r in samples] == [
        (r["prompt"], r["completion"]) for r in raw[:6]
    ]
    right = sum(r["generation"] == r["reference"] for r in samples)
    assert right >= 5, samples
    tokenizer = AutoTokenizer.from_pretrained(str(pairs_run / "final"))
    for row in samples:
        answer = tokenizer(row["reference"], add_special_tokens=False)["input_ids"]
        assert row["tokens"] == len(answer) + 1, "only the answer and its EOS are scored"


@pytest.mark.slow
def test_prompt_completion_generations_come_from_the_final_model(pairs_run: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(pairs_run / "final"))
    assert tokenizer.chat_template == SPEC_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(str(pairs_run / "final")).eval()
    for row in read_rows(pairs_run / "test_predictions.jsonl")[:3]:
        encoded: Any = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["prompt"]}], add_generation_prompt=True,
            return_tensors="pt", return_dict=True,
        )  # fmt: skip
        ids = encoded["input_ids"]
        out = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
        assert (
            tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True) == row["generation"]
        )


def lora_logits(model: Any, tokenizer: Any) -> torch.Tensor:
    import torch

    with torch.no_grad():
        ids = torch.tensor([tokenizer("name a red food")["input_ids"]])
        logits: torch.Tensor = model(input_ids=ids).logits
        return logits


@pytest.mark.slow
def test_lora_trains_c_attn_adapters_and_saves_a_merged_model(
    gpt2: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from train.test_runner import events

    data = clm_spec(gpt2, lora={"r": 4}, train={"epochs": 3})
    proc, out = run_job(tmp_path, data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_event = next(e for e in events(proc.stdout) if e["event"] == "model")
    assert model_event["trainable"] == 2 * 4 * (32 + 3 * 32), "r × (in + out) of c_attn, 2 layers"
    assert model_event["trainable"] / model_event["total"] < 0.03
    record = json.loads((out / "run.json").read_text())
    assert record["lora"]["target_modules"] == ["c_attn"]

    tokenizer = AutoTokenizer.from_pretrained(str(out / "final"))
    adapter = AutoPeftModelForCausalLM.from_pretrained(str(out / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(out / "final")).eval()
    base = AutoModelForCausalLM.from_pretrained(str(gpt2["model"])).eval()
    trained = lora_logits(adapter, tokenizer)
    assert torch.allclose(trained, lora_logits(merged, tokenizer), atol=1e-4)
    assert not torch.allclose(trained, lora_logits(base, tokenizer), atol=1e-3)

    generator = pipeline("text-generation", model=str(out / "final"), device="cpu")
    (result,) = generator("name a red food", max_new_tokens=3, do_sample=False)
    assert result["generated_text"].startswith("name a red food")


@pytest.mark.slow
def test_lora_without_merge_leaves_final_an_adapter(gpt2: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = clm_spec(
        gpt2, "text", lora={"r": 4, "merge": False}, data={"packing": True, "max_length": 32},
        train={"epochs": 2},
    )  # fmt: skip
    proc, out = run_job(tmp_path, data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "final" / "adapter_config.json").is_file()
    assert not (out / "final" / "model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(str(out / "final"))
    base = AutoModelForCausalLM.from_pretrained(str(gpt2["model"])).eval()
    before = lora_logits(base, tokenizer)
    final = PeftModel.from_pretrained(base, str(out / "final")).eval()
    assert not torch.allclose(lora_logits(final, tokenizer), before, atol=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["perplexity"] == pytest.approx(math.exp(metrics["eval"]["loss"]))


@pytest.mark.slow
def test_qlora_on_cpu_exits_2_naming_the_field(gpt2: dict[str, Path], tmp_path: Path) -> None:
    data = clm_spec(gpt2, model={"load_in_4bit": True}, lora={"r": 4})
    proc, out = run_job(tmp_path, data)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: model.load_in_4bit: ") and "CUDA" in line
    assert "Traceback" not in proc.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == line.removeprefix("error: ")
