"""Rate limits per identity (else per client address), shared by every worker and replica through
Redis, in-process on the embedded defaults; answered with the IETF ``RateLimit`` fields."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from citadel.apisettings import parse_limits

log = logging.getLogger("citadel.api")

_ITEMS = {"second": RateLimitItemPerSecond, "minute": RateLimitItemPerMinute, "hour": RateLimitItemPerHour, "day": RateLimitItemPerDay}


@dataclass
class Decision:
    """Whether a request may go on, and the header fields that say where its budget stands."""

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    """Sliding-window counters (one per period) of each identity. A store that fails lets requests
    through (a rate limiter must not take the service down with it) and says so in the log."""

    def __init__(self, limits_text: str, redis_url: str | None) -> None:
        self.items: list[tuple[RateLimitItem, str]] = [
            (_ITEMS[period](amount), period) for amount, _seconds, period in parse_limits(limits_text)
        ]
        self.storage: Storage = (
            RedisStorage("async+" + redis_url, implementation="redispy", key_prefix="citadel-rate")
            if redis_url
            else MemoryStorage()
        )
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        self.policy = ", ".join(f'"{period}";q={item.amount};w={item.get_expiry()}' for item, period in self.items)
        self._warned = 0.0

    async def check(self, identity: str) -> Decision:
        if not self.items:
            return Decision(True)
        try:
            hits = await asyncio.gather(*(self.limiter.hit(item, identity) for item, _ in self.items))
            refused = [index for index, ok in enumerate(hits) if not ok]
            # The header reports the refused window, else the one with the least left.
            stats = await asyncio.gather(*(self.limiter.get_window_stats(item, identity) for item, _ in self.items))
        except Exception as exc:  # noqa: BLE001 - the limiter's store is down: serve, and say so
            if time.monotonic() - self._warned > 30:
                self._warned = time.monotonic()
                log.warning("rate limits not enforced: their store failed (%s)", type(exc).__name__)
            return Decision(True)
        now = time.time()
        index = refused[0] if refused else min(range(len(stats)), key=lambda i: stats[i].remaining / self.items[i][0].amount)
        item, period = self.items[index]
        reset = max(1, math.ceil(stats[index].reset_time - now))
        headers = {"RateLimit-Policy": self.policy, "RateLimit": f'"{period}";r={stats[index].remaining};t={reset}'}
        if refused:
            headers["Retry-After"] = str(reset)
        return Decision(not refused, headers)

    async def aclose(self) -> None:
        try:
            await self.storage.reset() if isinstance(self.storage, MemoryStorage) else None
        except Exception:  # noqa: BLE001 - closing a store that is gone
            pass
