"""An S3-compatible store (AWS S3, MinIO, …) through boto3.

Credentials and endpoint come from the environment as boto3 reads them
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``);
in a cluster the chart fills them from the Secret named in ``storage.secret``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubetune.store import Store, StoreError


class S3Store(Store):
    """Keys live under ``s3://bucket/prefix/``."""

    def __init__(self, uri: str, client: Any | None = None) -> None:
        parsed = urlparse(uri)
        self.uri = uri.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3", config=Config(retries={"max_attempts": 10, "mode": "adaptive"})
            )
        self.client = client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _call(self, what: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise StoreError(f"{self.url(key)}: not found") from None
            raise StoreError(f"{self.url(key)}: {what} failed: {code or exc}") from None
        except BotoCoreError as exc:
            raise StoreError(f"{self.url(key)}: {what} failed: {exc}") from None

    def read_bytes(self, key: str) -> bytes:
        body = self._call("read", key, self.client.get_object, Key=self._key(key))["Body"]
        data: bytes = body.read()
        return data

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call("write", key, self.client.put_object, Key=self._key(key), Body=data)

    def upload_file(self, local: Path, key: str) -> None:
        # upload_file switches to multipart for large checkpoints.
        from boto3.exceptions import S3UploadFailedError

        try:
            self.client.upload_file(str(local), self.bucket, self._key(key))
        except S3UploadFailedError as exc:
            raise StoreError(f"{self.url(key)}: upload failed: {exc}") from None

    def download_file(self, key: str, local: Path) -> None:
        # download_file streams (and parallelises) large objects instead of holding them.
        from botocore.exceptions import BotoCoreError, ClientError

        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".part")
        try:
            self.client.download_file(self.bucket, self._key(key), str(tmp))
        except (BotoCoreError, ClientError) as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.url(key)}: download failed: {exc}") from None
        tmp.replace(local)

    def exists(self, key: str) -> bool:
        try:
            self._call("stat", key, self.client.head_object, Key=self._key(key))
        except StoreError:
            return False
        return True

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call(
                "list",
                prefix,
                self.client.list_objects_v2,
                Prefix=self._key(prefix).rstrip("/") + "/" if self._key(prefix) else "",
                **token,
            )
            keys += [self._rel(item["Key"]) for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list_keys(prefix)
        for start in range(0, len(keys), 1000):
            objects = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self._call("delete", prefix, self.client.delete_objects, Delete={"Objects": objects})
