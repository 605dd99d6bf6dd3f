"""The test server's growing ``append`` gives what ``np.append`` gives, and a collection using it
answers as one without it."""

from __future__ import annotations

import random

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.local import local_collection

from tests.support.growing_arrays import _GrowingNumpy, install


def test_append_gives_the_arrays_np_append_gives() -> None:
    grow, rng = _GrowingNumpy(), random.Random(7)
    plain, grown = np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    older: list[tuple[np.ndarray, np.ndarray]] = []
    for step in range(3000):
        value = rng.choice([0, 1, True, False])
        plain, grown = np.append(plain, value), grow.append(grown, value)
        assert grown.dtype == plain.dtype and np.array_equal(grown, plain), step  # bool widens to int64 as np.append does
        if rng.random() < 0.05:
            older.append((grown, grown.copy()))
        if rng.random() < 0.02 and older:  # appending to an older view must not write into the newest
            view, _ = rng.choice(older)
            branched = grow.append(view, 1)
            assert np.array_equal(branched[:-1], view) and branched[-1] == 1
            assert np.array_equal(grown, plain), step
    for view, copy in older:
        assert len(view) == len(copy)
    assert np.array_equal(grow.append(np.arange(3), [4, 5]), [0, 1, 2, 4, 5])  # anything else is np.append's


@pytest.fixture
def growing(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(local_collection, "np", np)  # put back after the test
    install()
    assert isinstance(vars(local_collection)["np"], _GrowingNumpy)
    return monkeypatch


def _filled(count: int) -> QdrantClient:
    client = QdrantClient(location=":memory:")
    client.create_collection("c", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE),
                             sparse_vectors_config={"lexical": models.SparseVectorParams()})
    rng = np.random.default_rng(3)
    for start in range(0, count, 100):
        client.upsert("c", [models.PointStruct(
            id=i, vector={"": rng.random(8).tolist(), "lexical": models.SparseVector(indices=[i % 7], values=[1.0])},
            payload={"n": i}) for i in range(start, min(count, start + 100))])
    client.delete("c", models.PointIdsList(points=list(range(0, count, 9))))
    return client


def test_a_collection_with_growing_arrays_answers_as_without(growing: pytest.MonkeyPatch) -> None:
    with_growing = _filled(1000)
    growing.setattr(local_collection, "np", np)
    without = _filled(1000)
    query = np.random.default_rng(5).random(8).tolist()
    for client in (with_growing, without):
        assert client.count("c").count == 1000 - len(range(0, 1000, 9))
    found = [client.query_points("c", query=query, limit=20).points for client in (with_growing, without)]
    assert [p.id for p in found[0]] == [p.id for p in found[1]] and not {p.id for p in found[0]} & set(range(0, 1000, 9))
    lexical = [client.query_points("c", query=models.SparseVector(indices=[3], values=[1.0]), using="lexical", limit=500).points
               for client in (with_growing, without)]
    assert sorted(p.id for p in lexical[0]) == sorted(p.id for p in lexical[1])
