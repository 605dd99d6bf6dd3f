"""The keys obstore cannot name, listed and read through boto3 instead.

S3 allows any key, but obstore (Rust's object_store) models a key as a path of non-empty segments
without control characters: one key such as ``docs/a//b.md`` or ``docs/tab\\t.md`` fails a whole
listing, and such a key cannot be asked for. A listing that meets one goes on here, after the last
key it had, and such an object is fetched here, so one odd name neither stops a source nor is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# object_store refuses these in a key: an empty, "." or ".." segment, or a control character.
_BAD_SEGMENTS = ("", ".", "..")


def addressable(key: str) -> bool:
    """Whether obstore can name ``key``: no empty, '.' or '..' segment and no control character."""
    return not any(part in _BAD_SEGMENTS for part in key.split("/")) and not any(ord(c) < 32 or ord(c) == 127 for c in key)


def is_unnameable_key_error(text: str) -> bool:
    """Whether obstore's error says a listed key is one it cannot name."""
    return "invalid path" in text.lower()


def _client(endpoint_url: str | None, region: str) -> Any:
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region)


def list_unnameable(
    bucket: str, prefix: str, endpoint_url: str | None, region: str, start_after: str = ""
) -> Iterator[list[dict[str, Any]]]:
    """ListObjectsV2 pages of ``bucket`` under ``prefix`` after ``start_after``, each object as
    obstore describes one (path, size, e_tag, last_modified)."""
    pages = _client(endpoint_url, region).get_paginator("list_objects_v2")
    arguments: dict[str, str] = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        arguments["StartAfter"] = start_after
    for page in pages.paginate(**arguments):
        yield [
            {"path": item["Key"], "size": item["Size"], "e_tag": item.get("ETag"), "last_modified": item["LastModified"]}
            for item in page.get("Contents", [])
        ]


def fetch_unnameable(bucket: str, key: str, endpoint_url: str | None, region: str, max_bytes: int) -> tuple[bytes, int, str | None]:
    """The bytes of ``key`` (at most ``max_bytes`` + 1 read), its size as the store said, and its ETag."""
    answer = _client(endpoint_url, region).get_object(Bucket=bucket, Key=key)
    body = answer["Body"]
    try:
        size = int(answer.get("ContentLength", 0))
        data = body.read(max_bytes + 1) if size <= max_bytes else b""
    finally:
        body.close()
    return data, max(size, len(data)), answer.get("ETag")
