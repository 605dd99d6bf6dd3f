"""Schemathesis over the OpenAPI document, authenticated: at least 1,000 generated requests, no
5xx, every response of a documented status, media type, headers and schema."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx

from citadel.settings import Settings
from citadel.testing.api_process import ApiProcess
from tests.api.conftest import base_env, create_keys

CONFIG = Path(__file__).with_name("schemathesis.toml")
INTERPRETER_BUG = "AST constructor recursion depth mismatch"


def test_every_route_keeps_its_documented_contract(tmp_path: Path, prefect_api_url: str) -> None:
    env = base_env(tmp_path / "data", CITADEL_API_RATE_LIMITS="100000/second", CITADEL_API_SOURCE_ROOTS=str(tmp_path),
                   PREFECT_API_URL=prefect_api_url)
    keys = asyncio.run(create_keys(Settings(data_dir=tmp_path / "data")))
    st = Path(sys.executable).with_name("st")
    with ApiProcess(env, tmp_path) as api:
        schema = httpx.get(f"{api.url}/api/v1/openapi.json").json()
        command = [str(st), "--config-file", str(CONFIG), "run", f"{api.url}/api/v1/openapi.json",
                   "-H", f"X-API-Key: {keys['admin']}", "--checks", "all",
                   # A schema-valid request may still be refused on its meaning (a collection that does
                   # not exist, a workflow whose steps do not fit): 400 and 404 are right answers there.
                   "--exclude-checks", "positive_data_acceptance",
                   "--max-examples", "60", "--seed", "20261128", "--workers", "1", "--no-color"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
        if INTERPRETER_BUG in done.stdout + done.stderr:
            # CPython 3.11 before 3.11.8 can fail building an AST when a garbage collection in another
            # thread interleaves (gh-106905), and Hypothesis builds ASTs of its strategies' lambdas:
            # an interpreter fault, not a contract failure, so the same seeded run is made once more.
            done = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
        log = api.log(2_000_000)
    output = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, output
    generated = int(re.search(r"(\d+) generated", done.stdout).group(1))  # type: ignore[union-attr]
    assert generated >= 1000, output
    assert " 500 " not in log and "Traceback" not in log
    operations = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert len(operations) >= 19
    secured = [op for path, item in schema["paths"].items() for op in item.values() if not path.endswith(("/health", "/livez"))]
    assert all(op.get("security") for op in secured if "readyz" not in str(op) and op.get("tags") != ["health"])
