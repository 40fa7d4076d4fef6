"""The trainer: ``python -m kubetune.train SPEC``, always started under ``accelerate launch``.

``runner`` is the recipe and reads top to bottom: prepare (seed ▸ inputs ▸ data ▸ pre-flight)
▸ setup (tokenizer ▸ model (+LoRA) ▸ resume point ▸ callbacks ▸ HF Trainer) ▸ train ▸ evaluate
▸ save, each step reading one ``context.RunContext``. Around it, one module per concern:
``data`` (sources, splits, labels, fingerprints), ``inputs`` (staged inputs fetched and
checked), ``pretrained`` (model names and loading), ``precision``, ``lora``, one module per
task family (``classification``, ``ner``, ``seq2seq``, ``causal_lm``, ``zeroshot``) with the
shape in ``task``, ``metrics``, ``trainer`` (TrainingArguments and the Trainers),
``trainer_internals`` (the only place that touches the Trainer's private parts),
``callbacks`` (progress events, checkpoint sync, graceful stop, exact resume), ``outputs``
(what a finished run stores), ``tracking`` (W&B) and ``record`` (the pinned run record and
its writer).
Task families depend on the shared modules, never on ``runner``.

This package is the only place kubetune imports torch and transformers.
"""
