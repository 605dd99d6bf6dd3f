"""Alertmanager rendered with only some receivers configured: every alert still reaches one that is
configured (the others fall back to it), and render says on stderr which receivers are missing.
Checked with amtool's route tests and with a real Alertmanager delivering to a webhook."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.monitoring.test_configs import free_port, get_json, http_server, running, wait_for
from tests.support.monitoring import MONITORING, alertmanager_binary, amtool

pytestmark = pytest.mark.system  # starts Alertmanager (see tests/conftest.py)

PAGER = {"ALERTMANAGER_WEBHOOK_URL": "http://127.0.0.1:9/hook"}
SLACK = {"ALERTMANAGER_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/X"}
EMAIL = {"ALERTMANAGER_EMAIL_TO": "team@example.com", "ALERTMANAGER_SMTP_SMARTHOST": "smtp.example.com:587",
         "ALERTMANAGER_SMTP_FROM": "citadel@example.com"}


def render(tmp_path: Path, env: dict[str, str]) -> tuple[Path, str]:
    """The rendered configuration and what render wrote on stderr."""
    output = tmp_path / "alertmanager.yml"
    result = subprocess.run([str(MONITORING / "alertmanager" / "render"), str(output)],
                            env={"PATH": os.environ.get("PATH", os.defpath), **env}, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return output, result.stderr


def routed(config: Path, *labels: str) -> str:
    result = subprocess.run([amtool(), "config", "routes", "test", f"--config.file={config}", *labels],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("env", "critical", "warning", "info", "unset"),
    [
        (PAGER, "citadel-pager", "citadel-pager", "citadel-pager", {"citadel-team", "citadel-low"}),
        (SLACK, "citadel-team", "citadel-team", "citadel-low", {"citadel-pager"}),
        (EMAIL, "citadel-team", "citadel-team", "citadel-team", {"citadel-pager", "citadel-low"}),
        ({**PAGER, **EMAIL}, "citadel-pager,citadel-team", "citadel-team", "citadel-team", {"citadel-low"}),
        ({**PAGER, **SLACK, **EMAIL}, "citadel-pager,citadel-team", "citadel-team", "citadel-low", set()),
    ],
    ids=["pager", "slack", "email", "pager+email", "all"],
)
def test_every_severity_reaches_a_configured_receiver(
    tmp_path: Path, env: dict[str, str], critical: str, warning: str, info: str, unset: set[str]
) -> None:
    config, stderr = render(tmp_path, env)
    assert routed(config, "severity=critical") == critical
    assert routed(config, "alertname=CitadelDeadLettersGrowing", "severity=warning") == warning
    assert routed(config, "severity=info") == info
    assert routed(config, "alertname=SomethingElse") == warning
    warned = {name for name in ("citadel-pager", "citadel-team", "citadel-low") if f"warning: {name} is not configured" in stderr}
    assert warned == unset, stderr


def test_with_only_the_pager_a_warning_and_an_info_alert_are_delivered(tmp_path: Path) -> None:
    """The operator's case: only ALERTMANAGER_WEBHOOK_URL set, CitadelDeadLettersGrowing (a warning)
    reached no one; now the real Alertmanager delivers it, and an info alert, to the pager."""
    deliveries: list[dict[str, Any]] = []

    def hook(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        deliveries.append(json.loads(body))
        return 200, "ok"

    with http_server("127.0.0.1", hook) as hook_port:
        config, _ = render(tmp_path, {"ALERTMANAGER_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook"})
        text = config.read_text().replace("group_wait: 5m", "group_wait: 1s").replace("group_wait: 30s", "group_wait: 1s")
        config.write_text(text)
        port = free_port()
        args = [alertmanager_binary(), f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
        with running(args, tmp_path / "alertmanager.log"):
            base = f"http://127.0.0.1:{port}"
            wait_for("Alertmanager ready", lambda: get_json(f"{base}/api/v2/status"))
            now = datetime.now(UTC)
            alerts = [
                {"alertname": "CitadelDeadLettersGrowing", "severity": "warning", "component": "indexing", "collection": "documents"},
                {"alertname": "CitadelApiAuthFailures", "severity": "info", "component": "api", "reason": "invalid_key"},
            ]
            body = json.dumps([{"labels": labels, "annotations": {"summary": labels["alertname"]}, "startsAt": now.isoformat(),
                                "endsAt": (now + timedelta(minutes=10)).isoformat()} for labels in alerts]).encode()
            request = urllib.request.Request(f"{base}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200

            def delivered() -> set[str] | None:
                names = {a["labels"]["alertname"] for d in deliveries if d["receiver"] == "citadel-pager" for a in d["alerts"]}
                return names if len(names) == 2 else None

            assert wait_for("both alerts delivered to the pager", delivered, timeout=60) == {
                "CitadelDeadLettersGrowing", "CitadelApiAuthFailures"}
