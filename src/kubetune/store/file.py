"""A store on a local (or mounted) filesystem: ``file:///abs/path`` or ``file://./rel``."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from kubetune.atomic import TMP_SUFFIX, replacing
from kubetune.errors import ConfigError
from kubetune.store.base import ConflictError, ForbiddenError, NotFoundError, Store, StoreError


class FileStore(Store):
    """A store on a local (or mounted) filesystem: ``file:///abs/path`` or ``file://./rel``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.root = file_uri_path(uri)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in (path, *path.parents):
            raise StoreError(f"key {key!r} escapes the store root {self.root}")
        return path

    def local_path(self, key: str) -> Path:
        """Where ``key`` lives on disk."""
        return self._path(key)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.url(key)}: not found") from exc
        except PermissionError as exc:
            raise ForbiddenError(f"{self.url(key)}: read refused: permission denied") from exc
        except OSError as exc:
            raise StoreError(f"{self.url(key)}: read failed: {exc.strerror or exc}") from exc

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root.resolve()).as_posix()

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        try:
            with replacing(path, if_absent=if_absent) as tmp:
                tmp.write_bytes(data)
        except FileExistsError as exc:
            raise ConflictError(f"{self.url(self._rel(path))}: already written") from exc

    def upload_file(self, local: Path, key: str) -> None:
        with replacing(self._path(key)) as tmp:
            shutil.copyfile(local, tmp)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list_sizes(self, prefix: str) -> dict[str, int]:
        base = self._path(prefix)
        if not base.is_dir():
            return {}
        root = self.root.resolve()
        sizes = {}
        for p in base.rglob("*"):
            if p.name.endswith(TMP_SUFFIX):
                continue
            try:
                if p.is_file():
                    sizes[p.relative_to(root).as_posix()] = p.stat().st_size
            except FileNotFoundError:  # deleted while listing
                continue
        return sizes

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def delete_keys(self, keys: list[str]) -> None:
        root = self.root.resolve()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            # Folders are not objects: an emptied one goes too, as it does on S3.
            for parent in path.parents:
                if parent == root or not parent.is_relative_to(root):
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break


def file_uri_path(uri: str) -> Path:
    """``file:///abs`` → ``/abs``; ``file://./runs`` and ``file://runs`` → ``runs`` (relative)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ConfigError(f"{uri}: not a file:// URI")
    return (
        Path(unquote(parsed.netloc + parsed.path)) if parsed.netloc else Path(unquote(parsed.path))
    )
