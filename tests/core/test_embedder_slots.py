"""Slots at an embedding server: at most so many at once, an older call's waiters first."""

from __future__ import annotations

import asyncio

import pytest

from citadel.embedders.slots import OrderedSlots


async def test_waiters_are_let_in_by_their_call_not_their_arrival() -> None:
    slots = OrderedSlots(1)
    await slots.acquire(5)
    entered: list[int] = []

    async def wait(order: int) -> None:
        await slots.acquire(order)
        entered.append(order)
        slots.release()

    waiting = [asyncio.create_task(wait(order)) for order in (9, 7, 3, 7)]
    await asyncio.sleep(0)
    assert slots.locked() and slots.older_than(4) and not slots.older_than(3)
    slots.release()
    await asyncio.gather(*waiting)
    assert entered == [3, 7, 7, 9] and slots.held == 0


async def test_a_cancelled_waiter_neither_takes_nor_loses_a_slot() -> None:
    slots = OrderedSlots(2)
    await slots.acquire(1)
    await slots.acquire(1)
    cancelled = asyncio.create_task(slots.acquire(0))
    later = asyncio.create_task(slots.acquire(2))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    slots.release()
    await later  # the slot went past the cancelled waiter
    assert slots.held == 2
    slots.release()
    slots.release()
    assert slots.held == 0 and not slots.locked()
