"""The monitoring configuration, checked by the real tools: promtool for Prometheus's
configuration, rules and their unit tests, amtool for Alertmanager's configuration and routes, and
both servers started once on this machine to see the targets, the key, the inhibitions and a
delivery at work. The metrics the code exposes are the contract every rule and panel is held to.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.monitoring import (
    MONITORING,
    REPO,
    alertmanager_binary,
    amtool,
    dashboard_panels,
    panel_queries,
    prometheus_binary,
    promtool,
    render_alertmanager_config,
)

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

PROMETHEUS = MONITORING / "prometheus"
ALERTS = PROMETHEUS / "rules" / "alerts.yml"
RECORDING = PROMETHEUS / "rules" / "recording.yml"
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
RUNBOOK = REPO / "docs" / "monitoring.md"
RUNBOOK_BASE = "https://github.com/citadel/citadel/blob/main/docs/monitoring.md#"
DATASOURCE_UID = "citadel-prometheus"
KEY_FILE = "/etc/prometheus/citadel-api-key"

JOBS = {"citadel-api", "redis", "postgres", "node", "qdrant", "prefect", "alertmanager", "prometheus"}

# The contract: every metric the code exposes, with its type. Rules and panels use nothing else of Citadel's.
CONTRACT = {
    "citadel_http_requests_total": "counter",
    "citadel_http_request_duration_seconds": "histogram",
    "citadel_http_requests_in_flight": "gauge",
    "citadel_http_rate_limited_total": "counter",
    "citadel_http_auth_failures_total": "counter",
    "citadel_build_info": "gauge",
    "citadel_embedding_requests_total": "counter",
    "citadel_embedding_texts_total": "counter",
    "citadel_embedding_errors_total": "counter",
    "citadel_embedding_request_duration_seconds": "histogram",
    "citadel_embedding_slots_in_use": "gauge",
    "citadel_embedding_cache_hits_total": "counter",
    "citadel_embedding_cache_misses_total": "counter",
    "citadel_embedding_cache_errors_total": "counter",
    "citadel_vector_points_upserted_total": "counter",
    "citadel_vector_points_deleted_total": "counter",
    "citadel_index_runs_total": "counter",
    "citadel_index_documents_total": "counter",
    "citadel_index_chunks_total": "counter",
    "citadel_index_run_duration_seconds": "summary",
    "citadel_index_last_success_timestamp_seconds": "gauge",
    "citadel_dead_letters": "gauge",
    "citadel_dependency_up": "gauge",
    "citadel_dependency_check_duration_seconds": "gauge",
    "citadel_prefect_up": "gauge",
    "citadel_prefect_flow_runs": "gauge",
    "citadel_prefect_flow_runs_finished_total": "counter",
    "citadel_prefect_work_pool_ready": "gauge",
    "citadel_prefect_workers_online": "gauge",
    "citadel_scrape_collector_duration_seconds": "gauge",
}
_SERIES_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
SERIES = {name + suffix for name, kind in CONTRACT.items() for suffix in _SERIES_SUFFIXES[kind]}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_CITADEL_METRIC = re.compile(r"(?<![\w:])citadel_\w+(?![\w:])")
_RECORDED = re.compile(r"(?<![\w:])(citadel\w*:\w+:\w+)")


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, check=False, cwd=cwd, timeout=120)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for group in load_yaml(RECORDING)["groups"] for rule in group["rules"]}


def rule_expressions() -> list[tuple[str, str]]:
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for path in (ALERTS, RECORDING)
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    ]


def dashboard_queries() -> list[tuple[str, str]]:
    return [(f"{path.name}: {title}", expr) for path in DASHBOARDS for title, expr in panel_queries(json.loads(path.read_text()))]


def metric_names(expr: str) -> set[str]:
    """The ``citadel_*`` series an expression reads (not recorded names, not label values)."""
    return set(_CITADEL_METRIC.findall(_STRING.sub('""', expr)))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def prometheus_copy(tmp_path: Path, *, example_targets: bool = True) -> Path:
    """The Prometheus folder copied into ``tmp_path`` with a key file where the config expects one
    (promtool checks that it exists), and the example target files in place of the real ones."""
    folder = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, folder)
    key = tmp_path / "citadel-api-key"
    key.write_text("ctd_test_key\n")
    config = folder / "prometheus.yml"
    text = config.read_text()
    assert text.count(KEY_FILE) == 1
    config.write_text(text.replace(KEY_FILE, str(key)))
    for real in (folder / "targets").glob("*.json"):
        real.unlink()
    if example_targets:
        for example in (folder / "targets").glob("*.json.example"):
            shutil.copy(example, example.with_suffix(""))
    return folder


# ---------------------------------------------------------------------------------------------- Prometheus


def test_prometheus_config_passes_promtool_with_the_example_targets(tmp_path: Path) -> None:
    folder = prometheus_copy(tmp_path)
    result = run(promtool(), "check", "config", folder / "prometheus.yml", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "is valid prometheus config file syntax" in output
    assert "WARNING" not in output  # every job's target file was found, relative to the config file
    assert "SUCCESS: 2 rule files found" in output


def test_promtool_requires_the_key_file(tmp_path: Path) -> None:
    folder = prometheus_copy(tmp_path)
    (tmp_path / "citadel-api-key").unlink()
    result = run(promtool(), "check", "config", folder / "prometheus.yml")
    assert result.returncode != 0
    assert "citadel-api-key" in result.stdout + result.stderr


def test_every_job_reads_its_targets_from_its_own_file() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    assert config["global"]["scrape_interval"] == config["global"]["evaluation_interval"] == "15s"
    assert config["rule_files"] == ["rules/*.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == JOBS
    for name, job in jobs.items():
        assert set(job) & {"static_configs", "dns_sd_configs"} == set(), f"{name}: addresses belong in targets/{name}.json"
        assert job["file_sd_configs"] == [{"files": [f"targets/{name}.json"]}], name
        assert (PROMETHEUS / "targets" / f"{name}.json.example").is_file(), name
        assert [r.get("target_label") for r in job["relabel_configs"]][:2] == ["instance", "instance"], name
    api = jobs["citadel-api"]
    assert api["authorization"] == {"type": "Bearer", "credentials_file": KEY_FILE}
    assert config["alerting"]["alertmanagers"][0]["file_sd_configs"] == [{"files": ["targets/alertmanager.json"]}]
    assert "*.json" in (PROMETHEUS / "targets" / ".gitignore").read_text().split()


def test_rules_pass_promtool() -> None:
    result = run(promtool(), "check", "rules", ALERTS, RECORDING)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2


def test_rule_unit_tests_pass() -> None:
    files = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert files
    result = run(promtool(), "test", "rules", *files, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    firing.add(check["alertname"])
                    for alert in check["exp_alerts"]:
                        assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}, check["alertname"]
                        assert alert["exp_labels"]["severity"], check["alertname"]
                else:
                    quiet.add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"
    assert (firing | quiet) - alerts == set(), "tests of alerts that do not exist"


def test_recording_rules_are_tested() -> None:
    tested = {
        name
        for path in (PROMETHEUS / "tests").glob("*.yml")
        for case in load_yaml(path)["tests"]
        for check in case.get("promql_expr_test", [])
        for name in _RECORDED.findall(check["expr"])
    }
    assert len(tested) >= 5 and tested <= recorded_names(), tested


def test_alerts_carry_severity_component_and_a_runbook() -> None:
    anchors = {github_anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if re.match(r"#{2,3} ", line)}
    severities = set()
    for rule in alert_rules():
        name = rule["alert"]
        severities.add(rule["labels"]["severity"])
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["labels"]["component"] in {"api", "embedding", "indexing", "dependency", "prefect", "host", "monitoring"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        url = rule["annotations"]["runbook_url"]
        assert url == RUNBOOK_BASE + name.lower(), name
        assert url.removeprefix(RUNBOOK_BASE) in anchors, f"{name}: no heading in docs/monitoring.md"
    assert {"critical", "warning", "info"} <= severities


def test_the_runbooks_own_links_resolve() -> None:
    text = RUNBOOK.read_text()
    anchors = {github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,4} ", line)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and links - anchors == set()


def test_recording_rules_follow_the_naming_convention() -> None:
    for name in recorded_names():
        level, _metric, operations = name.split(":")
        assert level == "citadel" or level.startswith("citadel_"), name
        assert operations, name


def test_rules_and_dashboards_use_only_the_contracts_metrics() -> None:
    used = {name: where for where, expr in rule_expressions() + dashboard_queries() for name in metric_names(expr)}
    unknown = {name: where for name, where in used.items() if name not in SERIES}
    assert unknown == {}
    assert len(used) >= 25  # nearly every metric of the contract is watched somewhere


def test_recorded_names_that_are_used_are_recorded() -> None:
    known = recorded_names()
    for where, expr in rule_expressions() + dashboard_queries():
        missing = set(_RECORDED.findall(_STRING.sub('""', expr))) - known
        assert missing == set(), where


# ---------------------------------------------------------------------------------------------- Alertmanager

FULL_ENV = {
    "ALERTMANAGER_WEBHOOK_URL": "https://pager.example.com/hooks/citadel?token=s3cret",
    "ALERTMANAGER_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXX",
    "ALERTMANAGER_SLACK_CHANNEL": "#citadel-ops",
    "ALERTMANAGER_SMTP_SMARTHOST": "smtp.example.com:587",
    "ALERTMANAGER_SMTP_FROM": "citadel@example.com",
    "ALERTMANAGER_SMTP_AUTH_USERNAME": "citadel",
    "ALERTMANAGER_SMTP_AUTH_PASSWORD": 'pa"ss\\word #1 ${NOT_A_VARIABLE}',
    "ALERTMANAGER_EMAIL_TO": "team@example.com, lead@example.com",
}


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"ALERTMANAGER_WEBHOOK_URL": "http://127.0.0.1:9/hook"},
        {"ALERTMANAGER_SLACK_WEBHOOK_URL": "https://hooks.slack.com/x"},
        FULL_ENV,
    ],
    ids=["no-receiver", "webhook", "slack", "all"],
)
def test_rendered_config_passes_amtool(tmp_path: Path, env: dict[str, str]) -> None:
    config = render_alertmanager_config(tmp_path, env)
    assert config.stat().st_mode & 0o777 == 0o600
    result = run(amtool(), "check-config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "3 receivers" in result.stdout and "8 inhibit rules" in result.stdout


def test_rendered_values_arrive_intact(tmp_path: Path) -> None:
    config = load_yaml(render_alertmanager_config(tmp_path, FULL_ENV))
    assert config["global"]["smtp_auth_password"] == FULL_ENV["ALERTMANAGER_SMTP_AUTH_PASSWORD"]
    assert config["global"]["smtp_require_tls"] is True
    assert config["global"]["slack_api_url"] == FULL_ENV["ALERTMANAGER_SLACK_WEBHOOK_URL"]
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert receivers["citadel-pager"]["webhook_configs"][0]["url"] == FULL_ENV["ALERTMANAGER_WEBHOOK_URL"]
    assert receivers["citadel-team"]["email_configs"][0]["to"] == FULL_ENV["ALERTMANAGER_EMAIL_TO"]
    assert receivers["citadel-team"]["slack_configs"][0]["channel"] == "#citadel-ops"
    assert receivers["citadel-low"]["slack_configs"][0]["channel"] == "#citadel-info"  # the default


def test_unconfigured_receivers_are_left_out(tmp_path: Path) -> None:
    config = load_yaml(render_alertmanager_config(tmp_path, {"ALERTMANAGER_WEBHOOK_URL": "http://127.0.0.1:9/hook"}))
    assert "smtp_smarthost" not in config["global"] and "slack_api_url" not in config["global"]
    assert [sorted(r) for r in config["receivers"]] == [["name", "webhook_configs"], ["name"], ["name"]]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ALERTMANAGER_SMTP_SMARTHOST": "smtp.example.com:25"}, "ALERTMANAGER_SMTP_FROM is not set"),
        (
            {"ALERTMANAGER_SMTP_SMARTHOST": "smtp.example.com:25", "ALERTMANAGER_SMTP_FROM": "a@example.com",
             "ALERTMANAGER_SMTP_AUTH_USERNAME": "a"},
            "ALERTMANAGER_SMTP_AUTH_PASSWORD is not set",
        ),
        ({"ALERTMANAGER_SMTP_REQUIRE_TLS": "yes"}, "must be true or false"),
    ],
)
def test_render_refuses_incomplete_settings(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        render_alertmanager_config(tmp_path, env)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=critical"], "citadel-pager,citadel-team"),
        (["severity=warning"], "citadel-team"),
        (["severity=info"], "citadel-low"),
        (["alertname=SomethingElse"], "citadel-team"),
    ],
)
def test_each_severity_reaches_its_receivers(tmp_path: Path, labels: list[str], receivers: str) -> None:
    config = render_alertmanager_config(tmp_path, FULL_ENV)
    result = run(amtool(), "config", "routes", "test", f"--config.file={config}", f"--verify.receivers={receivers}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


# ---------------------------------------------------------------------------------------------- Grafana


def test_dashboards_are_well_formed() -> None:
    assert [path.name for path in DASHBOARDS] == ["citadel-engine.json", "citadel-service.json"]
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        assert dashboard["schemaVersion"] >= 36, path.name
        panels = list(dashboard_panels(dashboard))
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels:
            if panel["type"] == "row":
                continue
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        for variable in dashboard["templating"]["list"]:
            assert variable["datasource"]["uid"] == DATASOURCE_UID
    assert len(uids) == len(DASHBOARDS)


def test_every_panel_query_parses(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 30
    checks = [{"record": f"panel:query_{i}:check", "expr": expr} for i, (_, expr) in enumerate(queries)]
    rules = {"groups": [{"name": "panels", "rules": checks}]}
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool(), "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr + "\n".join(f"{i}: {w}" for i, (w, _) in enumerate(queries))
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_panel_queries_put_in_grafanas_variables() -> None:
    dashboard = {
        "templating": {"list": [{"name": "collection"}]},
        "panels": [{"type": "row", "title": "r", "panels": [{"title": "p", "targets": [
            {"expr": 'increase(x{collection=~"$collection"}[$__range]) / rate(y{c=~"${collection}"}[$__rate_interval]) + z[$__interval]'},
            {"expr": 'label_replace(v, "a", "$1", "b", "(.*)") + w{d="$unknown"}'},
        ]}]}],
    }
    assert panel_queries(dashboard) == [
        ("p", 'increase(x{collection=~".*"}[1h]) / rate(y{c=~".*"}[1m]) + z[15s]'),
        ("p", 'label_replace(v, "a", "$1", "b", "(.*)") + w{d="$unknown"}'),
    ]


def test_grafana_provisioning_points_at_the_dashboards_and_the_data_source() -> None:
    provisioning = MONITORING / "grafana" / "provisioning"
    datasource = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"][0]
    assert (datasource["uid"], datasource["type"], datasource["url"]) == (DATASOURCE_UID, "prometheus", "${PROMETHEUS_URL}")
    provider = load_yaml(provisioning / "dashboards" / "citadel.yml")["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/var/lib/grafana/dashboards")


# ---------------------------------------------------------------------------------------------- the servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for(what: str, check: Any, timeout: float = 45.0) -> Any:
    """``check()``'s first truthy answer, polled; a failure says what never happened."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # not listening yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what} did not happen within {timeout}s (last: {last!r})")


@contextmanager
def running(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def http_server(host: str, on_request: Any) -> Iterator[int]:
    """A small HTTP server on ``host``: ``on_request(method, path, headers, body)`` gives (status, body)."""

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, text = on_request(self.command, self.path, dict(self.headers), body)
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_scrapes_the_api_with_its_key_and_readable_instances(tmp_path: Path) -> None:
    """The shipped config on a real Prometheus: file_sd targets relative to the config, the bearer
    key, `name` as the instance, the host without its port otherwise, `__scheme__` per target, the
    rules loaded and Alertmanager found from its target file."""
    seen: list[tuple[str, str]] = []

    def metrics(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        seen.append((path, headers.get("Authorization", "")))
        return 200, 'citadel_build_info{version="0.0.0",python_version="3.11.2"} 1\n'

    folder = prometheus_copy(tmp_path, example_targets=False)
    config = folder / "prometheus.yml"
    text = config.read_text()
    assert text.count("scrape_interval: 15s") == 1 and text.count("scrape_timeout: 10s") == 2
    config.write_text(text.replace("scrape_interval: 15s", "scrape_interval: 1s").replace("scrape_timeout: 10s", "scrape_timeout: 1s"))
    am_port, web_port = free_port(), free_port()
    with http_server("127.0.0.1", metrics) as named_port, http_server("127.0.0.2", metrics) as plain_port:
        (folder / "targets" / "citadel-api.json").write_text(json.dumps([
            {"targets": [f"127.0.0.1:{named_port}"], "labels": {"name": "api-1", "zone": "a"}},
            {"targets": [f"127.0.0.2:{plain_port}"]},
            {"targets": [f"127.0.0.1:{free_port()}"], "labels": {"name": "api-tls", "__scheme__": "https"}},
        ]))
        (folder / "targets" / "alertmanager.json").write_text(json.dumps([{"targets": [f"127.0.0.1:{am_port}"]}]))
        args = [prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{web_port}"]
        with running(args, tmp_path / "prometheus.log"):
            base = f"http://127.0.0.1:{web_port}"

            def scraped() -> list[dict[str, Any]] | None:
                targets = get_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
                api = [t for t in targets if t["labels"]["job"] == "citadel-api"]
                return api if sum(t["health"] == "up" for t in api) == 2 else None

            api = {t["labels"]["instance"]: t for t in wait_for("two API targets scraped", scraped)}
            assert set(api) == {"api-1", "127.0.0.2", "api-tls"}
            assert api["api-1"]["labels"] == {"instance": "api-1", "job": "citadel-api", "zone": "a"}
            assert api["api-1"]["scrapeUrl"] == f"http://127.0.0.1:{named_port}/metrics"
            assert api["127.0.0.2"]["scrapeUrl"] == f"http://127.0.0.2:{plain_port}/metrics"
            assert api["api-tls"]["scrapeUrl"].startswith("https://127.0.0.1:")
            assert ("/metrics", "Bearer ctd_test_key") in seen
            assert {auth for _, auth in seen} == {"Bearer ctd_test_key"}

            managers = get_json(f"{base}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
            assert [m["url"] for m in managers] == [f"http://127.0.0.1:{am_port}/api/v2/alerts"]
            groups = {g["name"] for g in get_json(f"{base}/api/v1/rules")["data"]["groups"]}
            assert {"citadel-http", "citadel-api", "citadel-indexing", "citadel-host"} <= groups


def test_alertmanager_inhibits_consequences_and_pages_the_cause(tmp_path: Path) -> None:
    deliveries: list[dict[str, Any]] = []

    def hook(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        deliveries.append(json.loads(body))
        return 200, "ok"

    with http_server("127.0.0.1", hook) as hook_port:
        config = render_alertmanager_config(tmp_path, {"ALERTMANAGER_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook"})
        port = free_port()
        args = [alertmanager_binary(), f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
        with running(args, tmp_path / "alertmanager.log"):
            base = f"http://127.0.0.1:{port}"
            wait_for("Alertmanager ready", lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200)
            alerts = {
                "api-down": {"alertname": "CitadelApiDown", "severity": "critical", "component": "api", "instance": "api-1"},
                "api-slow": {"alertname": "CitadelApiHighLatency", "severity": "warning", "component": "api", "route": "/api/v1/search"},
                "embedder-down": {"alertname": "CitadelDependencyDown", "severity": "critical", "component": "dependency",
                                  "dependency": "embedder", "instance": "api-1"},
                "embedding-errors": {"alertname": "CitadelEmbeddingErrors", "severity": "critical", "component": "embedding",
                                     "server": "ollama-1:11434", "model": "nomic-embed-text"},
                "disk-critical": {"alertname": "CitadelDiskSpaceLow", "severity": "critical", "component": "host", "instance": "db",
                                  "mountpoint": "/"},
                "disk-warning": {"alertname": "CitadelDiskSpaceLow", "severity": "warning", "component": "host", "instance": "db",
                                 "mountpoint": "/"},
                "other-disk": {"alertname": "CitadelDiskSpaceLow", "severity": "warning", "component": "host", "instance": "db",
                               "mountpoint": "/data"},
                "index-failing": {"alertname": "CitadelIndexRunsFailing", "severity": "warning", "component": "indexing",
                                  "collection": "documents"},
                "no-worker": {"alertname": "CitadelPrefectWorkPoolNoWorker", "severity": "critical", "component": "prefect",
                              "work_pool": "citadel"},
                "late": {"alertname": "CitadelFlowRunsLate", "severity": "warning", "component": "prefect", "deployment": "nightly"},
            }
            now = datetime.now(UTC)
            body = json.dumps([
                {"labels": labels, "annotations": {"summary": key}, "startsAt": now.isoformat(),
                 "endsAt": (now + timedelta(minutes=10)).isoformat()}
                for key, labels in alerts.items()
            ]).encode()
            request = urllib.request.Request(f"{base}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200

            # index-failing follows from the embedder being down too; other-disk is another mount point.
            expected = {"api-slow", "embedding-errors", "index-failing", "disk-warning", "late"}

            def held_back() -> set[str] | None:
                got = {a["annotations"]["summary"]: bool(a["status"]["inhibitedBy"]) for a in get_json(f"{base}/api/v2/alerts")}
                held = {key for key, inhibited in got.items() if inhibited}
                # Alertmanager marks an alert inhibited when its group is first flushed (after
                # group_wait), not when it is received: wait for the marks, never for fewer.
                return held if len(got) == len(alerts) and held >= expected else None

            held = wait_for("the inhibitions of the alerts received", held_back)
            assert held == expected

            def paged() -> set[str] | None:
                names = {a["labels"]["alertname"] for d in deliveries if d["receiver"] == "citadel-pager" for a in d["alerts"]}
                return names if len(names) >= 4 else None

            wait_for("the pages", paged, timeout=60)
            time.sleep(2)  # a page that must not come would have come with the others, after the same group_wait
            names = {a["labels"]["alertname"] for d in deliveries if d["receiver"] == "citadel-pager" for a in d["alerts"]}
            assert names == {"CitadelApiDown", "CitadelDependencyDown", "CitadelDiskSpaceLow", "CitadelPrefectWorkPoolNoWorker"}
            for delivery in deliveries:
                assert {a["labels"]["severity"] for a in delivery["alerts"]} == {"critical"}
