"""Sentence embeddings of many texts, through sentence-transformers' own modules, fast on a CPU.

The model is a ``SentenceTransformer``: its Transformer, Pooling and (where the folder has
one) Normalize modules are the library's, so pooling is exactly what the model was trained
with; a plain transformers encoder gets the library's default, mean pooling. What differs
from ``SentenceTransformer.encode()`` is the batching around the forward pass
(:mod:`kubetune.predict.engine`'s): every text is tokenized once by the fast tokenizer, the
texts are sorted by length and cut into batches of about ``tokens`` padded tokens rather
than a fixed count of 32, and each batch is padded only to its own longest text. Short texts
then go hundreds to a forward pass and long ones a few, which keeps each batch's activations
in cache. Vectors come back in input order, float32 and L2-normalised, ready for an
inner-product FAISS index.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kubetune.predict.engine import TOKENS_PER_BATCH, batches, fast_dtype, mask, padded


@dataclass(frozen=True)
class Encoder:
    """A sentence encoder loaded for inference."""

    model: Any  # sentence_transformers.SentenceTransformer
    dim: int
    max_length: int

    def encode(
        self, texts: Sequence[str], *, tokens: int = TOKENS_PER_BATCH, bf16: bool | None = None
    ) -> np.ndarray:
        """One L2-normalised float32 vector per text, in order (see the module docstring)."""
        return encode(self, texts, tokens=tokens, bf16=bf16)


def load(
    folder: str, *, device: str | None = None, int8: bool = False, max_length: int | None = None
) -> Encoder:
    """The encoder of ``folder``: a sentence-transformers folder (modules.json) or a plain
    transformers encoder, pooled by its mean. ``int8`` (CPU only) quantizes the encoder's
    Linear layers dynamically, as :func:`kubetune.predict.engine.load` does."""
    import logging

    from sentence_transformers import SentenceTransformer

    # A folder without modules.json makes the library log a warning that it creates mean
    # pooling; that is what is meant here.
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    model = SentenceTransformer(folder, device="cpu" if int8 else (device or "cpu"))
    model.eval()
    if max_length:
        model.max_seq_length = max_length
    if int8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            transformer = model[0]
            # Transformer.forward calls .model (auto_model is a read-only alias of it).
            transformer.model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                transformer.model, {torch.nn.Linear}, dtype=torch.qint8
            )
    dim = model.get_embedding_dimension()
    return Encoder(model, int(dim or 0), int(model.max_seq_length or 512))


def encode(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    tokens: int = TOKENS_PER_BATCH,
    bf16: bool | None = None,
) -> np.ndarray:
    """See :meth:`Encoder.encode`."""
    model = encoder.model
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if not texts:
        return out
    tokenizer = model.tokenizer
    encoded = tokenizer(list(texts), truncation=True, max_length=encoder.max_length)
    ids: list[list[int]] = encoded["input_ids"]
    types: list[list[int]] | None = encoded.get("token_type_ids")
    lengths = [len(x) for x in ids]
    device = model.device
    dtype = fast_dtype(device) if bf16 is None else (torch.bfloat16 if bf16 else None)
    pad = tokenizer.pad_token_id or 0
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
    ):
        for batch in batches(lengths, tokens):
            features = {
                "input_ids": padded([ids[i] for i in batch], pad).to(device),
                "attention_mask": mask([lengths[i] for i in batch]).to(device),
            }
            if types is not None:
                features["token_type_ids"] = padded([types[i] for i in batch], 0).to(device)
            vectors = model(features)["sentence_embedding"].float()
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1).cpu().numpy()
            out[batch] = vectors
    return out
