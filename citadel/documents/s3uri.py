"""``s3://bucket/prefix`` URIs: parsed and checked without a client, so that the sandbox and the
listing's dispatch need not load one."""

from __future__ import annotations

import re
from dataclasses import dataclass

from citadel.errors import ConfigurationError

SCHEME = "s3://"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and the prefix (a folder: empty, or ending in ``/``) under which its objects are listed."""

    bucket: str
    prefix: str = ""

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}"

    def uri_of(self, key: str) -> str:
        """The ``s3://`` URI of one of the bucket's objects: its document id and its source link."""
        return f"{SCHEME}{self.bucket}/{key}"


def is_s3_uri(text: str) -> bool:
    """Whether a source names object storage (``s3://...``) rather than a path."""
    return text.strip().lower().startswith(SCHEME)


def parse_s3_uri(text: str) -> S3Location:
    """``s3://bucket/some/prefix`` -> ``S3Location("bucket", "some/prefix/")``; a ConfigurationError
    that says what is wrong for anything else (no bucket, a bad bucket name, an empty folder name)."""
    stripped = text.strip()
    if not is_s3_uri(stripped):
        raise ConfigurationError(f"{text!r} is not an s3:// URI; give s3://bucket or s3://bucket/prefix")
    bucket, _, prefix = stripped[len(SCHEME) :].partition("/")
    if not bucket:
        raise ConfigurationError(f"{text!r} names no bucket; give s3://bucket or s3://bucket/prefix")
    if not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise ConfigurationError(
            f"{bucket!r} in {text!r} is not a bucket name: 3 to 63 lowercase letters, digits, '.', '-' or '_', "
            "starting and ending with a letter or a digit"
        )
    prefix = prefix.strip("/")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise ConfigurationError(f"{text!r} has an empty, '.' or '..' folder in its prefix; name each folder")
    return S3Location(bucket, f"{prefix}/" if prefix else "")
