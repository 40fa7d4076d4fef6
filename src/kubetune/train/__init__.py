"""The trainer: ``python -m kubetune.train SPEC``, always started under ``accelerate launch``.

One module per concern: ``data`` (sources, splits, labels, fingerprints), one module per task
family (``classification``, ``ner``) with the same shape, ``metrics``, ``callbacks``
(progress events, checkpoint sync, graceful stop), ``tracking`` (W&B), ``record`` (the pinned
run record) and ``runner``, which reads top to bottom: seed ▸ data ▸ tokenize ▸ model (+LoRA)
▸ HF Trainer ▸ eval ▸ save.

This package is the only place kubetune imports torch and transformers.
"""
