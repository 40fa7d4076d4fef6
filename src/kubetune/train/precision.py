"""Which floating-point precision ``train.precision`` means on this machine.

Fine-tuning (TrainingArguments) and the zero-shot baseline (autocast) make the same choice,
so a baseline's time compares with a fine-tuned run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubetune.errors import ConfigError


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): autocast then halves
    the time of a training step; elsewhere bf16 on CPU is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def precision_args(precision: str) -> dict[str, Any]:
    """TrainingArguments' ``bf16``, ``fp16`` and ``use_cpu`` for ``train.precision`` here."""
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        if cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("train.precision: fp16 needs a GPU; use bf16 or fp32 on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda}
