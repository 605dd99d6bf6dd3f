"""``citadel workflow run`` on long work: the run's name, id and UI page come at once (before the
run ends), then its steps' states as lines (no terminal here), then a report in 80 columns whose
values are wrapped between words, never cut inside one; ``--json`` stays one document."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.states import Cancelled
from typer.testing import CliRunner

from citadel.workflows import summarize_output
from cli.main import app
from cli.runview import wrap
from tests.orchestration.held import held_deployment, runs_of

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
CHUNK = {"step_id": "c", "type": "chunk", "parameters": {"text": "a few words to split"}}


def _file(tmp_path: Path, workflow: dict) -> str:
    path = tmp_path / f"{workflow['workflow_id']}.yaml"
    path.write_text(yaml.safe_dump(workflow))
    return str(path)


def test_without_wait_it_prints_name_id_and_url_and_json_keeps_flow_run_id(prefect_api_url: str, tmp_path: Path) -> None:
    deployment = asyncio.run(held_deployment("run-workflow"))
    path = _file(tmp_path, {"workflow_id": "at-once", "steps": [CHUNK]})

    shown = runner.invoke(app, ["workflow", "run", path, "--deployment", deployment])
    as_json = runner.invoke(app, ["workflow", "run", path, "--deployment", deployment, "--json"])

    assert shown.exit_code == 0 and as_json.exit_code == 0, shown.output + as_json.output
    runs = {str(run.id): run for run in asyncio.run(runs_of(deployment))}
    lines = shown.stdout.splitlines()
    run_id = lines[1].split()[-1]
    ui = prefect_api_url.removesuffix("/api")
    assert lines == ["run  workflow-at-once", f"id   {run_id}", f"url  {ui}/runs/flow-run/{run_id}"]
    document = json.loads(as_json.stdout)
    assert document == {"flow_run_id": document["id"], "id": document["id"], "name": "workflow-at-once",
                        "url": f"{ui}/runs/flow-run/{document['id']}"}
    assert set(runs) == {run_id, document["id"]} and {run.name for run in runs.values()} == {"workflow-at-once"}


def test_with_wait_the_run_is_shown_before_it_ends(prefect_api_url: str, tmp_path: Path) -> None:
    """Through a deployment no worker serves: the header and the first states are out while the run
    is still Scheduled; cancelling it on the server ends the wait with the report."""
    deployment = asyncio.run(held_deployment("run-workflow"))
    path = _file(tmp_path, {"workflow_id": "watched", "steps": [CHUNK]})
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": prefect_api_url, "CITADEL_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "cli", "workflow", "run", path, "--deployment", deployment, "--wait"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) as proc:
        assert proc.stdout is not None
        early = [proc.stdout.readline().rstrip("\n") for _ in range(4)]
        run_id = early[1].split()[-1]
        [run] = asyncio.run(runs_of(deployment))
        assert run.state is not None and run.state.name == "Scheduled", "the run has not ended, nor started"
        assert early == ["run  workflow-watched", f"id   {run_id}",
                         f"url  {prefect_api_url.removesuffix('/api')}/runs/flow-run/{run_id}", "run: Scheduled"]

        async def cancel() -> None:
            async with get_client() as client:
                await client.set_flow_run_state(run.id, Cancelled(message="cancelled by the test"), force=True)

        asyncio.run(cancel())
        rest, errors = proc.communicate(timeout=120)
    assert proc.returncode == 1, errors
    lines = rest.splitlines()
    assert "watched: Cancelled" in lines
    # The step's state: as a progress line when a poll saw it before the cancel (not on a loaded
    # machine, where the cancel can come first), and in the report's table either way.
    assert any(line.split()[:2] == ["c", "Pending"] for line in lines), lines
    assert all(len(line) <= 80 for line in lines)


def test_the_report_fits_80_columns_and_cuts_no_value_inside_a_word(data_dir: Path, tmp_path: Path) -> None:
    """A completed run with long outputs (hits with long ids, under a long step id), and a failed
    one with a long error (a deployment name longer than a line)."""
    long_id = "step-with-a-name-long-enough-to-push-its-columns-past-the-edge-of-eighty"
    missing = f"no-such-flow/{'a-deployment-nobody-made-' * 3}end"
    records = [{"id": f"{word}-a-document-with-a-long-identifier", "text": f"{word} zebras juggle xylophones"}
               for word in ("first", "second", "third", "fourth")]
    collection = f"wide_{uuid.uuid4().hex[:8]}"
    outputs = {"workflow_id": "wide-outputs", "steps": [
        {"step_id": "index", "type": "index", "parameters": {"collection": collection, "source": records}},
        {"step_id": long_id, "type": "search", "depends_on": ["index"],
         "parameters": {"query": "zebras juggle", "collection": collection, "limit": 4}},
    ]}
    error = {"workflow_id": "wide-error", "steps": [{"step_id": "broken", "type": "flow", "parameters": {"deployment": missing}}]}

    for workflow, state in ((outputs, "Completed"), (error, "Failed")):
        result = runner.invoke(app, ["workflow", "run", _file(tmp_path, workflow), "--local", "--wait"])
        assert result.exit_code == (0 if state == "Completed" else 1), result.output
        lines = result.stdout.splitlines()
        status = json.loads(runner.invoke(app, ["workflow", "status", lines[1].split()[-1], "--json"]).stdout)
        assert status["state"] == state and all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
        report = lines[lines.index(f"{workflow['workflow_id']}: {state}"):]
        for step_id, step in status["steps"].items():
            value = f"error: {step['error']}" if step["error"] else summarize_output(step["output"])
            at = next(i for i, line in enumerate(report) if line == step_id or line.startswith(step_id + " "))
            shown = []
            for line in report[at + 1 + (step_id == long_id):]:  # a long id has its state and times on the line below
                if not line.startswith("    "):
                    break
                shown.append(line.strip())
            assert value and wrapped_between_words(shown, value), (step_id, shown, value)
    assert missing in status["steps"]["broken"]["error"]


def wrapped_between_words(lines: list[str], value: str) -> bool:
    """Whether ``lines`` are the whole of ``value``, each break between two words or after the
    punctuation inside a word longer than a line (a path's slash), never elsewhere inside a word."""
    text = " ".join(value.split())
    at = 0
    for number, line in enumerate(lines):
        if number and text[at : at + 1] == " ":
            at += 1
        elif number and text[at - 1] not in "/,;:&?=_.-":
            return False
        if not text.startswith(line, at):
            return False
        at += len(line)
    return at == len(text)


def test_a_long_word_is_split_only_after_its_punctuation() -> None:
    path = "/" + "/".join(f"folder-{n}" for n in range(20)) + "/file.md"
    lines = wrap(f"read {path} twice", width=40)
    assert all(len(line) <= 40 for line in lines)
    assert "".join(lines[1:-1]) + lines[-1].removesuffix(" twice") == path
    assert all(line.endswith("/") for line in lines[1:-1])
    assert wrap("one two three four five six", width=10, max_lines=2) == ["one two", "three …"]
