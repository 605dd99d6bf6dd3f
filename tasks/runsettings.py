"""A flow run's Settings: the worker's environment, then the Citadel blocks its deployment names
(``CITADEL_BLOCKS``, a job variable), then the run's own embedder choice. An operator changes
every deployed run's embedding server, cache, store or registry by editing one block."""

from __future__ import annotations

import asyncio
import logging

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import BlockDocument
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from blocks import BLOCK_TYPES, CitadelBlock, settings_from_blocks
from citadel.errors import ConfigurationError
from citadel.settings import EmbedderConfig, Settings

log = logging.getLogger(__name__)

ATTEMPTS = 4

EMBEDDER_SLUGS = frozenset(block.get_block_type_slug() for block in BLOCK_TYPES if "embedder" in block.get_block_type_slug())


async def _documents(name: str) -> list[BlockDocument]:
    """Every block document called ``name``, in one request, tried again on a server error: a busy
    Prefect server answered 500 under a stack's load, and a run must not fail (or fall back to
    its environment, which may name other backends) over a moment's error."""
    body = {"block_documents": {"name": {"any_": [name]}}, "include_secrets": True}
    for attempt in range(ATTEMPTS):
        try:
            async with get_client() as client:
                response = await client.request("POST", "/block_documents/filter", json=body)
                response.raise_for_status()
            return BlockDocument.model_validate_list(response.json())
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            server_error = not isinstance(exc, httpx.HTTPStatusError) or exc.response.status_code >= 500
            if not server_error or attempt == ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def named_blocks(name: str) -> list[CitadelBlock]:
    """The Citadel block documents called ``name``, in the order they apply (embedder, cache, store,
    registry); one embedder at most, or the run could not tell which one it is to use."""
    by_slug = {block.get_block_type_slug(): block for block in BLOCK_TYPES}
    found = {doc.block_type.slug: doc for doc in await _documents(name) if doc.block_type is not None and doc.block_type.slug in by_slug}
    embedders = sorted(slug for slug in found if slug in EMBEDDER_SLUGS)
    if len(embedders) > 1:
        raise ConfigurationError(
            f"CITADEL_BLOCKS={name}: {len(embedders)} embedder blocks are called {name!r} ({', '.join(embedders)}); "
            "delete all but the one the runs are to use"
        )
    return [by_slug[slug]._from_block_document(found[slug]) for slug in by_slug if slug in found]


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger (its lines in the UI's Logs tab), or this module's outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return log


async def run_settings(embedder: EmbedderConfig | None = None) -> Settings:
    """Settings for a flow run: the environment, the named blocks over it, the run's embedder over both."""
    settings = Settings()
    if settings.blocks:
        blocks = await named_blocks(settings.blocks)
        if blocks:
            settings = settings_from_blocks(*blocks)
            _logger().info("configured by blocks %s", ", ".join(f"{b.get_block_type_slug()}/{settings.blocks}" for b in blocks))
        else:
            _logger().info("CITADEL_BLOCKS=%s: no Citadel block has that name; the run is configured by its environment", settings.blocks)
    return embedder.apply(settings) if embedder else settings
