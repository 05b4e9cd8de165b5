"""Cloud buckets (``kind: b2``/``s3``): config and the poll loop both kinds share.

Both kinds share everything but the SDK calls. A kind subclasses :class:`BucketSource` and
implements three blocking methods (run in the source's worker thread): ``prepare`` (log in),
``list_prefix`` (page through one prefix, feeding a :class:`PrefixAggregate` and optionally a
:class:`ReservoirSampler`) and ``download`` (fetch one object into memory, bounded).

Cost and memory:

* A bucket is re-listed only when its own ``interval`` (default 6h) has elapsed; the source
  ``interval`` (default 1h) is only how often the poller wakes up, so a bucket interval
  shorter than it acts as the source interval. The last result of every bucket (aggregates,
  listing time, restore check) is kept in the source's durable memory
  (:mod:`exporter.buckets.memory`) and copied into each new (frozen) snapshot, so a restart
  lists no bucket and repeats no restore check before its interval.
* Listing aggregates page by page: memory is O(prefixes), never O(objects)
  (``bench/bucket_memory.py`` measures it).
* The restore check picks its sample while the listing streams (reservoir sampling, one
  object kept), so it costs no extra list calls, only one download.
* A list-call budget (``list_calls_per_day``; ``kind: b2`` defaults to 250, 10 % of B2's free
  2,500 Class C calls a day) stretches the interval of large buckets: with ``C`` the list
  calls of the last listing of all the source's buckets, every bucket waits at least one
  day / ⌊budget / C⌋ between listings (more than a day if one round costs more than the
  budget), so no UTC day holds more than the budget. A 200k-object bucket (201 calls a
  listing) is listed daily, a 5k-object one keeps its 6 h.
* A failed listing backs off exponentially per bucket (the source interval, doubling, at
  most the bucket's interval) and resumes at the first page it had not counted (the S3
  continuation token or B2 start file name, kept in the durable memory with the aggregates so
  far), so a page that keeps failing costs ``retries + 1`` calls a try instead of a new
  listing every poll. An interrupted listing older than the bucket's interval starts over.

Each bucket is a target (``bucket/<name>``, :mod:`exporter.sources.targets`): its listing and
restore check run under the source's ``target_timeout``; a bucket that fails keeps its last
listing, is ``backup_target_up 0`` with a reason and is tried again at the next poll, while the
others are listed as usual. The poll itself fails only when the API as a whole is unreachable.

Restore check rules (``restore_check: {interval: 7d, max_bytes: 16MiB, canary: key}``):

* It runs together with a listing of the bucket once ``interval`` has passed since the last
  check (so at most as often as the bucket is listed). A failed check with reason
  ``download_error`` (network trouble) is retried at the next listing; other failures stay
  until the next interval, so a corrupted sample keeps alerting instead of being replaced
  by a lucky draw a few hours later.
* The sample is the ``canary`` key when set, else a uniformly random non-empty object of at
  most ``max_bytes`` among the latest visible versions seen by the listing.
* It is downloaded into memory, never to disk unless ``keep_file`` is set, and verified
  against the hash the service returns with the download (see :func:`verify`).
* Failure reasons: ``hash_mismatch``, ``missing``, ``too_large``, ``download_error``,
  ``no_candidate``. A failed check never fails the listing.

The records are in :mod:`exporter.buckets.model`, the streaming aggregation in
:mod:`exporter.buckets.listing`, the verification in :mod:`exporter.buckets.restore` and
the metric families (with a sample exposition) in :mod:`exporter.buckets.render`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar, cast

from prometheus_client.core import Metric

from exporter.buckets.config import (
    BucketConfig,
    BucketSourceConfig,
    RestoreCheckConfig,
)
from exporter.buckets.listing import PrefixAggregate, ReservoirSampler
from exporter.buckets.memory import BucketMemory, PartialListing, buckets, decode, encode
from exporter.buckets.model import (
    BucketsSnapshot,
    BucketState,
    Download,
    FailReason,
    PrefixStats,
    RestoreResult,
    SampleObject,
    Verified,
)
from exporter.buckets.render import render_buckets
from exporter.buckets.restore import verify
from exporter.schedule.jobs import Evidence
from exporter.sources.base import FetchContext, FetchError, Reason, Source
from exporter.sources.targets import (
    API_DOWN_REASONS,
    TargetStatus,
    bucket_target,
    render_targets,
    within,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- blocking calls


class CancelledCallError(Exception):
    """The poll that started this blocking call was cancelled (timed out)."""


class BlockingCall:
    """Handed to a kind's blocking methods: a thread-safe request counter and a cancel flag.

    The counter hands each count to the event loop (``call_soon_threadsafe``), so the
    poll's counter is never mutated from the worker thread while the poller reads it.
    """

    def __init__(self, ctx: FetchContext, loop: asyncio.AbstractEventLoop) -> None:
        self._ctx = ctx
        self._loop = loop
        self.cancelled = threading.Event()
        #: Calls made through this handle, per class (read once the blocking call returned).
        self.spent: Counter[str] = Counter()

    def count(self, api_class: str) -> None:
        """Count one API call of billing class ``api_class``."""
        self.spent[api_class] += 1
        # RuntimeError: the loop is closed because the exporter is shutting down.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ctx.count_request, api_class)

    def check(self) -> None:
        """Stop a long listing once its poll was abandoned."""
        if self.cancelled.is_set():
            raise CancelledCallError


R = TypeVar("R")
C = TypeVar("C", bound=BucketSourceConfig)
DAY = 86400.0


@dataclass
class _Progress:
    """What a listing has finished so far (read by :meth:`BucketSource.fetch` on failure)."""

    listed_from: float
    calls_before: int  # calls spent by the earlier tries of a resumed listing
    done: list[PrefixStats] = field(default_factory=list)
    agg: PrefixAggregate | None = None
    eligible: int = 0
    chosen: SampleObject | None = None

    def partial(self, call: BlockingCall) -> PartialListing:
        saved = None if self.agg is None else self.agg.saved
        return PartialListing(
            started=self.listed_from,
            done=tuple(self.done),
            saved=saved,
            eligible=self.eligible,
            chosen=self.chosen,
            calls=self.calls_before + call.spent.total(),
        )


class BucketSource(Source[C, BucketsSnapshot]):
    """The bucket poll loop shared by ``b2`` and ``s3``; kinds supply the blocking calls."""

    def __init__(self, config: C, *, rng: random.Random | None = None) -> None:
        super().__init__(config)
        # The sample choice needs no cryptographic randomness; tests inject a seeded rng.
        self._rng = rng or random.Random()  # noqa: S311

    # -- what a kind implements (blocking; run in the worker thread)

    @abstractmethod
    def prepare(self, call: BlockingCall) -> None:
        """Create the client and log in if needed."""

    @abstractmethod
    def list_prefix(
        self,
        call: BlockingCall,
        bucket: BucketConfig,
        prefix: str,
        agg: PrefixAggregate,
        sampler: ReservoirSampler | None,
    ) -> None:
        """Page through ``prefix``, adding every latest visible object to ``agg``."""

    @abstractmethod
    def download(
        self,
        call: BlockingCall,
        bucket: BucketConfig,
        target: SampleObject | str,
        max_bytes: int,
    ) -> Download:
        """Download ``target`` (a sampled object or a canary key) into memory."""

    @abstractmethod
    def error(self, exc: Exception) -> FetchError | None:
        """Translate an SDK exception into a :class:`FetchError` (None: not an SDK error)."""

    # -- the poll

    async def _blocking(
        self, ctx: FetchContext, call: BlockingCall, fn: Callable[..., R], *args: object
    ) -> R:
        try:
            return await ctx.run_blocking(fn, call, *args)
        except asyncio.CancelledError:
            call.cancelled.set()
            raise
        except (FetchError, CancelledCallError):
            raise
        except Exception as exc:
            err = self.error(exc)
            if err is None:
                raise
            raise err from exc

    async def fetch(self, ctx: FetchContext) -> BucketsSnapshot:
        """List every bucket that is due, run due restore checks, snapshot all buckets.

        Each bucket is a target (``bucket/<name>``) with its own ``target_timeout``: one that
        fails keeps its last listing and is reported by ``backup_target_up 0``. The poll fails
        only when the API as a whole is unreachable: the login fails, or every bucket due
        failed for a reason that is about the endpoint (connection, tls, auth).
        """
        loop = asyncio.get_running_loop()
        started = ctx.clock.time()
        stored = buckets(ctx.memory)
        for name in set(stored) - {b.name for b in self.config.buckets}:
            del stored[name]  # no longer configured
        memory: dict[str, BucketMemory] = {}
        for bucket in self.config.buckets:
            if (mem := _recall(bucket, stored.get(bucket.name))) is not None:
                memory[bucket.name] = mem
        due = [b for b in self.config.buckets if self._listing_due(b, started, memory)]
        if due:
            await self._blocking(ctx, BlockingCall(ctx, loop), self.prepare)
        failures: dict[str, FetchError] = {}
        stored_before = dict(memory)
        for bucket in due:
            # A fresh call per bucket: abandoning one listing cancels only that one.
            call = BlockingCall(ctx, loop)
            old = memory.get(bucket.name)
            resume = self._resume(bucket, started, old, memory)
            progress = _Progress(
                listed_from=started if resume is None else resume.started,
                calls_before=0 if resume is None else resume.calls,
            )
            work = self._refresh(ctx, call, bucket, started, old, resume=resume, progress=progress)
            try:
                new = await within(ctx, work, self.config.bucket_timeout, f"bucket {bucket.name!r}")
            except FetchError as exc:
                call.cancelled.set()
                failures[bucket.name] = exc
                new = self._failed(
                    ctx,
                    bucket=bucket,
                    mem=old,
                    partial=progress.partial(call),
                    exc=exc,
                    memory=memory,
                )
            memory[bucket.name] = new
            stored[bucket.name] = encode(new)
        reasons = {err.reason for err in failures.values()}
        # A rate limit (Retry-After) is the endpoint's, not one bucket's: the poll fails and
        # the poller waits it out before any request.
        waits = [e.retry_after for e in failures.values() if e.retry_after is not None]
        everything_failed = bool(failures) and len(failures) == len(due)
        if everything_failed and (reasons <= API_DOWN_REASONS or len(waits) == len(failures)):
            # The endpoint is down (or limits us), not a bucket: the source is down and the
            # poller's own back-off applies. Keep each listing's progress, but no bucket
            # back-off, so the next poll that reaches the API lists them.
            for name in failures:
                before = stored_before.get(name)
                new = replace(
                    memory[name],
                    failures=0 if before is None else before.failures,
                    retry_at=0.0 if before is None else before.retry_at,
                    failure=None if before is None else before.failure,
                )
                memory[name] = new
                stored[name] = encode(new)
            first = next(iter(failures.values()))
            message = "; ".join(f"bucket {n!r}: {e.message}" for n, e in failures.items())
            raise FetchError(first.reason, message, retry_after=max(waits, default=None))
        for name, err in failures.items():
            log.debug("source=%s bucket %r: %s", self.name, name, err)
        return self.snapshot(memory, failures)

    def bucket_interval(self, bucket: BucketConfig, memory: Mapping[str, BucketMemory]) -> float:
        """Return the time between two listings of ``bucket``: its interval, stretched by budget.

        The poller wakes once per source interval, so that is the shortest one in effect; it
        also keeps a restart shortly after a listing from listing again. With a
        ``list_calls_per_day`` budget every bucket waits long enough for the source's
        listings (the last one of each bucket, or an interrupted one that cost more) to
        average at most the budget a day.
        """
        interval = max(bucket.interval, self.config.interval)
        budget = self.config.list_calls_per_day
        if budget <= 0:
            return interval
        calls = sum(
            max(m.list_calls, m.partial.calls if m.partial is not None else 0)
            for m in memory.values()
        )
        if calls <= 0:
            return interval
        # n whole listings a day, evenly spaced: no UTC day (B2 counts per day from 00:00
        # UTC) holds more than n of them, so none costs more than the budget.
        per_day = budget // calls
        spacing = DAY / per_day if per_day >= 1 else DAY * calls / budget
        return max(interval, spacing)

    def _listing_due(
        self, bucket: BucketConfig, now: float, memory: Mapping[str, BucketMemory]
    ) -> bool:
        mem = memory.get(bucket.name)
        if mem is None:
            return True
        if mem.listed_from and tuple(p.prefix for p in mem.prefixes) != bucket.prefixes:
            return True  # the configured prefixes changed
        if mem.failures:
            return now >= mem.retry_at
        if not mem.listed_from:
            return True  # never listed completely
        return now - mem.listed_from >= self.bucket_interval(bucket, memory)

    def _resume(
        self,
        bucket: BucketConfig,
        now: float,
        mem: BucketMemory | None,
        memory: Mapping[str, BucketMemory],
    ) -> PartialListing | None:
        """Return the interrupted listing to continue (recent, same prefixes) or ``None``."""
        partial = None if mem is None else mem.partial
        if partial is None:
            return None
        if tuple(p.prefix for p in partial.done) != bucket.prefixes[: len(partial.done)]:
            return None
        if len(partial.done) >= len(bucket.prefixes):
            return None
        if now - partial.started >= self.bucket_interval(bucket, memory):
            return None  # older than a listing interval: start over
        return partial

    def _failed(
        self,
        ctx: FetchContext,
        *,
        bucket: BucketConfig,
        mem: BucketMemory | None,
        partial: PartialListing,
        exc: FetchError,
        memory: Mapping[str, BucketMemory],
    ) -> BucketMemory:
        """Remember a failed listing: keep the last values, back off, keep the progress."""
        new = BucketMemory(listed_from=0.0, prefixes=()) if mem is None else replace(mem)
        new.failures += 1
        delay = self.config.interval * 2.0 ** min(new.failures - 1, 20)
        new.retry_at = ctx.clock.time() + min(delay, self.bucket_interval(bucket, memory))
        new.failure = (exc.reason, exc.message)
        new.partial = partial
        return new

    async def _refresh(
        self,
        ctx: FetchContext,
        call: BlockingCall,
        bucket: BucketConfig,
        started: float,
        mem: BucketMemory | None,
        *,
        resume: PartialListing | None,
        progress: _Progress,
    ) -> BucketMemory:
        check = bucket.restore_check
        listed_from = progress.listed_from
        restore_due = check is not None and (mem is None or listed_from >= mem.restore_due_at)
        sampler = None
        if check is not None and restore_due and check.canary is None:
            sampler = ReservoirSampler(self._rng, check.max_bytes)
        saved = None
        if resume is not None:
            progress.done = list(resume.done)
            progress.eligible, progress.chosen = resume.eligible, resume.chosen
            saved = resume.saved
            if saved is not None:
                progress.eligible, progress.chosen = saved[5], saved[6]
        if sampler is not None:
            sampler.eligible, sampler.chosen = progress.eligible, progress.chosen
        for prefix in bucket.prefixes[len(progress.done) :]:
            agg = progress.agg = PrefixAggregate(saved)
            saved = None
            await self._blocking(ctx, call, self.list_prefix, bucket, prefix, agg, sampler)
            progress.done.append(agg.result(prefix, ctx.clock.time()))
            progress.agg = None
            if sampler is not None:
                progress.eligible, progress.chosen = sampler.eligible, sampler.chosen
        new = BucketMemory(listed_from=listed_from, prefixes=tuple(progress.done))
        new.list_calls = progress.calls_before + call.spent.total()
        if mem is not None:
            new.restore, new.restore_last_success = mem.restore, mem.restore_last_success
            new.restore_due_at = mem.restore_due_at
        if check is not None and restore_due:
            result = await self._restore_check(ctx, call, bucket, check, sampler)
            new.restore = result
            if result.success:
                new.restore_last_success = result.checked_at
            # A network failure is retried at the next listing; a verdict waits an interval.
            retry_soon = result.result == "download_error"
            new.restore_due_at = listed_from + (bucket.interval if retry_soon else check.interval)
        return new

    async def _restore_check(
        self,
        ctx: FetchContext,
        call: BlockingCall,
        bucket: BucketConfig,
        check: RestoreCheckConfig,
        sampler: ReservoirSampler | None,
    ) -> RestoreResult:
        begun = ctx.clock.monotonic()
        target: SampleObject | str | None = check.canary
        if sampler is not None:
            target = sampler.chosen
        if target is None:
            download = Download(key="", reason="no_candidate", detail="no object to sample")
        else:
            key = target if isinstance(target, str) else target.key
            try:
                download = await self._blocking(
                    ctx, call, self.download, bucket, target, check.max_bytes
                )
            except FetchError as exc:
                download = Download(key=key, reason="download_error", detail=exc.message)
            except Exception as exc:
                # A restore check must never fail the listing, whatever the SDK raised.
                log.debug("restore download of %r crashed", key, exc_info=True)
                download = Download(
                    key=key, reason="download_error", detail=f"unexpected {type(exc).__name__}"
                )
        verified: Verified = "none"
        reason: FailReason | None = download.reason
        ok = False
        if reason is None:
            ok, verified, reason = verify(download)
            if check.keep_file is not None:
                await ctx.run_blocking(_keep, check.keep_file, download.data)
        result = RestoreResult(
            checked_at=ctx.clock.time(),
            success=ok,
            result="ok" if ok or reason is None else reason,
            verified=verified,
            duration=max(0.0, ctx.clock.monotonic() - begun),
            bytes=len(download.data),
            key=download.key,
            detail=download.detail,
        )
        if not ok:
            log.warning(
                "source=%s bucket=%s restore check failed reason=%s key=%r %s",
                self.name,
                bucket.name,
                result.result,
                result.key,
                result.detail,
            )
        return result

    def snapshot(
        self,
        memory: Mapping[str, BucketMemory],
        failures: Mapping[str, FetchError] | None = None,
    ) -> BucketsSnapshot:
        """Freeze the per-bucket memory into a snapshot (config order)."""
        states = []
        for bucket in self.config.buckets:
            mem = memory.get(bucket.name)
            if mem is None or not mem.listed_from:
                continue  # never listed completely: nothing known, nothing rendered
            states.append(
                BucketState(
                    name=bucket.name,
                    price_per_tb_month=bucket.price_per_tb_month,
                    prefixes=mem.prefixes,
                    restore=mem.restore,
                    restore_last_success=mem.restore_last_success,
                )
            )
        failed = dict(failures or {})
        for bucket in self.config.buckets:
            mem = memory.get(bucket.name)
            if bucket.name not in failed and mem is not None and mem.failure is not None:
                # Backing off: still down for the reason of its last try.
                reason, message = mem.failure
                failed[bucket.name] = FetchError(cast(Reason, reason), message)
        targets = tuple(
            TargetStatus.failed(bucket_target(b.name), failed[b.name])
            if b.name in failed
            else TargetStatus(bucket_target(b.name), up=True)
            for b in self.config.buckets
        )
        return BucketsSnapshot(buckets=tuple(states), targets=targets)

    # -- rendering and evidence

    def render(self, snapshot: BucketsSnapshot) -> Iterator[Metric]:
        """Render bucket aggregates, cost estimates and restore checks."""
        yield from render_buckets(self.name, snapshot)
        yield from render_targets(self.name, self.kind, snapshot.targets)

    def evidence(self, snapshot: BucketsSnapshot, selector: Mapping[str, str]) -> Evidence | None:
        """``{bucket, prefix}`` → the newest object under the prefix (no start is recorded)."""
        return bucket_evidence(snapshot, selector)


def _recall(bucket: BucketConfig, raw: object) -> BucketMemory | None:
    """Decode a bucket's stored memory; a restore state outlives no removed ``restore_check``."""
    mem = decode(raw)
    if mem is not None and bucket.restore_check is None:
        mem.restore, mem.restore_last_success, mem.restore_due_at = None, None, 0.0
    return mem


def _keep(path: Path, data: bytes) -> None:
    """Write the restored sample where the operator asked, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write restore sample to %s: %s", path, exc.strerror or exc)


def bucket_evidence(snapshot: BucketsSnapshot, selector: Mapping[str, str]) -> Evidence | None:
    """Evidence for a configured job: newest object time of ``bucket``/``prefix``."""
    name = selector.get("bucket")
    if name is None and len(snapshot.buckets) == 1:
        name = snapshot.buckets[0].name
    state = snapshot.bucket(name) if name is not None else None
    if state is None:
        return None
    prefix = selector.get("prefix", "")
    for stats in state.prefixes:
        if stats.prefix == prefix:
            return Evidence(last_success=stats.newest, tracks_start=False)
    return None
