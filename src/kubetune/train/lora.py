"""LoRA (``lora:``): the adapter's target modules and the model wrapped with peft.

Every task family trains LoRA the same way: the recipe wraps whatever model the family built,
with the family's peft task type.
"""

from __future__ import annotations

from typing import Any

from kubetune.errors import ConfigError
from kubetune.spec import JobSpec

#: Modules a warm-started EncoderDecoderModel creates at random (peft names match suffixes).
WARM_START_NEW_MODULES = ("crossattention", "transform")
#: The task heads peft trains in full and saves beside the adapter for each task type: an
#: ``all-linear`` adapter must leave them out, since peft cannot both adapt a module and save
#: it whole ("modules_to_save cannot be applied to … lora Linear").
TASK_HEADS = {
    "SEQ_CLS": ["classifier", "score"],
    "TOKEN_CLS": ["classifier", "score"],
    "QUESTION_ANS": ["qa_outputs"],
}


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters of ``model``."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def default_lora_targets(model: Any) -> list[str] | str:
    """LoRA target modules when the spec names none: peft's choice for the architecture
    (query/value projections), both halves' for an EncoderDecoderModel, else every linear."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as KNOWN

    config = model.config
    if config.model_type in KNOWN:
        return list(KNOWN[config.model_type])
    if config.model_type == "encoder-decoder":
        halves = (config.encoder.model_type, config.decoder.model_type)
        if all(half in KNOWN for half in halves):
            return sorted({name for half in halves for name in KNOWN[half]})
    return "all-linear"


def lora_config(model: Any, spec: JobSpec, task_type: str) -> Any:
    """peft's ``LoraConfig`` for ``model`` as ``spec.lora`` says."""
    from peft import LoraConfig

    assert spec.lora is not None
    lora = spec.lora
    modules_to_save = list(lora.modules_to_save or [])
    if spec.model.decoder is not None:
        # A warm-started decoder's cross-attention (and, for BERT, its LM head's transform) are
        # new random layers: frozen they would stay random, so they train in full and are saved
        # with the adapter.
        modules_to_save += [m for m in WARM_START_NEW_MODULES if m not in modules_to_save]
    targets = lora.target_modules or default_lora_targets(model)
    heads = TASK_HEADS.get(task_type) if targets == "all-linear" else None
    return LoraConfig(
        task_type=task_type,
        r=lora.r,
        lora_alpha=lora.lora_alpha,  # type: ignore[arg-type]  # peft accepts floats
        lora_dropout=lora.lora_dropout,
        target_modules=targets,
        exclude_modules=heads,
        bias=lora.bias,
        modules_to_save=modules_to_save or None,
        use_rslora=lora.use_rslora,
    )


def with_lora(model: Any, spec: JobSpec, task_type: str) -> Any:
    """``model`` wrapped in a peft LoRA model as ``spec.lora`` says (4-bit models prepared
    for k-bit training first)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    config = lora_config(model, spec, task_type)
    if spec.model.load_in_4bit:
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=spec.train.gradient_checkpointing
        )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"lora.target_modules: {exc}") from exc
