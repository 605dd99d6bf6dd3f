"""Object storage as a source: ``s3://bucket/prefix`` on AWS S3 or an S3-compatible store (MinIO,
Ceph, R2), listed with each object's ETag and size so that an unchanged object is never fetched,
and read one object at a time under a size bound.

The client is obstore (Rust's object_store): it pages through ListObjectsV2 at a fraction of
boto3's CPU and serves both the async run and the loader's threads. Credentials come from the
standard chain, never from a setting: keys in the environment (``AWS_ACCESS_KEY_ID``...) are read
by obstore itself; without them boto3 resolves the rest of the chain (``AWS_PROFILE`` and the
shared files, SSO, web identity, the container's or the instance's role). The endpoint of an
S3-compatible store is ``CITADEL_S3_ENDPOINT_URL``. Every failure is one line that names the
bucket or the endpoint, and shows a key id only masked.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import obstore
from botocore.exceptions import BotoCoreError, ClientError
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from citadel.documents.s3errors import Failure, describe_error, mask_key_id
from citadel.documents.s3keys import addressable, fetch_unnameable, is_unnameable_key_error, list_unnameable
from citadel.documents.s3uri import S3Location, is_s3_uri, parse_s3_uri
from citadel.documents.suffixes import SUPPORTED_SUFFIXES
from citadel.errors import ConfigurationError
from citadel.settings import masked_url

if TYPE_CHECKING:
    from obstore.store import ClientConfig

    from citadel.settings import Settings

DEFAULT_REGION = "us-east-1"
LIST_PAGE = 1000  # keys per ListObjectsV2 request, the most S3 returns
# obstore raises its own errors, and some as Python's (a missing object is a FileNotFoundError).
_STORE_ERRORS = (BaseError, OSError)


class ObjectUnreadable(OSError):
    """One object could not be read (gone since it was listed, refused, the store unreachable): its
    message is the dead letter's reason; an OSError, so the loader treats it as it does a file's."""


class ObjectStoreUnavailable(OSError):
    """A listing that failed part way for a reason that may pass (the store unreachable, a 5xx):
    transient, retried by the run; a listing that fails is never taken as complete."""


@dataclass(frozen=True)
class ObjectEntry:
    """One listed object: what identifies it (``key``, ``uri``) and what says whether it changed
    (``etag`` and ``size``), known without fetching it."""

    key: str
    uri: str
    size: int
    etag: str | None
    last_modified: datetime

    @property
    def fingerprint(self) -> str:
        """The ETag and the size together: a stored object with the same fingerprint is not fetched again."""
        return f"{self.etag or ''}:{self.size}"


@dataclass(frozen=True)
class FetchedObject:
    """An object's bytes, with the ETag of what was actually read (it may have changed since the listing)."""

    key: str
    data: bytes
    etag: str | None


def _unquoted(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def is_listed(key: str, prefix: str) -> bool:
    """Whether a key under ``prefix`` is a document to index: not a folder placeholder (``a/``), not
    hidden (no name below the prefix starting with ``.``), and of a supported suffix."""
    if key.endswith("/"):
        return False
    below = key[len(prefix) :] if key.startswith(prefix) else key
    if any(part.startswith(".") for part in below.split("/")):
        return False
    return PurePosixPath(key).suffix.lower() in SUPPORTED_SUFFIXES



class S3Source:
    """One ``s3://`` source: lists its objects and fetches them, async for the run and sync for the
    loader's threads (obstore runs both on its own runtime, without holding the GIL)."""

    def __init__(
        self, location: S3Location, *, endpoint_url: str | None = None, region: str | None = None, retries: int = 3
    ) -> None:
        self.location = location
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")  # as boto3 reads them
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        options, self.key_id, found_region = _credentials()
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or found_region or DEFAULT_REGION
        client: ClientConfig = {"connect_timeout": timedelta(seconds=5)}
        if self.endpoint_url is not None:
            options["endpoint"] = self.endpoint_url
            client["allow_http"] = self.endpoint_url.lower().startswith("http://")
        self._store = S3Store(
            location.bucket, region=self.region, client_options=client,
            retry_config={"max_retries": retries, "retry_timeout": timedelta(seconds=30)}, **options,
        )

    @classmethod
    def from_settings(cls, location: S3Location, settings: Settings, *, retries: int = 3) -> S3Source:
        """The source with the endpoint and the region of ``settings`` (CITADEL_S3_ENDPOINT_URL, CITADEL_S3_REGION)."""
        return cls(location, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region, retries=retries)

    @property
    def endpoint(self) -> str:
        """Where the store is, for messages (a URL's password masked)."""
        return masked_url(self.endpoint_url) if self.endpoint_url else f"AWS S3 ({self.region})"

    def _entries(self, batch: Iterable[Mapping[str, Any]]) -> Iterator[ObjectEntry]:
        prefix = self.location.prefix
        for meta in batch:
            key: str = meta["path"]
            if is_listed(key, prefix):
                yield ObjectEntry(key, self.location.uri_of(key), meta["size"], _unquoted(meta["e_tag"]), meta["last_modified"])

    async def iter_objects(self) -> AsyncIterator[list[ObjectEntry]]:
        """The documents under the prefix, a page at a time, in key order; a failure raises (a
        ConfigurationError for the bucket or the credentials, else ObjectStoreUnavailable)."""
        last = ""
        try:
            async for batch in obstore.list(self._store, self.location.prefix or None, chunk_size=LIST_PAGE):
                last = batch[-1]["path"] if batch else last
                yield list(self._entries(batch))
            return
        except _STORE_ERRORS as exc:
            if not is_unnameable_key_error(str(exc)):
                raise self._listing_error(exc) from None
        pages = self._named_by_boto3(last)
        while (rest := await asyncio.to_thread(_next_page, pages)) is not None:
            yield list(self._entries(rest))

    async def list_objects(self) -> list[ObjectEntry]:
        """Every document under the prefix, sorted by key: the listing alone, nothing fetched."""
        entries = [entry async for page in self.iter_objects() for entry in page]
        return sorted(entries, key=lambda entry: entry.key)

    def list_objects_sync(self) -> list[ObjectEntry]:
        """:meth:`list_objects` for synchronous callers."""
        entries: list[ObjectEntry] = []
        last = ""
        try:
            for batch in obstore.list(self._store, self.location.prefix or None, chunk_size=LIST_PAGE):
                last = batch[-1]["path"] if batch else last
                entries.extend(self._entries(batch))
        except _STORE_ERRORS as exc:
            if not is_unnameable_key_error(str(exc)):
                raise self._listing_error(exc) from None
            for rest in self._named_by_boto3(last):
                entries.extend(self._entries(rest))
        return sorted(entries, key=lambda entry: entry.key)

    def _named_by_boto3(self, start_after: str) -> Iterator[list[dict[str, Any]]]:
        """The rest of the listing after ``start_after``, through boto3, which takes any key obstore cannot name."""
        try:
            yield from list_unnameable(self.location.bucket, self.location.prefix, self.endpoint_url, self.region, start_after)
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreUnavailable(f"listing {self.location.uri} failed: {one_line(exc)}") from None

    def check(self) -> None:
        """List one key: a ConfigurationError with one line when the bucket is missing, the
        credentials are refused or the endpoint cannot be reached, before any work."""
        try:
            next(iter(obstore.list(self._store, self.location.prefix or None, chunk_size=1)), None)
        except _STORE_ERRORS as exc:
            raise ConfigurationError(self.describe(exc).line) from None

    async def check_async(self) -> None:
        """:meth:`check` for the event loop."""
        try:
            await anext(aiter(obstore.list(self._store, self.location.prefix or None, chunk_size=1)), None)
        except _STORE_ERRORS as exc:
            raise ConfigurationError(self.describe(exc).line) from None

    def fetch(self, key: str, max_bytes: int, *, listed_size: int | None = None) -> FetchedObject:
        """The bytes of ``key``, refused over ``max_bytes`` by its listed size before any request,
        then by the size the store answers before the body is read, and never read past the bound."""
        _refuse_size(listed_size, max_bytes)
        if not addressable(key):
            return self._fetch_by_boto3(key, max_bytes)
        try:
            result = obstore.get(self._store, key)
            _refuse_size(result.meta["size"], max_bytes)
            data = _bounded(result.stream(min_chunk_size=min(max_bytes + 1, 8 << 20)), max_bytes)
            return FetchedObject(key, data, _unquoted(result.meta["e_tag"]))
        except _STORE_ERRORS as exc:
            raise ObjectUnreadable(self._object_error(key, exc)) from None

    async def fetch_async(self, key: str, max_bytes: int, *, listed_size: int | None = None) -> FetchedObject:
        """:meth:`fetch` for the event loop."""
        _refuse_size(listed_size, max_bytes)
        if not addressable(key):
            return await asyncio.to_thread(self._fetch_by_boto3, key, max_bytes)
        try:
            result = await obstore.get_async(self._store, key)
            _refuse_size(result.meta["size"], max_bytes)
            chunks: list[bytes] = []
            async for chunk in result.stream(min_chunk_size=min(max_bytes + 1, 8 << 20)):
                chunks.append(bytes(chunk))
                _refuse_size(sum(map(len, chunks)), max_bytes)
            return FetchedObject(key, b"".join(chunks), _unquoted(result.meta["e_tag"]))
        except _STORE_ERRORS as exc:
            raise ObjectUnreadable(self._object_error(key, exc)) from None

    def _fetch_by_boto3(self, key: str, max_bytes: int) -> FetchedObject:
        try:
            data, size, etag = fetch_unnameable(self.location.bucket, key, self.endpoint_url, self.region, max_bytes)
        except (BotoCoreError, ClientError) as exc:
            raise ObjectUnreadable(f"{self.location.uri_of(key)}: {one_line(exc)}") from None
        _refuse_size(size, max_bytes)
        return FetchedObject(key, data, _unquoted(etag))

    def describe(self, exc: BaseException) -> Failure:
        """One line for a store's error: what failed, where, and what to check."""
        return describe_error(exc, self.location.bucket, self.location.uri, self.endpoint, self.key_id)

    def _listing_error(self, exc: BaseException) -> Exception:
        failure = self.describe(exc)
        if failure.kind in ("unreachable", "other"):
            return ObjectStoreUnavailable(f"listing {self.location.uri} failed: {failure.line}")
        return ConfigurationError(failure.line)

    def _object_error(self, key: str, exc: BaseException) -> str:
        if isinstance(exc, (NotFoundError, FileNotFoundError)):
            return f"{self.location.uri_of(key)} is gone since it was listed; the next run removes it"
        return f"{self.location.uri_of(key)}: {self.describe(exc).line}"


def _next_page(pages: Iterator[list[dict[str, Any]]]) -> list[dict[str, Any]] | None:
    return next(pages, None)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, for a dead letter or an error."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _refuse_size(size: int | None, max_bytes: int) -> None:
    if size is not None and size > max_bytes:
        raise ValueError(f"object is {size} bytes, over the limit of {max_bytes} (CITADEL_MAX_FILE_BYTES)")


def _bounded(chunks: Iterable[bytes], max_bytes: int) -> bytes:
    """The chunks joined, refused as soon as they pass ``max_bytes`` (the store may send more than it said)."""
    out: list[bytes] = []
    read = 0
    for chunk in chunks:
        read += len(chunk)
        _refuse_size(read, max_bytes)
        out.append(bytes(chunk))
    return b"".join(out)


def _credentials() -> tuple[dict[str, Any], str | None, str | None]:
    """The store's credential options, the key id they use (for masked messages) and a region the
    chain names: obstore reads keys in the environment itself; otherwise boto3 resolves the chain
    (profile, SSO, web identity, container, instance role) behind obstore's provider."""
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    if key_id:
        return {}, key_id, None
    import boto3  # only where the keys are not in the environment
    from obstore.auth.boto3 import Boto3CredentialProvider

    session = boto3.Session()
    if session.get_credentials() is None:
        raise ConfigurationError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
            "(a profile of ~/.aws/credentials or ~/.aws/config), or run with an instance or container role"
        )
    provider = Boto3CredentialProvider(session)
    region: str | None = session.region_name
    return {"credential_provider": provider}, provider.credentials.access_key, region


def check_access(location: S3Location, settings: Settings) -> S3Source:
    """The source of ``location`` once one of its keys could be listed, else a ConfigurationError in
    one line (a missing bucket, refused credentials, an unreachable endpoint): the check before any work."""
    source = S3Source.from_settings(location, settings, retries=1)
    source.check()
    return S3Source.from_settings(location, settings)


__all__ = [
    "FetchedObject", "ObjectEntry", "ObjectStoreUnavailable", "ObjectUnreadable", "S3Location", "S3Source",
    "check_access", "describe_error", "is_listed", "is_s3_uri", "mask_key_id", "parse_s3_uri",
]
