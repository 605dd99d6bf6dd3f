"""The Qdrant block builds an embedded store in a folder, or a client of a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from blocks import QdrantBlock
from citadel.errors import ConfigurationError
from citadel.settings import Settings
from citadel.store import VectorStore


async def test_qdrant_block_with_a_path_builds_a_working_embedded_store(tmp_path: Path, collection_name: str) -> None:
    folder = tmp_path / "vectors"
    store = QdrantBlock(path=folder, batch_size=64).build()
    assert isinstance(store, VectorStore)
    assert not store.is_server
    assert store.batch_size == 64
    assert folder.is_dir()
    await store.ensure_collection(collection_name, 4, "block-test-model")
    await store.upsert(
        collection_name,
        ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"],
        [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]],
        [{"document_id": "a"}, {"document_id": "b"}],
    )
    assert await store.count(collection_name) == 2
    hits = await store.search(collection_name, [0.9, 0.1, 0.0, 0.0], limit=1)
    assert hits[0].payload["document_id"] == "a"
    # the same folder shares the process-wide embedded client
    assert QdrantBlock(path=folder).build().client is store.client


def test_qdrant_block_without_url_or_path_uses_the_data_dir(data_dir: Path) -> None:
    store = QdrantBlock().build()
    assert not store.is_server
    assert (data_dir / "qdrant").is_dir()


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_qdrant_block_with_a_url_builds_a_server_client() -> None:
    block = QdrantBlock(url="https://127.0.0.1:9/", api_key="qd-secret", batch_size=256)
    store = block.build()  # no server needed: the client only warns when its version check fails
    try:
        assert isinstance(store, VectorStore)
        assert store.is_server
        assert store.batch_size == 256
        assert block.url == "https://127.0.0.1:9"
    finally:
        store.client.close()


def test_qdrant_block_refuses_contradictory_settings() -> None:
    with pytest.raises(ValidationError, match="not both"):
        QdrantBlock(url="http://qdrant:6333", path="/tmp/q")
    with pytest.raises(ValidationError, match="api_key only applies"):
        QdrantBlock(api_key="qd-secret")
    with pytest.raises(ValidationError, match="http:// or https://"):
        QdrantBlock(url="qdrant:6333")
    with pytest.raises(ValidationError):
        QdrantBlock(batch_size=1000)
    assert QdrantBlock(url="").url is None


def test_qdrant_overrides_configure_a_run(data_dir: Path, tmp_path: Path) -> None:
    server = Settings(**QdrantBlock(url="https://qdrant:6333", api_key="qd-secret", batch_size=64).settings_overrides())
    assert server.qdrant_url == "https://qdrant:6333"
    assert server.qdrant_api_key is not None and server.qdrant_api_key.get_secret_value() == "qd-secret"
    assert server.upsert_batch_size == 64

    embedded = Settings(**QdrantBlock(path=tmp_path / "state" / "qdrant").settings_overrides())
    assert embedded.qdrant_url is None
    assert embedded.qdrant_path == tmp_path / "state" / "qdrant"

    default = Settings(**QdrantBlock().settings_overrides())
    assert default.qdrant_path == data_dir / "qdrant"

    with pytest.raises(ConfigurationError, match="named 'qdrant'"):
        QdrantBlock(path=tmp_path / "elsewhere").settings_overrides()
