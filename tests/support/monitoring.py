"""What the monitoring tests share: Prometheus's and Alertmanager's tools, the rendered
Alertmanager configuration, and the PromQL of Grafana's dashboards.

The tools come from Debian's ``prometheus`` and ``prometheus-alertmanager`` packages; a missing one
is a failure naming the package (see :mod:`tests.support.debian`), never a skip.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.support.debian import ensure_debian_package

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"

# What Grafana puts in for its own interval variables when the tests check a panel's query.
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def promtool() -> str:
    return ensure_debian_package("promtool", "prometheus")


def prometheus_binary() -> str:
    return ensure_debian_package("prometheus", "prometheus")


def amtool() -> str:
    return ensure_debian_package("amtool", "prometheus-alertmanager")


def alertmanager_binary() -> str:
    return ensure_debian_package("prometheus-alertmanager", "prometheus-alertmanager")


def render_alertmanager_config(dest_dir: Path, env: Mapping[str, str]) -> Path:
    """``dest_dir/alertmanager.yml`` written by ``monitoring/alertmanager/render`` from ``env`` alone
    (and PATH); RuntimeError with the script's message when it refuses."""
    output = dest_dir / "alertmanager.yml"
    result = subprocess.run(
        [str(MONITORING / "alertmanager" / "render"), str(output)],
        env={"PATH": os.environ.get("PATH", os.defpath), **env}, capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"render failed ({result.returncode}): {result.stderr.strip()}")
    return output


def dashboard_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows and the panels of collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every panel target, with Grafana's variables put in the way a
    query reaches Prometheus: the interval variables as in :data:`GRAFANA_INTERVALS`, template
    variables as ``.*`` (what "All" sends). An unknown variable is left as it is, so it fails to parse.
    """
    variables = {variable["name"] for variable in dashboard.get("templating", {}).get("list", [])}

    def put_in(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in GRAFANA_INTERVALS:
            return GRAFANA_INTERVALS[name]
        return ".*" if name in variables else match.group(0)

    return [
        (panel["title"], _VARIABLE.sub(put_in, target["expr"]))
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
