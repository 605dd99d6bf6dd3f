"""A Prefect global concurrency limit per shared embedding backend, across every run and worker.

One Ollama server embeds one batch at a time; ten runs sending it batches at once only queue
there, until requests time out. Each run that embeds holds a slot, so the others wait for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL

from citadel.settings import Settings

_ensured: set[tuple[str | None, str]] = set()


def needs_limit(settings: Settings) -> bool:
    """Only a shared backend needs guarding: the hashing embedder runs inside each process."""
    return settings.embedder != "hashing"


def limit_name(settings: Settings) -> str:
    """``citadel-embedder-ollama`` or ``citadel-embedder-openai``."""
    return f"citadel-embedder-{settings.embedder}"


def default_limit(settings: Settings) -> int:
    """Slots of a new limit: ``CITADEL_EMBED_CONCURRENCY``, else one per Ollama server, else 4."""
    if settings.embed_concurrency:
        return settings.embed_concurrency
    return len(settings.ollama_urls) if settings.embedder == "ollama" else 4


async def ensure_limit(settings: Settings) -> str | None:
    """Create the backend's limit when it does not exist yet (an existing one is left as set).

    None for the in-process hashing embedder, which no other run shares.
    """
    if not needs_limit(settings):
        return None
    name = limit_name(settings)
    key = (PREFECT_API_URL.value(), name)
    if key in _ensured:
        return name
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=default_limit(settings))
                )
            except ObjectAlreadyExists:
                pass  # another worker created it meanwhile
    _ensured.add(key)
    return name


@asynccontextmanager
async def embedding_slot(settings: Settings) -> AsyncIterator[None]:
    """Hold one slot of the embedding backend's limit (created on first use) while embedding."""
    name = await ensure_limit(settings)
    if name is None:
        yield
        return
    async with concurrency(name, occupy=1, strict=True):
        yield


class EarlySlot:
    """A run's slot of the embedding backend's limit, asked for as soon as the run knows it will
    embed and held until it ends. Asking costs round trips to the Prefect API (and a client's
    start); asked early, they overlap the planning of later batches instead of delaying the first
    embedding. One task enters and leaves the limit's context, as Prefect's lease requires."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._holder: asyncio.Task[None] | None = None
        self._held = asyncio.Event()
        self._release = asyncio.Event()

    def ask(self) -> None:
        """Start asking for the slot (once)."""
        if self._holder is None:
            self._holder = asyncio.create_task(self._hold())

    async def _hold(self) -> None:
        async with embedding_slot(self._settings):
            self._held.set()
            await self._release.wait()

    async def wait(self) -> None:
        """Until the slot is held; raises what asking for it raised."""
        self.ask()
        assert self._holder is not None
        held = asyncio.ensure_future(self._held.wait())
        try:
            await asyncio.wait({held, self._holder}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            held.cancel()
        if not self._held.is_set():
            self._holder.result()

    async def aclose(self) -> None:
        """Give the slot back, or stop waiting for one."""
        if self._holder is None:
            return
        if not self._held.is_set():
            self._holder.cancel()
        self._release.set()
        await asyncio.gather(self._holder, return_exceptions=True)  # its error, if any, was raised by wait()
