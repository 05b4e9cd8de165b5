"""Basic auth against bcrypt hashes, and the limits on how often a client may try.

The check follows exporter-toolkit ``web/handler.go`` ``webHandler.ServeHTTP``: an unknown
user is compared against a fixed dummy hash so that timing does not reveal which users exist,
one bcrypt comparison runs at a time (its ``bcryptMtx``; here a single worker thread, so the
event loop never blocks on bcrypt), and each (user, hash, password) result is cached
(``web/cache.go``: a bcrypt of cost 10 costs ~70 ms, docs/web-configuration.md "About bcrypt",
and a scraper sends the same pair every scrape). The cache is keyed by an HMAC of the triple
with a per-process key rather than by the plain password, holds at most 100 entries and evicts
a tenth at random when full, like upstream.

Failed attempts are limited per client address with a token bucket (:class:`FailureLimiter`):
exporter-toolkit has only a global ``rate_limit`` (also supported, :class:`TokenBucket`), which
an attacker would turn against the legitimate scraper.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import random
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from exporter.core.clock import Clock

# bcrypt (cost 10, like the usual hashes) of a random password that was thrown away: an
# unknown user costs as much time as a known one with a wrong password.
_DUMMY_HASH = b"$2b$10$HVY8HqDUidshE8SL5ghi8uE350ZeVf6Hn9NhuR1eQ8t8yjTIColgK"

CACHE_SIZE = 100


class TokenBucket:
    """``burst`` tokens, one more every ``interval`` seconds; time from the injected clock."""

    def __init__(self, clock: Clock, *, interval: float, burst: int) -> None:
        self.clock = clock
        self.interval = interval
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = clock.monotonic()

    def _refill(self) -> None:
        now = self.clock.monotonic()
        if self.interval > 0:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) / self.interval)
        self.stamp = now

    def allow(self) -> bool:
        """Take a token if there is one."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def empty(self) -> bool:
        """Return whether no token is left (without taking one)."""
        self._refill()
        return self.tokens < 1

    def retry_after(self) -> float:
        """Return the seconds until the next token."""
        self._refill()
        return max(0.0, (1 - self.tokens) * self.interval)

    def full(self) -> bool:
        """Return whether the bucket has refilled completely (it can be forgotten)."""
        self._refill()
        return self.tokens >= self.burst


class FailureLimiter:
    """Per client address: ``burst`` failed attempts, then one per ``interval``.

    While a client's bucket is empty its requests get 429 without any password check. At
    most ``max_clients`` addresses are tracked; the least recently failing one is dropped
    first, and full buckets are forgotten.
    """

    def __init__(
        self, clock: Clock, *, burst: int = 10, interval: float = 6.0, max_clients: int = 4096
    ) -> None:
        self.clock = clock
        self.burst = burst
        self.interval = interval
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def blocked(self, client: str) -> float | None:
        """Return the seconds ``client`` must wait, or None when it may try."""
        bucket = self._buckets.get(client)
        if bucket is None:
            return None
        if bucket.full():
            del self._buckets[client]
            return None
        return bucket.retry_after() if bucket.empty() else None

    def failed(self, client: str) -> None:
        """Count one failed attempt of ``client``."""
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = TokenBucket(self.clock, interval=self.interval, burst=self.burst)
        bucket.allow()
        self._buckets[client] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)


class BasicAuthChecker:
    """Checks ``Authorization: Basic`` credentials against the configured bcrypt hashes."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._cache: dict[bytes, bool] = {}
        # One comparison at a time, off the event loop (exporter-toolkit's bcryptMtx).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
        self.bcrypt_runs = 0

    def _cache_key(self, user: str, hashed: bytes, password: str) -> bytes:
        message = b"\0".join((user.encode(), hashed, password.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _remember(self, key: bytes, ok: bool) -> None:
        if len(self._cache) >= CACHE_SIZE:
            for old in random.sample(list(self._cache), max(len(self._cache) // 10, 1)):
                del self._cache[old]
        self._cache[key] = ok

    def _compare(self, password: bytes, hashed: bytes) -> bool:
        self.bcrypt_runs += 1
        try:
            return bcrypt.checkpw(password, hashed)
        except ValueError:  # pragma: no cover - hashes are validated when the file is read
            return False

    async def check(self, users: Mapping[str, str], user: str, password: str) -> bool:
        """Return whether ``user``:``password`` matches; bcrypt runs in the worker thread."""
        known = user in users
        hashed = users[user].encode() if known else _DUMMY_HASH
        key = self._cache_key(user, hashed, password)
        ok = self._cache.get(key)
        if ok is None:
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(
                self._executor, self._compare, password.encode(), hashed
            )
            self._remember(key, ok)
        return ok and known

    def close(self) -> None:
        """Stop the worker thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
