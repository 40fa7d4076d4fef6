"""``python -m kubetune.train SPEC``: run one resolved spec; exit 0 done, 2 config, 1 failure."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from kubetune.errors import EXIT_INTERRUPTED, EXIT_USER, EXIT_WORLD, KubetuneError


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
        if os.environ.get("KUBETUNE_DEBUG"):
            traceback.print_exc()
        return exc.exit_code
    except Exception:
        # A job log is read by engineers: the whole traceback belongs in it.
        traceback.print_exc()
        return EXIT_WORLD
    return EXIT_INTERRUPTED if outcome == "interrupted" else 0


def report(code: int) -> int:
    """Leave the exit code where ``python -m kubetune.launch`` reads it (accelerate hides it)."""
    path = os.environ.get("KUBETUNE_EXIT_FILE")
    if path and code != 0:
        Path(path).write_text(str(code), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(report(main()))
