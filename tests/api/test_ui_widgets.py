"""The dashboard config a key gets lists only the widgets whose sources that key can read."""

from __future__ import annotations

import asyncio

import pytest

from citadel.apikeys import ApiKeys
from citadel.registry import Registry
from tests.api.conftest import Api

DASHBOARDS = ("main", "embeddings", "workflows")


async def create_key(api: Api, scopes: list[str]) -> str:
    registry = Registry(api.settings.registry_url)
    await registry.init()
    try:
        return (await ApiKeys(registry).create("test-ui-metrics-only", scopes, collections="*")).key
    finally:
        await registry.aclose()


@pytest.fixture(scope="module")
def metrics_key(embedded_api: Api) -> str:
    return asyncio.run(create_key(embedded_api, ["metrics"]))


def widgets(api: Api, key: str, dashboard: str) -> list[dict[str, str]]:
    with api.client(headers={"X-API-Key": key}) as client:
        answer = client.get("/api/v1/ui/dashboard/config", params={"dashboard_type": dashboard})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["config"]["widgets"])


@pytest.mark.parametrize("dashboard", DASHBOARDS)
def test_a_metrics_only_key_is_given_only_widgets_it_can_read(embedded_api: Api, metrics_key: str, dashboard: str) -> None:
    given = widgets(embedded_api, metrics_key, dashboard)
    with embedded_api.client(headers={"X-API-Key": metrics_key}) as client:
        refused = {widget["id"]: status for widget in given if (status := client.get(widget["source"]).status_code) in (401, 403)}
    assert refused == {}
    assert "workflows" not in {widget["id"] for widget in given}


def test_a_key_with_every_scope_gets_every_widget(embedded_api: Api, metrics_key: str) -> None:
    full = {dashboard: [w["id"] for w in widgets(embedded_api, embedded_api.keys["admin"], dashboard)] for dashboard in DASHBOARDS}
    assert full == {
        "main": ["health", "system", "embedding-performance", "embeddings", "workflows"],
        "embeddings": ["embedding-performance", "embeddings"],
        "workflows": ["workflows"],
    }
    assert [w["id"] for w in widgets(embedded_api, metrics_key, "main")] == ["health", "system", "embedding-performance", "embeddings"]
    assert widgets(embedded_api, metrics_key, "workflows") == []
