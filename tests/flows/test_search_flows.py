"""The embed-texts and similarity-search flows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from citadel.embedders import WordLlamaEmbedder
from citadel.testing.corpus import write_corpus
from flows.embed_texts import embed_texts
from flows.index_corpus import index_corpus
from flows.similarity_search import similarity_search
from tests.support.rerank_server import RerankServer


async def test_embed_texts_returns_vectors_in_order(data_dir: Path) -> None:
    texts = ["first text", "second text", "first text"]
    result = await embed_texts(texts)
    expected = await WordLlamaEmbedder().embed(texts)
    assert result["model"] == "wordllama-l2_supercat-256d" and result["dimensions"] == 256
    assert np.allclose(np.array(result["vectors"]), expected, atol=1e-6)
    assert result["embedded"] == 2  # the duplicate is embedded once


async def test_similarity_search_ranks_filters_and_thresholds(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3)
    (corpus / "zebra.md").write_text("Zebras juggle xylophones near quartz fountains.\n")
    await index_corpus(str(corpus), collection=collection_name)

    found = await similarity_search("zebras juggling xylophones", collection=collection_name, limit=3)
    hits = found["hits"]
    assert found["mode"] == "hybrid" and hits[0]["document_id"].endswith("zebra.md")
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert {"score", "document_id", "chunk_index", "text"} <= set(hits[0])

    for mode in ("dense", "sparse", "hybrid"):
        only = await similarity_search(
            "zebras", collection=collection_name, limit=10, filters={"document_id": str(corpus / "doc_00001.md")}, mode=mode,
        )
        assert only["mode"] == mode and all(h["document_id"].endswith("doc_00001.md") for h in only["hits"])
        assert only["hits"] or mode == "sparse"  # the words are in no chunk of that document
    strict = await similarity_search("zebras juggling xylophones", collection=collection_name, score_threshold=1.0, mode="sparse")
    assert [h["document_id"] for h in strict["hits"]] == [str(corpus / "zebra.md")]


async def test_similarity_search_reranks_when_a_reranker_is_set(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3)
    (corpus / "zebra.md").write_text("Zebras juggle xylophones near quartz fountains.\n")
    await index_corpus(str(corpus), collection=collection_name)
    with RerankServer() as server:
        monkeypatch.setenv("CITADEL_RERANK_URL", server.url)
        found = await similarity_search("zebras juggling xylophones", collection=collection_name, limit=2)
    assert found["reranked"] and len(found["hits"]) == 2 and len(server.requests[0]["texts"]) > 2
    assert found["hits"][0]["document_id"].endswith("zebra.md")
