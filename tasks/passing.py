"""Handing large values to tasks as they are."""

from __future__ import annotations

from typing import TypeVar, cast

from prefect.utilities.annotations import quote

T = TypeVar("T")


def as_is(value: T) -> T:
    """``value`` wrapped in Prefect's ``quote()``: passed to a task without Prefect walking every
    document and payload in it looking for futures (measured: 28 ms a task for a 700-chunk batch,
    2 ms quoted). Typed as the value, which is what the task receives."""
    return cast(T, quote(value))
