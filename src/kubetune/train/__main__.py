"""``python -m kubetune.train SPEC``: run one resolved spec; exit 0 done, 2 config, 1 failure."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from kubetune.errors import DEBUG, EXIT_INTERRUPTED, EXIT_USER, EXIT_WORLD, KubetuneError
from kubetune.launch import EXIT_FILE_ENV


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: accelerate launch -m kubetune.train SPEC", file=sys.stderr)
        return EXIT_USER
    try:
        from kubetune.train import runner

        outcome = runner.run(args[0])
    except KubetuneError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr, flush=True)
        if os.environ.get(DEBUG):
            traceback.print_exc()
        return exc.exit_code
    except Exception as exc:
        # A job log is read by engineers: the whole traceback belongs in it, and last the one
        # line `kubetune run` shows.
        traceback.print_exc()
        summary = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(f"error: {summary}", file=sys.stderr, flush=True)
        return EXIT_WORLD
    return EXIT_INTERRUPTED if outcome == "interrupted" else 0  # pruned too: the trial ended


def report(code: int) -> int:
    """Leave the exit code where ``python -m kubetune.launch`` reads it (accelerate hides it),
    and return the code this process exits with.

    Every code is written, 0 too: after torchrun restarted a failed worker group in place,
    the code of the attempt that ended is the one that counts. Under torchrun a clean stop
    exits 0 to the agent: a worker's non-zero code makes an agent with restarts left start
    the gang again, while the pod is going away. The supervisor still reports 130.
    """
    path = os.environ.get(EXIT_FILE_ENV)
    if not path:
        return code
    Path(path).write_text(str(code), encoding="utf-8")
    if code == EXIT_INTERRUPTED and os.environ.get("TORCHELASTIC_RUN_ID"):
        return 0
    return code


if __name__ == "__main__":
    sys.exit(report(main()))
