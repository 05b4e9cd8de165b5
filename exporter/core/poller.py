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
import traceback
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from exporter.core.clock import Clock
from exporter.schedule.windows import OfflineWindow, expected_offline
from exporter.sources.base import FetchContext, FetchError, Reason, Source

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


def _safe_traceback(exc: BaseException) -> str:
    """Format ``exc``'s traceback with file, line and function only: no message, no locals.

    ``log.exception`` would print ``str(exc)``, which for an SDK error can hold the request
    (an API key in a header or URL); the exception type and where it was raised are what a
    bug report needs.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    lines = [f"  {f.filename}:{f.lineno} in {f.name}" for f in frames]
    return "\n".join([*lines, f"{type(exc).__module__}.{type(exc).__qualname__}"])


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
        # Wall-clock instant before which no request may be made (a ``Retry-After``).
        self.not_before: float | None = None

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

    def deferred(self) -> float:
        """Seconds until the backend's ``Retry-After`` ends (0 when polling is allowed)."""
        if self.not_before is None:
            return 0.0
        return max(0.0, self.not_before - self.clock.time())

    async def _poll(self) -> None:
        if self.deferred() > 0:
            # The backend asked for no request before ``not_before``: the poll is skipped and
            # the state (down, with the error that carried the Retry-After) stays as it is.
            log.debug("source=%s poll deferred %.0fs by Retry-After", self.name, self.deferred())
            self.polled.set()
            return
        self.not_before = None
        cfg = self.source.config
        ctx = FetchContext(clock=self.clock, executor=self._executor, memory=self.memory)
        started = self.clock.monotonic()
        previous = self.state
        error: FetchError | None = None
        crash = ""
        try:
            async with asyncio.timeout(cfg.timeout):
                snapshot = await self.source.fetch(ctx)
        except TimeoutError:
            error = FetchError("timeout", f"no answer within {cfg.timeout:g}s")
        except FetchError as exc:
            error = exc
        except Exception as exc:
            error = FetchError("parse", f"unexpected {type(exc).__name__} while reading")
            # Logged with the failure below (once per outage); the traceback names code, not
            # values: the exception's arguments may carry a credential (a URL, a header).
            crash = "\n" + _safe_traceback(exc)
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
            # (A source's recovery line covers its targets recovering with it.)
            self._log_targets(previous.snapshot, snapshot, recovered=not previous.up)
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
            if error.retry_after is not None:
                self.not_before = self.clock.time() + error.retry_after
            # A source whose every target already failed for this reason was logged then.
            targets = getattr(previous.snapshot, "targets", ()) or ()
            logged = bool(targets) and all(not t.up and t.reason == error.reason for t in targets)
            if (
                (previous.up and not logged)
                or not previous.polled
                or (not previous.up and previous.reason != error.reason)
            ):
                # Inside an offline window a failed poll is expected: not a warning.
                level = logging.INFO if error.reason == "offline" else logging.WARNING
                log.log(
                    level,
                    "source=%s kind=%s poll failed reason=%s: %s%s",
                    self.name,
                    self.source.kind,
                    error.reason,
                    error.message,
                    crash,
                )
        self.polled.set()

    def _log_targets(self, before: Any, after: Any, *, recovered: bool = False) -> None:
        """Log a target (bucket, storage, dataset listing) going down or back, once each.

        A target fails alone while its source stays up (exporter/sources/targets.py), so the
        source's own failure line never says so.
        """
        old = {t.target: t for t in getattr(before, "targets", ()) or ()}
        for status in getattr(after, "targets", ()) or ():
            was = old.get(status.target)
            if not status.up and (was is None or was.up or was.reason != status.reason):
                log.warning(
                    "source=%s kind=%s target=%s failed reason=%s: %s",
                    self.name,
                    self.source.kind,
                    status.target,
                    status.reason,
                    status.message,
                )
            elif status.up and was is not None and not was.up and not recovered:
                log.info(
                    "source=%s kind=%s target=%s recovered", self.name, self.source.kind,
                    status.target,
                )  # fmt: skip

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
                await self._sleep(max(self.next_delay(), self.deferred()))
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
