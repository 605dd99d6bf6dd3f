"""Rate limits per identity (else per client address), shared by every worker and replica through
one Redis script, in-process on the embedded defaults; answered with the IETF ``RateLimit`` fields.

Each period is a sliding window counter: this bucket's count plus the previous bucket's, weighted
by how much of it the window still covers. A request is refused when any period is full, and a
refused request counts against none (a client that waits is not punished for its refusals). All
periods are checked and counted in one round trip. A key's own tier (``5/second;100/minute``) adds
its periods to that round trip, counted under a prefix that names the tier: a request goes on only
when the service's periods and the key's allow it, and the fields report the tighter budget.

While Redis is down, ``CITADEL_RATE_LIMIT_ON_REDIS_DOWN`` decides: ``local`` (the default) limits
with this process's own counters, so an outage never means unlimited key guessing (each worker
allows the full budget, so the service as a whole allows workers times as much); ``closed``
refuses every limited request; ``open`` serves every request unlimited.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from citadel.apisettings import parse_limits

log = logging.getLogger("citadel.api")

OnRedisDown = Literal["open", "closed", "local"]
# After Redis fails, how long requests go to the fallback before one of them tries Redis again (the
# others keep to the fallback while it does): a Redis that hangs must not add its timeout to every request.
RETRY_REDIS_S = 2.0

# KEYS: per period, the current and the previous bucket. ARGV: now, then per period its limit and
# its seconds. Returns {0, count per period} when the request is allowed (and counted in every
# period), {i} when period i (from 1) is full (and nothing is counted). Counts are strings: Lua's
# numbers reach Python as integers.
SCRIPT = """
local now = tonumber(ARGV[1])
local periods = (#ARGV - 1) / 2
local counts = {0}
for i = 1, periods do
  local limit = tonumber(ARGV[2 * i])
  local seconds = tonumber(ARGV[2 * i + 1])
  local elapsed = now % seconds
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local count = previous * (1 - elapsed / seconds) + current
  if count + 1 > limit then return {i} end
  counts[i + 1] = tostring(count)
end
for i = 1, periods do
  redis.call('INCR', KEYS[2 * i - 1])
  redis.call('EXPIRE', KEYS[2 * i - 1], 2 * tonumber(ARGV[2 * i + 1]))
end
return counts
"""
Period = tuple[int, int, str]
"""A limit: how many requests, in how many seconds, and the period's name in the RateLimit fields."""


@dataclass
class Decision:
    """Whether a request may go on, and the header fields that say where its budget stands."""

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    """The configured periods (``20/second;600/minute``) for every identity, in Redis when a URL is
    given, else in this process. While Redis fails, ``on_redis_down`` decides (see the module), and
    the log says so.

    A key may carry a tier of its own (``5/second;100/minute``): its periods are checked in the
    same round trip as the service's, counted under a prefix that names the tier, and a request
    goes on only when both allow it (the service's periods stay the outer bound)."""

    def __init__(self, limits_text: str, redis_url: str | None, prefix: str = "citadel-rate", on_redis_down: OnRedisDown = "local") -> None:
        self.periods: list[Period] = [(amount, seconds, name) for amount, seconds, name in parse_limits(limits_text)]
        self.prefix = prefix
        self.on_redis_down = on_redis_down
        self.policy = _policy(self.periods)
        self.reported = _reported(self.periods)
        self._tiers: dict[str, tuple[str, list[Period]]] = {}
        self._redis: Any = None
        self._script: Any = None
        if redis_url:
            import redis.asyncio as redis

            pool = redis.BlockingConnectionPool.from_url(
                redis_url, max_connections=64, timeout=5.0, socket_timeout=2.0, socket_connect_timeout=2.0
            )
            self._redis = redis.Redis(connection_pool=pool)
            self._script = self._redis.register_script(SCRIPT)
        self._memory: dict[str, int] = {}
        self._warned = 0.0
        self._redis_down_until = 0.0  # in the future after a failure: the fallback decides until then; 0: Redis is thought up
        self._probing = False  # a request is trying again a Redis that failed

    def tier(self, text: str) -> tuple[str, list[Period]]:
        """A key's tier as its canonical text (the prefix of its counters) and its periods, named
        ``key-<period>`` in the RateLimit fields; parsed once per distinct text."""
        found = self._tiers.get(text)
        if found is None:
            periods = [(amount, seconds, f"key-{name}") for amount, seconds, name in parse_limits(text)]
            found = (";".join(f"{amount}/{seconds}" for amount, seconds, _ in periods), periods)
            if len(self._tiers) > 10_000:
                self._tiers.clear()
            self._tiers[text] = found
        return found

    def _plan(self, identity: str, tier: str, now: float) -> tuple[list[Period], list[str], list[int]]:
        """The periods to check, their counters' keys, and the periods whose budget the fields may report."""
        periods, keys, reported = list(self.periods), _keys(self.prefix, identity, self.periods, now), [self.reported]
        if tier:
            canonical, own = self.tier(tier)
            reported.append(len(periods) + _reported(own))
            periods += own
            keys += _keys(f"{self.prefix}:tier:{canonical}", identity, own, now)
        return periods, keys, reported if self.periods else reported[1:]

    async def check(self, identity: str, tier: str = "") -> Decision:
        """Whether ``identity`` may make one more request now (counted when it may), by the
        service's periods and by its own ``tier`` when it has one."""
        now = time.time()
        periods, keys, reported = self._plan(identity, tier, now)
        if not periods:
            return Decision(True)
        if self._script is None:
            return self._decision(periods, reported, *self._count_memory(periods, keys, now), now)
        if not self._probing and time.monotonic() >= self._redis_down_until:
            # After a failure, one request at a time tries Redis again; the others keep to the fallback
            # meanwhile instead of each waiting out the timeouts of a Redis that hangs.
            probing = self._redis_down_until > 0
            self._probing = probing
            args: list[Any] = [repr(now)]
            for amount, seconds, _ in periods:
                args += [amount, seconds]
            try:
                refused, *counts = await self._script(keys=keys, args=args)
            except Exception as exc:  # noqa: BLE001 - the limiter's store is down: the configured fallback decides
                self._redis_down_until = time.monotonic() + RETRY_REDIS_S
                self._warn(exc)
            else:
                self._redis_down_until = 0.0
                return self._decision(periods, reported, int(refused), [float(count) for count in counts], now)
            finally:
                if probing:
                    self._probing = False
        return self._without_redis(periods, keys, reported, now)

    def _without_redis(self, periods: list[Period], keys: list[str], reported: list[int], now: float) -> Decision:
        if self.on_redis_down == "local":
            return self._decision(periods, reported, *self._count_memory(periods, keys, now), now)
        if self.on_redis_down == "closed":
            retry = max(1, math.ceil(RETRY_REDIS_S))
            return Decision(False, {"RateLimit-Policy": _policy(periods), "Retry-After": str(retry)})
        return Decision(True)

    def _warn(self, exc: Exception) -> None:
        if time.monotonic() - self._warned > 30:
            self._warned = time.monotonic()
            what = {"local": "enforced per process", "closed": "refusing every request", "open": "not enforced"}[self.on_redis_down]
            log.warning(
                "rate limits %s (CITADEL_RATE_LIMIT_ON_REDIS_DOWN=%s): their Redis failed (%s)",
                what, self.on_redis_down, type(exc).__name__,
            )

    def _count_memory(self, periods: list[Period], keys: list[str], now: float) -> tuple[int, list[float]]:
        """The script's algorithm on this process's counters: the full period (from 1; 0 for none) and the counts."""
        counts = []
        for i, (amount, seconds, _) in enumerate(periods):
            elapsed = now % seconds
            counts.append(self._memory.get(keys[2 * i + 1], 0) * (1 - elapsed / seconds) + self._memory.get(keys[2 * i], 0))
            if counts[i] + 1 > amount:
                return i + 1, counts
        for i in range(len(periods)):
            self._memory[keys[2 * i]] = self._memory.get(keys[2 * i], 0) + 1
        if len(self._memory) > 100_000:
            self._forget_old_buckets(now)
        return 0, counts

    def _forget_old_buckets(self, now: float) -> None:
        """Drop buckets that no window covers any more (older than the previous one)."""
        fresh: dict[str, int] = {}
        for key, value in self._memory.items():
            seconds, bucket = key.rsplit(":", 2)[-2:]
            if int(bucket) >= int(now // int(seconds)) - 1:
                fresh[key] = value
        self._memory = fresh

    @staticmethod
    def _decision(periods: list[Period], reported: list[int], refused: int, counts: list[float], now: float) -> Decision:
        """The fields of an answer: the full period when refused, else the reported period with
        the fewest requests left (the service's on a tie)."""
        if refused:
            index, remaining = refused - 1, 0
        else:
            left = {i: max(0, math.floor(periods[i][0] - counts[i] - 1)) for i in reported}
            index = min(reported, key=lambda i: left[i])
            remaining = left[index]
        _, seconds, name = periods[index]
        reset = max(1, math.ceil(seconds - now % seconds))
        headers = {"RateLimit-Policy": _policy(periods), "RateLimit": f'"{name}";r={remaining};t={reset}'}
        if refused:
            headers["Retry-After"] = str(reset)
        return Decision(not refused, headers)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


def _policy(periods: list[Period]) -> str:
    return ", ".join(f'"{name}";q={amount};w={seconds}' for amount, seconds, name in periods)


def _reported(periods: list[Period]) -> int:
    """The period whose budget the fields report: the first of a minute or more, else the longest."""
    return next((i for i, (_, s, _) in enumerate(periods) if s >= 60), len(periods) - 1)


def _keys(prefix: str, identity: str, periods: list[Period], now: float) -> list[str]:
    """Per period, the counters of its current and its previous bucket."""
    keys = []
    for _, seconds, _ in periods:
        bucket = int(now // seconds)
        keys += [f"{prefix}:{identity}:{seconds}:{bucket}", f"{prefix}:{identity}:{seconds}:{bucket - 1}"]
    return keys
