"""prefect.yaml and the Python catalog of `citadel serve` declare the same deployments."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments.catalog import catalog, load_flow, to_deployments

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def test_prefect_yaml_matches_the_catalog() -> None:
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    by_key = {(d["entrypoint"], d["name"]): d for d in declared}
    specs = catalog()
    assert len(declared) == len(specs)
    for spec in specs:
        entry = by_key[(spec.entrypoint, spec.name)]
        assert load_flow(spec.entrypoint).name == spec.flow_name
        assert entry["work_pool"]["name"] == "citadel"
        assert entry.get("concurrency_limit") == spec.concurrency_limit
        crons = [s["cron"] for s in entry.get("schedules", [])]
        assert crons == ([spec.cron] if spec.cron else [])
        for key, value in spec.parameters.items():
            if key not in ("source", "collection"):  # those two come from the environment in the catalog
                assert entry["parameters"][key] == value


def test_catalog_builds_runner_deployments(monkeypatch) -> None:
    monkeypatch.setenv("CITADEL_NIGHTLY_SOURCE", "/srv/corpus")
    deployments = {d.name + "@" + d.flow_name: d for d in to_deployments()}
    nightly = deployments["nightly@index-corpus"]
    assert nightly.parameters["source"] == "/srv/corpus"
    assert nightly.schedules and nightly.schedules[0].schedule.cron == "0 2 * * *"
    assert len(deployments) == len(catalog())


def test_nightly_source_and_collection_are_read_from_a_dotenv_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CITADEL_NIGHTLY_SOURCE", raising=False)
    monkeypatch.delenv("CITADEL_COLLECTION", raising=False)
    (tmp_path / ".env").write_text("CITADEL_NIGHTLY_SOURCE=/srv/handbook\nCITADEL_COLLECTION=handbook\n")
    monkeypatch.chdir(tmp_path)
    nightly = next(spec for spec in catalog() if spec.full_name == "index-corpus/nightly")
    assert nightly.parameters == {"source": "/srv/handbook", "collection": "handbook"}


def test_every_deployed_parameter_has_a_description_in_the_ui_form() -> None:
    """Prefect's run form shows each parameter's description (from its flow's Args section)."""
    for spec in catalog():
        flow = load_flow(spec.entrypoint)
        missing = [name for name, schema in flow.parameters.properties.items() if not schema.get("description")]
        assert not missing, f"{spec.entrypoint}: no description for {', '.join(missing)}"
    sharded = load_flow("flows/index_sharded.py:index_sharded").parameters.properties
    assert "s3://bucket/prefix" in sharded["source"]["description"]
