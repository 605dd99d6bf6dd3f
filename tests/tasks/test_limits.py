"""The embedding backend's global limit: a run's slot, asked for early and always given back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound

from citadel.settings import Settings
from tasks.limits import EarlySlot, embedding_slot, given_back, limit_name

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


@pytest.fixture
async def settings(data_dir, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Settings]:
    """An OpenAI-compatible backend under a limit of one slot, made afresh for the test."""
    monkeypatch.setenv("CITADEL_EMBEDDER", "openai")
    settings = Settings()
    await fresh_limit(settings)
    yield settings


async def fresh_limit(settings: Settings) -> None:
    """The backend's limit made afresh with one slot, and no holder recorded for it."""
    from tasks.slots import forget_holder, read_holders

    name = limit_name(settings)
    async with get_client() as client:
        for holder in await read_holders(client, name):
            await forget_holder(client, holder.lease_id)
        with contextlib.suppress(ObjectNotFound):
            await client.delete_global_concurrency_limit_by_name(name)
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


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


async def holders_of(settings: Settings) -> list:
    from tasks.slots import read_holders

    async with get_client() as client:
        return await read_holders(client, limit_name(settings))


async def test_runs_cancelled_while_waiting_leave_no_slot_taken(settings: Settings) -> None:
    """A cancel storm: runs cancelled while they wait (or while the server grants them a slot)
    must not take a slot afterwards, or every later run waits behind a lease nobody gives back."""
    async def embed_once() -> None:
        async with embedding_slot(settings):
            await asyncio.sleep(0.2)

    async with embedding_slot(settings):  # the only slot is held while four runs ask for it
        waiting = [asyncio.ensure_future(embed_once()) for _ in range(4)]
        await asyncio.sleep(1.5)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    # Cancelled at every moment of asking, granted or not.
    for delay in (0.0, 0.005, 0.01, 0.02, 0.04, 0.08):
        task = asyncio.ensure_future(embed_once())
        await asyncio.sleep(delay)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await given_back()  # the give-backs run to their end in the background
    assert await active_slots(settings) == 0
    assert await holders_of(settings) == []
    await asyncio.wait_for(embed_once(), timeout=10)


async def test_a_held_slot_is_recorded_with_its_process_and_forgotten_when_given_back(settings: Settings) -> None:
    async with embedding_slot(settings):
        [holder] = await holders_of(settings)
        assert (holder.pid, holder.limit) == (os.getpid(), limit_name(settings))
    assert await holders_of(settings) == []


def _hold_a_slot_in_a_process(settings: Settings, api_url: str, tmp_path) -> subprocess.Popen[bytes]:
    """A process of its own that takes the only slot and keeps it."""

    ready = tmp_path / "held"
    code = (
        "import asyncio, pathlib, sys\n"
        "from citadel.settings import Settings\n"
        "from tasks.limits import embedding_slot\n"
        "async def main():\n"
        "    async with embedding_slot(Settings()):\n"
        f"        pathlib.Path({str(ready)!r}).write_text('held')\n"
        "        await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PREFECT_API_URL": api_url, "CITADEL_EMBEDDER": "openai"}
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None, "the holder process failed to start"
        assert time.monotonic() < deadline, "the holder process never took the slot"
        time.sleep(0.1)
    return process


async def test_the_slot_of_a_killed_process_is_given_back_at_once(settings: Settings, prefect_api_url: str, tmp_path, caplog) -> None:
    """Its lease would hold the slot for minutes; the next run sees the process is gone."""
    import logging

    process = _hold_a_slot_in_a_process(settings, prefect_api_url, tmp_path)
    process.kill()
    process.wait()
    assert await active_slots(settings) == 1
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="tasks.limits"):
        async with embedding_slot(settings):
            waited = time.monotonic() - started
    assert waited < 10, f"waited {waited:.1f} s for a slot whose holder was killed"
    assert f"its process {process.pid}" in caplog.text
    assert await active_slots(settings) == 0
    assert await holders_of(settings) == []


async def test_slots_no_live_holder_explains_are_given_back(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease lost with a restarted Prefect server leaves its slot counted forever: counted slots
    that no recorded live holder explains are given back after a grace period."""
    from tasks import slots

    monkeypatch.setattr(slots, "ORPHAN_GRACE_S", 1.0)
    async with get_client() as client:  # a slot taken without a lease or a record, as a lost lease leaves it
        await client.increment_concurrency_slots(names=[limit_name(settings)], slots=1, mode="concurrency")
    assert await active_slots(settings) == 1
    started = time.monotonic()
    async with embedding_slot(settings):
        assert await active_slots(settings) == 1
    assert time.monotonic() - started < 8
    assert await active_slots(settings) == 0


async def _slot_of_a_killed_holder_whose_lease_was_lost(client, settings: Settings) -> None:
    """A counted slot and the record of its holder, killed on another host, whose lease the server no longer knows."""
    import uuid

    from tasks.slots import SlotHolder, write_holder

    await client.increment_concurrency_slots(names=[limit_name(settings)], slots=1, mode="concurrency")
    long_ago = "2026-01-01T00:00:00+00:00"
    dead = SlotHolder.from_value({
        "limit": limit_name(settings), "lease_id": str(uuid.uuid4()), "host": "elsewhere", "pid": 1,
        "flow_run_id": None, "flow_run_name": None, "since": long_ago, "renewed": long_ago,
    })
    assert dead is not None
    await write_holder(client, dead)


async def test_the_record_of_a_gone_holder_whose_lease_was_lost_frees_its_slot_at_once(settings: Settings) -> None:
    """The holder was killed and its server restarted: the record names a dead process and a
    lease the server no longer knows, while the slot is still counted."""
    async with get_client() as client:
        await _slot_of_a_killed_holder_whose_lease_was_lost(client, settings)
    started = time.monotonic()
    async with embedding_slot(settings):
        pass
    assert time.monotonic() - started < 5, "the slot was given back at once, not after the grace period"
    assert await active_slots(settings) == 0
    assert await holders_of(settings) == []


async def test_a_slot_held_for_a_flow_run_that_ended_is_given_back(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API runs workflows in its own process, alive after a run ends: the run's state tells."""
    from tasks import slots

    monkeypatch.setattr(slots, "ENDED_RUN_GRACE_S", 0.0)
    from prefect import flow
    from prefect.states import Cancelled

    from tasks.slots import read_holders

    @flow(name="holds-a-slot")
    async def holds() -> None:
        await asyncio.sleep(0)

    state = await holds(return_state=True)
    flow_run_id = state.state_details.flow_run_id
    async with get_client() as client:
        await client.set_flow_run_state(flow_run_id, Cancelled(), force=True)
    # A slot taken for that run and never given back (its task was torn down mid-release).
    from tasks import limits

    holder = await limits._ask(limit_name(settings), (str(flow_run_id), "holds-a-slot"))
    assert holder is not None
    async with get_client() as client:
        assert [h.flow_run_id for h in await read_holders(client, limit_name(settings))] == [str(flow_run_id)]
    async with embedding_slot(settings):
        pass
    assert await active_slots(settings) == 0
    assert await holders_of(settings) == []


async def test_waiters_reclaiming_at_once_give_back_a_gone_holder_s_slot_only_once(settings: Settings) -> None:
    """Four runs wait while a live run holds one slot of two and a killed run's record (its lease
    lost with its server) holds the other: the killed run's slot is given back once, so there are
    never more than two holders."""
    async with get_client() as client:
        await client.update_global_concurrency_limit(limit_name(settings), GlobalConcurrencyLimitUpdate(limit=2))
        await _slot_of_a_killed_holder_whose_lease_was_lost(client, settings)
    inside, peak = 0, 0

    async def embed(seconds: float) -> None:
        nonlocal inside, peak
        async with embedding_slot(settings):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(seconds)
            inside -= 1

    live = asyncio.ensure_future(embed(4.0))
    await asyncio.sleep(0.5)
    await asyncio.wait_for(asyncio.gather(live, *(embed(0.5) for _ in range(4))), timeout=60)
    assert peak == 2, f"{peak} runs held a slot of a limit of 2"
    assert await active_slots(settings) == 0
    assert await holders_of(settings) == []


async def test_a_holder_whose_process_runs_here_is_never_taken_for_gone_by_its_silence(settings: Settings) -> None:
    """A Prefect server that restarted, or that a run could not reach for minutes, leaves a live
    holder's record unrenewed: its process still runs, so its slot is still its own."""
    import datetime as dt
    import uuid

    from tasks.slots import SILENT_AFTER_S, this_holder, why_gone

    holder = this_holder(limit_name(settings), uuid.uuid4(), None, None)
    old = holder.renewed - dt.timedelta(seconds=SILENT_AFTER_S * 10)
    silent = type(holder)(**{**holder.__dict__, "renewed": old, "since": old})
    elsewhere = type(holder)(**{**silent.__dict__, "host": "another-host"})
    async with get_client() as client:
        assert await why_gone(client, silent) is None
        assert "has not renewed its slot" in (await why_gone(client, elsewhere) or "")
