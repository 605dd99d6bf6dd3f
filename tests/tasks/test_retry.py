"""Tasks retry transient backend failures and fail at once on bad input."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from citadel.errors import ConfigurationError, EmbedderError
from tasks.retry import RETRYING, retry_on_transient


def make_flaky(error: Exception, failures: int):
    calls = {"n": 0}

    @task(cache_policy=NO_CACHE, **{**RETRYING, "retry_delay_seconds": 0})
    async def flaky() -> int:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error
        return calls["n"]

    return flaky, calls


async def test_transient_errors_are_retried() -> None:
    flaky, calls = make_flaky(EmbedderError("server answered 503", status=503, transient=True), failures=2)

    @flow
    async def run() -> int:
        return await flaky()

    assert await run() == 3 and calls["n"] == 3


async def test_validation_errors_fail_at_once() -> None:
    flaky, calls = make_flaky(ConfigurationError("unknown model"), failures=5)

    @flow
    async def run() -> int:
        return await flaky()

    state = await run(return_state=True)
    assert state.is_failed() and calls["n"] == 1


async def test_client_errors_are_not_retried() -> None:
    flaky, calls = make_flaky(EmbedderError("server answered 400", status=400), failures=5)

    @flow
    async def run() -> int:
        return await flaky()

    state = await run(return_state=True)
    assert state.is_failed() and calls["n"] == 1


async def test_retry_condition_reads_the_exception() -> None:
    from prefect.states import Completed, Failed

    assert await retry_on_transient(None, None, Failed(data=ConnectionError("reset"))) is True
    assert await retry_on_transient(None, None, Failed(data=ValueError("bad"))) is False
    assert await retry_on_transient(None, None, Completed(data=1)) is False
