"""An S3-compatible store (AWS S3, MinIO, moto, …) through boto3.

Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
profiles, IRSA web identity, instance roles); in a cluster the chart fills the keys from the
Secret named in ``storage.secret``. The endpoint is ``storage.endpoint`` or
``AWS_ENDPOINT_URL``; a custom endpoint gets path-style addressing, which MinIO and moto
serve without wildcard DNS.

Client settings that matter for S3-compatible stores:

- retries in botocore's ``standard`` mode: throttling, 5xx and connection errors are retried
  with jittered exponential backoff (``KUBETUNE_S3_MAX_ATTEMPTS``, default 10 attempts);
- checksums ``when_required``: botocore ≥ 1.36 adds CRC32 trailers to every upload by default,
  which some S3-compatible stores (older MinIO, Ceph RGW, moto before 5.0.27) reject; the
  setting is applied only where this botocore knows it (older ones send no such trailers).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubetune.atomic import replacing
from kubetune.store.base import ConflictError, ForbiddenError, NotFoundError, Store, StoreError
from kubetune.store.uri import check_uri

#: Objects at least this large go up in parallel multipart parts of this size.
#: S3's error codes for a missing key or bucket: GetObject says NoSuchKey, HeadObject has no
#: body and gives the status alone.
NOT_FOUND = ("NoSuchKey", "404", "NotFound")
#: HEAD requests carry no body, so a refused stat says only 403.
FORBIDDEN = ("AccessDenied", "403", "Forbidden", "AllAccessDisabled")
MULTIPART_BYTES = 16 * 1024 * 1024


def client_config(
    concurrency: int = 10, *, endpoint: str | None = None, patient: bool = True
) -> Any:
    """The botocore Config of every kubetune S3 client (see the module docstring).

    An impatient client (``patient=False``) is for a question a person waits on — is the
    bucket there, what is this run's metric — and gives up after 2 attempts, 3 s to connect
    and 10 s to read; the trainer's transfers are patient.
    """
    from botocore.config import Config

    options: dict[str, Any] = {
        "retries": {
            "mode": "standard",
            "max_attempts": int(os.environ.get("KUBETUNE_S3_MAX_ATTEMPTS", "10")) if patient else 2,
        },
        "connect_timeout": 10 if patient else 3,
        "read_timeout": 120 if patient else 10,
        "tcp_keepalive": True,
        # The uploader runs `concurrency` files at once, each in up to `concurrency` parts.
        "max_pool_connections": max(10, concurrency * concurrency),
    }
    for name in ("request_checksum_calculation", "response_checksum_validation"):
        if name in Config.OPTION_DEFAULTS:
            options[name] = "when_required"
    if _endpoint(endpoint):
        options["s3"] = {"addressing_style": "path"}
    return Config(**options)


def make_client(
    endpoint: str | None = None,
    region: str | None = None,
    *,
    concurrency: int = 10,
    patient: bool = True,
) -> Any:
    """A boto3 S3 client at ``endpoint`` (else ``$AWS_ENDPOINT_URL[_S3]``).

    Each client gets a fresh session, so credentials and profiles are read as they are now,
    but every session shares one loader of botocore's service models: parsing the S3 model
    again is most of a new client's cost (0.14 s of CPU, against 0.05 s shared), paid by
    ``kubetune status`` for every store its runs name.
    """
    import boto3
    import botocore.session

    core = botocore.session.Session()
    core.register_component("data_loader", _models())
    return boto3.session.Session(botocore_session=core).client(
        "s3",
        endpoint_url=_endpoint(endpoint),
        region_name=region or None,
        config=client_config(concurrency, endpoint=endpoint, patient=patient),
    )


@functools.cache
def _models() -> Any:
    """botocore's loader of service models, one per process (it caches what it parsed),
    made as a session makes it (``AWS_DATA_PATH`` and all)."""
    import botocore.session

    return botocore.session.Session().get_component("data_loader")


def _endpoint(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


class S3Store(Store):
    """Keys live under ``s3://bucket/prefix/``."""

    def __init__(
        self,
        uri: str,
        client: Any | None = None,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        concurrency: int = 8,
        patient: bool = True,
    ) -> None:
        check_uri(uri, "store")
        parsed = urlparse(uri)
        self.uri = uri.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.concurrency = concurrency
        self.client = client or make_client(
            endpoint, region, concurrency=concurrency, patient=patient
        )

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
            if code in NOT_FOUND:
                raise NotFoundError(f"{self.url(key)}: not found") from exc
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise ConflictError(f"{self.url(key)}: already written") from exc
            if code in FORBIDDEN:
                raise ForbiddenError(f"{self.url(key)}: {what} refused: access denied") from exc
            raise StoreError(f"{self.url(key)}: {what} failed: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"{self.url(key)}: {what} failed: {exc}") from exc

    def read_bytes(self, key: str) -> bytes:
        body = self._call("read", key, self.client.get_object, Key=self._key(key))["Body"]
        data: bytes = body.read()
        return data

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        self._call("write", key, self.client.put_object, Key=self._key(key), Body=data, **condition)

    def _transfer(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=MULTIPART_BYTES,
            multipart_chunksize=MULTIPART_BYTES,
            max_concurrency=self.concurrency,
            use_threads=True,
        )

    def upload_file(self, local: Path, key: str) -> None:
        # Parallel multipart above MULTIPART_BYTES, a single PUT below it.
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.upload_file(
                str(local), self.bucket, self._key(key), Config=self._transfer()
            )
        except (S3UploadFailedError, BotoCoreError, ClientError) as exc:
            raise StoreError(f"{self.url(key)}: upload failed: {exc}") from exc

    def download_file(self, key: str, local: Path) -> None:
        # download_file streams (and parallelises) large objects instead of holding them.
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            with replacing(local) as tmp:
                self.client.download_file(
                    self.bucket, self._key(key), str(tmp), Config=self._transfer()
                )
        except (BotoCoreError, ClientError) as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in NOT_FOUND:
                raise NotFoundError(f"{self.url(key)}: not found") from exc
            raise StoreError(f"{self.url(key)}: download failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored. Only "not found" is False: a denied or failed request
        raises StoreError, so an unreadable run never looks like a fresh one."""
        try:
            self._call("stat", key, self.client.head_object, Key=self._key(key))
        except NotFoundError:
            return False
        return True

    def list_sizes(self, prefix: str) -> dict[str, int]:
        sizes: dict[str, int] = {}
        token: dict[str, str] = {}
        full = self._key(prefix).rstrip("/")
        while True:
            page = self._call(
                "list",
                prefix,
                self.client.list_objects_v2,
                Prefix=f"{full}/" if full else "",
                **token,
            )
            for item in page.get("Contents", []):
                sizes[self._rel(item["Key"])] = int(item["Size"])
            if not page.get("IsTruncated"):
                return sizes
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete_prefix(self, prefix: str) -> None:
        self.delete_keys(self.list_keys(prefix))

    def delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            objects = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self._call(
                "delete", keys[start], self.client.delete_objects, Delete={"Objects": objects}
            )
