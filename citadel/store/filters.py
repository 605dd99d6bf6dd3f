"""Payload filters: which fields and values a search can match, and the Qdrant condition for each.

The API checks its filters by the same rules (:func:`filter_key_problem`, :func:`filter_value_problem`)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from citadel.errors import ConfigurationError

if TYPE_CHECKING:
    from qdrant_client import models

# A payload field as Qdrant addresses it: names (letters, digits, '_', '-') joined by dots, each
# optionally followed by '[]' for "any element of this array" (``cities[].name``, ``tags[]``). The
# one pattern for the core and the API (which documents it and checks it with Python's re too).
FILTER_KEY_PATTERN = r"^[\w-]+(\[\])*(\.[\w-]+(\[\])*)*$"
FILTER_KEY = re.compile(FILTER_KEY_PATTERN)
FILTER_KEY_MAX = 255
# Qdrant holds integers as 64-bit signed numbers: a bigger one cannot be stored or matched.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def filter_key_problem(key: str) -> str | None:
    """What is wrong with ``key`` as a filter's payload field, or None when Qdrant can address it."""
    if len(key) > FILTER_KEY_MAX or not FILTER_KEY.fullmatch(key):
        return (
            f"filter field {key[:80]!r} is not a payload field: use letters, digits, '_' and '-', with dots between "
            f"nested names and '[]' after an array's name (cities[].name), at most {FILTER_KEY_MAX} characters"
        )
    return None


def filter_value_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a value a filter matches, or None when it can be matched."""
    if isinstance(value, (bool, str)):
        return None
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return None
        return f"{value} is beyond 64-bit integers, which the vector store holds; give a number from {INT64_MIN} to {INT64_MAX}"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} matches nothing (NaN and infinity equal nothing); give a finite number"
    return f"a {type(value).__name__} cannot be matched; give strings, numbers or booleans"


def filter_condition(key: str, value: Any) -> models.FieldCondition | models.Filter:
    """The condition that payload field ``key`` equals ``value`` (any of them, for a list).

    Strings, integers and booleans match exactly; Qdrant matches no float exactly, so a number is
    the range from it to itself (which an integer payload of the same value also falls in). NaN
    and infinity equal nothing, an integer beyond 64 bits cannot be held, and a key outside Qdrant's
    path syntax addresses nothing: each is a :class:`ConfigurationError` rather than a failure of the store.
    """
    problem = filter_key_problem(key)
    if problem:
        raise ConfigurationError(problem)
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigurationError(f"filter field {key!r} lists no value to match: give one or more")
    for v in values:
        problem = filter_value_problem(v)
        if problem:
            raise ConfigurationError(f"filter field {key!r}: {problem}")
    from qdrant_client import models  # only a search builds conditions: checking a filter needs no client

    conditions: list[models.Condition] = []
    exact = [v for v in values if isinstance(v, (str, int)) and not isinstance(v, bool)]
    for kind in (str, int):
        same = [v for v in exact if isinstance(v, kind)]
        if same:
            match = models.MatchValue(value=same[0]) if len(same) == 1 else models.MatchAny(any=same)
            conditions.append(models.FieldCondition(key=key, match=match))
    for v in values:
        if isinstance(v, bool):
            conditions.append(models.FieldCondition(key=key, match=models.MatchValue(value=v)))
        elif isinstance(v, float):
            conditions.append(models.FieldCondition(key=key, range=models.Range(gte=v, lte=v)))
    if len(conditions) == 1 and isinstance(conditions[0], models.FieldCondition):
        return conditions[0]
    return models.Filter(should=conditions)
