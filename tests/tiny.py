"""Tiny real components for trainer tests: a random BERT, a WordPiece tokenizer trained with
`tokenizers`, and small synthetic datasets whose labels are learnable from their words.

The session fixture ``tiny`` (in conftest.py) builds them once with :func:`build`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

TOPICS = {
    "sport": "goal match team win player score league coach",
    "tech": "computer phone software chip data code robot web",
    "money": "bank market price shares profit stock trade tax",
}
FILLER = ["the", "a", "of", "and", "in", "to", "on", "for"]


def _classification_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        label = sorted(TOPICS)[i % len(TOPICS)]
        words = [rng.choice(TOPICS[label].split()) for _ in range(rng.randint(4, 24))]
        words += [rng.choice(FILLER) for _ in range(rng.randint(2, 8))]
        rng.shuffle(words)
        rows.append({"id": i, "text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


def _ner_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        tokens: list[str] = []
        tags: list[str] = []
        for _ in range(rng.randint(3, 10)):
            roll = rng.random()
            if roll < 0.2:
                tokens.append(rng.choice(["Paris", "London", "Berlin"]))
                tags.append("B-loc")
            elif roll < 0.35:
                first, last = rng.choice([("John", "Smith"), ("Mary", "Jones")])
                tokens += [first, last]
                tags += ["B-person", "I-person"]
            else:
                tokens.append(rng.choice([*FILLER, "went", "saw", "visited"]))
                tags.append("O")
        rows.append({"id": i, "tokens": tokens, "ner_tags": tags})
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def build(root: Path) -> dict[str, Path]:
    """Write a tiny model folder and classification/NER splits under ``root``."""
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    cls = _classification_rows(rng, 150)
    ner = _ner_rows(rng, 150)
    for task, rows in (("cls", cls), ("ner", ner)):
        _write(root / task / "train.jsonl", rows[:100])
        _write(root / task / "validation.jsonl", rows[100:125])
        _write(root / task / "test.jsonl", rows[125:])

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    corpus = [r["text"] for r in cls] + [" ".join(r["tokens"]) for r in ner]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials)
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    # Seeded, in its own RNG state: the weights are the same in every session and xdist
    # worker, whatever ran before, so what the tests train from them is reproducible.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertForMaskedLM(config).save_pretrained(root / "model")
    fast.save_pretrained(root / "model")
    return {"root": root, "model": root / "model", "cls": root / "cls", "ner": root / "ner"}


def tiny_spec(
    tiny: dict[str, Path], task: str = "classification", **overrides: Any
) -> dict[str, Any]:
    folder = tiny["cls"] if task == "classification" else tiny["ner"]
    data: dict[str, Any] = {
        "name": "tiny-cls" if task == "classification" else "tiny-ner",
        "task": task,
        "model": {"name": str(tiny["model"])},
        "data": {
            "train": str(folder / "train.jsonl"),
            "eval": str(folder / "validation.jsonl"),
            "test": str(folder / "test.jsonl"),
            "max_length": 48,
        },
        "train": {
            "epochs": 20,
            "learning_rate": 5e-3,
            "batch_size": 10,
            "logging_steps": 10,
            "warmup_steps": 0.1,
            "seed": 7,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    return with_overrides(data, overrides)


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def with_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each top-level section of ``overrides`` merged in (a dict into a dict,
    one level deep) or replacing it."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def write_splits(folder: Path, rows: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Each split's rows as ``<folder>/<split>.jsonl``; the data section's paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        lines = "".join(json.dumps(r) + "\n" for r in split_rows)
        (folder / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    return {split: str(folder / f"{split}.jsonl") for split in rows}


def run_trainer(data: dict[str, Any], tmp: Path) -> Path:
    """One run of the spec ``data`` through ``python -m kubetune.train``, as a pod runs it,
    into a local store under ``tmp``; the run's folder there."""
    import os
    import subprocess
    import sys

    from kubetune import spec, sweep

    store = tmp / "store"
    proc = subprocess.run(
        [sys.executable, "-m", "kubetune.train", str(write_yaml(tmp / "job.yaml", data))],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBETUNE_STORE": f"file://{store}", "WANDB_DIR": str(tmp)},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = sweep.expand(spec.validate(data))
    return store / run.sweep / run.run_id


def classical_final(method: str, root: Path) -> Path:
    """final/ of a classical run of ``method`` (crf or lead) fitted on four tagged sentences
    ("the <Product> crashed") whose documents are two sentences."""
    from kubetune import spec
    from kubetune.train import classical
    from kubetune.train.data import load_splits

    rows = [{"id": i, "tokens": ["the", word, "crashed"], "ner_tags": ["O", "B-PRODUCT", "O"],
             "document": f"The {word} crashed. Twice.", "summary": f"{word} crashed."}
            for i, word in enumerate(["Orbit", "Ledgerly", "Tidewater", "Beacon"])]  # fmt: skip
    files = write_splits(root / "data", {"train": rows, "test": rows})
    job = spec.validate(
        {"name": "b", "task": "classical", "data": files, "classical": {"method": method}}
    )
    _, save = classical.fit_and_score(job, load_splits(job, root / "cache"), root / "scratch")
    save(root / "final")
    return root / "final"


def train_together(specs: dict[str, tuple[dict[str, Any], Path]]) -> dict[str, dict[str, Any]]:
    """Each spec (key → (data, its own folder)) through ``python -m kubetune.train`` at once,
    one process each on one thread; every run finishes (or times out) before any failure is
    reported, so none is left running. Key → its data, stdout and run folder."""
    import os
    import subprocess
    import sys

    from kubetune import spec, sweep

    started = {}
    for key, (data, tmp) in specs.items():
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubetune.train", str(write_yaml(tmp / "job.yaml", data))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "KUBETUNE_STORE": f"file://{tmp / 'store'}",
                "WANDB_DIR": str(tmp),
                "OMP_NUM_THREADS": "1",
            },
        )
        started[key] = (data, proc, tmp / "store")
    done = {key: proc.communicate(timeout=600) for key, (_, proc, _) in started.items()}
    for key, (_, proc, _) in started.items():
        assert proc.returncode == 0, f"{key}: {done[key][1][-3000:]}"
    out = {}
    for key, (data, _, store) in started.items():
        (run,) = sweep.expand(spec.validate(data))
        out[key] = {"data": data, "stdout": done[key][0], "dir": store / run.sweep / run.run_id}
    return out
