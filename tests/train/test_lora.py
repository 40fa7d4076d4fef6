"""LoRA on every task head: an all-linear adapter leaves the head peft saves whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune import spec

from conftest import ML_GROUP

pytestmark = pytest.mark.xdist_group(ML_GROUP)


@pytest.mark.parametrize(
    ("auto", "task_type", "head"),
    [
        ("AutoModelForSequenceClassification", "SEQ_CLS", "classifier"),
        ("AutoModelForTokenClassification", "TOKEN_CLS", "classifier"),
        ("AutoModelForQuestionAnswering", "QUESTION_ANS", "qa_outputs"),
    ],
)
def test_an_all_linear_adapter_trains_the_head_whole(
    tiny: dict[str, Path], auto: str, task_type: str, head: str
) -> None:
    import transformers

    from kubetune.train.lora import with_lora

    job = spec.loads(
        "name: x\ntask: classification\nmodel: {name: m}\ndata: {train: t.jsonl}\n"
        "lora: {target_modules: all-linear}\n"
    )
    model = getattr(transformers, auto).from_pretrained(tiny["model"], num_labels=2)
    wrapped = with_lora(model, job, task_type)
    names = [n for n, _ in wrapped.named_modules()]
    assert any(n.endswith(f"{head}.modules_to_save.default") for n in names), "head saved whole"
    assert not any(f"{head}.lora_A" in n or f"{head}.base_layer.lora" in n for n in names)
    assert any("query.lora_A" in n for n in names), "the encoder's linears adapted"
