"""The limiter's script in Redis and its in-process mirror decide alike."""

from __future__ import annotations

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


async def test_a_redis_that_fails_lets_requests_through() -> None:
    limiter = RateLimiter("1/minute", "redis://127.0.0.1:9/0")
    try:
        assert all([(await limiter.check("x")).allowed for _ in range(3)])
    finally:
        await limiter.aclose()
