"""Requests at an embedding server at once, let in oldest call first.

A first index embeds two batches at once so the server never waits at a batch boundary. Let in
by arrival, their requests would alternate and both batches would end together, late. Here a
call's requests keep their slots from one to the next and give them up only to an older call,
so the older batch ends first (and is written) while the next one embeds, and the next one's
requests take each slot the older one leaves.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class OrderedSlots:
    """At most ``size`` holders at once; a waiter with a lower ``order`` goes first (ties by arrival)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    def locked(self) -> bool:
        """Whether a new request would wait."""
        return self.held >= self.size

    async def acquire(self, order: int) -> None:
        if self.held < self.size and not self._waiters:
            self.held += 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (order, next(self._arrivals), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # let in as it was cancelled: pass the slot on
                self.release()
            raise

    def older_than(self, order: int) -> bool:
        """Whether a waiter of an older call (a lower ``order``) waits for a slot."""
        return any(waiter_order < order and not waiter.done() for waiter_order, _, waiter in self._waiters)

    def release(self) -> None:
        self.held -= 1
        while self._waiters and self.held < self.size:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():  # a cancelled waiter is skipped
                self.held += 1
                waiter.set_result(None)
