"""The limiter's script in Redis and its in-process mirror decide alike."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest

from api.ratelimit import RateLimiter


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_periods_refusals_and_fields(store: str, redis_url: str) -> None:
    limiter = RateLimiter("1000/second;5/minute;100/hour", redis_url if store == "redis" else None, prefix=f"test-{uuid.uuid4().hex}")
    try:
        decisions = [await limiter.check("someone") for _ in range(8)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
        assert decisions[0].headers["RateLimit"].startswith('"minute";r=4;t=')
        assert decisions[4].headers["RateLimit"].startswith('"minute";r=0;t=')
        assert decisions[5].headers["RateLimit"].startswith('"minute";r=0;t=') and 1 <= int(decisions[5].headers["Retry-After"]) <= 60
        assert decisions[0].headers["RateLimit-Policy"] == '"second";q=1000;w=1, "minute";q=5;w=60, "hour";q=100;w=3600'
        assert (await limiter.check("someone else")).allowed  # budgets are per identity
    finally:
        await limiter.aclose()


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_refused_request_counts_against_no_period(store: str, redis_url: str) -> None:
    limiter = RateLimiter("2/minute;3/hour", redis_url if store == "redis" else None, prefix=f"test-{uuid.uuid4().hex}")
    try:
        assert [(await limiter.check("x")).allowed for _ in range(4)] == [True, True, False, False]
        # The hour saw two requests, not four: it is the minute that refuses.
        refused = await limiter.check("x")
        assert refused.headers["RateLimit"].startswith('"minute";')
    finally:
        await limiter.aclose()


def refused_redis_url() -> str:
    """A Redis URL on a loopback port nothing listens on: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def test_while_redis_is_down_each_process_limits_on_its_own_by_default() -> None:
    limiter = RateLimiter("3/minute", refused_redis_url())
    try:
        decisions = [await limiter.check("guesser") for _ in range(5)]
        assert [d.allowed for d in decisions] == [True, True, True, False, False]
        assert decisions[3].headers["RateLimit"].startswith('"minute";r=0;') and int(decisions[3].headers["Retry-After"]) >= 1
        assert (await limiter.check("someone else")).allowed  # budgets are still per identity
    finally:
        await limiter.aclose()


async def test_while_redis_is_down_closed_refuses_and_open_serves() -> None:
    closed = RateLimiter("3/minute", refused_redis_url(), on_redis_down="closed")
    opened = RateLimiter("3/minute", refused_redis_url(), on_redis_down="open")
    try:
        refused = [await closed.check("x") for _ in range(2)]
        assert not any(d.allowed for d in refused) and all(int(d.headers["Retry-After"]) >= 1 for d in refused)
        assert all([(await opened.check("x")).allowed for _ in range(5)])
    finally:
        await closed.aclose()
        await opened.aclose()


async def test_the_limiter_goes_back_to_redis_when_it_answers_again(redis_url: str) -> None:
    limiter = RateLimiter("2/minute", redis_url, prefix=f"test-{uuid.uuid4().hex}")
    try:
        limiter._redis_down_until = time.monotonic() + 0.2  # as after a failure: the local counters decide for a moment
        assert [(await limiter.check("x")).allowed for _ in range(3)] == [True, True, False]
        await asyncio.sleep(0.25)
        assert [(await limiter.check("x")).allowed for _ in range(3)] == [True, True, False]  # Redis's own count again
    finally:
        await limiter.aclose()


async def test_while_redis_hangs_one_request_at_a_time_tries_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis that accepts connections and never answers costs one request its timeout per retry,
    not every request that arrives meanwhile: the others are answered by the fallback at once."""
    attempts = 0
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        held.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr("api.ratelimit.RETRY_REDIS_S", 0.2)
    limiter = RateLimiter("1000/minute", f"redis://127.0.0.1:{port}/0")
    try:
        assert (await limiter.check("x")).allowed  # Redis was thought up: this one waited for its timeout
        first = attempts
        assert first >= 1
        await asyncio.sleep(0.3)  # time to try Redis again
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def timed() -> float:
            assert (await limiter.check("x")).allowed
            return loop.time() - started

        burst = asyncio.gather(*(timed() for _ in range(20)))
        await asyncio.sleep(0.5)
        assert attempts - first == 1  # one request tries Redis again; the other 19 do not
        seconds = sorted(await burst)
        assert seconds[18] < 0.5, seconds  # answered by the local counters while the one waits
        assert attempts - first == 1
    finally:
        await limiter.aclose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_keys_tier_is_checked_beside_the_services_periods(store: str, redis_url: str) -> None:
    limiter = RateLimiter("1000/second;5/minute", redis_url if store == "redis" else None, prefix=f"test-{uuid.uuid4().hex}")
    try:
        tiered = [await limiter.check("key:a", "2/minute") for _ in range(3)]
        assert [d.allowed for d in tiered] == [True, True, False]
        # The tighter budget is reported: the key's, named apart from the service's.
        assert tiered[0].headers["RateLimit"].startswith('"key-minute";r=1;t=')
        assert tiered[0].headers["RateLimit-Policy"] == '"second";q=1000;w=1, "minute";q=5;w=60, "key-minute";q=2;w=60'
        assert tiered[2].headers["RateLimit"].startswith('"key-minute";r=0;') and int(tiered[2].headers["Retry-After"]) >= 1
        # The key's refusal counted against none of the service's periods: 3 of its 5 are left.
        assert (await limiter.check("key:a")).headers["RateLimit"].startswith('"minute";r=2;')
        # A tier looser than the service's: the service's periods stay the outer bound, and are reported.
        loose = [await limiter.check("key:b", "100/minute") for _ in range(6)]
        assert [d.allowed for d in loose] == [True] * 5 + [False]
        assert loose[0].headers["RateLimit"].startswith('"minute";r=4;') and loose[5].headers["RateLimit"].startswith('"minute";r=0;')
    finally:
        await limiter.aclose()


async def test_a_tier_alone_limits_when_the_service_sets_none() -> None:
    limiter = RateLimiter("", None)
    try:
        assert (await limiter.check("x")).allowed and (await limiter.check("x")).headers == {}
        assert [(await limiter.check("x", "1/minute")).allowed for _ in range(2)] == [True, False]
    finally:
        await limiter.aclose()
