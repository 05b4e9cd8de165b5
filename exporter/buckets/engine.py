"""Cloud buckets (``kind: b2``/``s3``): config, streaming aggregation, restore checks, metrics.

Both kinds share everything but the SDK calls. A kind subclasses :class:`BucketSource` and
implements three blocking methods (run in the source's worker thread): ``prepare`` (log in),
``list_prefix`` (page through one prefix, feeding a :class:`PrefixAggregate` and optionally a
:class:`ReservoirSampler`) and ``download`` (fetch one object into memory, bounded).

Cost and memory:

* A bucket is re-listed only when its own ``interval`` (default 6h) has elapsed; the source
  ``interval`` (default 1h) is only how often the poller wakes up, so a bucket interval
  shorter than it acts as the source interval. The last result of every bucket is kept in
  the source object and copied into each new (frozen) snapshot.
* Listing aggregates page by page: memory is O(prefixes), never O(objects)
  (``bench/bucket_memory.py`` measures it).
* The restore check picks its sample while the listing streams (reservoir sampling, one
  object kept), so it costs no extra list calls, only one download.

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

Sample exposition::

    # HELP backup_bucket_objects Latest visible objects under the prefix.
    # TYPE backup_bucket_objects gauge
    backup_bucket_objects{bucket="homelab",prefix="immich/",source="b2"} 2042.0
    # HELP backup_bucket_newest_object_timestamp_seconds Upload time of the newest object.
    # TYPE backup_bucket_newest_object_timestamp_seconds gauge
    backup_bucket_newest_object_timestamp_seconds{bucket="homelab",prefix="",source="b2"} 1.77e+09
    # HELP backup_bucket_estimated_monthly_cost_dollars Listed bytes times the price per TB-month.
    # TYPE backup_bucket_estimated_monthly_cost_dollars gauge
    backup_bucket_estimated_monthly_cost_dollars{bucket="homelab",source="b2"} 1.27
    # HELP backup_restore_check_success 1 if the last restore check verified the sample.
    # TYPE backup_restore_check_success gauge
    backup_restore_check_success{bucket="homelab",source="b2"} 1.0
    # HELP backup_restore_check_info Outcome of the last restore check.
    # TYPE backup_restore_check_info gauge
    backup_restore_check_info{bucket="homelab",result="ok",source="b2",verified="sha1"} 1.0
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.buckets.config import (
    BucketConfig,
    BucketSourceConfig,
    RestoreCheckConfig,
)
from exporter.schedule.jobs import Evidence
from exporter.sources.base import FetchContext, FetchError, Source

log = logging.getLogger(__name__)

TB = 10**12  # providers bill in decimal terabytes

FailReason = Literal["hash_mismatch", "missing", "too_large", "download_error", "no_candidate"]
Verified = Literal["sha1", "md5", "multipart_etag", "size", "none"]

# Part sizes tried when reproducing a multipart ETag: the defaults of common uploaders
# (5 MiB S3 minimum / rclone / restic-minio 16 MiB, AWS CLI 8 MiB, s3cmd 15 MiB, larger
# chunkers 32-128 MiB, Storj's 64 MiB segments) and the same sizes in decimal MB.
COMMON_PART_SIZES: tuple[int, ...] = tuple(
    sorted(
        {m * 2**20 for m in (5, 8, 10, 15, 16, 25, 32, 50, 64, 100, 128)}
        | {m * 10**6 for m in (5, 8, 10, 15, 16, 25, 32, 50, 64, 100, 128)}
    )
)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class PrefixStats:
    """Aggregates of the latest visible objects under one prefix."""

    prefix: str
    objects: int
    size_bytes: int
    newest: float | None
    oldest: float | None
    listed_at: float


class PrefixAggregate:
    """Running count/size/newest/oldest of one prefix while its listing streams."""

    __slots__ = ("newest", "objects", "oldest", "size_bytes")

    def __init__(self) -> None:
        self.objects = 0
        self.size_bytes = 0
        self.newest: float | None = None
        self.oldest: float | None = None

    def add(self, size: int, timestamp: float) -> None:
        """Count one object (order does not matter: Storj lists in encrypted order)."""
        self.objects += 1
        self.size_bytes += size
        if self.newest is None or timestamp > self.newest:
            self.newest = timestamp
        if self.oldest is None or timestamp < self.oldest:
            self.oldest = timestamp

    def result(self, prefix: str, listed_at: float) -> PrefixStats:
        """Freeze the aggregate."""
        return PrefixStats(
            prefix=prefix,
            objects=self.objects,
            size_bytes=self.size_bytes,
            newest=self.newest,
            oldest=self.oldest,
            listed_at=listed_at,
        )


@dataclass(frozen=True)
class SampleObject:
    """The object chosen for a restore check (``version``: B2 file id or S3 version id)."""

    key: str
    size: int
    version: str = ""


class ReservoirSampler:
    """Chooses one object uniformly at random from a stream, in O(1) memory.

    Reservoir sampling with a reservoir of one: the n-th eligible object replaces the
    current choice with probability 1/n, so every eligible object ends up chosen with
    probability 1/N without the stream ever being stored.
    """

    __slots__ = ("chosen", "eligible", "max_bytes", "rng")

    def __init__(self, rng: random.Random, max_bytes: int) -> None:
        self.rng = rng
        self.max_bytes = max_bytes
        self.eligible = 0
        self.chosen: SampleObject | None = None

    def wants(self, size: int) -> bool:
        """Tell whether the object of ``size`` bytes should replace the current choice."""
        if size <= 0 or size > self.max_bytes:
            return False  # an empty object proves nothing; a huge one costs egress
        self.eligible += 1
        return self.rng.randrange(self.eligible) == 0

    def take(self, sample: SampleObject) -> None:
        """Record the object that :meth:`wants` accepted."""
        self.chosen = sample


@dataclass(frozen=True)
class Download:
    """What a kind's ``download`` returns: the bytes and the service's record of them.

    ``reason`` is set (and ``data`` empty) when the download could not be done.
    ``sha1``/``etag`` are the hashes the service stored for the object, when it has them;
    ``verify_etag`` is False when the ETag is known not to be an MD5 (SSE-KMS).
    ``part_size`` is the size of part 1 of a multipart object, when the store tells it.
    """

    key: str
    data: bytes = b""
    expected_size: int | None = None
    sha1: str | None = None
    etag: str | None = None
    verify_etag: bool = True
    part_size: int | None = None
    reason: FailReason | None = None
    detail: str = ""


@dataclass(frozen=True)
class RestoreResult:
    """The outcome of one restore check."""

    checked_at: float
    success: bool
    result: str  # "ok" or a FailReason
    verified: Verified
    duration: float
    bytes: int
    key: str = ""
    detail: str = ""


@dataclass(frozen=True)
class BucketState:
    """Everything known about one bucket at snapshot time."""

    name: str
    price_per_tb_month: float
    prefixes: tuple[PrefixStats, ...]
    restore: RestoreResult | None = None
    restore_last_success: float | None = None


@dataclass(frozen=True)
class BucketsSnapshot:
    """A frozen view of every configured bucket that has been listed at least once."""

    buckets: tuple[BucketState, ...]

    def bucket(self, name: str) -> BucketState | None:
        """Find a bucket by name."""
        return next((b for b in self.buckets if b.name == name), None)


# --------------------------------------------------------------------------- verification


class TooLargeError(Exception):
    """The download grew past ``max_bytes``."""


class BoundedSink:
    """A write-only, non-seekable in-memory file that refuses more than ``limit`` bytes.

    Non-seekable on purpose: b2sdk then uses its simple single-stream downloader (one
    Class B call) instead of parallel ranged downloads.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        """Append ``data``; raise :class:`TooLargeError` past the limit."""
        if len(self._buf) + len(data) > self.limit:
            raise TooLargeError(f"more than {self.limit} bytes")
        self._buf += data
        return len(data)

    def writable(self) -> bool:
        """Tell file-like consumers this sink can be written."""
        return True

    def seekable(self) -> bool:
        """Tell b2sdk not to use seeking (parallel) download strategies."""
        return False

    def flush(self) -> None:
        """Nothing to flush."""

    def getvalue(self) -> bytes:
        """Return the bytes written so far."""
        return bytes(self._buf)


def multipart_etag(data: bytes, part_size: int) -> str:
    """Compute the S3 ETag of ``data`` uploaded in parts of ``part_size``: ``md5(md5s)-<n>``."""
    digests = b"".join(
        hashlib.md5(data[i : i + part_size], usedforsecurity=False).digest()
        for i in range(0, len(data), part_size)
    )
    parts = max(1, -(-len(data) // part_size))
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{parts}"


def _multipart_candidates(size: int, parts: int) -> Iterator[int]:
    """Part sizes that split ``size`` bytes into exactly ``parts`` parts."""
    seen: set[int] = set()
    for part_size in COMMON_PART_SIZES:
        if -(-size // part_size) == parts:
            seen.add(part_size)
            yield part_size
    if parts > 1:
        # Uploaders that split evenly (size / parts rounded up to a MiB, or to a byte).
        for mult in (2**20, 10**6, 1):
            guess = -(-size // parts)
            guess = -(-guess // mult) * mult
            if guess not in seen and -(-size // guess) == parts:
                seen.add(guess)
                yield guess


def verify(download: Download) -> tuple[bool, Verified, FailReason | None]:
    """Check downloaded bytes against the service's hash; return (ok, what was verified, why).

    Rules, strongest first:

    * B2: SHA-1 of the bytes equals ``content_sha1`` (for large files the
      ``large_file_sha1`` file info); without either, the size only.
    * S3 single-part (ETag without ``-``): MD5 of the bytes equals the ETag.
    * S3 multipart (``<hex>-<n>``): the ETag is the MD5 of the parts' MD5s, which depends on
      the uploader's part size. The part size the store reports for part 1
      (``HeadObject(PartNumber=1)``), then common part sizes (and an even split) that give
      exactly ``n`` parts are tried, assuming equal parts but the last (as the AWS CLI,
      rclone, restic/minio-go and boto3 upload). A reproduced ETag counts as verified
      (``multipart_etag``). When the store reported the part size and no candidate
      reproduces the ETag, the check fails (``hash_mismatch``). When the store cannot
      report it (no ``PartNumber`` support) and no common size fits, only the size is
      verified (``size``): such a check cannot detect corruption, and says so in its
      ``verified`` label.
    * An ETag known not to be an MD5 (SSE-KMS / SSE-C) is checked by size only.

    The size always has to match the size the service reports.
    """
    data = download.data
    if download.expected_size is not None and len(data) != download.expected_size:
        return False, "size", "hash_mismatch"
    if download.sha1:
        ok = hashlib.sha1(data, usedforsecurity=False).hexdigest() == download.sha1.lower()
        return ok, "sha1", None if ok else "hash_mismatch"
    etag = (download.etag or "").strip().strip('"').lower()
    if etag and download.verify_etag:
        if "-" not in etag:
            ok = hashlib.md5(data, usedforsecurity=False).hexdigest() == etag
            return ok, "md5", None if ok else "hash_mismatch"
        _, _, count = etag.rpartition("-")
        if count.isdigit() and int(count) > 0:
            parts = int(count)
            reported = download.part_size
            if reported is not None and not 0 < reported <= len(data):
                reported = None  # nonsense from the store: ignore it
            first = (reported,) if reported is not None else ()
            for part_size in (*first, *_multipart_candidates(len(data), parts)):
                if multipart_etag(data, part_size) == etag:
                    return True, "multipart_etag", None
            if reported is not None:
                return False, "multipart_etag", "hash_mismatch"
    if download.expected_size is None:
        return True, "none", None  # downloadable, but nothing recorded to compare with
    return True, "size", None


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

    def count(self, api_class: str) -> None:
        """Count one API call of billing class ``api_class``."""
        # RuntimeError: the loop is closed because the exporter is shutting down.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ctx.count_request, api_class)

    def check(self) -> None:
        """Stop a long listing once its poll was abandoned."""
        if self.cancelled.is_set():
            raise CancelledCallError


R = TypeVar("R")
C = TypeVar("C", bound=BucketSourceConfig)


@dataclass
class _BucketMemory:
    """What the source remembers between polls about one bucket (mutable, private)."""

    listed_from: float  # poll start of the last listing: when the next one is due
    prefixes: tuple[PrefixStats, ...]
    restore: RestoreResult | None = None
    restore_last_success: float | None = None
    restore_due_at: float = 0.0


class BucketSource(Source[C, BucketsSnapshot]):
    """The bucket poll loop shared by ``b2`` and ``s3``; kinds supply the blocking calls.

    Sample exposition::

        # HELP backup_bucket_size_bytes Total size of the latest visible objects under the prefix.
        # TYPE backup_bucket_size_bytes gauge
        backup_bucket_size_bytes{bucket="homelab",prefix="immich/",source="b2"} 2.1e+11
    """

    def __init__(self, config: C, *, rng: random.Random | None = None) -> None:
        super().__init__(config)
        # The sample choice needs no cryptographic randomness; tests inject a seeded rng.
        self._rng = rng or random.Random()  # noqa: S311
        self._memory: dict[str, _BucketMemory] = {}

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
        """List every bucket that is due, run due restore checks, snapshot all buckets."""
        call = BlockingCall(ctx, asyncio.get_running_loop())
        started = ctx.clock.time()
        due = [b for b in self.config.buckets if self._listing_due(b, started)]
        if due:
            await self._blocking(ctx, call, self.prepare)
        failures: list[tuple[str, FetchError]] = []
        for bucket in due:
            try:
                await self._refresh(ctx, call, bucket, started)
            except FetchError as exc:
                failures.append((bucket.name, exc))
        if failures:
            reason = failures[0][1].reason
            message = "; ".join(f"bucket {name!r}: {exc.message}" for name, exc in failures)
            raise FetchError(reason, message)
        return self.snapshot()

    def _listing_due(self, bucket: BucketConfig, now: float) -> bool:
        mem = self._memory.get(bucket.name)
        return mem is None or now - mem.listed_from >= bucket.interval

    async def _refresh(
        self, ctx: FetchContext, call: BlockingCall, bucket: BucketConfig, started: float
    ) -> None:
        mem = self._memory.get(bucket.name)
        check = bucket.restore_check
        restore_due = check is not None and (mem is None or started >= mem.restore_due_at)
        sampler = None
        if check is not None and restore_due and check.canary is None:
            sampler = ReservoirSampler(self._rng, check.max_bytes)
        stats: list[PrefixStats] = []
        for prefix in bucket.prefixes:
            agg = PrefixAggregate()
            await self._blocking(ctx, call, self.list_prefix, bucket, prefix, agg, sampler)
            stats.append(agg.result(prefix, ctx.clock.time()))
        new = _BucketMemory(listed_from=started, prefixes=tuple(stats))
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
            new.restore_due_at = started + (bucket.interval if retry_soon else check.interval)
        self._memory[bucket.name] = new

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

    def snapshot(self) -> BucketsSnapshot:
        """Freeze the per-bucket memory into a snapshot (config order)."""
        states = []
        for bucket in self.config.buckets:
            mem = self._memory.get(bucket.name)
            if mem is None:
                continue
            states.append(
                BucketState(
                    name=bucket.name,
                    price_per_tb_month=bucket.price_per_tb_month,
                    prefixes=mem.prefixes,
                    restore=mem.restore,
                    restore_last_success=mem.restore_last_success,
                )
            )
        return BucketsSnapshot(buckets=tuple(states))

    # -- rendering and evidence

    def render(self, snapshot: BucketsSnapshot) -> Iterator[Metric]:
        """Render bucket aggregates, cost estimates and restore checks."""
        return render_buckets(self.name, snapshot)

    def evidence(self, snapshot: BucketsSnapshot, selector: Mapping[str, str]) -> Evidence | None:
        """``{bucket, prefix}`` → the newest object under the prefix (no start is recorded)."""
        return bucket_evidence(snapshot, selector)


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


def billed_bytes(state: BucketState) -> int:
    """Bytes of the bucket's listed prefixes, counting nested configured prefixes once."""
    prefixes = [p.prefix for p in state.prefixes]
    total = 0
    for stats in state.prefixes:
        covered = any(o != stats.prefix and stats.prefix.startswith(o) for o in prefixes)
        if not covered:
            total += stats.size_bytes
    return total


_PREFIX_GAUGES = (
    ("objects", "backup_bucket_objects", "Latest visible objects under the prefix."),
    (
        "size",
        "backup_bucket_size_bytes",
        "Total size of the latest visible objects under the prefix.",
    ),
    (
        "newest",
        "backup_bucket_newest_object_timestamp_seconds",
        "Upload time of the newest object under the prefix.",
    ),
    (
        "oldest",
        "backup_bucket_oldest_object_timestamp_seconds",
        "Upload time of the oldest object under the prefix.",
    ),
    (
        "listed",
        "backup_bucket_last_listing_timestamp_seconds",
        "When the prefix was last listed completely.",
    ),
)

COST_HELP = (
    "Estimated monthly storage cost: listed bytes / 10^12 times price_per_tb_month "
    "(defaults: B2 $6/TB-month, pay-as-you-go since 2023-10-03; Storj $4/TB-month legacy, "
    "tiers $6/$10/$15 since 2025-11-01; other S3: unset, no series)."
)


def render_buckets(source: str, snapshot: BucketsSnapshot) -> Iterator[Metric]:
    """Build every bucket family fresh from ``snapshot``."""
    labels = ["source", "bucket", "prefix"]
    fams = {key: GaugeMetricFamily(name, doc, labels=labels) for key, name, doc in _PREFIX_GAUGES}
    blabels = ["source", "bucket"]
    cost = GaugeMetricFamily(
        "backup_bucket_estimated_monthly_cost_dollars", COST_HELP, labels=blabels
    )
    price = GaugeMetricFamily(
        "backup_bucket_storage_price_dollars",
        "Storage price per TB-month (10^12 bytes) used for the cost estimate "
        "(config price_per_tb_month).",
        labels=blabels,
    )
    r_success = GaugeMetricFamily(
        "backup_restore_check_success",
        "1 if the last restore check verified the sample object.",
        labels=blabels,
    )
    r_last_success = GaugeMetricFamily(
        "backup_restore_check_last_success_timestamp_seconds",
        "When a restore check last verified a sample object.",
        labels=blabels,
    )
    r_last_run = GaugeMetricFamily(
        "backup_restore_check_last_run_timestamp_seconds",
        "When the last restore check ran.",
        labels=blabels,
    )
    r_duration = GaugeMetricFamily(
        "backup_restore_check_duration_seconds",
        "How long the last restore check took (download and verification).",
        labels=blabels,
    )
    r_bytes = GaugeMetricFamily(
        "backup_restore_check_bytes",
        "Bytes downloaded by the last restore check.",
        labels=blabels,
    )
    r_info = GaugeMetricFamily(
        "backup_restore_check_info",
        "Outcome of the last restore check: result ok or the failure reason "
        "(hash_mismatch, missing, too_large, download_error, no_candidate), and what was "
        "verified (sha1, md5, multipart_etag, size, none).",
        labels=[*blabels, "result", "verified"],
    )
    for state in snapshot.buckets:
        bvalues = [source, state.name]
        for stats in state.prefixes:
            values = [source, state.name, stats.prefix]
            fams["objects"].add_metric(values, stats.objects)
            fams["size"].add_metric(values, stats.size_bytes)
            if stats.newest is not None:
                fams["newest"].add_metric(values, stats.newest)
            if stats.oldest is not None:
                fams["oldest"].add_metric(values, stats.oldest)
            fams["listed"].add_metric(values, stats.listed_at)
        if state.price_per_tb_month > 0:
            price.add_metric(bvalues, state.price_per_tb_month)
            cost.add_metric(bvalues, billed_bytes(state) / TB * state.price_per_tb_month)
        r = state.restore
        if r is not None:
            r_success.add_metric(bvalues, float(r.success))
            r_last_run.add_metric(bvalues, r.checked_at)
            r_duration.add_metric(bvalues, r.duration)
            r_bytes.add_metric(bvalues, r.bytes)
            r_info.add_metric([*bvalues, r.result, r.verified], 1)
        if state.restore_last_success is not None:
            r_last_success.add_metric(bvalues, state.restore_last_success)
    yield from fams.values()
    yield from (cost, price, r_success, r_last_success, r_last_run, r_duration, r_bytes, r_info)
