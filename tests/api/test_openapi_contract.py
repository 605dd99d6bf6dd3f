"""Schemathesis over the OpenAPI document, authenticated, with every check: stateless (at least
1,000 generated requests) and stateful (created keys revoked and listed through the document's
links), no 5xx, no schema-valid request refused, every response of a documented status, media
type, headers and schema."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from citadel.apisettings import ApiSettings
from citadel.auth import mint_token
from citadel.settings import Settings
from citadel.testing.api_process import ApiProcess
from tests.api.conftest import JWT_SECRET, base_env, create_keys

CONFIG = Path(__file__).with_name("schemathesis.toml")
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
INTERPRETER_BUG = "AST constructor recursion depth mismatch"
SEED = "20261128"


@dataclass
class Served:
    api: ApiProcess
    keys: dict[str, str]
    schema: dict
    collection: str
    model: str
    tmp_path: Path


def _indexed_collection(api: ApiProcess, key: str, collection: str) -> str:
    """A collection with documents whose metadata holds strings, integers, floats and flags, for searches to find."""
    records = [{"id": f"doc-{i}", "text": f"Document {i} about {topic}.", "metadata": {"lang": "en", "rank": i, "weight": i + 0.5,
                                                                                        "draft": i % 2 == 0}}
               for i, topic in enumerate(["apples", "rivers", "engines", "music"])]
    workflow = {"workflow_id": "contract-data", "steps": [
        {"step_id": "index", "type": "index", "parameters": {"collection": collection, "source": records}}]}
    with httpx.Client(base_url=api.url, headers={"X-API-Key": key}, timeout=60) as client:
        task_id = client.post("/api/v1/orchestration/workflow", json=workflow).json()["task_id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = client.get(f"/api/v1/orchestration/workflow/{task_id}/status").json()["status"]
            if status in ("Completed", "Failed", "Crashed", "Cancelled"):
                assert status == "Completed", status
                model: str = client.post("/api/v1/embeddings/generate", json={"text": "which model"}).json()["model"]
                return model
            time.sleep(0.3)
    raise AssertionError("the contract test's collection was not indexed within 120 s")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("contract")
    collection = f"contract_{uuid.uuid4().hex[:8]}"
    # Searches without a collection read the configured one: the same, so they find something too.
    env = base_env(tmp_path / "data", CITADEL_API_RATE_LIMITS="100000/second", CITADEL_API_SOURCE_ROOTS=str(tmp_path),
                   PREFECT_API_URL=prefect_api_url, CITADEL_COLLECTION=collection)
    keys = asyncio.run(create_keys(Settings(data_dir=tmp_path / "data"), tmp_path))
    with ApiProcess(env, tmp_path) as api:
        model = _indexed_collection(api, keys["admin"], collection)
        schema = httpx.get(f"{api.url}/api/v1/openapi.json").json()
        yield Served(api, keys, schema, collection, model, tmp_path)


def admin_token() -> str:
    """An admin credential no generated request can revoke or rotate (a key's id is in the list of keys)."""
    return mint_token(ApiSettings(jwt_secret=JWT_SECRET), "contract", ["admin"], 3600, collections=["*"], sources=["*"])


def schemathesis_run(served: Served, name: str, *options: str, timeout: float, credential: str = "") -> tuple[str, str]:
    """One seeded ``st run`` with every check; its output (also left beside the API log) and the API's log."""
    st = Path(sys.executable).with_name("st")
    command = [str(st), "--config-file", str(CONFIG), "run", f"{served.api.url}/api/v1/openapi.json",
               "-H", credential or f"X-API-Key: {served.keys['admin']}", "--checks", "all", "--seed", SEED, "--no-color", *options]
    env = {**served.api.env, "SCHEMATHESIS_HOOKS": str(HOOKS), "CITADEL_CONTRACT_COLLECTION": served.collection,
           "CITADEL_CONTRACT_MODEL": served.model}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=served.tmp_path, env=env)
    if INTERPRETER_BUG in done.stdout + done.stderr:
        # CPython 3.11 before 3.11.8 can fail building an AST when a garbage collection in another
        # thread interleaves (gh-106905), and Hypothesis builds ASTs of its strategies' lambdas:
        # an interpreter fault, not a contract failure, so the same seeded run is made once more.
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=served.tmp_path, env=env)
    (served.tmp_path / f"schemathesis-{name}.txt").write_text(done.stdout + done.stderr)
    output = done.stdout[-8000:] + done.stderr[-2000:]
    assert done.returncode == 0, output
    return done.stdout, served.api.log(4_000_000)


def assert_no_server_error(log: str) -> None:
    assert " 500 " not in log and "Traceback" not in log, log[-3000:]


def test_every_route_keeps_its_documented_contract(served: Served) -> None:
    out, log = schemathesis_run(served, "stateless", "--phases", "examples,coverage,fuzzing", "--max-examples", "60",
                                "--workers", "1", timeout=1200)
    generated = int(re.search(r"(\d+) generated", out).group(1))  # type: ignore[union-attr]
    assert generated >= 1000, out[-6000:]
    assert_no_server_error(log)
    schema = served.schema
    operations = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert len(operations) >= 19
    secured = [op for path, item in schema["paths"].items() for op in item.values() if not path.endswith(("/health", "/livez"))]
    assert all(op.get("security") for op in secured if "readyz" not in str(op) and op.get("tags") != ["health"])


def test_stateful_sequences_follow_the_documented_links(served: Served) -> None:
    """Keys created, listed and revoked (and workflows submitted and watched) in sequences the
    links of the document allow, bounded in examples and time."""
    started = time.monotonic()
    # As a token: the stateless run rotates and revokes keys, the test's own among them.
    out, log = schemathesis_run(served, "stateful", "--phases", "stateful", "--max-examples", "150", "--workers", "1", timeout=300,
                                credential=f"Authorization: Bearer {admin_token()}")
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", out)
    scenarios = re.search(r"Scenarios:\s+(\d+)", out)
    assert links and scenarios, out[-4000:]
    # Every documented link followed; how many scenarios depends on the keys the stateless run left (36 to 165 seen).
    assert int(links.group(1)) >= 3 and int(scenarios.group(1)) >= 30, out[-4000:]
    assert time.monotonic() - started < 240
    assert_no_server_error(log)
