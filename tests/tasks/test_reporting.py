"""A run's summary artifact: a Prefect server's error is tried again, then logged, never fails the run."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import httpx
import pytest
from prefect.exceptions import PrefectHTTPStatusError

from tasks import reporting


def answer(status: int) -> PrefectHTTPStatusError:
    """What Prefect's client raises for a server's answer of ``status`` to POST /artifacts/."""
    request = httpx.Request("POST", "http://prefect.test/api/artifacts/")
    response = httpx.Response(status, request=request, json={"exception_message": "Internal Server Error"})
    return PrefectHTTPStatusError.from_httpx_error(httpx.HTTPStatusError("failed", request=request, response=response))


def server(*statuses: int) -> tuple[list[int], Callable[[], Awaitable[None]]]:
    """A create call answering ``statuses`` in turn (0: saved), and the list of its calls."""
    calls: list[int] = []

    async def create() -> None:
        calls.append(1)
        status = statuses[len(calls) - 1]
        if status:
            raise answer(status)

    return calls, create


async def test_a_server_error_is_tried_again_until_the_artifact_is_saved() -> None:
    calls, create = server(500, 502, 0)
    await reporting.save_artifact("workflow", create)
    assert len(calls) == 3


async def test_an_error_that_stays_is_logged_and_the_run_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls, create = server(500, 500, 500)
    with caplog.at_level(logging.WARNING, logger="tasks.reporting"):
        await reporting.save_artifact("workflow", create)
    assert len(calls) == reporting.ARTIFACT_ATTEMPTS
    assert "the workflow artifact was not saved: the Prefect server answered 500 3 times" in caplog.text


async def test_a_refused_artifact_is_a_bug_and_raises() -> None:
    calls, create = server(422)
    with pytest.raises(PrefectHTTPStatusError):
        await reporting.save_artifact("workflow", create)
    assert len(calls) == 1
