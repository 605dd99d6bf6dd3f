"""`citadel watch` as a user runs it: its own process, a real Prefect server, files changed on disk."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from tests.support.embedding_server import free_port
from tests.support.prefect_events import wait_for_events

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def watch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", "watch", *args]


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    return {**env, "PYTHONPATH": str(REPO), "CITADEL_DATA_DIR": str(data_dir), **extra}


def next_line(stream: IO[str], timeout: float = 90.0) -> dict:
    """The watcher's next JSON line (it prints one per announcement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if line.strip():
            return json.loads(line)
    raise AssertionError(f"no line from citadel watch in {timeout:.0f}s")


def test_changes_are_announced_once_they_settle_and_sigterm_ends_cleanly(
    data_dir: Path, tmp_path: Path, prefect_api_url: str, collection_name: str
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    env = environment(data_dir, PREFECT_API_URL=prefect_api_url)
    proc = subprocess.Popen(
        watch_command(str(folder), "--collection", collection_name, "--settle", "1", "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        started = next_line(proc.stdout)
        assert started["watching"] == str(folder) and started["collection"] == collection_name
        # A burst of writes (an editor's save, a checkout) is one announcement once the files settle.
        for number in range(5):
            (folder / f"note-{number}.md").write_text(f"note {number}\n")
        (folder / ".git").mkdir()
        (folder / ".git" / "index").write_text("version control is not a document")
        announced = next_line(proc.stdout)
        assert announced == {"event": "citadel.source.changed", "source": str(folder), "collection": collection_name,
                             "changes": 5, "sent": True}
        (event,) = asyncio.run(wait_for_events(prefect_api_url, "citadel.source.changed", f"citadel.source.{folder}"))
        assert event["resource"]["citadel.collection"] == collection_name and event["payload"]["changes"] == 5
        assert sorted(Path(p).name for p in event["payload"]["paths"]) == [f"note-{n}.md" for n in range(5)]
        proc.send_signal(signal.SIGTERM)
        assert next_line(proc.stdout) == {"stopped": str(folder)}
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_stops_watching_in_one_line(data_dir: Path, tmp_path: Path, prefect_api_url: str) -> None:
    env = environment(data_dir, PREFECT_API_URL=prefect_api_url)
    proc = subprocess.Popen(watch_command(str(tmp_path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + 90
    first = ""
    while not first.strip() and time.monotonic() < deadline:
        first = proc.stdout.readline()
    assert first.startswith(f"watching {tmp_path}")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert stdout.strip() == f"stopped watching {tmp_path}" and "Traceback" not in stderr


def test_without_a_prefect_server_it_says_what_it_needs(data_dir: Path, tmp_path: Path) -> None:
    """A temporary local server would end with the command and no worker would see its events."""
    env = environment(data_dir)
    done = subprocess.run(watch_command(str(tmp_path)), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: citadel watch sends its events to a Prefect server") and "PREFECT_API_URL" in line


def test_a_server_that_does_not_answer_is_one_line(data_dir: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    env = environment(data_dir, PREFECT_API_URL=url)
    done = subprocess.run(watch_command(str(tmp_path)), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"error: cannot reach the Prefect API at {url} (ConnectError): start that server, or point PREFECT_API_URL at it"
    )


def test_a_missing_folder_is_refused(data_dir: Path, tmp_path: Path) -> None:
    env = environment(data_dir, PREFECT_API_URL="http://127.0.0.1:9/api")
    done = subprocess.run(watch_command(str(tmp_path / "gone")), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert (done.returncode, done.stderr.strip()) == (2, f"error: {tmp_path / 'gone'} does not exist")

