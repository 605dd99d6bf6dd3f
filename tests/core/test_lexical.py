"""Lexical vectors: words, stems and stopwords, BM25's saturation, and the fusion of two rankings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from citadel.store.fusion import convex, fuse, reciprocal_rank
from citadel.store.lexical import K1, document_vector, lexical_point, query_vector, terms


def test_words_are_lowercased_stemmed_and_stopwords_dropped() -> None:
    assert terms("Running runners RUN") == terms("run runner run")
    assert terms("the and of a") == []
    assert terms("Zebras") == terms("zebra") and terms("zebra") != terms("zebu")
    assert len(terms("naïve café Straße")) == 3  # words of any script


def test_a_document_weighs_repeats_with_saturation_and_length() -> None:
    once = dict(zip(*(lambda v: (v.indices, v.values))(document_vector("gluon quark")), strict=True))
    twice = dict(zip(*(lambda v: (v.indices, v.values))(document_vector("gluon gluon quark")), strict=True))
    (gluon,) = terms("gluon")
    assert twice[gluon] > once[gluon]  # more occurrences weigh more ...
    many = document_vector(" ".join(["gluon"] * 1000))
    assert many.values[0] < K1 + 1  # ... but never past BM25's bound
    long_text = document_vector("gluon " + " ".join(f"word{n}" for n in range(300)))
    assert dict(zip(long_text.indices, long_text.values, strict=True))[gluon] < once[gluon]  # a long chunk's word weighs less
    assert document_vector("") == document_vector("of the") and not document_vector("")
    assert document_vector("b a c").indices == sorted(document_vector("b a c").indices)


def test_a_query_counts_each_word_once() -> None:
    query = query_vector("gluon gluon quark")
    assert len(query.indices) == 2 and query.values == [1.0, 1.0]


def test_a_point_without_text_has_an_empty_lexical_vector() -> None:
    assert lexical_point({"text": None}).indices == [] and lexical_point({}).indices == []
    assert lexical_point({"text": "gluon"}).indices == terms("gluon")


def test_stemming_from_many_threads_agrees() -> None:
    words = [f"running{n} jumped zebras" for n in range(2000)]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(terms, words)) == [terms(w) for w in words]


def test_reciprocal_rank_fusion_weighs_each_leg() -> None:
    dense = [("a", 0.9), ("b", 0.8)]
    sparse = [("b", 12.0), ("c", 3.0)]
    fused = reciprocal_rank([dense, sparse], [0.5, 0.5], k=60)
    assert [pid for pid, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(0.5 / 62 + 0.5 / 61)
    assert [pid for pid, _ in reciprocal_rank([dense, sparse], [1.0, 0.0])][:2] == ["a", "b"]


def test_convex_fusion_scales_each_leg_to_its_own_range() -> None:
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    sparse = [("c", 30.0), ("a", 10.0)]
    fused = dict(convex([dense, sparse], [0.3, 0.7]))
    assert fused["a"] == pytest.approx(0.3 * 1.0 + 0.7 * 0.0)
    assert fused["c"] == pytest.approx(0.3 * 0.0 + 0.7 * 1.0)
    assert fused["b"] == pytest.approx(0.3 * 0.5)
    assert dict(convex([[("x", 2.0)], []], [0.3, 0.7])) == {"x": pytest.approx(0.3)}  # one candidate scales to 1
    assert fuse("rrf", [dense, sparse], [0.3, 0.7])[0][0] == "c" and fuse("convex", [dense, sparse], [0.3, 0.7])[0][0] == "c"


def test_the_term_id_cache_stays_within_its_bound_and_ids_survive_a_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    from citadel.store import lexical

    words = [f"measurement{n} sample{n}" for n in range(40)]
    expected = [terms(text) for text in words]
    monkeypatch.setattr(lexical, "_TERM_IDS", {})
    monkeypatch.setattr(lexical, "_TERM_IDS_MAX", 10)
    seen = []
    for text in words:
        seen.append(terms(text))
        assert len(lexical._TERM_IDS) <= 10
    assert seen == expected, "a word's id is its stem's, whether or not the cache was emptied"
