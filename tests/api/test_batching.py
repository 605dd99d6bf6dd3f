"""The micro-batcher on its own: batches bounded, idle backends served at once, identical texts
computed once, failures reaching every waiter, a departed caller hurting no one else."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from api.batching import ItemFailed, MicroBatcher
from api.embedding import EmbeddingService
from api.errors import ApiError
from citadel.errors import EmbedderError, InputTooLongError


class Backend:
    def __init__(self, seconds: float = 0.02, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.seconds = seconds
        self.fail = fail
        self.running = 0
        self.most_running = 0
        self.hold: asyncio.Event | None = None  # when set, every call waits for it: a batch kept in flight

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(self.seconds)
            if self.fail:
                raise EmbedderError("backend down", transient=True)
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
    assert all(isinstance(o, EmbedderError) for o in outcomes)
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


async def _in_flight(backend: Backend, batcher: MicroBatcher, text: str) -> asyncio.Task[np.ndarray]:
    """``text`` embedding alone and held in the backend, so that the next callers queue behind it
    whatever the machine's load (a batch that ended before they came would not make them wait)."""
    backend.hold = asyncio.Event()
    task = asyncio.create_task(batcher.embed([text]))
    while not backend.calls:
        await asyncio.sleep(0)
    return task


async def _release_when_queued(backend: Backend) -> None:
    """Let the held batch end once the callers gathered meanwhile have all reached the batcher."""
    for _ in range(10):  # each caller reaches the batcher's queue within a few turns of the loop
        await asyncio.sleep(0)
    assert backend.hold is not None
    backend.hold.set()


class Picky(Backend):
    """A backend that fails a whole batch when any text in it is poisoned, as an encoder does."""

    def __init__(self, error: Exception, seconds: float = 0.01) -> None:
        super().__init__(seconds)
        self.error = error

    async def embed(self, texts: list[str]) -> np.ndarray:
        if any("poison" in t for t in texts):
            self.calls.append(list(texts))
            await asyncio.sleep(self.seconds)
            raise self.error
        return await super().embed(texts)


@pytest.mark.parametrize("error", [
    UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), EmbedderError("400: bad input", status=400), RuntimeError("odd"),
])
async def test_a_failing_text_fails_only_its_own_caller(error: Exception) -> None:
    backend = Picky(error)
    batcher = MicroBatcher(backend.embed, slots=1, max_texts=64, wait_s=0.05)
    blocker = await _in_flight(backend, batcher, "first, alone in its batch")
    callers = [batcher.embed([f"good {i}", f"shared {i % 3}"]) for i in range(15)]
    gathered = asyncio.gather(*callers, batcher.embed(["good 0", "poison"]), return_exceptions=True)
    await _release_when_queued(backend)
    outcomes = await gathered
    await blocker
    assert any(len(call) > 16 and any("poison" in t for t in call) for call in backend.calls)  # it did share a batch
    for i, outcome in enumerate(outcomes[:15]):
        assert isinstance(outcome, np.ndarray), outcome
        assert outcome[0][1] == float(sum(map(ord, f"good {i}")))
    poisoned = outcomes[15]
    if isinstance(error, RuntimeError):  # not the text's fault as far as anyone knows: the failure itself, to this caller only
        assert poisoned is error
    else:  # the text is refused, and the caller told which one
        assert isinstance(poisoned, ItemFailed) and poisoned.index == 1 and poisoned.cause is error
    assert batcher.stats.splits >= 1 and batcher.stats.errors == 1


async def test_a_backend_that_is_down_fails_the_batch_at_once_without_splitting() -> None:
    backend = Picky(EmbedderError("cannot reach embedding server", transient=True))
    batcher = MicroBatcher(backend.embed, slots=1, max_texts=64, wait_s=0.05)
    blocker = await _in_flight(backend, batcher, "first")
    gathered = asyncio.gather(*(batcher.embed([f"poison {i}"]) for i in range(10)), return_exceptions=True)
    await _release_when_queued(backend)
    outcomes = await gathered
    await blocker
    assert all(isinstance(o, EmbedderError) for o in outcomes)
    assert len(backend.calls) == 2 and batcher.stats.splits == 0  # the first text's batch, then one of ten


async def test_the_service_answers_a_refused_text_with_a_422_naming_its_places() -> None:
    service = EmbeddingService.__new__(EmbeddingService)  # only its micro-batchers are needed here
    service.batchers = {"model": MicroBatcher(Picky(ValueError("not text")).embed, slots=1, max_texts=64)}
    vectors = await service._computed("model", {"fine": [0], "also fine": [2]})
    assert vectors.shape == (2, 2)
    with pytest.raises(ApiError) as caught:
        await service._computed("model", {"fine": [0], "poison": [1, 3]})
    assert caught.value.status == 422 and caught.value.code == "unembeddable_text"
    assert caught.value.details == {"indexes": [1, 3]} and caught.value.message.startswith("text 1 could not be embedded")


async def test_a_backend_that_refuses_every_text_is_not_asked_without_end() -> None:
    backend = Picky(EmbedderError("400: every input refused", status=400), seconds=0.001)
    batcher = MicroBatcher(backend.embed, slots=1, max_texts=64, wait_s=0.05)
    with pytest.raises((EmbedderError, ItemFailed)):  # one caller's 64 texts: the halvings of one batch are bounded, not 2 * 63 + 1
        await batcher.embed([f"poison {i}" for i in range(64)])
    await asyncio.gather(*batcher._tasks)  # the halvings go on after the caller's first failing text
    assert len(backend.calls) <= 1 + 2 * 2 * (64).bit_length()
    backend.calls.clear()
    # 64 callers in one batch: each is asked for once on its own (no caller fails for another's texts), and no more.
    blocker = asyncio.create_task(batcher.embed(["first, alone in its batch"]))
    await asyncio.sleep(0)
    outcomes = await asyncio.gather(*(batcher.embed([f"poison {i}"]) for i in range(64)), return_exceptions=True)
    await blocker
    assert all(isinstance(o, Exception) for o in outcomes)
    assert len(backend.calls) == 1 + 1 + 64 and len(backend.calls[1]) == 64


async def test_a_model_the_backend_does_not_know_fails_the_batch_at_once() -> None:
    backend = Picky(EmbedderError("404: model not found", status=404), seconds=0.001)
    batcher = MicroBatcher(backend.embed, slots=1, max_texts=64, wait_s=0.05)
    blocker = asyncio.create_task(batcher.embed(["first"]))
    await asyncio.sleep(0)
    outcomes = await asyncio.gather(*(batcher.embed([f"poison {i}"]) for i in range(10)), return_exceptions=True)
    await blocker
    assert all(isinstance(o, EmbedderError) for o in outcomes) and batcher.stats.splits == 0


class TooLong(Backend):
    """A backend that refuses a whole batch as too long when any text in it is marked, as a model's context limit does."""

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        await asyncio.sleep(0.001)
        if any(t.startswith("long") for t in texts):
            raise InputTooLongError("input longer than the model's context", status=400)
        return np.array([[float(len(t)), float(sum(map(ord, t)))] for t in texts], dtype=np.float32)


async def test_one_caller_with_many_failing_texts_fails_no_other_caller() -> None:
    backend = TooLong()
    batcher = MicroBatcher(backend.embed, slots=1, max_texts=64, wait_s=0.05)
    blocker = asyncio.create_task(batcher.embed(["first, alone in its batch"]))
    await asyncio.sleep(0)
    innocent = [[f"text {i}.{j}" for j in range(4)] for i in range(12)]
    requests = [*innocent[:6], [f"long {k}" for k in range(10)], *innocent[6:]]
    outcomes = await asyncio.gather(*(batcher.embed(texts) for texts in requests), return_exceptions=True)
    await blocker
    assert any(len(call) == 58 for call in backend.calls)  # they did share one batch
    guilty = outcomes.pop(6)
    assert isinstance(guilty, (ItemFailed, InputTooLongError)), guilty
    for texts, outcome in zip(innocent, outcomes, strict=True):
        assert isinstance(outcome, np.ndarray), outcome
        assert [row[1] for row in outcome] == [float(sum(map(ord, t))) for t in texts]
    # Split along the callers first (one call each), then halvings inside the failing caller's texts only.
    assert all(not any(t.startswith("long") for t in call) or all(t.startswith("long") for t in call) for call in backend.calls[2:])
    assert len(backend.calls) <= 2 + 13 + 2 * 2 * (58).bit_length()
