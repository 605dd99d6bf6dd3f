"""Hostile workflow files: a YAML alias bomb and deep nesting are refused in one line, fast and in
bounded memory, before anything expands or walks them. Each command runs in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
MEMORY_CAP = 2 << 30  # address space of the command: a regression fails the test, not the machine


def alias_bomb(levels: int = 9) -> str:
    """A few hundred bytes: nine aliases of nine of the previous, 9**9 strings once expanded, in the context."""
    lines = ["workflow_id: bomb", "steps:", "  - {step_id: s, type: chunk, parameters: {text: x}}", "context:",
             '  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def nested_yaml(levels: int) -> str:
    steps = "steps:\n  - step_id: s\n    type: chunk\n    parameters:\n      text: x\n"
    return f"workflow_id: deep\n{steps}context:\n  p: {'[' * levels}1{']' * levels}\n"


def nested_json(levels: int) -> str:
    return ('{"workflow_id": "deep", "steps": [{"step_id": "s", "type": "chunk", "parameters": {"text": "x"}}], "context": {"p": '
            + '{"a": ' * levels + "1" + "}" * levels + "}}")


# Runs the command from a small process of its own and reports its peak: Linux carries a process's
# peak resident size over fork and exec, so a command forked straight from this test's process (a
# worker that has grown over hundreds of tests) would report the worker's size, not its own.
_MEASURE = """
import os, resource, subprocess, sys
cap, out, err, args = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
with open(out, "w") as stdout, open(err, "w") as stderr:
    proc = subprocess.Popen(args, stdout=stdout, stderr=stderr,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    _, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def citadel(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str, float, float]:
    """Exit code, stdout, stderr, seconds and peak resident MiB of ``citadel *args``."""
    out, err = tmp_path / "out", tmp_path / "err"
    started = time.monotonic()
    measured = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(MEMORY_CAP), str(out), str(err), sys.executable, "-m", "cli", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=timeout, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "CITADEL_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "400", **(env or {})},
    )
    code, peak_kib = (int(word) for word in measured.stdout.split()[-2:])
    return code, out.read_text(), err.read_text(), time.monotonic() - started, peak_kib / 1024


def one_error_line(stdout: str, stderr: str) -> str:
    assert "Traceback" not in stdout + stderr, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [["workflow", "validate"], ["workflow", "run", "--local"]], ids=["validate", "run-local"])
def test_a_yaml_alias_bomb_is_refused_in_one_line_fast_and_small(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 1000
    code, stdout, stderr, seconds, peak_mib = citadel(tmp_path, *command, str(path))
    line = one_error_line(stdout, stderr)
    assert code == 2 and "bomb.yaml expands its YAML aliases" in line and "100000 nodes" in line
    assert seconds < 20, f"took {seconds:.1f}s"
    assert peak_mib < 400, f"peaked at {peak_mib:.0f} MiB"


@pytest.mark.parametrize("levels", [100, 500, 950, 5000])
@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_deep_nesting_is_refused_in_one_line_without_a_traceback(tmp_path: Path, levels: int, suffix: str) -> None:
    path = tmp_path / f"deep.{suffix}"
    path.write_text(nested_yaml(levels) if suffix == "yaml" else nested_json(levels))
    code, stdout, stderr, seconds, _ = citadel(tmp_path, "workflow", "validate", str(path))
    line = one_error_line(stdout, stderr)
    assert code == 2 and f"deep.{suffix} nests deeper than 64 levels (CITADEL_MAX_NESTING_DEPTH)" in line
    assert seconds < 20


def test_the_depth_bound_is_a_setting(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(nested_yaml(70))
    code, stdout, stderr, _, _ = citadel(tmp_path, "workflow", "validate", str(path), env={"CITADEL_MAX_NESTING_DEPTH": "80"})
    assert code == 0 and "valid: deep" in stdout, stderr
    code, stdout, stderr, _, _ = citadel(tmp_path, "workflow", "validate", str(path), env={"CITADEL_MAX_NESTING_DEPTH": "5000"})
    assert code == 2 and "CITADEL_MAX_NESTING_DEPTH" in one_error_line(stdout, stderr), "a bound past the safe ceiling is refused"
