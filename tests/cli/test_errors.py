"""Errors are one line that says what failed and what to do, found before any work where they can be.

Each command runs as the user runs it: its own process, its output read whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from citadel.testing.corpus import write_corpus
from citadel.testing.s3server import S3Server, closed_port_url
from tests.support.embedding_server import free_port
from tests.support.qdrant_server import store_held_by_another_process
from tests.support.s3 import BUCKET

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def citadel(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=cwd,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The error line, after checking it is the only output and carries no traceback."""
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def shared_prefect(prefect_api_url: str) -> dict[str, str]:
    """The session's Prefect server, for a run whose error is the point, not the temporary server
    a command starts without PREFECT_API_URL (test_a_successful_run_prints_only_its_summary keeps that)."""
    return {"PREFECT_API_URL": prefect_api_url}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    write_corpus(tmp_path / "corpus", files=3, paragraphs=2)
    return tmp_path / "corpus"


def test_embedding_servers_that_refuse_connections_fail_the_run_in_one_line(
    data_dir: Path, corpus: Path, shared_prefect: dict[str, str]
) -> None:
    urls = f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}"
    done = citadel("index", str(corpus), env={"CITADEL_EMBEDDER": "ollama", "CITADEL_OLLAMA_URLS": urls, **shared_prefect})
    line = one_line(done)
    assert done.returncode == 2, "a server that is not there is a configuration problem"
    assert all(url in line for url in urls.split(",")) and "Connection refused" in line and "CITADEL_OLLAMA_URLS" in line


def test_a_registry_that_cannot_be_reached_is_one_line_without_its_password(data_dir: Path, corpus: Path) -> None:
    started = time.monotonic()
    done = citadel("index", str(corpus), env={"CITADEL_DATABASE_URL": f"postgresql://citadel:s3cret@127.0.0.1:{free_port()}/db"})
    line = one_line(done)
    assert done.returncode == 2 and "cannot open the registry database" in line and "CITADEL_DATABASE_URL" in line
    assert "s3cret" not in done.stderr and "***" in line
    assert time.monotonic() - started < 60, "found before Prefect starts, not after a run's retries"


def test_a_collection_of_another_model_is_refused_before_the_run(data_dir: Path, corpus: Path, shared_prefect: dict[str, str]) -> None:
    assert citadel("index", str(corpus), "--collection", "sized", env=shared_prefect).returncode == 0
    done = citadel("index", str(corpus), "--collection", "sized", env={"CITADEL_EMBEDDER": "hashing", **shared_prefect})
    line = one_line(done)
    assert done.returncode == 2 and "is indexed with wordllama-l2_supercat-256d" in line


def test_an_embedded_store_held_by_another_process_names_it(data_dir: Path, corpus: Path) -> None:
    with store_held_by_another_process(data_dir / "qdrant") as holder:
        done = citadel("index", str(corpus), env={})
    line = one_line(done)
    assert done.returncode == 2 and f"in use by process {holder.pid}" in line and "CITADEL_QDRANT_URL" in line


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CITADEL_CHUNK_SIZE": "500", "CITADEL_CHUNK_OVERLAP": "500"}, ["CITADEL_CHUNK_OVERLAP (500)", "CITADEL_CHUNK_SIZE (500)"]),
        ({"CITADEL_DATABASE_URL": "mysql://root:pw@db/citadel"}, ["scheme 'mysql'", "postgresql://", "sqlite:///"]),
    ],
)
def test_settings_are_checked_together_when_they_load(data_dir: Path, env: dict[str, str], expected: list[str]) -> None:
    for command in (["doctor"], ["index", str(REPO / "docs")]):
        done = citadel(*command, env=env)
        line = one_line(done)
        assert done.returncode == 2 and all(part in line for part in expected), line
        assert "pw@" not in line


def test_a_misspelt_setting_is_warned_of_with_the_right_name(data_dir: Path) -> None:
    done = citadel("status", env={"CITADEL_EMBEDER": "ollama"})
    assert done.returncode == 0
    assert "warning: CITADEL_EMBEDER is not a Citadel setting" in done.stderr and "did you mean CITADEL_EMBEDDER?" in done.stderr


def test_a_successful_run_prints_only_its_summary(data_dir: Path, corpus: Path) -> None:
    """No Prefect log lines, no noise from the temporary server stopping: the summary and nothing else."""
    for _ in range(2):
        done = citadel("index", str(corpus), env={})
        assert done.returncode == 0
        assert done.stderr == "" and len(done.stdout.strip().splitlines()) == 1, done.stdout + done.stderr


def test_a_failing_run_is_one_line_and_debug_shows_the_traceback(data_dir: Path, corpus: Path, shared_prefect: dict[str, str]) -> None:
    """An error inside the flow: one line; CITADEL_DEBUG=1 shows Prefect's logs and the traceback."""
    env = {"CITADEL_EMBEDDER": "ollama", "CITADEL_OLLAMA_URLS": f"http://127.0.0.1:{free_port()}", **shared_prefect}
    one_line(citadel("index", str(corpus), env=env))
    debug = citadel("index", str(corpus), env={**env, "CITADEL_DEBUG": "1"})
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error: no embedding server accepts connections")


@pytest.mark.usefixtures("aws_environment")
def test_a_missing_bucket_and_an_unreachable_store_are_one_line_before_any_work(data_dir: Path, s3_server: S3Server) -> None:
    started = time.monotonic()
    done = citadel("index", "s3://no-such-bucket/docs", env={"CITADEL_S3_ENDPOINT_URL": s3_server.url})
    assert done.returncode == 2 and one_line(done) == f"error: bucket 'no-such-bucket' does not exist at {s3_server.url}"
    unreachable = closed_port_url()
    done = citadel("index", f"s3://{BUCKET}/docs", env={"CITADEL_S3_ENDPOINT_URL": unreachable})
    line = one_line(done)
    assert done.returncode == 2 and unreachable in line and "CITADEL_S3_ENDPOINT_URL" in line, line
    assert time.monotonic() - started < 60, "found before Prefect starts"
