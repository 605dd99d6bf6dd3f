"""The Qdrant wrapper against a Qdrant REST server by URL (the production path), and the server's protocol.

The server (tests.support.qdrant_server) answers Qdrant's REST API in front of an embedded store;
clients talk to it through ``QdrantClient(url=...)`` over TCP, from this process and from others.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from citadel.errors import CollectionMismatchError, ConfigurationError
from citadel.store import VectorStore
from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process
from tests.support.embedding_server import free_port
from tests.support.qdrant_server import QdrantTestServer, server_version

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

DIMS = 4
MODEL = "test-model"
REPO_ROOT = Path(__file__).resolve().parents[2]
UPSERT = ("PUT", "/collections/{name}/points")


def pid(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


def unit(*values: float) -> list[float]:
    vector = np.asarray(values, dtype=np.float32)
    return (vector / np.linalg.norm(vector)).tolist()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QdrantTestServer]:
    """One in-process server for the module; tests keep apart by unique collection names."""
    with QdrantTestServer(tmp_path_factory.mktemp("qdrant-server")) as running:
        yield running


@pytest.fixture
def store(server: QdrantTestServer, tmp_path: Path) -> Iterator[VectorStore]:
    vector_store = VectorStore.connect(url=server.url, api_key=None, path=tmp_path / "unused", batch_size=5)
    yield vector_store
    vector_store.client.close()


@pytest.fixture
def raw(server: QdrantTestServer) -> Iterator[QdrantClient]:
    client = QdrantClient(url=server.url)
    yield client
    client.close()


def _points(count: int, *, offset: int = 0) -> tuple[list[str], list[list[float]], list[dict]]:
    rng = np.random.default_rng(offset)
    ids = [pid(offset + i) for i in range(count)]
    vectors = [unit(*rng.standard_normal(DIMS)) for _ in range(count)]
    payloads = [
        {"document_id": f"doc-{(offset + i) % 3}", "chunk_index": i, "text": f"chunk {offset + i}"}
        for i in range(count)
    ]
    return ids, vectors, payloads


# the protocol ------------------------------------------------------------------------------
def test_service_routes_and_qdrant_error_envelopes(
    server: QdrantTestServer, raw: QdrantClient, collection_name: str
) -> None:
    """Version and probes answer as Qdrant does; bad requests get Qdrant's statuses and envelope."""
    root = httpx.get(server.url).json()
    assert root["title"] == "qdrant - vector search engine" and root["version"] == server_version()
    assert raw.info().version == server_version()
    for probe in ("/healthz", "/livez", "/readyz"):
        assert httpx.get(server.url + probe).status_code == 200

    missing = httpx.get(f"{server.url}/collections/{collection_name}")
    assert missing.status_code == 404
    assert missing.json()["status"] == {"error": f"Not found: Collection `{collection_name}` doesn't exist!"}
    assert isinstance(missing.json()["time"], float)

    cosine = models.VectorParams(size=DIMS, distance=models.Distance.COSINE)
    raw.create_collection(collection_name, vectors_config=cosine)
    query_url = f"{server.url}/collections/{collection_name}/points/query"
    malformed = httpx.post(query_url, content=b"{not json")
    assert malformed.status_code == 400 and malformed.json()["status"]["error"].startswith("Format error in JSON body")
    unknown_field = httpx.post(query_url, json={"query": [1.0, 0.0, 0.0, 0.0], "bogus": 1})
    assert unknown_field.status_code == 400
    zero_limit = httpx.post(query_url, json={"query": [1.0, 0.0, 0.0, 0.0], "limit": 0})
    assert zero_limit.status_code == 422
    with pytest.raises(UnexpectedResponse) as wrong_size:
        raw.query_points(collection_name, query=[1.0, 0.0])
    assert wrong_size.value.status_code == 400
    assert "Vector dimension error: expected dim: 4, got 2" in str(wrong_size.value)
    with pytest.raises(UnexpectedResponse) as duplicate:
        raw.create_collection(collection_name, vectors_config=cosine)
    assert duplicate.value.status_code == 409
    with pytest.raises(UnexpectedResponse) as no_collection:
        raw.count(f"{collection_name}_missing")
    assert no_collection.value.status_code == 404

    ok = httpx.post(f"{server.url}/collections/{collection_name}/points/count", json={"exact": True}).json()
    assert ok["status"] == "ok" and ok["result"] == {"count": 0} and isinstance(ok["time"], float)
    assert httpx.get(f"{server.url}/no/such/route").status_code == 404


# VectorStore by URL ------------------------------------------------------------------------
async def test_ensure_collection_records_model_and_creates_payload_indexes(
    store: VectorStore, server: QdrantTestServer, collection_name: str
) -> None:
    """A new collection gets the size, cosine distance, the model in its metadata and keyword indexes."""
    assert store.is_server
    assert not await store.collection_exists(collection_name)
    assert await store.count(collection_name) == 0
    await store.ensure_collection(collection_name, DIMS, MODEL)
    assert await store.collection_exists(collection_name)
    info = store.client.get_collection(collection_name)
    assert info.config.params.vectors.size == DIMS
    assert info.config.params.vectors.distance == models.Distance.COSINE
    assert info.config.metadata == {"model": MODEL, "dimensions": DIMS, "created_by": "citadel"}
    assert set(info.payload_schema) == {"document_id", "source"}
    assert all(index.data_type == models.PayloadSchemaType.KEYWORD for index in info.payload_schema.values())

    indexes_before = server.requests[("PUT", "/collections/{name}/index")]
    fresh = VectorStore.connect(url=server.url, api_key=None, path=Path("unused"))
    try:
        await fresh.ensure_collection(collection_name, DIMS, MODEL)  # exists, matches: nothing created again
    finally:
        fresh.client.close()
    assert server.requests[("PUT", "/collections/{name}/index")] == indexes_before


async def test_collection_of_another_size_or_model_is_refused(
    store: VectorStore, server: QdrantTestServer, collection_name: str
) -> None:
    await store.ensure_collection(collection_name, DIMS, MODEL)
    for dims, model, words in ((DIMS * 2, MODEL, "4-dimensional"), (DIMS, "other-model", "built with model")):
        other = VectorStore.connect(url=server.url, api_key=None, path=Path("unused"))
        try:
            with pytest.raises(CollectionMismatchError, match=words):
                await other.ensure_collection(collection_name, dims, model)
        finally:
            other.client.close()


async def test_upsert_is_batched_and_idempotent(
    store: VectorStore, server: QdrantTestServer, collection_name: str
) -> None:
    """Twelve points go in three acknowledged batches; writing them again changes nothing."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    ids, vectors, payloads = _points(12)
    before = server.requests[UPSERT]
    await store.upsert(collection_name, ids, vectors, payloads)
    assert server.requests[UPSERT] - before == 3
    assert await store.count(collection_name) == 12
    await store.upsert(collection_name, ids, vectors, payloads)
    assert await store.count(collection_name) == 12
    await store.upsert(collection_name, [], [], [])
    assert server.requests[UPSERT] - before == 6


async def test_search_limit_threshold_and_filters(store: VectorStore, collection_name: str) -> None:
    await store.ensure_collection(collection_name, DIMS, MODEL)
    vectors = [unit(1, 0, 0, 0), unit(1, 0.2, 0, 0), unit(1, 1, 0, 0), unit(0, 1, 0, 0), unit(0, 0, 1, 0)]
    payloads = [
        {"document_id": "a", "source": "s1", "text": "one", "chunk_index": 0},
        {"document_id": "a", "source": "s1", "text": "two", "chunk_index": 1},
        {"document_id": "b", "source": "s2", "text": "three", "chunk_index": 0},
        {"document_id": "c", "source": "s2", "text": "four", "chunk_index": 0},
        {"document_id": "d", "source": "s3", "text": "five", "chunk_index": 0},
    ]
    ids = [pid(i) for i in range(5)]
    await store.upsert(collection_name, ids, vectors, payloads)

    hits = await store.search(collection_name, unit(1, 0, 0, 0), limit=3)
    assert [hit.id for hit in hits] == ids[:3]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].as_dict()["text"] == "one" and hits[0].as_dict()["document_id"] == "a"

    close = await store.search(collection_name, unit(1, 0, 0, 0), limit=10, score_threshold=0.9)
    assert [hit.id for hit in close] == ids[:2]

    only_b = await store.search(collection_name, unit(1, 0, 0, 0), filters={"document_id": "b"})
    assert [hit.id for hit in only_b] == [ids[2]]
    any_of = await store.search(collection_name, unit(1, 0, 0, 0), filters={"source": ["s2", "s3"]})
    assert {hit.id for hit in any_of} == set(ids[2:])
    both = await store.search(collection_name, unit(1, 0, 0, 0), filters={"source": "s2", "document_id": ["c", "d"]})
    assert [hit.id for hit in both] == [ids[3]]


async def test_delete_by_ids_and_retrieve_vectors(store: VectorStore, collection_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("citadel.store.vectorstore.IDS_PER_DELETE", 20)
    await store.ensure_collection(collection_name, DIMS, MODEL)
    ids, vectors, payloads = _points(23)
    await store.upsert(collection_name, ids, vectors, payloads)

    stored = await store.retrieve_vectors(collection_name, ids[:3] + [pid(999)])
    assert set(stored) == set(ids[:3])
    for point_id, vector in zip(ids[:3], vectors[:3], strict=True):
        assert np.allclose(stored[point_id], vector, atol=1e-6)
    assert await store.retrieve_vectors(collection_name, []) == {}

    await store.delete(collection_name, ids[:21])  # 20 a request: two requests
    assert await store.count(collection_name) == 2
    assert await store.retrieve_vectors(collection_name, ids[:21]) == {}
    assert set(await store.retrieve_vectors(collection_name, ids)) == set(ids[21:])


async def test_missing_collection_search_fails_and_other_calls_are_quiet(
    store: VectorStore, collection_name: str
) -> None:
    with pytest.raises(ConfigurationError, match="does not exist yet"):
        await store.search(collection_name, unit(1, 0, 0, 0))
    assert await store.count(collection_name) == 0
    await store.delete(collection_name, [pid(1)])  # nothing to delete: no error
    await store.ensure_collection(collection_name, DIMS, MODEL)
    await store.delete_collection(collection_name)
    assert not await store.collection_exists(collection_name)
    await store.ensure_collection(collection_name, DIMS, MODEL)  # the cache was dropped: created again
    assert await store.collection_exists(collection_name)


async def test_ensure_collection_tolerates_losing_the_creation_race(
    store: VectorStore, raw: QdrantClient, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers both see no collection; the one that creates it second must not fail."""
    raw.create_collection(
        collection_name,
        vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE),
        metadata={"model": MODEL, "dimensions": DIMS, "created_by": "citadel"},
    )
    monkeypatch.setattr(store.client, "collection_exists", lambda name: False)  # checked before the other created it
    await store.ensure_collection(collection_name, DIMS, MODEL)


# raw client: aliases, scroll, count --------------------------------------------------------
def _make(raw: QdrantClient, name: str, first_id: int, count: int) -> None:
    raw.create_collection(name, vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE))
    raw.upsert(
        name,
        points=[
            models.PointStruct(id=pid(first_id + i), vector=unit(1, i, 0, 0), payload={"home": name, "n": i})
            for i in range(count)
        ],
        wait=True,
    )


def test_aliases_resolve_everywhere_and_swap_atomically(raw: QdrantClient, collection_name: str) -> None:
    blue, green, alias = f"{collection_name}_blue", f"{collection_name}_green", f"{collection_name}_live"
    _make(raw, blue, 0, 3)
    _make(raw, green, 100, 5)
    assert raw.update_collection_aliases(
        change_aliases_operations=[
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=blue, alias_name=alias))
        ]
    )
    assert (alias, blue) in {(a.alias_name, a.collection_name) for a in raw.get_aliases().aliases}
    assert [a.alias_name for a in raw.get_collection_aliases(blue).aliases] == [alias]
    assert raw.collection_exists(alias)
    assert raw.get_collection(alias).points_count == 3
    assert raw.count(alias).count == 3
    hits = raw.query_points(alias, query=unit(1, 0, 0, 0), limit=10).points
    assert {hit.payload["home"] for hit in hits} == {blue}

    raw.update_collection_aliases(
        change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)),
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=green, alias_name=alias)),
        ]
    )
    assert raw.count(alias).count == 5
    assert {r.payload["home"] for r in raw.scroll(alias, limit=10)[0]} == {green}
    assert raw.get_collection_aliases(blue).aliases == []

    raw.upsert(alias, points=[models.PointStruct(id=pid(999), vector=unit(0, 0, 0, 1), payload={"home": "via alias"})])
    assert raw.count(green).count == 6  # writes through the alias land in its collection
    raw.delete(alias, points_selector=models.PointIdsList(points=[pid(999)]))
    assert raw.count(green).count == 5

    renamed = f"{collection_name}_prod"
    raw.update_collection_aliases(
        change_aliases_operations=[
            models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name=alias, new_alias_name=renamed))
        ]
    )
    assert not raw.collection_exists(alias) and raw.count(renamed).count == 5
    with pytest.raises(UnexpectedResponse) as missing:
        raw.update_collection_aliases(
            change_aliases_operations=[
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=f"{collection_name}_none", alias_name="x")
                )
            ]
        )
    assert missing.value.status_code == 404
    assert not raw.delete_collection(renamed)  # an alias is not a collection: nothing deleted
    assert raw.delete_collection(green)
    assert renamed not in {a.alias_name for a in raw.get_aliases().aliases}  # its aliases went with it


def test_scroll_pages_and_filtered_count(raw: QdrantClient, collection_name: str) -> None:
    _make(raw, collection_name, 0, 7)
    seen: list[str] = []
    offset = None
    while True:
        records, offset = raw.scroll(collection_name, limit=3, offset=offset, with_vectors=True)
        assert all(len(record.vector) == DIMS for record in records)
        seen += [str(record.id) for record in records]
        if offset is None:
            break
    assert sorted(seen) == sorted(pid(i) for i in range(7))

    even = models.Filter(must=[models.FieldCondition(key="n", match=models.MatchAny(any=[0, 2, 4, 6]))])
    assert raw.count(collection_name, count_filter=even, exact=True).count == 4
    records, _ = raw.scroll(collection_name, scroll_filter=even, limit=10, with_payload=False)
    assert len(records) == 4 and all(record.payload is None for record in records)
    raw.delete(collection_name, points_selector=models.FilterSelector(filter=even))
    assert raw.count(collection_name).count == 3


def test_a_payload_index_counts_the_live_points_that_have_its_field(raw: QdrantClient, collection_name: str) -> None:
    """As Qdrant reports it: a point counts for an index when its field has a value (not null, not
    an empty list) and it is not deleted; a nested field's index counts the same way."""
    raw.create_collection(collection_name, vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE))
    payloads = [{"source": "a", "meta": {"team": "x"}}, {"source": "b"}, {"source": None}, {"source": []}, {}, {"source": "c"}]
    raw.upsert(collection_name, points=[
        models.PointStruct(id=pid(i), vector=unit(1, i, 0, 0), payload=payload) for i, payload in enumerate(payloads)
    ])
    for field in ("source", "meta.team"):
        raw.create_payload_index(collection_name, field, models.PayloadSchemaType.KEYWORD)
    raw.delete(collection_name, points_selector=models.PointIdsList(points=[pid(5)]))
    schema = raw.get_collection(collection_name).payload_schema
    assert (schema["source"].points, schema["meta.team"].points) == (2, 1)
    # The counts are kept between reads, and every kind of write is seen by the next read.
    raw.upsert(collection_name, points=[models.PointStruct(id=pid(9), vector=unit(0, 1, 0, 0), payload={"source": "d"})])
    assert raw.get_collection(collection_name).payload_schema["source"].points == 3
    raw.upsert(collection_name, points=[models.PointStruct(id=pid(4), vector=unit(1, 4, 0, 0), payload={"source": "e"})])
    assert raw.get_collection(collection_name).payload_schema["source"].points == 4
    raw.delete(collection_name, points_selector=models.FilterSelector(filter=models.Filter(
        must=[models.FieldCondition(key="source", match=models.MatchValue(value="a"))])))
    schema = raw.get_collection(collection_name).payload_schema
    assert (schema["source"].points, schema["meta.team"].points) == (3, 0)


# several processes -------------------------------------------------------------------------
_WORKER = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from pathlib import Path
    import numpy as np
    from citadel.store.vectorstore import VectorStore

    url, name, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    async def main():
        store = VectorStore.connect(url=url, api_key=None, path=Path("unused"), batch_size=16)
        await store.ensure_collection(name, 4, "test-model")
        rng = np.random.default_rng(first)
        ids = [str(uuid.UUID(int=first + i + 1)) for i in range(count)]
        vectors = rng.standard_normal((count, 4)).tolist()
        await store.upsert(name, ids, vectors, [{"worker": first} for _ in ids])
        store.client.close()

    asyncio.run(main())
    """
)


async def test_two_worker_processes_upsert_concurrently(
    server: QdrantTestServer, store: VectorStore, collection_name: str
) -> None:
    """Two worker processes write into one collection at once through the server; no point is lost."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, server.url, collection_name, str(first), "160"], cwd=REPO_ROOT)
        for first in (0, 10_000)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    assert await store.count(collection_name) == 320
    for first in (0, 10_000):
        worker_filter = models.Filter(must=[models.FieldCondition(key="worker", match=models.MatchValue(value=first))])
        assert store.client.count(collection_name, count_filter=worker_filter).count == 160


async def test_separate_server_process_serves_and_persists(tmp_path: Path, collection_name: str) -> None:
    """The server as its own process: the production path works, and a restart keeps points and indexes."""
    path = tmp_path / "qdrant"
    proc, url = start_qdrant_process(path)
    try:
        store = VectorStore.connect(url=url, api_key=None, path=tmp_path / "unused", batch_size=4)
        await store.ensure_collection(collection_name, DIMS, MODEL)
        ids, vectors, payloads = _points(10)
        await store.upsert(collection_name, ids, vectors, payloads)
        assert [hit.id for hit in await store.search(collection_name, vectors[4], limit=1)] == [ids[4]]
        await store.delete(collection_name, [*ids[:3], pid(999)])  # rows deleted at once, one id unknown
        assert await store.count(collection_name) == 7
        store.client.close()
    finally:
        assert stop_qdrant_process(proc) == 0  # SIGTERM: a graceful exit that closes the store

    proc, url = start_qdrant_process(path)
    try:
        store = VectorStore.connect(url=url, api_key=None, path=tmp_path / "unused")
        assert await store.count(collection_name) == 7, "deleted points stay deleted after a restart"
        assert set(await store.retrieve_vectors(collection_name, ids)) == set(ids[3:])
        await store.ensure_collection(collection_name, DIMS, MODEL)
        assert set(store.client.get_collection(collection_name).payload_schema) == {"document_id", "source"}
        store.client.close()
    finally:
        proc.kill()  # a crash: the folder lock goes with the process
        proc.wait(timeout=10)
        stop_qdrant_process(proc)


async def test_search_by_document_over_the_rest_api(store: VectorStore, collection_name: str) -> None:
    """Qdrant's query groups endpoint: each document once, by its nearest chunk."""
    await store.ensure_collection(collection_name, DIMS, "m")
    ids, vectors, payloads = _points(12)
    await store.upsert(collection_name, ids, vectors, payloads)
    hits = await store.search(collection_name, vectors[0], limit=3, by_document=True)
    assert sorted(h.payload["document_id"] for h in hits) == ["doc-0", "doc-1", "doc-2"]
    assert hits[0].id == ids[0] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].score >= hits[1].score >= hits[2].score


async def test_points_go_up_in_parallel_batches_with_the_lexical_vectors_qdrant_client_would_write(
    server: QdrantTestServer, raw: QdrantClient, tmp_path: Path, collection_name: str
) -> None:
    """The REST upload writes what qdrant-client's upsert writes, several batches at once."""
    from citadel.store.lexical import LEXICAL_VECTOR, lexical_point

    store = VectorStore.connect(url=server.url, api_key=None, path=tmp_path / "unused", batch_size=64, parallel=3)
    await store.ensure_collection(collection_name, DIMS, MODEL)
    count = 64 * 6 + 5
    ids, vectors, payloads = _points(count)
    for payload in payloads:
        payload["text"] = f"Chunk {payload['chunk_index']} of the benchmark's corpus, about embeddings and vectors."
    before = server.requests[UPSERT]
    await store.upsert(collection_name, ids, np.asarray(vectors, dtype=np.float32), payloads)
    assert server.requests[UPSERT] - before == 7
    stored = {str(p.id): p for p in raw.retrieve(collection_name, ids, with_vectors=True, with_payload=True)}
    assert len(stored) == count and await store.count(collection_name) == count
    for point_id, vector, payload in zip(ids, vectors, payloads, strict=True):
        point = stored[point_id]
        assert point.payload == payload
        assert np.allclose(point.vector[""], vector)
        expected = lexical_point(payload)
        assert (point.vector[LEXICAL_VECTOR].indices, point.vector[LEXICAL_VECTOR].values) == (expected.indices, expected.values)
    store.client.close()


async def test_a_refused_upload_says_why_and_an_unreachable_server_is_worth_retrying(
    store: VectorStore, tmp_path: Path, collection_name: str
) -> None:
    from citadel.errors import is_transient
    from citadel.store.upload import StoreError

    await store.ensure_collection(collection_name, DIMS, MODEL)
    with pytest.raises(StoreError, match="refused an upsert") as refused:
        await store.upsert(collection_name, [pid(0)], [[1.0, 0.0]], [{"text": "two dimensions, not four"}])
    assert not is_transient(refused.value)
    gone = VectorStore.connect(url=f"http://127.0.0.1:{free_port()}", api_key=None, path=tmp_path / "unused")
    gone._lexical[collection_name] = True  # no round trip to ask: straight to the upload
    with pytest.raises(ConnectionError, match="did not answer") as unreachable:
        await gone.upsert(collection_name, [pid(0)], [unit(1, 0, 0, 0)], [{"text": "x"}])
    assert is_transient(unreachable.value)
    gone.client.close()
