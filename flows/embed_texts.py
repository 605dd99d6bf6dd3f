"""Embed texts through the cache and return their vectors."""

from __future__ import annotations

from typing import Any

from prefect import flow

from citadel.settings import EmbedderConfig, settings_for
from tasks.embedding import embed_texts_task
from tasks.resources import open_resources


@flow(name="embed-texts")
async def embed_texts(texts: list[str], embedder: EmbedderConfig | None = None) -> dict[str, Any]:
    """Vectors for ``texts`` in order, with the model, its size and how many came from the cache."""
    settings = settings_for(embedder)
    async with open_resources(settings):
        return await embed_texts_task(settings, texts)
