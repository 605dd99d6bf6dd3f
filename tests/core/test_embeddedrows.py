"""An embedded store written as rows of its own files: what qdrant-client later loads is exactly what
its own writes would have left, and the store is not loaded until something searches it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from citadel.errors import ConfigurationError
from citadel.store import VectorStore, close_local_clients, local_client, localclients
from citadel.store.lexical import LEXICAL_VECTOR
from tests.support.qdrant_server import store_held_by_another_process

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

DIMS = 8
MODEL = "rows-model"


@pytest.fixture(autouse=True)
def _closed_after() -> Iterator[None]:
    yield
    close_local_clients()


def ids(*numbers: int) -> list[str]:
    return [str(uuid.UUID(int=n + 1)) for n in numbers]


def loaded(path: Path) -> bool:
    return str(path.resolve()) in localclients.LOCAL_CLIENTS


async def write_the_same(store: VectorStore, name: str) -> None:
    """One index run's worth of operations: create, upsert, overwrite, delete."""
    rng = np.random.default_rng(11)
    await store.ensure_collection(name, DIMS, MODEL)
    vectors = rng.standard_normal((30, DIMS)).astype(np.float32)
    payloads = [{"document_id": f"d{n % 7}", "chunk_index": n, "text": f"chunk {n} é", "tags": ["a", n]} for n in range(30)]
    await store.upsert(name, ids(*range(30)), vectors, payloads)
    await store.upsert(name, ids(3), vectors[4:5], [{"document_id": "d3", "chunk_index": 3, "text": "rewritten"}])
    await store.delete(name, ids(5, 6, 99))


def everything(client: QdrantClient, name: str) -> dict[str, tuple[dict, list[float], Any]]:
    """Each point's payload, dense vector and lexical vector (indices and values)."""
    points, _ = client.scroll(name, limit=1000, with_payload=True, with_vectors=True)
    found = {}
    for p in points:
        vectors = p.vector if isinstance(p.vector, dict) else {"": p.vector}
        lexical = vectors.get(LEXICAL_VECTOR)
        found[str(p.id)] = (p.payload or {}, list(vectors[""]), lexical and (lexical.indices, lexical.values))
    return found


async def test_rows_load_exactly_as_the_clients_own_writes(tmp_path: Path) -> None:
    """Same operations through the rows and through qdrant-client: the stores load the same points,
    payloads, vectors and search answers, and the rows were written without loading anything."""
    by_rows = VectorStore.connect(url=None, api_key=None, path=tmp_path / "rows", batch_size=7)
    by_client = VectorStore(local_client(tmp_path / "client"), batch_size=7)
    await write_the_same(by_rows, "c")
    await write_the_same(by_client, "c")
    assert not loaded(tmp_path / "rows"), "an index run's operations never load the store"
    assert await by_rows.count("c") == await by_client.count("c") == 28
    assert await by_rows.present("c", ids(0, 5, 3)) == set(ids(0, 3))
    assert await by_rows.point_ids("c") == await by_client.point_ids("c") == set(ids(*range(30))) - set(ids(5, 6))
    assert await by_rows.point_ids("missing") == set()
    reused = await by_rows.retrieve_vectors("c", ids(3, 5))
    assert set(reused) == set(ids(3))
    close_local_clients()

    first, second = QdrantClient(path=str(tmp_path / "rows")), QdrantClient(path=str(tmp_path / "client"))
    try:
        assert first.get_collection("c").config == second.get_collection("c").config
        one, other = everything(first, "c"), everything(second, "c")
        assert one.keys() == other.keys() and len(one) == 28
        for pid, (payload, vector, lexical) in one.items():
            assert payload == other[pid][0]
            np.testing.assert_allclose(vector, other[pid][1], atol=1e-6)
            assert lexical == other[pid][2] and lexical is not None and lexical[0], "the same words, the same weights"
        assert one[ids(3)[0]][0]["text"] == "rewritten"
        query = np.random.default_rng(5).standard_normal(DIMS).tolist()
        hits = [(p.id, round(p.score, 5)) for p in first.query_points("c", query=query, limit=10).points]
        assert hits == [(p.id, round(p.score, 5)) for p in second.query_points("c", query=query, limit=10).points]
        np.testing.assert_allclose(np.linalg.norm(reused[ids(3)[0]]), np.linalg.norm(np.asarray(one[ids(3)[0]][1])), rtol=1e-3)
    finally:
        first.close()
        second.close()


async def test_a_search_loads_what_the_rows_hold_and_later_writes_go_to_the_loaded_store(tmp_path: Path) -> None:
    path = tmp_path / "q"
    store = VectorStore.connect(url=None, api_key=None, path=path)
    await store.ensure_collection("c", DIMS, MODEL)
    axis = np.eye(DIMS, dtype=np.float32)
    await store.upsert("c", ids(0, 1), axis[:2], [{"n": 0}, {"n": 1}])
    assert not loaded(path)
    (hit,) = await store.search("c", axis[1].tolist(), limit=1)
    assert loaded(path) and hit.payload == {"n": 1}
    await store.upsert("c", ids(2), axis[2:3], [{"n": 2}])
    await store.delete("c", ids(0))
    assert await store.count("c") == 2
    close_local_clients()
    again = VectorStore.connect(url=None, api_key=None, path=path)
    assert await again.count("c") == 2 and await again.present("c", ids(0, 1, 2)) == set(ids(1, 2))


async def test_rows_written_through_an_alias_reach_its_collection(tmp_path: Path) -> None:
    path = tmp_path / "q"
    client = local_client(path)
    client.create_collection(
        "blue", vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE), metadata={"model": MODEL}
    )
    client.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="blue", alias_name="docs")),
    ])
    close_local_clients()
    store = VectorStore.connect(url=None, api_key=None, path=path)
    await store.ensure_collection("docs", DIMS, MODEL)
    await store.upsert("docs", ids(0), np.ones((1, DIMS), dtype=np.float32), [{"n": 0}])
    assert not loaded(path)
    assert await store.count("docs") == await store.count("blue") == 1
    assert [hit.id for hit in await store.search("blue", [1.0] * DIMS)] == ids(0)


async def test_a_vector_of_another_size_is_refused_and_nothing_of_its_batch_is_written(tmp_path: Path) -> None:
    store = VectorStore.connect(url=None, api_key=None, path=tmp_path / "q")
    await store.ensure_collection("c", DIMS, MODEL)
    with pytest.raises(ConfigurationError, match="a vector of 3 dimensions cannot go into 'c', which holds 8"):
        await store.upsert("c", ids(0, 1), [[1.0] * DIMS, [1.0, 2.0, 3.0]], [{}, {}])
    assert await store.count("c") == 0


async def test_a_store_another_process_holds_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "q"
    local_client(path)
    close_local_clients()
    with store_held_by_another_process(path) as holder:
        with pytest.raises(ConfigurationError, match=rf"in use by process {holder.pid}\b.*CITADEL_QDRANT_URL"):
            VectorStore.connect(url=None, api_key=None, path=path)
    store = VectorStore.connect(url=None, api_key=None, path=path)  # free again once it is gone
    await store.ensure_collection("c", DIMS, MODEL)


def _layout_changed(what: str) -> str:
    import importlib.metadata

    version = importlib.metadata.version("qdrant-client")
    return (
        f"qdrant-client {version} no longer lays out its embedded store as citadel/store/embeddedlayout.py assumes: {what}. "
        "The probe, the rows writer and the backups read these files directly: update that module (and this test) to the "
        "new layout, or pin the qdrant-client release it was written for"
    )


def test_the_installed_qdrant_client_lays_out_the_embedded_store_as_the_layout_module_assumes(tmp_path: Path) -> None:
    """A real embedded store, made and written by the installed qdrant-client, read back through
    :mod:`citadel.store.embeddedlayout` alone: its lock, ``meta.json``, folders, table, keys and rows."""
    from qdrant_client.local import persistence

    from citadel.store import embeddedlayout as layout

    root = tmp_path / "store"
    points = layout.client_points()
    assert points is not None, _layout_changed(
        f"its local persistence keeps points in {persistence.STORAGE_FILE_NAME!r} (expected {layout.EMBEDDED_STORAGE_FILE!r}) "
        "or keys them otherwise than the id pickled (protocol 4) in base64"
    )
    wanted = {points.normalize_id(pid): [0.5, -0.25, 1.0, 0.125] for pid in [*ids(0, 1), 7]}
    client = QdrantClient(path=str(root))
    try:
        client.create_collection(
            "blue", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE), metadata={"model": MODEL}
        )
        client.upsert("blue", points=[models.PointStruct(id=pid, vector=v, payload={"n": str(pid)}) for pid, v in wanted.items()])
        client.update_collection_aliases(change_aliases_operations=[
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="blue", alias_name="docs")),
        ])
        assert layout.lock_file(root).is_file(), _layout_changed(f"no lock file {layout.EMBEDDED_LOCK_FILE!r} in the store's folder")
        with open(layout.lock_file(root), "r+") as handle:
            assert not layout.try_lock(handle), _layout_changed("the open client holds no exclusive flock on the lock file")

        try:
            meta = layout.read_embedded_meta(root)
        except (OSError, ValueError) as exc:
            shape = "{'collections': {...}, 'aliases': {...}}"
            pytest.fail(_layout_changed(f"{layout.EMBEDDED_META_FILE} does not read as {shape} ({exc})"))
        assert meta is not None, _layout_changed(f"no {layout.EMBEDDED_META_FILE} in the store's folder")
        assert meta.collection("docs") == layout.EmbeddedCollection("blue", 4, MODEL), _layout_changed(
            f"{layout.EMBEDDED_META_FILE} does not name the collection, its alias, vectors.size and metadata.model as expected: "
            f"{meta.raw}"
        )

        storage = layout.embedded_storage_file(root, "blue")
        assert storage is not None and storage.is_file(), _layout_changed(
            f"no {layout.EMBEDDED_COLLECTIONS_DIR}/<name>/{layout.EMBEDDED_STORAGE_FILE} for the collection"
        )
        database = layout.open_read_only(storage)
        try:
            columns = [(row[1], row[2]) for row in database.execute(f"PRAGMA table_info({layout.POINTS_TABLE})")]
            assert columns == [("id", "TEXT"), ("point", "BLOB")], _layout_changed(
                f"the table {layout.POINTS_TABLE!r} has the columns {columns}, not id TEXT and point BLOB"
            )
            assert layout.count_rows(database) == len(wanted), _layout_changed("a point is not one row")
            keys = {layout.storage_key(pid): pid for pid in wanted}
            assert layout.present_keys(database, list(keys)) == set(keys), _layout_changed("rows are keyed otherwise")
            assert {layout.key_id(key) for key in layout.all_keys(database)} == set(wanted), _layout_changed("a key is not its id")
            for key, blob in layout.point_rows(database, list(keys)):
                point = layout.point_of(blob)
                vector = point.vector.get("") if isinstance(point.vector, dict) else point.vector
                assert isinstance(point, points.point_type) and point.payload == {"n": str(keys[key])}, _layout_changed(
                    f"a row is not the pickled PointStruct with its payload: {point!r}"
                )
                np.testing.assert_allclose(vector, wanted[keys[key]], err_msg=_layout_changed("a row's vector is not the point's"))
        finally:
            database.close()
    finally:
        client.close()
    with open(layout.lock_file(root), "r+") as handle:
        assert layout.try_lock(handle), _layout_changed("a closed client keeps the lock file locked")
        layout.unlock(handle)
