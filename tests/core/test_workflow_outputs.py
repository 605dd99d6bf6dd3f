"""A step's output as a person reads it: shapes and counts, never raw vectors, never cut mid-word."""

from __future__ import annotations

from citadel.workflows.outputs import shorten, summarize_output


def test_vectors_show_their_shape_not_their_numbers() -> None:
    output = {"model": "m", "dimensions": 768, "vectors": [[0.123456789] * 768] * 4, "cache_hits": 1, "embedded": 3}
    assert summarize_output(output) == "4 vectors of 768 dimensions (m), 1 from the cache"


def test_hits_show_their_count_and_the_first_ones() -> None:
    hits = [{"id": "p1", "document_id": "a.md", "score": 0.91}, {"id": "p2", "title": "Zebras", "score": 0.5}]
    text = summarize_output({"collection": "docs", "mode": "hybrid", "hits": hits})
    assert text == "2 hits (hybrid): a.md (0.910), Zebras (0.500)"


def test_an_index_summary_shows_its_counts() -> None:
    output = {"collection": "docs", "added": 2, "updated": 0, "unchanged": 5, "deleted": 1, "failed": 1, "model": "m"}
    assert summarize_output(output) == "docs: 2 added, 0 updated, 5 unchanged, 1 deleted, 1 failed"


def test_long_text_is_cut_at_a_word_with_an_ellipsis() -> None:
    text = "alpha " * 40
    short = shorten(text, 50)
    assert len(short) <= 50 and short.endswith("alpha…")
    assert all(word == "alpha" for word in short.removesuffix("…").split())


def test_other_shapes_stay_readable() -> None:
    assert summarize_output(None) == ""
    assert summarize_output([1, 2, 3]) == "3 items"
    assert summarize_output({"chunks": [{}, {}], "texts": ["a", "b"]}) == "2 chunks"
    assert summarize_output({"answer": 42, "items": [1], "meta": {"a": 1}}) == "answer: 42, items: 1 item, meta: {1 keys}"
