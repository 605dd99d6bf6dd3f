"""The cheap looks at a store agree with its client, over REST and from the embedded files."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from citadel.store import embedded_store_holder, probe_embedded, probe_server
from tests.support.qdrant_server import QdrantTestServer, store_held_by_another_process

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

IDS = [str(uuid.uuid4()) for _ in range(40)]


def fill(client: QdrantClient, name: str, ids: list[str]) -> None:
    client.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.upsert(name, points=models.Batch(ids=ids, vectors=[[1.0, 0.5, 0.0, 0.25]] * len(ids)))


def test_the_embedded_files_tell_the_count_and_which_ids_are_there(tmp_path: Path) -> None:
    client = QdrantClient(path=str(tmp_path / "store"))
    try:
        fill(client, "docs", IDS[:30])
        client.delete("docs", points_selector=models.PointIdsList(points=IDS[:5]))
        sample = IDS[:10] + [str(uuid.uuid4())]
        # Read while the client holds the store, as a second process would.
        seen = probe_embedded(tmp_path / "store", "docs", sample)
        assert seen is not None and seen.exists and seen.how == "file"
        assert seen.points == client.count("docs", exact=True).count == 25
        assert seen.present == {str(r.id) for r in client.retrieve("docs", ids=sample)} == set(IDS[5:10])
        missing = probe_embedded(tmp_path / "store", "other", sample)
        assert missing is not None and not missing.exists
    finally:
        client.close()
    assert probe_embedded(tmp_path / "nothing-here", "docs", sample) is not None
    (tmp_path / "store" / "collection" / "docs" / "storage.sqlite").write_bytes(b"not a database")
    assert probe_embedded(tmp_path / "store", "docs", sample) is None, "it cannot tell: the caller opens the store"


async def test_rest_calls_tell_the_count_and_which_ids_are_there(tmp_path: Path) -> None:
    with QdrantTestServer(tmp_path / "server") as server:
        url = server.url
        client = QdrantClient(url=url)
        fill(client, "docs", IDS)
        sample = IDS[35:] + [str(uuid.uuid4())]
        seen = await probe_server(server.url, "key", "docs", sample)
        assert seen is not None and (seen.exists, seen.points, seen.present, seen.how) == (True, 40, frozenset(IDS[35:]), "rest")
        missing = await probe_server(server.url, None, "other", sample)
        assert missing is not None and not missing.exists
        client.close()
    assert await probe_server(url, None, "docs", sample, timeout_s=1) is None, "a server that is gone: cannot tell"


def test_the_process_holding_an_embedded_store_is_named(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert embedded_store_holder(store) is None
    mine = QdrantClient(path=str(store))
    assert embedded_store_holder(store) is None, "this process holding it is no obstacle to itself"
    mine.close()
    with store_held_by_another_process(store) as holder:
        named = embedded_store_holder(store)
        assert named is not None and named.startswith(f"process {holder.pid} (") and "QdrantClient" in named
    assert embedded_store_holder(store) is None
