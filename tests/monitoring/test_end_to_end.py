"""Monitoring end to end with the real tools: the API and a real workflow run, scraped by Debian's
Prometheus with the project's own configuration and rules; every recording rule and dashboard
query returns data; a broken dependency fires an alert that Alertmanager delivers to a webhook,
and mending it resolves the alert. Timings are shortened (1 s scrapes, alerts' ``for`` of 2 s,
Alertmanager's grouping of 1 s); the expressions, routes and receivers are the committed ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from citadel.testing.prefect_server import free_port
from tests.api.conftest import Api, start_api
from tests.conftest import POSTGRES_URL, REDIS_URL
from tests.support.embedding_server import EmbeddingServer
from tests.support.monitoring import MONITORING, alertmanager_binary, panel_queries, prometheus_binary, promtool, render_alertmanager_config

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

FOR = "2s"


class Webhook:
    """An Alertmanager webhook receiver: keeps every notification it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, name: str, status: str, **labels: str) -> list[dict[str, Any]]:
        return [alert for note in list(self.received) for alert in note["alerts"]
                if alert["labels"].get("alertname") == name and alert["status"] == status
                and all(alert["labels"].get(k) == v for k, v in labels.items())]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"waited {timeout:.0f}s for {what}")


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def prometheus_config(root: Path, api: Api, alertmanager_port: int, prometheus_port: int) -> Path:
    """The committed Prometheus folder, with this test's targets, key and timings."""
    folder = root / "prometheus"
    shutil.copytree(MONITORING / "prometheus", folder, ignore=shutil.ignore_patterns("*.example"))
    key_file = root / "citadel-api-key"
    key_file.write_text(api.keys["reader"])
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    for job in config["scrape_configs"]:
        job.pop("scrape_timeout", None)
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(key_file)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = api.url.rsplit(":", 1)[1]
    targets = {
        "citadel-api": [{"targets": [f"127.0.0.1:{port}"], "labels": {"name": "api-blue"}}],
        "alertmanager": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}],
        "prometheus": [{"targets": [f"127.0.0.1:{prometheus_port}"]}],
    }
    for job, entries in targets.items():
        (folder / "targets" / f"{job}.json").write_text(json.dumps(entries))
    alerts = folder / "rules" / "alerts.yml"
    rules = yaml.safe_load(alerts.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
    alerts.write_text(yaml.safe_dump(rules))
    return folder / "prometheus.yml"


def alertmanager_config(root: Path, webhook: Webhook) -> Path:
    """The committed Alertmanager configuration rendered for the webhook, grouping in a second."""
    (root / "alertmanager").mkdir()
    path = render_alertmanager_config(root / "alertmanager", {"ALERTMANAGER_WEBHOOK_URL": webhook.url})
    config = yaml.safe_load(path.read_text())
    routes = [config["route"]]
    while routes:
        route = routes.pop()
        for key in ("group_wait", "group_interval"):
            if key in route or route is config["route"]:
                route[key] = "1s"
        routes.extend(route.get("routes", []))
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1/", timeout=10)

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.http.get("query", params={"query": expr}).json()
        assert body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.http.get("rules").json()["data"]["groups"] for rule in group["rules"]]

    def firing(self, name: str, **labels: str) -> bool:
        return any(alert["labels"].get("alertname") == name and alert["state"] == "firing"
                   and all(alert["labels"].get(k) == v for k, v in labels.items())
                   for alert in self.http.get("alerts").json()["data"]["alerts"])


@pytest.fixture
def embedder() -> Iterator[EmbeddingServer]:
    server = EmbeddingServer().start()
    yield server
    server.stop()


def traffic(api: Api, collection: str) -> None:
    """What the dashboards show: a workflow that indexes and searches, embeddings (one cached),
    a search, a refused key and a burst over the rate limit."""
    workflow = {"workflow_id": "monitored", "steps": [
        {"step_id": "index", "type": "index", "parameters": {"collection": collection, "source": [
            {"id": f"doc-{i}", "text": f"Document {i} of {collection} about prometheus scraping and alert routing."} for i in range(20)]}},
        {"step_id": "find", "type": "search", "depends_on": ["index"], "parameters": {"query": "alert routing", "collection": collection}},
    ]}
    with api.client(headers=api.headers()) as client:
        submitted = client.post("/api/v1/orchestration/workflow", json=workflow).json()
        assert submitted["success"], submitted

        def final() -> dict[str, Any] | None:
            status = client.get(f"/api/v1/orchestration/workflow/{submitted['task_id']}/status").json()
            return status if status["status"] in ("Completed", "Failed", "Crashed", "Cancelled") else None

        assert wait_for("the workflow run", final, timeout=180)["status"] == "Completed"
        for text in (f"alert routing {collection}", f"alert routing {collection}", f"grafana panels {collection}"):  # new to the cache
            assert client.post("/api/v1/embeddings/generate", json={"text": text}).status_code == 200
        assert client.post("/api/v1/search", json={"query": "alert routing", "collection": collection}).status_code == 200
    with httpx.Client(base_url=api.url, timeout=30) as anonymous:
        refused = anonymous.post("/api/v1/search", json={"query": "x", "collection": collection}, headers={"X-API-Key": "ctd_nope_nope"})
        assert refused.status_code == 401
    with api.client(headers=api.headers("embed")) as client, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.post("/api/v1/embeddings/generate", json={"text": "alert routing"}).status_code, range(60)))
    assert 429 in codes, codes


def test_metrics_scraped_rules_and_panels_answer_and_an_alert_fires_and_resolves(
    tmp_path: Path, prefect_api_url: str, redis_url: str, postgres_url: str, embedder: EmbeddingServer
) -> None:
    webhook = Webhook()
    pool = f"monitored-{uuid.uuid4().hex[:8]}"  # a work pool no worker polls, as after `citadel setup` without workers
    assert httpx.post(f"{prefect_api_url}/work_pools/", json={"name": pool, "type": "process"}, timeout=30).status_code == 201
    api = start_api(
        "monitored", tmp_path / "api", prefect_api_url, CITADEL_EMBEDDER="ollama", CITADEL_OLLAMA_URLS=embedder.url,
        CITADEL_REDIS_URL=REDIS_URL, CITADEL_DATABASE_URL=POSTGRES_URL, CITADEL_LOG_FORMAT="json",
        CITADEL_API_RATE_LIMITS="25/second", CITADEL_API_HEALTH_CACHE_S="0.5",
    )
    am_port, prom_port = free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(spawn([
            alertmanager_binary(), f"--config.file={alertmanager_config(tmp_path, webhook)}", f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
        ], tmp_path / "alertmanager.log"))
        processes.append(spawn([
            prometheus_binary(), f"--config.file={prometheus_config(tmp_path, api, am_port, prom_port)}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
        ], tmp_path / "prometheus.log"))
        prometheus = Prometheus(prom_port)
        collection = f"mon_{uuid.uuid4().hex[:8]}"
        traffic(api, collection)
        wait_for("Prometheus to scrape the API", lambda: prometheus.query('up{job="citadel-api",instance="api-blue"} == 1'), every=1)
        wait_for("the indexing run in Prometheus",
                 lambda: prometheus.query(f'citadel_index_runs_total{{collection="{collection}",status="completed"}} == 1'))
        wait_for("the 429s in Prometheus", lambda: prometheus.query("citadel_http_rate_limited_total > 0"))
        exposition = httpx.get(f"{api.url}/metrics", headers={"Authorization": f"Bearer {api.keys['reader']}"}, timeout=30).text
        lint = subprocess.run([promtool(), "check", "metrics"], input=exposition, capture_output=True, text=True, check=False)
        assert (lint.returncode, lint.stdout + lint.stderr) == (0, ""), "promtool check metrics found problems"
        for name in ("citadel_embedding_texts_total", "citadel_embedding_cache_hits_total", "citadel_vector_points_upserted_total",
                     "citadel_prefect_flow_runs_finished_total", "citadel_dependency_up", "citadel_build_info"):
            assert f"\n{name}{{" in exposition, name

        # Break the embedder: the dependency check fails, embeddings answer 502.
        embedder.stop()
        broken = time.monotonic()
        with api.client(headers=api.headers()) as client:
            for i in range(3):
                assert client.post("/api/v1/embeddings/generate", json={"text": f"never embedded {i}"}).status_code == 502
        wait_for("the alert firing in Prometheus", lambda: prometheus.firing("CitadelDependencyDown", dependency="embedder"))
        fired_s = time.monotonic() - broken
        notified = wait_for("the firing notification", lambda: webhook.alerts("CitadelDependencyDown", "firing", dependency="embedder"))
        notified_s = time.monotonic() - broken
        assert notified[0]["labels"]["severity"] and notified[0]["annotations"]["summary"]

        # Every recording rule and every dashboard query has data now (errors included).
        time.sleep(3)
        empty_rules = [rule["name"] for rule in prometheus.rules() if rule["type"] == "recording" and not prometheus.query(rule["name"])]
        panels = [(dashboard.name, title, expr) for dashboard in sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
                  for title, expr in panel_queries(json.loads(dashboard.read_text()))]
        values = {(board, title, expr): prometheus.query(expr) for board, title, expr in panels}
        empty_panels = [key for key, result in values.items() if not result]
        report = tmp_path.parent / "panels.json"  # kept for the docs' list of panels and their values
        report.write_text(json.dumps([
            {"dashboard": board, "panel": title, "query": expr, "value": result[0]["value"][1] if result else None}
            for (board, title, expr), result in values.items()
        ], indent=1))
        assert not empty_rules, f"recording rules without data: {empty_rules}"
        assert not empty_panels, f"panels without data: {empty_panels}"

        # Mend it: the alert resolves and the receiver is told.
        embedder.start()
        mended = time.monotonic()
        wait_for("the resolved notification", lambda: webhook.alerts("CitadelDependencyDown", "resolved", dependency="embedder"))
        resolved_s = time.monotonic() - mended
        print(f"alert fired in Prometheus {fired_s:.1f}s after the break, notified {notified_s:.1f}s; "
              f"resolved notice {resolved_s:.1f}s after the mend")
    finally:
        for process in processes:
            stop(process)
        api.process.stop()
        webhook.close()

    # Structured logs: one JSON object per line, with the request's id, and no key anywhere.
    lines = [line for line in api.process.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    access = [record for record in records if record["logger"] == "citadel.api.access"]
    assert access and all(record.get("request_id") for record in access)
    for key in api.keys.values():
        secret = key.split("_", 2)[2]  # ctd_<public id>_<secret>: the secret may hold underscores itself
        assert len(secret) > 20 and secret not in "\n".join(lines)
