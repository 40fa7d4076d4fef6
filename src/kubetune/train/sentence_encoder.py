"""A sentence encoder from the spec's model, built by sentence-transformers itself.

The embedding family trains one and the zero-shot baseline's ``embedding`` method scores with
one; kubetune's encoder for indexes (:mod:`kubetune.predict.encode`) loads the folders the
first writes the same way. So tokenization, pooling and normalisation are the library's in
every one of them, and a model is used exactly as it was trained:

- a sentence-transformers folder (one with ``modules.json``, like all-MiniLM-L6-v2's) loads
  with every module it lists: its Transformer, its Pooling (mode from its config), and any
  Dense or Normalize after it;
- a plain transformers encoder gets the library's default, a Transformer and mean pooling,
  and then a Normalize module, so that what it encodes (and a trained final/) is L2-normalised
  like a sentence-transformers model's.

The spec's revision, remote-code trust, weight dtype and ``model.config_overrides`` (checked
against the checkpoint's config first, as every family checks them) reach the Transformer
module's loading.
"""

from __future__ import annotations

import logging
from typing import Any

from kubetune.errors import ConfigError
from kubetune.spec import JobSpec
from kubetune.train.pretrained import load_config


def load(spec: JobSpec, model_path: str, *, device: str | None = None) -> Any:
    """The ``SentenceTransformer`` of ``model_path``, truncating texts to ``data.max_length``.

    Raises:
        ConfigError: a config override the checkpoint does not have, or a sentence-transformers
            folder whose module configs the library cannot build (an unknown pooling mode).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize
    from sentence_transformers.util import is_sentence_transformer_model

    load_config(spec, model_path)  # a typo in config_overrides is the spec's error
    own_modules = is_sentence_transformer_model(model_path, revision=spec.model.revision)
    # Without modules.json the library logs that it creates mean pooling: meant here.
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    try:
        model = SentenceTransformer(
            model_path,
            device=device,
            revision=spec.model.revision,
            trust_remote_code=spec.model.trust_remote_code,
            model_kwargs={"dtype": spec.model.dtype},
            config_kwargs=dict(spec.model.config_overrides),
        )
    except (TypeError, ValueError) as exc:
        # Raised while the library builds a module from its saved config (a Pooling module
        # asked for a mode it does not have, say): the folder's problem, not kubetune's.
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"model.name: {spec.model.name} does not load as a sentence-transformers model "
            f"({type(exc).__name__}: {detail})"
        ) from exc
    if not own_modules:
        model.append(Normalize())
    model.max_seq_length = spec.data.max_length
    return model


def transformer(model: Any) -> Any:
    """The transformers model inside a ``SentenceTransformer`` (its first module's)."""
    return model[0].auto_model


def describe(model: Any) -> dict[str, Any]:
    """What run.json says about an encoder: its modules, pooling and output dimension."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    pooling = next((m.pooling_mode for m in model if isinstance(m, Pooling)), None)
    return {
        "modules": [type(m).__name__ for m in model],
        "pooling": list(pooling) if isinstance(pooling, tuple) else pooling,
        "dimension": model.get_embedding_dimension(),
    }
