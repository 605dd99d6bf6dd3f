"""``citadel apikey``, ``citadel token``, and the CLI beside a running API on the same data folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from citadel.testing.api_process import ApiProcess
from citadel.testing.corpus import write_corpus
from tests.api.conftest import JWT_SECRET, base_env
from tests.cli.test_errors import citadel, one_line

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


def test_apikey_create_list_revoke(tmp_path: Path) -> None:
    env = {"CITADEL_DATA_DIR": str(tmp_path / "data")}
    created = json.loads(citadel("apikey", "create", "--name", "ci", "--scopes", "search,metrics", "--json", env=env).stdout)
    assert created["key"].startswith("ctd_") and created["scopes"] == ["metrics", "search"]
    listed = json.loads(citadel("apikey", "list", "--json", env=env).stdout)
    assert [k["key_id"] for k in listed] == [created["key_id"]] and "key" not in listed[0]
    text = citadel("apikey", "list", env=env).stdout
    assert created["key_id"] in text and created["key"] not in text
    revoked = json.loads(citadel("apikey", "revoke", created["key_id"], "--json", env=env).stdout)
    assert revoked["revoked_at"]
    assert json.loads(citadel("apikey", "list", "--json", env=env).stdout) == []
    assert len(json.loads(citadel("apikey", "list", "--revoked", "--json", env=env).stdout)) == 1
    bad = citadel("apikey", "create", "--name", "x", "--scopes", "root", env=env)
    assert bad.returncode == 2 and "unknown scope 'root'" in one_line(bad)
    missing = citadel("apikey", "revoke", "nope", env=env)
    assert missing.returncode == 2 and "citadel apikey list" in one_line(missing)


def test_token_create_needs_the_secret(tmp_path: Path) -> None:
    env = {"CITADEL_DATA_DIR": str(tmp_path / "data")}
    refused = citadel("token", "create", "--subject", "ops", "--scopes", "admin", env=env)
    assert refused.returncode == 2 and "CITADEL_JWT_SECRET" in one_line(refused)
    made = citadel("token", "create", "--subject", "ops", "--scopes", "search", "--ttl", "15m", "--json",
                   env={**env, "CITADEL_JWT_SECRET": JWT_SECRET})
    body = json.loads(made.stdout)
    assert body["subject"] == "ops" and body["scopes"] == ["search"] and body["token"].count(".") == 2


def test_a_cli_run_beside_the_api_fails_at_once_naming_it(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2)
    env = base_env(tmp_path / "data")
    with ApiProcess(env, tmp_path) as api:
        started = time.monotonic()
        done = citadel("index", str(corpus), env={"CITADEL_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path)
        elapsed = time.monotonic() - started
        line = one_line(done)
        assert done.returncode == 2 and f"process {api.proc.pid}" in line, line
        assert "the Citadel API serves this data folder" in line and "CITADEL_QDRANT_URL" in line
        searched = citadel("search", "anything", env={"CITADEL_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path)
        assert searched.returncode == 2 and "the Citadel API serves this data folder" in one_line(searched)
        second = citadel("api", "--port", "1", env={"CITADEL_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path)
        assert second.returncode == 2 and f"process {api.proc.pid}" in one_line(second)
        assert httpx.get(f"{api.url}/livez").status_code == 200  # the API is untouched
    assert elapsed < 60  # a failure, not a wait for the lock


def test_the_api_command_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    env = {"CITADEL_DATA_DIR": str(tmp_path / "data")}
    workers = citadel("api", "--workers", "2", env=env)
    assert workers.returncode == 2 and "CITADEL_QDRANT_URL" in one_line(workers)
    half_tls = citadel("api", "--ssl-certfile", str(tmp_path / "c.pem"), env=env)
    assert half_tls.returncode == 2 and "both --ssl-certfile and --ssl-keyfile" in one_line(half_tls)
    bad_setting = citadel("api", env={**env, "CITADEL_API_RATE_LIMITS": "lots"})
    assert bad_setting.returncode == 2 and "CITADEL_API_RATE_LIMITS" in one_line(bad_setting)
