"""s3:// sources against a real S3 server (moto's server mode on loopback, over HTTP, with the real
client): what a listing keeps and what it says of each object without fetching it, paging, the size
bound of a fetch, the credential chain, and the three one-line errors raised before any work."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from pydantic import ValidationError

from citadel.documents.objectstore import (
    ObjectStoreUnavailable,
    ObjectUnreadable,
    S3Location,
    S3Source,
    check_access,
    is_listed,
    mask_key_id,
    parse_s3_uri,
)
from citadel.errors import ConfigurationError
from citadel.settings import Settings
from citadel.testing.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, closed_port_url, start_s3_server
from tests.support.s3 import BUCKET

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("aws_environment")]

def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", s3_endpoint_url=url)


def raw_put(server: S3Server, key: str, data: bytes = b"") -> None:
    """A key the client library will not write (a folder placeholder ending in '/'), straight over HTTP."""
    httpx.put(f"{server.url}/{BUCKET}/{key}", content=data, timeout=30).raise_for_status()


def test_s3_uris_parse_into_a_bucket_and_a_folder_prefix() -> None:
    assert parse_s3_uri("s3://bucket") == S3Location("bucket", "")
    assert parse_s3_uri(" S3://bucket/ ") == S3Location("bucket", "")
    assert parse_s3_uri("s3://my.bucket-1/docs/2024") == S3Location("my.bucket-1", "docs/2024/")
    assert parse_s3_uri("s3://bucket/docs/").uri_of("docs/a.md") == "s3://bucket/docs/a.md"
    for bad, said in [
        ("/tmp/docs", "is not an s3:// URI"),
        ("s3://", "names no bucket"),
        ("s3:///docs", "names no bucket"),
        ("s3://Bucket/docs", "is not a bucket name"),
        ("s3://ab", "is not a bucket name"),
        ("s3://a..b/docs", "is not a bucket name"),
        ("s3://bucket/docs//old", "empty, '.' or '..' folder"),
        ("s3://bucket/docs/../etc", "empty, '.' or '..' folder"),
    ]:
        with pytest.raises(ConfigurationError, match=said):
            parse_s3_uri(bad)


def test_what_a_listing_keeps() -> None:
    assert is_listed("docs/a.md", "docs/") and is_listed("docs/sub/B.PDF", "docs/")
    assert not is_listed("docs/folder/", "docs/")  # a folder placeholder
    assert not is_listed("docs/.hidden.md", "docs/") and not is_listed("docs/.git/notes.md", "docs/")
    assert not is_listed("docs/photo.png", "docs/")
    assert is_listed(".archive/a.md", ".archive/")  # a hidden prefix given on purpose is read
    assert mask_key_id("AKIAEXAMPLEKEY123XYZ") == "AKIA…XYZ" and mask_key_id("short") == "…" and mask_key_id(None) == "none"


def test_the_endpoint_setting_needs_its_scheme() -> None:
    with pytest.raises(ValidationError, match="CITADEL_S3_ENDPOINT_URL needs its scheme"):
        Settings(s3_endpoint_url="localhost:9000")
    assert Settings(s3_endpoint_url=" http://minio:9000/ ").s3_endpoint_url == "http://minio:9000"
    assert Settings(s3_endpoint_url="").s3_endpoint_url is None


async def test_a_listing_says_each_documents_etag_and_size_without_fetching_it(s3_server: S3Server, tmp_path: Path) -> None:
    contents = {
        "handbook/a.md": b"# Leave\nTwenty days a year.",
        "handbook/sub/b.html": b"<html><title>B</title><p>Bee</p></html>",
        "handbook/.hidden.md": b"hidden",
        "handbook/.git/notes.md": b"hidden folder",
        "handbook/photo.png": b"\x89PNG",
        "handbook-old/a.md": b"another prefix that starts alike",
        "other/c.md": b"outside the prefix",
    }
    await s3_server.put_objects(BUCKET, contents)
    raw_put(s3_server, "handbook/folder/")
    source = S3Source.from_settings(parse_s3_uri(f"s3://{BUCKET}/handbook"), settings_for(s3_server.url, tmp_path))
    before = s3_server.mark()

    entries = await source.list_objects()

    assert [entry.key for entry in entries] == ["handbook/a.md", "handbook/sub/b.html"]
    first = entries[0]
    assert first.uri == f"s3://{BUCKET}/handbook/a.md"
    assert first.size == len(contents["handbook/a.md"])
    assert first.etag == hashlib.md5(contents["handbook/a.md"]).hexdigest()  # a single PUT's ETag, unquoted
    assert first.fingerprint == f"{first.etag}:{first.size}"
    assert isinstance(first.last_modified, datetime)
    assert source.list_objects_sync() == entries
    assert s3_server.object_gets(before) == []
    assert len(s3_server.lists(before)) == 2  # one page each
    assert source.key_id == ACCESS_KEY_ID and source.endpoint == s3_server.url


async def test_paging_lists_every_object_beyond_a_thousand(s3_server: S3Server, tmp_path: Path) -> None:
    await s3_server.put_objects(BUCKET, {f"many/{number:05d}.txt": b"x%d" % number for number in range(2500)})
    source = S3Source.from_settings(parse_s3_uri(f"s3://{BUCKET}/many/"), settings_for(s3_server.url, tmp_path))
    before = s3_server.mark()

    pages = [page async for page in source.iter_objects()]

    assert sum(len(page) for page in pages) == 2500
    assert [entry.key for page in pages for entry in page] == [f"many/{number:05d}.txt" for number in range(2500)]
    assert len(s3_server.lists(before)) == 3 and s3_server.object_gets(before) == []


async def test_a_fetch_is_bounded_by_the_listed_size_before_any_request(s3_server: S3Server, tmp_path: Path) -> None:
    s3_server.put_object(BUCKET, "fetch/small.txt", b"small text")
    s3_server.put_object(BUCKET, "fetch/large.txt", b"L" * 5000)
    source = S3Source.from_settings(parse_s3_uri(f"s3://{BUCKET}/fetch/"), settings_for(s3_server.url, tmp_path))
    listed = {entry.key: entry for entry in await source.list_objects()}
    before = s3_server.mark()

    fetched = source.fetch("fetch/small.txt", 100, listed_size=listed["fetch/small.txt"].size)
    assert fetched.data == b"small text" and fetched.etag == listed["fetch/small.txt"].etag
    again = await source.fetch_async("fetch/small.txt", 100)
    assert again.data == b"small text"
    assert len(s3_server.object_gets(before)) == 2

    before = s3_server.mark()
    with pytest.raises(ValueError, match="object is 5000 bytes, over the limit of 1000"):
        source.fetch("fetch/large.txt", 1000, listed_size=listed["fetch/large.txt"].size)
    with pytest.raises(ValueError, match="over the limit"):
        await source.fetch_async("fetch/large.txt", 1000, listed_size=listed["fetch/large.txt"].size)
    assert s3_server.object_gets(before) == []  # refused by the listing's size: nothing requested
    with pytest.raises(ValueError, match="object is 5000 bytes, over the limit of 1000"):
        source.fetch("fetch/large.txt", 1000)  # no listed size: refused by the size the store answers
    with pytest.raises(ValueError, match="over the limit of 1000"):
        await source.fetch_async("fetch/large.txt", 1000)

    s3_server.delete_object(BUCKET, "fetch/small.txt")
    with pytest.raises(ObjectUnreadable, match=f"s3://{BUCKET}/fetch/small.txt is gone since it was listed"):
        source.fetch("fetch/small.txt", 100)
    with pytest.raises(OSError, match="is gone since it was listed"):
        await source.fetch_async("fetch/small.txt", 100)


async def test_a_missing_bucket_is_one_line_before_any_work(s3_server: S3Server, tmp_path: Path) -> None:
    settings = settings_for(s3_server.url, tmp_path)
    location = parse_s3_uri("s3://no-such-bucket/docs")
    expected = f"bucket 'no-such-bucket' does not exist at {s3_server.url}"
    with pytest.raises(ConfigurationError) as raised:
        check_access(location, settings)
    assert str(raised.value) == expected
    with pytest.raises(ConfigurationError) as raised:
        await S3Source.from_settings(location, settings).check_async()
    assert str(raised.value) == expected
    with pytest.raises(ConfigurationError, match="does not exist"):
        await S3Source.from_settings(location, settings).list_objects()
    source = check_access(parse_s3_uri(f"s3://{BUCKET}/nothing-here"), settings)  # an empty prefix is no error
    assert await source.list_objects() == []


def test_refused_credentials_are_one_line_with_the_key_id_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_s3_server(tmp_path / "moto", auth=True) as server:
        with pytest.raises(ConfigurationError) as raised:
            check_access(parse_s3_uri(f"s3://{BUCKET}/docs"), settings_for(server.url, tmp_path))
        said = str(raised.value)
        assert said == (
            f"the store at {server.url} refused the credentials (key id AKIA…XYZ masked): InvalidAccessKeyId; "
            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        )
        assert ACCESS_KEY_ID not in said and SECRET_ACCESS_KEY not in said and "\n" not in said

        profile_key = "AKIAPROFILEKEY000ABC"
        (tmp_path / "credentials").write_text(f"[citadel]\naws_access_key_id = {profile_key}\naws_secret_access_key = profile-secret\n")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
        monkeypatch.setenv("AWS_PROFILE", "citadel")
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        with pytest.raises(ConfigurationError, match=r"refused the credentials \(key id AKIA…ABC masked\)") as raised:
            check_access(parse_s3_uri(f"s3://{BUCKET}/docs"), settings_for(server.url, tmp_path))
        assert "profile-secret" not in str(raised.value) and profile_key not in str(raised.value)


async def test_a_profile_gives_the_credentials_when_the_environment_has_none(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    settings = settings_for(s3_server.url, tmp_path)
    with pytest.raises(ConfigurationError, match="no AWS credentials found: set AWS_ACCESS_KEY_ID"):
        S3Source.from_settings(parse_s3_uri(f"s3://{BUCKET}/"), settings)
    (tmp_path / "credentials").write_text("[reader]\naws_access_key_id = AKIAREADERKEY0000QRS\naws_secret_access_key = s\n")
    (tmp_path / "config").write_text("[profile reader]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "reader")
    monkeypatch.delenv("AWS_REGION")
    s3_server.put_object(BUCKET, "profiled/a.md", b"read with a profile")

    source = check_access(parse_s3_uri(f"s3://{BUCKET}/profiled"), settings)

    assert source.key_id == "AKIAREADERKEY0000QRS" and source.region == "eu-west-1"
    assert [entry.key for entry in await source.list_objects()] == ["profiled/a.md"]
    assert source.fetch("profiled/a.md", 100).data == b"read with a profile"


async def test_an_unreachable_endpoint_is_one_line_and_fails_fast(tmp_path: Path) -> None:
    url = closed_port_url()
    settings = settings_for(url, tmp_path)
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as raised:
        check_access(parse_s3_uri("s3://any-bucket/docs"), settings)
    assert str(raised.value) == f"cannot reach the object store at {url}: connection refused; check CITADEL_S3_ENDPOINT_URL"
    assert time.monotonic() - started < 10
    # during a run the same failure is transient (an OSError the run retries), never an empty listing
    with pytest.raises(ObjectStoreUnavailable, match="listing s3://any-bucket/docs/ failed: cannot reach"):
        await S3Source(parse_s3_uri("s3://any-bucket/docs"), endpoint_url=url, retries=0).list_objects()
    with pytest.raises(ObjectUnreadable, match="s3://any-bucket/docs/a.md: cannot reach the object store"):
        S3Source(parse_s3_uri("s3://any-bucket/docs"), endpoint_url=url, retries=0).fetch("docs/a.md", 100)


async def test_keys_obstore_cannot_name_are_listed_and_read_through_boto3(s3_server: S3Server, tmp_path: Path) -> None:
    """S3 takes any key; one with an empty folder name or a control character neither stops the listing nor is lost."""
    odd = {"odd/a//b.md": b"empty folder name", "odd/tab\t.md": b"a tab in the name", "odd/c.md": b"plain", "odd/z.md": b"after"}
    for key, data in odd.items():
        raw_put(s3_server, quote(key), data)
    source = S3Source.from_settings(parse_s3_uri(f"s3://{BUCKET}/odd"), settings_for(s3_server.url, tmp_path))

    entries = await source.list_objects()

    assert [entry.key for entry in entries] == sorted(odd)
    assert source.list_objects_sync() == entries
    for entry in entries:
        assert source.fetch(entry.key, 100, listed_size=entry.size).data == odd[entry.key]
        assert (await source.fetch_async(entry.key, 100)).data == odd[entry.key]
    with pytest.raises(ValueError, match="over the limit of 5"):
        source.fetch("odd/a//b.md", 5)
