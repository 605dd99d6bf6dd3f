"""Rate limits per identity (else per client address), shared by every worker and replica through
one Redis script, in-process on the embedded defaults; answered with the IETF ``RateLimit`` fields.

Each period is a sliding window counter: this bucket's count plus the previous bucket's, weighted
by how much of it the window still covers. A request is refused when any period is full, and a
refused request counts against none (a client that waits is not punished for its refusals). All
periods are checked and counted in one round trip.

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

# KEYS: per period, the current and the previous bucket. ARGV: now, then per period its limit,
# its seconds and the index of the reported period. Returns {allowed, period index, remaining, reset}.
SCRIPT = """
local now = tonumber(ARGV[1])
local periods = (#ARGV - 2) / 2
local report = tonumber(ARGV[#ARGV])
local counts, limits, seconds = {}, {}, {}
local refused = 0
for i = 1, periods do
  limits[i] = tonumber(ARGV[2 * i])
  seconds[i] = tonumber(ARGV[2 * i + 1])
  local elapsed = now % seconds[i]
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  counts[i] = previous * (1 - elapsed / seconds[i]) + current
  if refused == 0 and counts[i] + 1 > limits[i] then refused = i end
end
if refused > 0 then
  return {0, refused - 1, 0, tostring(seconds[refused] - now % seconds[refused])}
end
for i = 1, periods do
  redis.call('INCR', KEYS[2 * i - 1])
  redis.call('EXPIRE', KEYS[2 * i - 1], 2 * seconds[i])
end
local r = report + 1
return {1, report, math.max(0, math.floor(limits[r] - counts[r] - 1)), tostring(seconds[r] - now % seconds[r])}
"""


@dataclass
class Decision:
    """Whether a request may go on, and the header fields that say where its budget stands."""

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    """The configured periods (``20/second;600/minute``) for every identity, in Redis when a URL is
    given, else in this process. While Redis fails, ``on_redis_down`` decides (see the module), and
    the log says so."""

    def __init__(self, limits_text: str, redis_url: str | None, prefix: str = "citadel-rate", on_redis_down: OnRedisDown = "local") -> None:
        self.periods = [(amount, seconds, name) for amount, seconds, name in parse_limits(limits_text)]
        self.prefix = prefix
        self.on_redis_down = on_redis_down
        self.policy = ", ".join(f'"{name}";q={amount};w={seconds}' for amount, seconds, name in self.periods)
        self.reported = next((i for i, (_, s, _) in enumerate(self.periods) if s >= 60), len(self.periods) - 1)
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

    def _keys(self, identity: str, now: float) -> list[str]:
        keys = []
        for _, seconds, _ in self.periods:
            bucket = int(now // seconds)
            keys += [f"{self.prefix}:{identity}:{seconds}:{bucket}", f"{self.prefix}:{identity}:{seconds}:{bucket - 1}"]
        return keys

    async def check(self, identity: str) -> Decision:
        if not self.periods:
            return Decision(True)
        now = time.time()
        keys = self._keys(identity, now)
        if self._script is None:
            return self._check_memory(keys, now)
        if not self._probing and time.monotonic() >= self._redis_down_until:
            # After a failure, one request at a time tries Redis again; the others keep to the fallback
            # meanwhile instead of each waiting out the timeouts of a Redis that hangs.
            probing = self._redis_down_until > 0
            self._probing = probing
            args: list[Any] = [repr(now)]
            for amount, seconds, _ in self.periods:
                args += [amount, seconds]
            args.append(self.reported)
            try:
                allowed, index, remaining, reset = await self._script(keys=keys, args=args)
            except Exception as exc:  # noqa: BLE001 - the limiter's store is down: the configured fallback decides
                self._redis_down_until = time.monotonic() + RETRY_REDIS_S
                self._warn(exc)
            else:
                self._redis_down_until = 0.0
                return self._decision(bool(allowed), int(index), int(remaining), float(reset))
            finally:
                if probing:
                    self._probing = False
        return self._without_redis(keys, now)

    def _without_redis(self, keys: list[str], now: float) -> Decision:
        if self.on_redis_down == "local":
            return self._check_memory(keys, now)
        if self.on_redis_down == "closed":
            retry = max(1, math.ceil(RETRY_REDIS_S))
            return Decision(False, {"RateLimit-Policy": self.policy, "Retry-After": str(retry)})
        return Decision(True)

    def _warn(self, exc: Exception) -> None:
        if time.monotonic() - self._warned > 30:
            self._warned = time.monotonic()
            what = {"local": "enforced per process", "closed": "refusing every request", "open": "not enforced"}[self.on_redis_down]
            log.warning(
                "rate limits %s (CITADEL_RATE_LIMIT_ON_REDIS_DOWN=%s): their Redis failed (%s)",
                what, self.on_redis_down, type(exc).__name__,
            )

    def _check_memory(self, keys: list[str], now: float) -> Decision:
        """The script's algorithm on this process's counters."""
        counts = []
        for i, (amount, seconds, _) in enumerate(self.periods):
            elapsed = now % seconds
            counts.append(self._memory.get(keys[2 * i + 1], 0) * (1 - elapsed / seconds) + self._memory.get(keys[2 * i], 0))
            if counts[i] + 1 > amount:
                return self._decision(False, i, 0, seconds - elapsed)
        for i in range(len(self.periods)):
            self._memory[keys[2 * i]] = self._memory.get(keys[2 * i], 0) + 1
        if len(self._memory) > 100_000:
            self._forget_old_buckets(now)
        amount, seconds, _ = self.periods[self.reported]
        return self._decision(True, self.reported, max(0, math.floor(amount - counts[self.reported] - 1)), seconds - now % seconds)

    def _forget_old_buckets(self, now: float) -> None:
        """Drop buckets that no window covers any more (older than the previous one)."""
        fresh: dict[str, int] = {}
        for key, value in self._memory.items():
            seconds, bucket = key.rsplit(":", 2)[-2:]
            if int(bucket) >= int(now // int(seconds)) - 1:
                fresh[key] = value
        self._memory = fresh

    def _decision(self, allowed: bool, index: int, remaining: int, reset_s: float) -> Decision:
        reset = max(1, math.ceil(reset_s))
        headers = {"RateLimit-Policy": self.policy, "RateLimit": f'"{self.periods[index][2]}";r={remaining};t={reset}'}
        if not allowed:
            headers["Retry-After"] = str(reset)
        return Decision(allowed, headers)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
