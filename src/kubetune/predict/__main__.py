"""A pod of a batch job's Indexed Job: ``python -m kubetune.predict /etc/kubetune/spec.yaml``.

It runs the shard of its completion index (``$KUBETUNE_SHARD``, from the pod's
``batch.kubernetes.io/job-completion-index`` annotation) into the store of
``$KUBETUNE_STORE``, then builds the index if it was the last shard to finish. Exit 2 for a
mistake in the spec, the model or the corpus (the Job fails at once: its pod failure policy).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    from kubetune.errors import EXIT_USER, ConfigError, SpecError
    from kubetune.kube import names
    from kubetune.predict import batch as batchmod
    from kubetune.predict import spec as specmod

    if len(argv) != 1:
        print("usage: python -m kubetune.predict SPEC", file=sys.stderr)
        return EXIT_USER
    try:
        job = specmod.load(argv[0])
        store = os.environ.get(names.STORE_ENV) or (job.storage.uri if job.storage else "")
        if not store:
            raise ConfigError("storage.uri: a batch job's pod needs a store; set storage.uri")
        shard = int(os.environ.get(names.SHARD_ENV, "0"))
        if not 0 <= shard < job.shards:
            raise ConfigError(
                f"${names.SHARD_ENV}: shard {shard} of {job.shards} (0..{job.shards - 1})"
            )
        summary = batchmod.run_here(job, store, shards=[shard])
    except (ConfigError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER
    for result in summary.results:
        if result.skipped:
            print(f"shard {result.shard}: done before; nothing to do")
        else:
            print(
                f"shard {result.shard}: {result.rows} rows in {result.seconds:.1f} s "
                f"({result.rows_per_second:.1f} rows/s) → {summary.output.url}"
            )
    if summary.index is not None:
        print(f"index: {summary.index.get('count')} vectors ({summary.index.get('kind')})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
