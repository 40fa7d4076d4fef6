"""The one check of a store URI: ``file://…`` or ``s3://bucket[/prefix]``, said the same way
by the spec's ``storage.uri``, ``--store`` and every ``runs``/``report`` argument."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from kubetune.errors import ConfigError

#: A bucket name as S3 allows it (3–63 lowercase letters, digits, dots and hyphens).
_S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$")
#: What a store URI looks like, said the same way by every command that takes one.
URI_FORMS = "file://./runs, file:///abs/path or s3://bucket/prefix"


def uri_problem(uri: str) -> str | None:
    """What is wrong with ``uri`` as a store URI, or None. The one check of a store URI:
    the spec's ``storage.uri``, ``--store`` and every ``runs``/``report`` argument use it."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return None
    if scheme == "s3":
        if _S3_URI.match(uri.rstrip("/")):
            return None
        return f"{uri!r} does not name a valid bucket: s3://<bucket>[/prefix], lowercase"
    return f"use {URI_FORMS}"


def check_uri(uri: str, what: str = "") -> str:
    """``uri``'s scheme (``file`` or ``s3``).

    Raises:
        ConfigError: ``uri`` is not a store URI; the line starts with ``what`` (e.g.
            ``--store``) and the URI.
    """
    problem = uri_problem(uri)
    if problem is not None:
        raise ConfigError(f"{what} {uri}: {problem}".lstrip())
    return urlparse(uri).scheme
