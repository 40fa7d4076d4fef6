"""Loading the pretrained model a spec names, with its config overrides applied.

One place for what every task family does the same way: where a model name points
(:func:`resolve_model_path`), the pinned revision, remote-code trust, and
``model.config_overrides`` checked against the checkpoint's own config, so a typo there is an
exit-2 error naming the key instead of a setting transformers silently ignores.
"""

from __future__ import annotations

import difflib
import importlib.util
from typing import Any

from kubetune import preflight
from kubetune.errors import ConfigError
from kubetune.spec import JobSpec
from kubetune.train.inputs import Fetcher


def resolve_model_path(name: str, fetch: Fetcher | None = None, field: str = "model.name") -> str:
    """``pkg:<package>/<path>`` → a folder inside an installed package; an ``s3://`` folder →
    its local copy (fetched by ``fetch``, staged ones checked); else unchanged."""
    if name.startswith("s3://"):
        if fetch is None:
            raise ConfigError(f"{field}: {name}: an s3:// model folder needs the run's store")
        return str(fetch.folder(field, name))
    if name.startswith("pkg:"):
        return str(preflight.package_folder(name, field))
    return name


def load_config(spec: JobSpec, model_path: str, **head: Any) -> Any:
    """The checkpoint's config with the spec's overrides and the task head's settings."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(
        model_path,
        revision=spec.model.revision,
        trust_remote_code=spec.model.trust_remote_code,
        **head,
    )
    known = set(config.to_dict())
    for key, value in spec.model.config_overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"model.config_overrides.{key}: not a setting of this {config.model_type} "
                f"checkpoint's config{hint}"
            )
        setattr(config, key, value)
    return config


def from_pretrained(auto_class: Any, spec: JobSpec, model_path: str, **head: Any) -> Any:
    """``auto_class.from_pretrained`` with the spec's revision, trust, config overrides and
    4-bit quantization."""
    quantization = {"quantization_config": four_bit()} if spec.model.load_in_4bit else {}
    return auto_class.from_pretrained(
        model_path,
        config=load_config(spec, model_path, **head),
        revision=spec.model.revision,
        trust_remote_code=spec.model.trust_remote_code,
        dtype=spec.model.dtype,
        **quantization,
    )


def four_bit() -> Any:
    """QLoRA's NF4 quantization with double quantization and bf16 compute.

    bitsandbytes' 4-bit kernels run on CUDA only, so anywhere else this is an exit-2 error
    naming the field rather than a crash deep in model loading.
    """
    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise ConfigError(
            "model.load_in_4bit: 4-bit QLoRA needs a CUDA GPU and this machine has none; "
            "remove load_in_4bit to train LoRA on full-precision weights"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            "model.load_in_4bit: needs bitsandbytes; pip install bitsandbytes "
            "(the trainer image has it)"
        )
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
