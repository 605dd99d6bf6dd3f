"""Cancel a flow run of this process from the outside: the caller that started it sets the run's
cancel request, the flow stops its work and returns a Cancelled state, which Prefect's engine then
records as the run's end.

No worker watches a run started in a process (the HTTP API runs workflows this way), so nothing
cancels it the way Prefect cancels a worker's run. Writing the state from outside races the
engine: a Cancelling written before the engine starts makes it exit without running or ending the
run (which then stays Cancelling), and a state the engine proposed just before its task was
cancelled can reach the server after a forced Cancelled. Here only the engine writes, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from prefect.states import Cancelled

T = TypeVar("T")
CANCELLED_MESSAGE = "cancelled on request"

_request: ContextVar[asyncio.Event | None] = ContextVar("citadel_cancel_request", default=None)


@contextlib.contextmanager
def cancel_request() -> Iterator[asyncio.Event]:
    """A cancel request for the flow runs started in this block (an asyncio task created here
    carries it): setting the event cancels them."""
    event = asyncio.Event()
    token = _request.set(event)
    try:
        yield event
    finally:
        _request.reset(token)


async def run_unless_cancelled(work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result; when the run's cancel request comes first, ``work`` is cancelled (and
    awaited, so what it holds is given back) and a Cancelled state is returned in its place: a flow
    that returns a state ends in it. Without a cancel request this is ``await work``."""
    event = _request.get()
    if event is None:
        return await work
    if event.is_set():
        work.close()  # never started: nothing to undo
        return cast(T, Cancelled(message=CANCELLED_MESSAGE))
    running = asyncio.ensure_future(work)
    requested = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({running, requested}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        requested.cancel()
    if running.done():
        return running.result()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    return cast(T, Cancelled(message=CANCELLED_MESSAGE))
