"""Events and automations on a real Prefect server (`prefect server start`, its trigger and action
services) with a process worker: `citadel watch` announces a change, the on-change deployment's
trigger indexes the source, one run at a time; a failed index run is sent to a notification block."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from citadel.testing.prefect_server import BIN, PrefectServer
from deployments.automations import declared
from deployments.catalog import SOURCE_CHANGED_TRIGGER
from tests.support.embedding_server import EmbeddingServer

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
HOOK_BLOCK = "custom-webhook/citadel-test"


class Webhook:
    """A local HTTP endpoint that keeps the JSON bodies posted to it (the notifications)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, text: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.bodies):
                if text in json.dumps(body):
                    return body
            time.sleep(0.5)
        raise AssertionError(f"no notification naming {text!r} in {timeout:.0f}s: {self.bodies}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrefectServer, EmbeddingServer, Webhook, Path]]:
    """The server with the automations set up (notifying the webhook), on-change deployed, one worker."""
    root = tmp_path_factory.mktemp("live")
    webhook = Webhook()
    with EmbeddingServer() as embedder:
        env = {
            "CITADEL_DATA_DIR": str(root / "data"),
            "CITADEL_EMBEDDER": "ollama", "CITADEL_EMBEDDING_MODEL": "all-minilm", "CITADEL_OLLAMA_URLS": embedder.url,
            "CITADEL_EMBED_TIMEOUT_S": "600",  # a held embedding waits for the test, not for the client
            "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT1S",  # proactive triggers looked at every second
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        }
        server = PrefectServer(root / "prefect", env=env)
        try:
            server.start()
            block = ("from prefect.blocks.notifications import CustomWebhookNotificationBlock as B\n"
                     f"B(name='citadel', url={webhook.url!r}, json_data={{'subject': '{{{{subject}}}}', 'body': '{{{{body}}}}'}})"
                     f".save({HOOK_BLOCK.split('/')[1]!r})\n")
            server.run([str(BIN / "python"), "-c", block])
            done = server.run([str(BIN / "citadel"), "setup", "--notify", HOOK_BLOCK, "--json"])
            assert "automation 'citadel-index-failed' is in place, notifying through custom-webhook/citadel-test" in done.stdout
            server.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "index-corpus/on-change"])
            server.start_worker("citadel", "live-worker")
            yield server, embedder, webhook, root
        finally:
            server.stop()
            webhook.server.shutdown()


def on_change_runs(server: PrefectServer, collection: str) -> list[dict[str, Any]]:
    runs = server.api("POST", "/flow_runs/filter", json={
        "deployments": {"id": {"any_": [server.deployment_id("index-corpus/on-change")]}}, "sort": "EXPECTED_START_TIME_ASC",
    })
    return [run for run in runs if run["parameters"].get("collection") == collection]


def wait_until(check: Any, what: str, server: PrefectServer, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen in {timeout:.0f}s:\n{server.log_text()}")


def test_prefect_yaml_and_citadel_serve_declare_the_same_trigger() -> None:
    declared_yaml = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    (on_change,) = [d for d in declared_yaml if d["name"] == "on-change"]
    assert on_change["triggers"] == [SOURCE_CHANGED_TRIGGER] and on_change["concurrency_limit"] == 1
    assert [a["enabled"] for a in declared()] == [False], "automations that notify ship disabled"


def test_a_watched_change_is_indexed_one_run_at_a_time(live, tmp_path: Path) -> None:
    """Files changed during a run queue one run after it, never a second one beside it."""
    server, embedder, _, _ = live
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "zebra.md").write_text("Zebras juggle xylophones near quartz fountains.\n")
    collection = f"live_{uuid.uuid4().hex[:8]}"
    watcher = server.spawn("watch", [str(BIN / "citadel"), "watch", str(folder), "--collection", collection, "--settle", "1", "--json"])
    try:
        embedder.delay(600)  # the first run holds at its embedding until the test lets it go
        wait_until(lambda: "watching" in (server.home / "watch.log").read_text(), "the watcher's start", server)
        (folder / "lemur.md").write_text("Lemurs leap between baobab branches at dusk.\n")
        first = wait_until(lambda: [r for r in on_change_runs(server, collection) if r["state_type"] == "RUNNING"],
                           "the triggered run", server)[0]
        assert first["parameters"] == {"source": str(folder), "collection": collection}

        (folder / "lemur.md").write_text("Lemurs leap between baobab branches at dawn.\n")
        second = wait_until(lambda: [r for r in on_change_runs(server, collection) if r["id"] != first["id"]],
                            "the second triggered run", server)[0]
        waiting = wait_until(lambda: server.api("GET", f"/flow_runs/{second['id']}")["state"]["name"] == "AwaitingConcurrencySlot",
                             "the second run waiting for the first", server)
        assert waiting and server.api("GET", f"/flow_runs/{first['id']}")["state_type"] == "RUNNING"
        embedder.reset()
        finished = [server.wait_for_flow_run(run["id"]) for run in (first, second)]
    finally:
        embedder.reset()
        watcher.terminate()
        watcher.wait(timeout=30)
    assert [run["state"]["type"] for run in finished] == ["COMPLETED", "COMPLETED"], server.log_text()
    assert finished[1]["start_time"] >= finished[0]["end_time"], "the two runs of one source never overlapped"
    assert len(on_change_runs(server, collection)) == 2, "one run per settled change"

    def completed_events() -> list[dict[str, Any]]:
        """The server stores events a moment after they arrive (a loaded machine showed the second late)."""
        found = server.api("POST", "/events/filter", json={"filter": {
            "event": {"name": ["citadel.index.completed"]}, "resource": {"id": [f"citadel.collection.{collection}"]}, "order": "ASC"}})
        return found["events"] if len(found["events"]) >= 2 else []

    payloads = [event["payload"] for event in wait_until(completed_events, "both runs' completed events", server)]
    assert [(p["documents_seen"], p["failed"]) for p in payloads] == [(2, 0), (2, 0)] and payloads[0]["added"] == 2
    # The second run saw the first run's result: every document as indexed, nothing failed.
    assert payloads[1]["added"] + payloads[1]["updated"] + payloads[1]["unchanged"] == 2


def test_a_failed_index_run_is_sent_to_the_notification_block(live, tmp_path: Path) -> None:
    server, _, webhook, _ = live
    collection = f"failing_{uuid.uuid4().hex[:8]}"
    missing = tmp_path / "no-such-folder"
    script = ("import asyncio\nfrom flows.index_corpus import index_corpus\n"
              f"asyncio.run(index_corpus({str(missing)!r}, collection={collection!r}))\n")
    failed = subprocess.run([str(BIN / "python"), "-c", script], cwd=REPO, env=server.env(), capture_output=True, text=True, timeout=240)
    assert failed.returncode != 0 and "no-such-folder" in failed.stderr
    body = webhook.wait_for(collection)
    assert body["subject"] == f"Citadel: indexing {collection} failed"
    assert f"Indexing {missing} into {collection} ended Failed" in body["body"] and "no-such-folder" in body["body"]
