"""Micro-batching of embedding requests: requests that arrive together are embedded together.

An embedding server embeds one request at a time, so a thousand callers each sending one text
would otherwise cost a thousand serial requests. Texts wait in a queue only while every server
slot is busy (an idle backend takes a request at once), or for at most ``wait_s`` while some
batch is already in flight; a batch holds at most ``max_texts``; a text already queued or in
flight is computed once and shared by everyone who asked for it.

A batch holds texts of many callers, so one text that fails must not fail the others: a batch that
fails for a reason that may lie in its texts is first split along its requests (the texts that the
same callers wait for go together, one call each), so a failure stays with the callers that sent it;
only inside one such group is it halved further, until the failing texts stand alone (answered as
:class:`ItemFailed`), and when the halvings run out the group fails, never texts of other callers.
A backend that is down or answers nonsense fails the whole batch at once: every text would fail alike.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from citadel.errors import EmbedderError, InputTooLongError, is_transient

EmbedFn = Callable[[list[str]], Awaitable[np.ndarray]]

# Answers of an embedding server that may concern some of the texts sent (not the model, the
# credentials or the server's state).
TEXT_STATUSES = frozenset({400, 413, 422})
# Halvings one failed batch may cost inside its requests' groups, per doubling of its size: enough to
# single out a few failing texts; a backend that refuses every text is asked once per request (its
# group) and a bounded number of times more, not 2n - 1 times.
SPLITS_PER_DOUBLING = 2


@dataclass
class BatchStats:
    """What the batcher did since start: for the embeddings metrics."""

    batches: int = 0
    texts: int = 0
    shared: int = 0  # texts that joined an identical one already queued or in flight
    errors: int = 0  # batches or parts of batches that failed
    splits: int = 0  # failed batches split along their requests or in halves to find the texts that failed
    seconds: float = 0.0


class ItemFailed(Exception):
    """One text was refused on its own (the rest of its batch was answered): ``index`` is its place
    in the caller's texts, ``cause`` what failed."""

    def __init__(self, cause: Exception, index: int = 0) -> None:
        super().__init__(f"text {index} could not be embedded: {type(cause).__name__}")
        self.cause = cause
        self.index = index


def may_lie_in_the_texts(exc: Exception) -> bool:
    """Whether a batch's failure may be caused by some of its texts (and a smaller batch succeed):
    not when the backend is unreachable, overloaded, refuses the model or the credentials, or
    answers what does not fit the configuration."""
    if isinstance(exc, EmbedderError):
        return isinstance(exc, InputTooLongError) or (not exc.transient and not exc.backend and exc.status in TEXT_STATUSES)
    return not is_transient(exc)


def refuses_the_input(exc: Exception) -> bool:
    """Whether a failure of one text blames the text (an encoding error, a backend's 4xx), not the service."""
    if isinstance(exc, EmbedderError):
        return not exc.transient and not exc.backend and exc.status is not None and 400 <= exc.status < 500
    return isinstance(exc, (ValueError, TypeError))


def _retrieve(future: asyncio.Future[np.ndarray]) -> None:
    if not future.cancelled():
        future.exception()


class MicroBatcher:
    """Gathers texts from concurrent callers into bounded batches for ``embed``, ``slots`` at once."""

    def __init__(self, embed: EmbedFn, *, slots: int = 1, max_texts: int = 64, wait_s: float = 0.002) -> None:
        self._embed = embed
        self.slots = max(1, slots)
        self.max_texts = max(1, max_texts)
        self.wait_s = wait_s
        self.stats = BatchStats()
        self._queue: list[str] = []
        self._futures: dict[str, asyncio.Future[np.ndarray]] = {}
        self._requests: dict[str, set[int]] = {}  # text -> the requests waiting for it
        self._request_ids = itertools.count()
        self._busy = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` in order, computed in whatever batches they joined."""
        loop = asyncio.get_running_loop()
        request = next(self._request_ids)
        futures: list[asyncio.Future[np.ndarray]] = []
        for text in texts:
            future = self._futures.get(text)
            if future is None:
                future = loop.create_future()
                self._futures[text] = future
                self._requests[text] = set()
                self._queue.append(text)
            else:
                self.stats.shared += 1
            self._requests[text].add(request)
            futures.append(future)
        self._schedule()
        rows = []
        for index, future in enumerate(futures):
            try:
                # Shielded: a caller that goes away must not cancel a vector others are waiting for.
                rows.append(await asyncio.shield(future))
            except BaseException as exc:
                for rest in futures[index + 1 :]:  # answered later, to nobody: keep asyncio from reporting that
                    rest.add_done_callback(_retrieve)
                if isinstance(exc, ItemFailed):
                    raise ItemFailed(exc.cause, index) from exc.cause
                raise
        return np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def _schedule(self) -> None:
        if not self._queue or self._busy >= self.slots:
            return  # a finishing batch calls again
        if self._busy == 0 or len(self._queue) >= self.max_texts or self.wait_s <= 0:
            self._dispatch()
        elif self._timer is None:
            # Some batch is in flight and a slot is free: wait a moment for company.
            self._timer = asyncio.get_running_loop().call_later(self.wait_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._queue and self._busy < self.slots:
            self._dispatch()

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue and self._busy < self.slots:
            batch, self._queue = self._queue[: self.max_texts], self._queue[self.max_texts :]
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if self._queue and self.wait_s > 0 and len(self._queue) < self.max_texts:
                break  # the rest may gather company while this batch runs

    async def _run(self, batch: list[str]) -> None:
        started = time.perf_counter()
        try:
            await self._embed_isolating(batch, [SPLITS_PER_DOUBLING * len(batch).bit_length()])
        except BaseException:  # cancelled: every waiter still waiting gets the failure
            self._fail(batch, RuntimeError("embedding cancelled"))
            raise
        finally:
            self.stats.batches += 1
            self.stats.texts += len(batch)
            self.stats.seconds += time.perf_counter() - started
            self._busy -= 1
            self._schedule()

    async def _embed_isolating(self, texts: list[str], splits_left: list[int]) -> None:
        """Embed ``texts`` and answer their waiters. On a failure that may lie in the texts, try each
        request's group alone (one call each), then halve inside a group while ``splits_left``, shared
        by the whole batch, lasts: only the waiters of the texts that fail get the failure."""
        try:
            vectors = await self._embed(texts)
        except Exception as exc:  # noqa: BLE001 - every failure goes to the waiters it concerns
            if len(texts) > 1 and may_lie_in_the_texts(exc):
                groups = self._by_request(texts)
                if len(groups) > 1:
                    self.stats.splits += 1
                    for group in groups:
                        await self._embed_isolating(group, splits_left)
                    return
                if splits_left[0] > 0:  # one group: the callers waiting for any of it wait for all of it
                    splits_left[0] -= 1
                    self.stats.splits += 1
                    middle = len(texts) // 2
                    await self._embed_isolating(texts[:middle], splits_left)
                    await self._embed_isolating(texts[middle:], splits_left)
                    return
            self.stats.errors += 1
            self._fail(texts, ItemFailed(exc) if len(texts) == 1 and refuses_the_input(exc) else exc)
            return
        for text, vector in zip(texts, vectors, strict=True):
            self._requests.pop(text, None)
            future = self._futures.pop(text, None)
            if future is not None and not future.done():
                future.set_result(vector)

    def _by_request(self, texts: list[str]) -> list[list[str]]:
        """``texts`` grouped by the requests waiting for them, in order: a group's failure reaches
        only callers that sent every text of it (a text several requests share is a group of its own)."""
        groups: dict[frozenset[int], list[str]] = {}
        for text in texts:
            groups.setdefault(frozenset(self._requests.get(text, ())), []).append(text)
        return list(groups.values())

    def _fail(self, texts: list[str], failure: Exception) -> None:
        for text in texts:
            self._requests.pop(text, None)
            future = self._futures.pop(text, None)
            if future is not None and not future.done():
                future.set_exception(failure)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
