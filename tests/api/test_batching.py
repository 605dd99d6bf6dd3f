"""The micro-batcher on its own: batches bounded, idle backends served at once, identical texts
computed once, failures reaching every waiter, a departed caller hurting no one else."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from api.batching import MicroBatcher


class Backend:
    def __init__(self, seconds: float = 0.02, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.seconds = seconds
        self.fail = fail
        self.running = 0
        self.most_running = 0

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.seconds)
            if self.fail:
                raise RuntimeError("backend down")
            return np.array([[float(len(t)), float(sum(map(ord, t)))] for t in texts], dtype=np.float32)
        finally:
            self.running -= 1


async def test_an_idle_backend_takes_a_request_at_once() -> None:
    backend = Backend()
    batcher = MicroBatcher(backend.embed, slots=1, max_texts=8, wait_s=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    vectors = await batcher.embed(["one"])
    assert loop.time() - started < 0.25  # never the 0.5 s wait: nothing else was in flight
    assert backend.calls == [["one"]] and vectors[0][0] == 3


async def test_concurrent_requests_share_bounded_batches() -> None:
    backend = Backend()
    batcher = MicroBatcher(backend.embed, slots=2, max_texts=16, wait_s=0.002)
    texts = [f"text {i}" for i in range(100)]
    results = await asyncio.gather(*(batcher.embed([t]) for t in texts))
    assert [r[0][1] for r in results] == [float(sum(map(ord, t))) for t in texts]
    assert all(len(call) <= 16 for call in backend.calls)
    assert len(backend.calls) <= 12 and backend.most_running <= 2
    assert sorted(t for call in backend.calls for t in call) == sorted(texts)


async def test_identical_texts_in_flight_are_computed_once() -> None:
    backend = Backend()
    batcher = MicroBatcher(backend.embed, slots=1, max_texts=64)
    results = await asyncio.gather(*(batcher.embed(["same", f"other {i % 2}"]) for i in range(30)))
    flat = [t for call in backend.calls for t in call]
    assert flat.count("same") == 1 and flat.count("other 0") == 1 and flat.count("other 1") == 1
    assert all(np.array_equal(r[0], results[0][0]) for r in results)
    assert batcher.stats.shared == 30 * 2 - 3


async def test_a_failure_reaches_every_waiter_of_the_batch_and_the_next_works() -> None:
    backend = Backend(fail=True)
    batcher = MicroBatcher(backend.embed, slots=1, max_texts=64)
    outcomes = await asyncio.gather(*(batcher.embed([f"t{i}"]) for i in range(5)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    backend.fail = False
    assert (await batcher.embed(["t1"]))[0][0] == 2
    assert batcher.stats.errors >= 1


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    backend = Backend(seconds=0.1)
    batcher = MicroBatcher(backend.embed, slots=1, max_texts=64)
    first = asyncio.create_task(batcher.embed(["shared"]))
    second = asyncio.create_task(batcher.embed(["shared"]))
    await asyncio.sleep(0.02)
    first.cancel()
    assert (await second)[0][0] == 6
    with pytest.raises(asyncio.CancelledError):
        await first
    await batcher.aclose()
