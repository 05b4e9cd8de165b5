"""The per-source coordinator: polls in the background, keeps the last good snapshot.

Background polling departs from the exporter guide's "fetch at scrape time" on purpose:
B2 and S3 listings are billed per call and slow, TrueNAS may be powered off overnight,
and ``smartctl``/``zpool`` wake disks. A scrape therefore only reads memory, and the
freshness of every source is its own metric (``backup_source_last_success_timestamp_seconds``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from exporter.core.clock import Clock
from exporter.schedule.windows import OfflineWindow, expected_offline
from exporter.sources.base import FetchContext, FetchError, Reason, Source

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class PollState:
    """What the collector reads about one source; replaced whole after every poll."""

    snapshot: Any = None
    up: bool = False
    polled: bool = False
    last_success: float | None = None
    last_duration: float = 0.0
    error: FetchError | None = None

    @property
    def reason(self) -> Reason | None:
        """Why the last poll failed, if it did."""
        return None if self.error is None else self.error.reason


class Poller:
    """Polls one source on its interval: never overlapping, with timeout and jitter."""

    def __init__(
        self,
        source: Source[Any, Any],
        *,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        last_success: float | None = None,
        memory: dict[str, Any] | None = None,
        offline: Sequence[OfflineWindow] = (),
    ) -> None:
        self.source = source
        self.clock = clock
        # ``last_success`` comes from the state store after a restart: the source is not up
        # (reason ``starting``) until its first poll, but its data is only as old as that.
        self.state = PollState(last_success=last_success)
        # The kind's durable memory (see FetchContext.memory), the same dict on every poll.
        self.memory: dict[str, Any] = {} if memory is None else memory
        # When the backend is expected to be off: failed polls then are reason ``offline``.
        self.offline = tuple(offline)
        # Called after every successful poll (the state keeper persists the result).
        self.on_success: Callable[[Poller], None] | None = None
        self.requests: collections.Counter[str] = collections.Counter()
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        # One worker thread per source: a hung blocking call queues the next one
        # instead of running beside it, so a source never overlaps itself.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=source.name)
        self._lock = asyncio.Lock()
        self.polled = asyncio.Event()

    @property
    def _ids(self) -> tuple[str, str]:
        return self.source.name, self.source.kind

    @property
    def name(self) -> str:
        """The source name."""
        return self.source.name

    async def poll_once(self) -> PollState:
        """Poll now (waiting for a poll already running), store and return the new state."""
        async with self._lock:
            await self._poll()
        return self.state

    async def _poll(self) -> None:
        cfg = self.source.config
        ctx = FetchContext(clock=self.clock, executor=self._executor, memory=self.memory)
        started = self.clock.monotonic()
        previous = self.state
        error: FetchError | None = None
        try:
            async with asyncio.timeout(cfg.timeout):
                snapshot = await self.source.fetch(ctx)
        except TimeoutError:
            error = FetchError("timeout", f"no answer within {cfg.timeout:g}s")
        except FetchError as exc:
            error = exc
        except Exception as exc:
            log.exception("source=%s kind=%s poll crashed", self.name, self.source.kind)
            error = FetchError("parse", f"unexpected {type(exc).__name__} while reading")
        finally:
            self.requests.update(ctx.requests)
        duration = self.clock.monotonic() - started
        if error is not None and self.expected_offline():
            error = FetchError("offline", f"expected offline ({error.reason}: {error.message})")
        if error is None:
            self.state = PollState(
                snapshot=snapshot,
                up=True,
                polled=True,
                last_success=self.clock.time(),
                last_duration=duration,
            )
            if previous.polled and not previous.up:
                log.info("source=%s kind=%s recovered", self.name, self.source.kind)
            if self.on_success is not None:
                try:
                    self.on_success(self)
                except Exception:
                    log.exception("source=%s kind=%s persisting the poll failed", *self._ids)
        else:
            self.state = PollState(
                snapshot=previous.snapshot,
                up=False,
                polled=True,
                last_success=previous.last_success,
                last_duration=duration,
                error=error,
            )
            if previous.up or not previous.polled or previous.reason != error.reason:
                # Inside an offline window a failed poll is expected: not a warning.
                level = logging.INFO if error.reason == "offline" else logging.WARNING
                log.log(
                    level,
                    "source=%s kind=%s poll failed reason=%s: %s",
                    self.name,
                    self.source.kind,
                    error.reason,
                    error.message,
                )
        self.polled.set()

    def expected_offline(self) -> bool:
        """Tell whether the source is inside one of its declared offline windows now."""
        return expected_offline(self.offline, self.clock.time())

    def next_delay(self) -> float:
        """Seconds until the next poll: the interval plus up to ``jitter``."""
        cfg = self.source.config
        delay: float = cfg.interval + self._rng.uniform(0, cfg.jitter)
        return delay

    async def run(self) -> None:
        """Poll forever; the first poll happens at once so ``/-/ready`` comes quickly."""
        try:
            while True:
                await self.poll_once()
                await self._sleep(self.next_delay())
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
