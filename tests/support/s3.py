"""Fixtures of the tests that read object storage (a plugin of tests/conftest.py): one S3 server
(moto's server mode on loopback) per test module with a bucket made, and the test keys as the only
AWS set-up a test sees (``pytest.mark.usefixtures("aws_environment")``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from citadel.testing.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, start_s3_server

BUCKET = "handbook-bucket"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with start_s3_server(tmp_path_factory.mktemp("moto")) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The test keys in the environment, and nothing of this machine's own AWS set-up."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role probe on a machine that has none
