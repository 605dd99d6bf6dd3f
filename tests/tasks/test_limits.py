"""The embedding backend's global limit: a run's slot, asked for early and always given back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectNotFound

from citadel.settings import Settings
from tasks.limits import EarlySlot, embedding_slot, limit_name


@pytest.fixture
async def settings(data_dir, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Settings]:
    """An OpenAI-compatible backend under a limit of one slot, made afresh for the test."""
    monkeypatch.setenv("CITADEL_EMBEDDER", "openai")
    settings = Settings()
    name = limit_name(settings)
    async with get_client() as client:
        with contextlib.suppress(ObjectNotFound):
            await client.delete_global_concurrency_limit_by_name(name)
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    yield settings


async def active_slots(settings: Settings) -> int:
    async with get_client() as client:
        return (await client.read_global_concurrency_limit_by_name(limit_name(settings))).active_slots


async def test_an_early_slot_is_held_from_wait_until_close(settings: Settings) -> None:
    slot = EarlySlot(settings)
    slot.ask()
    await slot.wait()
    assert await active_slots(settings) == 1
    await slot.wait()  # asking again neither waits nor takes a second slot
    assert await active_slots(settings) == 1
    await slot.aclose()
    assert await active_slots(settings) == 0


async def test_closing_a_slot_still_asked_for_stops_waiting_and_takes_none(settings: Settings) -> None:
    async with embedding_slot(settings):  # another run holds the only slot
        slot = EarlySlot(settings)
        slot.ask()
        waiting = asyncio.ensure_future(slot.wait())
        await asyncio.sleep(1.0)
        assert not waiting.done(), "it waits while the other run holds the slot"
        await asyncio.wait_for(slot.aclose(), timeout=10)
        waiting.cancel()
        assert await active_slots(settings) == 1
    assert await active_slots(settings) == 0, "nothing was left taken"


async def test_a_failure_to_ask_is_raised_by_wait(settings: Settings) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}):  # nothing listens there
        slot = EarlySlot(settings)
        slot.ask()
        with pytest.raises(Exception, match="(?i)connect"):
            await asyncio.wait_for(slot.wait(), timeout=120)
        await slot.aclose()
