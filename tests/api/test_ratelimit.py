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
