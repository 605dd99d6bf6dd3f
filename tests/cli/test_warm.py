"""``citadel warm``: commands forked from a warm process behave as they do in a process of their own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from citadel.testing.corpus import write_corpus
from cli.warmsocket import UnsafeDirectory, fingerprint, socket_directory, socket_path
from tests.support.embedding_server import EmbeddingServer

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


class Commands:
    """``citadel`` commands in processes of their own, all in one environment and directory."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args], cwd=self.cwd, env={**self.env, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        process = self.popen(*args, env=env)
        out, err = process.communicate(timeout=180)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def warm(self) -> dict[str, Any]:
        done = self.run("warm", "status", "--json")
        return json.loads(done.stdout)


@pytest.fixture
def commands(data_dir: Path, tmp_path: Path, prefect_api_url: str) -> Iterator[Commands]:
    runtime = tempfile.mkdtemp(prefix="cw-")  # a socket's path has at most 107 bytes: tmp_path is too long
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "XDG_RUNTIME_DIR": runtime}
    cli = Commands(env, tmp_path)
    yield cli
    cli.run("warm", "stop")
    shutil.rmtree(runtime)


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_commands_run_warm_with_the_same_output_exit_codes_and_signals(
    commands: Commands, tmp_path: Path, collection_name: str
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3)
    started = commands.json("warm", "start")
    assert started["served"] == 0 and not gone(started["pid"])

    summary = commands.json("index", str(corpus), "--collection", collection_name)
    assert summary["added"] == 3 and summary["flow_run_id"], "a flow run, from the warm process"
    warm_status = commands.json("status")
    served = commands.warm()
    assert served["served"] == 2 and [c["command"] for c in served["recent"]] == ["index", "status"]
    assert all(c["exit"] == 0 and c["peak_rss_mb"] > 0 and c["cpu_s"] > 0 for c in served["recent"])

    bad = commands.run("index", str(tmp_path / "missing"))
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr and bad.stdout == ""
    assert commands.warm()["served"] == 3, "a failing command too runs warm, with its exit code"

    other = commands.run("status", "--json", env={"CITADEL_COLLECTION": "elsewhere"})
    assert other.returncode == 0 and commands.warm()["served"] == 3, "another environment runs in its own process"

    stopped = commands.json("warm", "stop")
    assert stopped["stopped"] and gone(started["pid"])
    assert commands.json("status") == warm_status, "a command's output is the same warm or not"


def test_ctrl_c_reaches_the_command_and_a_killed_caller_ends_it(commands: Commands, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=4, paragraphs=2)
    with EmbeddingServer() as server:
        server.delay(20.0)  # every embedding request hangs: the command waits until it is stopped
        commands.env.update({"CITADEL_EMBEDDER": "ollama", "CITADEL_OLLAMA_URLS": server.url,
                             "CITADEL_EMBEDDING_MODEL": "all-minilm", "CITADEL_EMBED_RETRIES": "0"})
        commands.json("warm", "start")
        for stop, code in ((signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)):
            asked = server.requests["/api/embed"]  # the last command's request may still be held
            caller = commands.popen("index", str(corpus))
            wait_for(lambda asked=asked: commands.warm()["running"] == 1 and server.requests["/api/embed"] > asked,
                     "the command to embed")
            caller.send_signal(stop)
            _, err = caller.communicate(timeout=60)
            assert caller.returncode == code, err
            if stop == signal.SIGINT:
                assert "Traceback" not in err  # as a command interrupted in a process of its own
            wait_for(lambda: commands.warm()["running"] == 0, "the command to end")
            ended = commands.warm()["recent"][-1]
            assert ended["command"] == "index" and ended["exit"] != 0
        server.reset()  # answers what is still held


def test_an_idle_warm_process_exits_and_removes_its_socket(commands: Commands) -> None:
    started = commands.json("warm", "start", "--idle-minutes", "0.02")
    socket_file = Path(started["socket"])
    assert socket_file.exists() and socket_file.stat().st_mode & 0o077 == 0
    wait_for(lambda: gone(started["pid"]), "the idle process to exit", timeout=30)
    assert not socket_file.exists()
    assert commands.run("warm", "status").returncode == 1


def test_a_socket_directory_others_can_open_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    loose = tmp_path / f"citadel-warm-{os.getuid()}"
    loose.mkdir(mode=0o700)
    assert socket_directory() == loose
    loose.chmod(0o777)
    with pytest.raises(UnsafeDirectory, match="mode 700"):
        socket_directory()
    deep = tmp_path / ("d" * 80)
    deep.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    with pytest.raises(UnsafeDirectory, match="shorter directory"):
        socket_path(create=True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "cli", "warm", "start"], capture_output=True, text=True,
                          env={**os.environ}, timeout=60)
    assert done.returncode == 2 and "mode 700" in done.stderr


def test_the_fingerprint_follows_environment_directory_and_settings_files(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin", "CITADEL_COLLECTION": "docs", "PWD": "/x", "SHLVL": "1"}
    key = fingerprint(env, str(tmp_path))
    assert fingerprint({**env, "PWD": "/y", "SHLVL": "2", "_": "/usr/bin/citadel"}, str(tmp_path)) == key
    assert fingerprint({**env, "CITADEL_COLLECTION": "other"}, str(tmp_path)) != key
    assert fingerprint(env, str(tmp_path / "sub")) != key
    (tmp_path / ".env").write_text("CITADEL_COLLECTION=notes\n")
    assert fingerprint(env, str(tmp_path)) != key
