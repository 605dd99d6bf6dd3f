"""When a failed task is worth retrying: transient backend errors only, never bad input."""

from __future__ import annotations

from typing import Any

from citadel.errors import is_transient

RETRY_DELAYS = [1.0, 2.0, 4.0, 8.0]
"""Exponential backoff; Prefect adds jitter through ``retry_jitter_factor``."""

RETRY_JITTER = 0.5


async def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry connection errors, timeouts, 429 and 5xx only."""
    exc = await state.aresult(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


RETRYING: dict[str, Any] = dict(
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=RETRY_JITTER,
    retry_condition_fn=retry_on_transient,
)
