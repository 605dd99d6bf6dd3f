"""The full run's parallel workers keep each test module whole: a module's server or image starts once.

pytest 9.2 stopped reading the node ids that pytest-xdist 3.8's ``loadgroup`` rewrites, so grouped
modules were silently spread over the workers and their servers started on each (a third more
time). This runs the distribution mode of scripts/test on the installed pytest and pytest-xdist.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system  # it starts pytest workers

ROOT = Path(__file__).resolve().parents[1]
MODULE = '''
import pytest

@pytest.fixture(scope="module")
def server():
    with open({log!r}, "a") as log:
        log.write("{name}\\n")
    yield

@pytest.mark.parametrize("n", range(6))
def test_uses_the_server(server, n):
    pass
'''


def _dist_mode() -> list[str]:
    """The ``--dist`` option of the full run, as scripts/test passes it."""
    found = re.search(r"--dist\s+(\S+)", (ROOT / "scripts" / "test").read_text())
    assert found, "scripts/test names no --dist mode"
    return ["--dist", found.group(1)]


def test_each_module_s_fixture_starts_once_across_the_workers(tmp_path: Path) -> None:
    log = tmp_path / "setups.log"
    suite = tmp_path / "suite"
    suite.mkdir()
    names = [f"test_module_{i}" for i in range(4)]
    for name in names:
        (suite / f"{name}.py").write_text(MODULE.format(log=str(log), name=name))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "3", *_dist_mode(), str(suite)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "24 passed" in result.stdout, result.stdout
    assert sorted(log.read_text().split()) == names, "a module's fixture started on more than one worker"
