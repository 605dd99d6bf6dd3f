"""Embed texts through the cache and return their vectors."""

from __future__ import annotations

from typing import Any

from prefect import flow, tags
from prefect.artifacts import acreate_table_artifact

from citadel.resources import open_resources
from flows.parameters import Embedder, Texts
from tasks.embedding import embed_texts_task
from tasks.reporting import artifact_key, run_tags, save_artifact, tag_flow_run
from tasks.run_names import flow_run_namer
from tasks.runsettings import run_settings


@flow(name="embed-texts", flow_run_name=flow_run_namer("embed-texts"), persist_result=True, result_serializer="json")
async def embed_texts(texts: Texts, embedder: Embedder = None) -> dict[str, Any]:
    """Vectors for texts in order (the result, kept as JSON), with the model, its size and how
    many came from the cache.

    Args:
        texts: The texts to embed.
        embedder: The embedder to use instead of the worker's configured one (its kind, model, ...).
    """
    settings = await run_settings(embedder)
    labels = run_tags(settings)
    await tag_flow_run(labels)
    async with open_resources(settings):
        with tags(*labels):
            result = await embed_texts_task.with_options(task_run_name=f"embed {len(texts)} texts")(settings, texts)
    await save_artifact("embed", lambda: acreate_table_artifact(
        [{key: result[key] for key in ("model", "dimensions", "cache_hits", "embedded")} | {"texts": len(texts)}],
        key=artifact_key("embed", str(result["model"])), description="What the embedding run did (the vectors are its result)",
    ))
    return result
