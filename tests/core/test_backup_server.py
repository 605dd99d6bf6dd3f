"""Backups of a Qdrant server: the test server's snapshot API answers as Qdrant's does, and the
drill (index with a blue-green alias, back up, destroy, restore) brings back the same collections,
aliases, counts and top hits on a real Postgres registry, with nothing left on the server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from typer.testing import CliRunner

from citadel.testing.corpus import write_corpus
from citadel.testing.postgres import admin_execute
from cli.main import app
from tests.support.debian import ensure_debian_package
from tests.support.qdrant_server import QdrantTestServer

API_KEY = "test-key-" + uuid.uuid4().hex[:8]
QUERIES = ("vector cache latency", "postgres registry payload", "retry worker schedule deployment")
runner = CliRunner()
# The servers here are plain HTTP on loopback, with an API key to prove it is sent.
pytestmark = [pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection"), pytest.mark.system]


def invoke(*args: str | Path) -> Any:
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)


def _client(server: QdrantTestServer) -> QdrantClient:
    return QdrantClient(url=server.url, api_key=API_KEY)


def _api(server: QdrantTestServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"api-key": API_KEY}, timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[QdrantTestServer]:
    with QdrantTestServer(tmp_path / "qdrant", api_key=API_KEY) as running:
        yield running


def _fill(client: QdrantClient, name: str, count: int = 40, dims: int = 8) -> None:
    client.create_collection(
        name, vectors_config=models.VectorParams(size=dims, distance=models.Distance.COSINE),
        metadata={"model": "test-model", "dimensions": dims, "created_by": "citadel"},
    )
    client.create_payload_index(name, "document_id", models.PayloadSchemaType.KEYWORD)
    rng = np.random.default_rng(3)
    client.upsert(name, points=[
        models.PointStruct(id=str(uuid.UUID(int=i + 1)), vector=rng.standard_normal(dims).tolist(),
                           payload={"document_id": f"doc-{i % 5}", "text": f"chunk {i}"})
        for i in range(count)
    ])


def _everything(client: QdrantClient, name: str) -> tuple[Any, ...]:
    """A collection as a client sees it: config, payload indexes, every point with its vector, and the top hits."""
    info = client.get_collection(name)
    points, _ = client.scroll(name, limit=1000, with_vectors=True)
    hits = client.query_points(name, query=[0.3, -0.1, 0.5, 0.2, -0.7, 0.1, 0.0, 0.4], limit=10).points
    schema = {field: (index.data_type, index.points) for field, index in info.payload_schema.items()}
    return (info.config.params.vectors, info.config.metadata, schema, info.points_count,
            sorted((str(p.id), p.vector, p.payload) for p in points), [(p.id, p.score) for p in hits])


def _flip_inside(data: bytes, marker: bytes) -> bytes:
    """``data`` with one byte flipped inside the points (not in the tar's padding)."""
    at = data.index(marker) + 2
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def test_snapshots_round_trip_exactly_and_refuse_what_qdrant_refuses(server: QdrantTestServer, tmp_path: Path) -> None:
    client = _client(server)
    _fill(client, "source")
    before = _everything(client, "source")

    made = client.create_snapshot("source")
    assert made is not None and made.name.startswith(f"source-{server.app.peer_id if server.app else ''}-")
    assert made.name.endswith(".snapshot") and made.size > 0 and made.checksum and len(made.checksum) == 64
    assert client.list_snapshots("source") == [made]
    with _api(server) as api:
        data = api.get(f"/collections/source/snapshots/{made.name}").content
        assert len(data) == made.size
        assert hashlib.sha256(data).hexdigest() == made.checksum

        # Upload into a new collection: the same config, metadata, indexes, points, vectors and scores.
        uploaded = api.post("/collections/copy/snapshots/upload", params={"priority": "snapshot", "checksum": made.checksum},
                            files={"snapshot": ("copy.snapshot", data)})
        assert uploaded.status_code == 200 and uploaded.json()["result"] is True and uploaded.json()["status"] == "ok"
        assert _everything(client, "copy") == before
        # As Qdrant does, the uploaded file stays among the collection's snapshots (without a checksum file).
        assert [(s.name, s.size, s.checksum) for s in client.list_snapshots("copy")] == [("copy.snapshot", len(data), None)]
        assert client.delete_snapshot("copy", "copy.snapshot") is True and client.list_snapshots("copy") == []

        # Recover into an existing collection: its points become the snapshot's; its config and aliases stay.
        client.upsert("copy", points=[models.PointStruct(id=str(uuid.UUID(int=999)), vector=[1.0] * 8, payload={})])
        client.update_collection_aliases(change_aliases_operations=[
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="copy", alias_name="copy_live"))])
        snapshots_dir = server.path / "snapshots" / "source"
        assert client.recover_snapshot("copy_live", f"file://{snapshots_dir / made.name}") is True
        assert _everything(client, "copy") == before and client.count("copy_live").count == 40

        # What Qdrant refuses.
        def error(answer: httpx.Response) -> tuple[int, str]:
            return answer.status_code, answer.json()["status"]["error"]

        damaged = _flip_inside(data, b'"payload"')
        assert error(api.post("/collections/bad/snapshots/upload", files={"snapshot": ("bad.snapshot", damaged)})) == (
            500, "Service internal error: the snapshot is damaged: its points do not match their checksum")
        assert error(api.post("/collections/bad/snapshots/upload", files={"snapshot": ("x.snapshot", b"not a tar" * 200)})) == (
            500, "Service internal error: File IO error: failed to iterate over archive")
        assert not client.collection_exists("bad")
        mismatch = api.post("/collections/bad/snapshots/upload", params={"checksum": "0" * 64}, files={"snapshot": ("x.snapshot", data)})
        assert mismatch.status_code == 400 and mismatch.json()["status"]["error"].startswith("Checksum mismatch: expected ")
        missing = api.post("/collections/bad/snapshots/upload", files={"file": ("x.snapshot", data)})
        assert (missing.status_code, missing.text) == (400, "Missing field `snapshot`")
        client.create_collection("other_size", vectors_config=models.VectorParams(size=3, distance=models.Distance.COSINE))
        status, message = error(api.post("/collections/other_size/snapshots/upload", files={"snapshot": ("o.snapshot", data)}))
        assert status == 400 and message.startswith("Wrong input: Snapshot is not compatible with existing collection")
        assert error(api.get("/collections/source/snapshots/nothing.snapshot")) == (404, "Not found: Snapshot nothing.snapshot not found")
        assert error(api.get("/collections/nowhere/snapshots")) == (404, "Not found: Collection `nowhere` doesn't exist!")
        assert error(api.put("/collections/c/snapshots/recover", json={"location": "file:///etc/passwd"})) == (
            403, 'Forbidden: Snapshot file "/etc/passwd" must be inside snapshots directory')
        accepted = api.post("/collections/source/snapshots", params={"wait": "false"})
        assert accepted.status_code == 202 and accepted.json()["status"] == "accepted"
    # Recover from a URL, with the API key the request carries; the download is not kept.
    assert client.recover_snapshot("fetched", f"{server.url}/collections/source/snapshots/{made.name}", api_key=API_KEY) is True
    assert _everything(client, "fetched") == before
    assert not any((server.path / "snapshots" / ".downloads").iterdir())
    # Without the key, nothing but the probes answers.
    assert httpx.get(f"{server.url}/collections/source/snapshots").status_code == 401
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    client.close()


# --- the drill -----------------------------------------------------------------------------------


@pytest.fixture
def database(data_dir: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Postgres database of the drill's own, as CITADEL_DATABASE_URL."""
    ensure_debian_package("pg_dump", "postgresql-client")
    name = f"citadel_backup_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_execute(f"CREATE DATABASE {name}", postgres_url))
    monkeypatch.setenv("CITADEL_DATABASE_URL", postgres_url.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield name
    finally:
        asyncio.run(admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", postgres_url))


def _state(server: QdrantTestServer, collection: str) -> dict[str, Any]:
    """What the drill compares: per collection the registry's and the store's counts, the
    aliases, the versions, the collections' metadata, and the top 5 hits of each query."""
    status = invoke("status", "--json")
    assert status.exit_code == 0, status.output
    counts = sorted((c["collection"], c["documents"], c["chunks"], c["vectors"]) for c in json.loads(status.stdout)["collections"])
    versions = invoke("collection", "list", collection, "--json")
    assert versions.exit_code == 0, versions.output
    hits = {}
    for query in QUERIES:
        found = invoke("search", query, "--collection", collection, "--limit", "5", "--json")
        assert found.exit_code == 0, found.output
        hits[query] = [(hit["id"], hit["score"]) for hit in json.loads(found.stdout)]
    with _api(server) as api:
        aliases = {a["alias_name"]: a["collection_name"] for a in api.get("/aliases").json()["result"]["aliases"]}
        names = sorted(c["name"] for c in api.get("/collections").json()["result"]["collections"])
        metadata = {name: api.get(f"/collections/{name}").json()["result"]["config"].get("metadata") for name in names}
    return {"counts": counts, "versions": json.loads(versions.stdout), "hits": hits, "aliases": aliases, "metadata": metadata}


def _snapshots_left(server: QdrantTestServer) -> list[str]:
    """Snapshot files the server keeps (a backup or a restore must leave none behind)."""
    folder = server.path / "snapshots"
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_the_drill_over_a_qdrant_server(
    database: str, postgres_url: str, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = QdrantTestServer(tmp_path / "qdrant-1", api_key=API_KEY).start()
    second: QdrantTestServer | None = None
    try:
        monkeypatch.setenv("CITADEL_QDRANT_URL", first.url)
        monkeypatch.setenv("CITADEL_QDRANT_API_KEY", API_KEY)
        corpus = tmp_path / "corpus"
        write_corpus(corpus, files=6, paragraphs=4)
        for _ in (1, 2):  # two blue-green builds: the alias reads v2, v1 is kept for rollback
            built = invoke("index", corpus, "--collection", collection_name, "--blue-green", "--json")
            assert built.exit_code == 0, built.output
        before = _state(first, collection_name)
        v1, v2 = f"{collection_name}__v1", f"{collection_name}__v2"
        assert before["aliases"] == {collection_name: v2}
        assert [(c[0], c[1]) for c in before["counts"]] == [(v1, 6), (v2, 6)] and before["counts"][0][2] == before["counts"][0][3] > 6
        assert all(len(h) == 5 for h in before["hits"].values())

        backups = tmp_path / "backups"
        made = invoke("backup", "create", "--to", backups, "--json")
        assert made.exit_code == 0, made.output
        summary = json.loads(made.stdout)
        path = Path(summary["path"])
        assert (summary["registry"], summary["vectors"], summary["aliases"]) == ("postgres", "server", {collection_name: v2})
        assert [(c["name"], c["documents"], c["chunks"], c["points"]) for c in summary["collections"]] == [
            (name, documents, chunks, vectors) for name, documents, chunks, vectors in before["counts"]
        ]
        assert sorted(p.name for p in (path / "vectors").iterdir()) == [f"{v1}.snapshot", f"{v2}.snapshot"]
        assert _snapshots_left(first) == []  # each snapshot was deleted on the server once downloaded
        checked = invoke("backup", "verify", path, "--json")
        assert checked.exit_code == 0 and json.loads(checked.stdout)["ok"], checked.output

        # Destroy: a new server on an empty folder, and the registry's database dropped and created again.
        first.stop()
        second = QdrantTestServer(tmp_path / "qdrant-2", api_key=API_KEY).start()
        monkeypatch.setenv("CITADEL_QDRANT_URL", second.url)
        asyncio.run(admin_execute(f"DROP DATABASE {database} WITH (FORCE)", postgres_url))
        asyncio.run(admin_execute(f"CREATE DATABASE {database}", postgres_url))

        restored = invoke("backup", "restore", path, "--json")
        assert restored.exit_code == 0, restored.output
        assert json.loads(restored.stdout)["replaced"] is False
        assert _state(second, collection_name) == before
        assert _snapshots_left(second) == []  # the uploaded copies were deleted after the recovery
        again = invoke("index", corpus, "--collection", collection_name, "--json")
        assert again.exit_code == 0, again.output
        rerun = json.loads(again.stdout)
        assert (rerun["collection"], rerun["chunks_embedded"], rerun["unchanged"], rerun["added"]) == (v2, 0, 6, 0)

        # A forced restore recreates a collection whose configuration changed since the backup
        # (Qdrant alone would keep the changed one): Citadel's model and dimensions come back.
        with _api(second) as api:
            changed = api.patch(f"/collections/{v2}", json={"metadata": {"model": "another-model"}})
            assert changed.status_code == 200, changed.text
        forced = invoke("backup", "restore", path, "--force", "--json")
        assert forced.exit_code == 0, forced.output
        assert json.loads(forced.stdout)["replaced"] is True
        assert _state(second, collection_name) == before and _snapshots_left(second) == []

        # A corrupted snapshot is named by verify, and restore refuses the backup.
        snapshot = path / "vectors" / f"{v1}.snapshot"
        snapshot.write_bytes(_flip_inside(snapshot.read_bytes(), b'"payload"'))
        report = invoke("backup", "verify", path, "--json")
        assert report.exit_code == 1
        assert json.loads(report.stdout)["problems"] == [
            f"vectors/{v1}.snapshot: checksum mismatch (the file changed since the backup, or is corrupt)"
        ]
    finally:
        first.stop()
        if second is not None:
            second.stop()
        shutil.rmtree(tmp_path / "qdrant-1", ignore_errors=True)
