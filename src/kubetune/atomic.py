"""Writing a file so that readers see the old content or the new, never half of it.

Every file kubetune writes that something else may read while it is written goes through
here: store objects (``file://``), downloaded checkpoints and inputs, prepared datasets and
rendered manifests that GitOps applies. The content goes to a temporary name beside the
target (same filesystem, so the rename is atomic) and is renamed over it; a crash leaves at
most a ``.*.tmp`` file, which the file store's listings skip.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Temporary names end so; :class:`kubetune.store.file.FileStore` skips them when listing.
TMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """A name beside ``path`` no other process or thread uses at the same time."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")


@contextmanager
def replacing(path: Path, *, if_absent: bool = False, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it becomes ``path``.

    With ``if_absent`` it becomes ``path`` only if nothing has that name yet (a hard link,
    which refuses an existing name atomically); otherwise :class:`FileExistsError`. With
    ``fsync`` the data reaches the disk before the rename, so a power cut cannot leave an
    empty file under the new name. The temporary file is created like any other (the umask
    applies, not mkstemp's 0600) and is removed on every error.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
        if if_absent:
            os.link(tmp, path)
        else:
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(
    path: Path, data: bytes | str, *, if_absent: bool = False, fsync: bool = False
) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`replacing`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path, if_absent=if_absent, fsync=fsync) as tmp:
        tmp.write_bytes(raw)
