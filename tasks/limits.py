"""A Prefect global concurrency limit per shared embedding backend, across every run and worker.

One Ollama server embeds one batch at a time; ten runs sending it batches at once only queue
there, until requests time out. Each run that embeds holds a slot, so the others wait for one.
Slots are taken with a lease and recorded (:mod:`tasks.slots`), so none is lost to a cancelled,
crashed or killed run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError, ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_API_URL

from citadel.errors import ConfigurationError
from citadel.settings import IN_PROCESS_EMBEDDERS, Settings
from tasks.slots import LEASE_S, Reclaimer, SlotHolder, forget_holder, renew_lease, this_holder, touch_holder, write_holder

log = logging.getLogger(__name__)

_ensured: set[tuple[str | None, str]] = set()


def needs_limit(settings: Settings) -> bool:
    """Only a shared backend needs guarding: the in-process embedders run inside each process."""
    return settings.embedder not in IN_PROCESS_EMBEDDERS


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


ASK_EVERY_S = 1.0
"""While the limit is full, how often a run asks again (the server's Retry-After can reach 30 s)."""

RECLAIM_EVERY_S = 2.0
SAY_EVERY_S = 30.0

_giving_back: set[asyncio.Task[None]] = set()


def _in_background(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``work`` to its end even if whoever started it is cancelled (a slot must be given back)."""
    task = asyncio.ensure_future(work)
    _giving_back.add(task)
    task.add_done_callback(_giving_back.discard)
    return task


async def given_back() -> None:
    """Wait until every slot being given back in the background has been (a process about to
    exit, or a test that counts the slots)."""
    while _giving_back:
        await asyncio.gather(*list(_giving_back), return_exceptions=True)


def _say(message: str, level: int = logging.WARNING) -> None:
    """In the run's log and Citadel's: a wait is a warning (the command's console shows it), a
    slot given back on the way is information."""
    log.log(level, message)
    with contextlib.suppress(MissingContextError):
        get_run_logger().log(level, message)


def _this_run() -> tuple[str | None, str | None]:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None, None
    return str(context.flow_run.id), context.flow_run.name


async def _ask(name: str, run: tuple[str | None, str | None]) -> SlotHolder | None:
    """One request for a slot: its holder, recorded before this returns, or None while the limit is full."""
    holder = ConcurrencyLeaseHolder(type="flow_run", id=uuid.UUID(run[0])) if run[0] else None
    async with get_client() as client:
        try:
            response = await client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=LEASE_S, holder=holder,
            )
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 423:
                return None
            if exc.response.status_code == 422:
                raise ConfigurationError(
                    f"concurrency limit {name!r} has no slot to give ({exc.response.json().get('detail')}); "
                    f"raise it: prefect gcl update {name} --limit N"
                ) from None
            raise
        granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
        if not granted.limits:
            raise ConfigurationError(
                f"concurrency limit {name!r} is missing or inactive; run `citadel setup` or `prefect gcl create {name}`"
            )
        record = this_holder(name, granted.lease_id, *run)
        try:
            await write_holder(client, record)
        except BaseException:
            await client.release_concurrency_slots_with_lease(granted.lease_id)
            raise
        return record


async def _give_back(holder: SlotHolder) -> None:
    """Release the slot and its record; when the Prefect API cannot be reached, the next run that
    waits gives it back (this holder's run has ended, or its process has)."""
    try:
        async with get_client() as client:
            await client.release_concurrency_slots_with_lease(uuid.UUID(holder.lease_id))
            await forget_holder(client, holder.lease_id)
    except Exception as exc:  # noqa: BLE001 - never mask the run's own outcome; the record stays for the next waiter
        log.warning("could not give back the slot of %s (the next run that waits will): %s", holder.limit, exc)


async def _give_back_if_granted(asking: asyncio.Future[SlotHolder | None]) -> None:
    """A run cancelled while asking: the server may grant the slot all the same; give it back."""
    with contextlib.suppress(Exception):
        holder = await asking
        if holder is not None:
            await _give_back(holder)


async def acquire_slot(name: str) -> SlotHolder:
    """A slot of ``name``, waiting while it is full; the slots of holders that are gone are given
    back meanwhile, and the wait says what it waits for, and for how long."""
    run = _this_run()
    reclaimer = Reclaimer(name)
    started = time.monotonic()
    next_reclaim = next_say = started
    said_waiting = False
    while True:
        asking = asyncio.ensure_future(_ask(name, run))
        try:
            holder = await asyncio.shield(asking)
        except asyncio.CancelledError:
            _in_background(_give_back_if_granted(asking))
            raise
        if holder is not None:
            if said_waiting:
                _say(f"took a slot of {name!r} after waiting {time.monotonic() - started:.0f} s")
            return holder
        now = time.monotonic()
        if now >= next_reclaim:
            next_reclaim = now + RECLAIM_EVERY_S
            async with get_client() as client:
                given = await reclaimer.reclaim(client)
            for what in given:
                _say(f"gave back {what}", logging.INFO)
            if given:
                continue
        if now >= next_say:
            next_say, said_waiting = now + SAY_EVERY_S, True
            holders = "; ".join(h.describe() for h in reclaimer.holders) or "no recorded holder yet"
            _say(
                f"waiting {now - started:.0f} s for a slot of {name!r} ({reclaimer.active} of {reclaimer.size} in use, "
                f"by {holders}); `citadel doctor` shows them"
            )
        await asyncio.sleep(ASK_EVERY_S * random.uniform(0.5, 1.0))


async def _keep(holder: SlotHolder) -> None:
    """Renew the slot's record and its lease until cancelled. A lease lost with a restarted server
    is left as it is: its slot is still counted, and the record says whose it is."""
    while True:
        await asyncio.sleep(LEASE_S / 4)
        try:
            async with get_client() as client:
                await touch_holder(client, holder)
                await renew_lease(client, holder.lease_id)
        except Exception as exc:  # noqa: BLE001 - a missed renewal is retried; the lease outlasts three
            log.warning("could not renew the slot of %s: %s", holder.limit, exc)


@asynccontextmanager
async def embedding_slot(settings: Settings) -> AsyncIterator[None]:
    """Hold one slot of the embedding backend's limit (created on first use) while embedding; given
    back on every way out (an error, a cancellation, a timeout), and by whoever waits next when
    the process is killed."""
    name = await ensure_limit(settings)
    if name is None:
        yield
        return
    holder = await acquire_slot(name)
    keeper = asyncio.ensure_future(_keep(holder))
    try:
        yield
    finally:
        keeper.cancel()
        await asyncio.shield(_in_background(_give_back(holder)))


class EarlySlot:
    """A run's slot of the embedding backend's limit, asked for as soon as the run knows it will
    embed and held until it ends. Asking costs round trips to the Prefect API (and a client's
    start); asked early, they overlap the planning of later batches instead of delaying the first
    embedding."""

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
