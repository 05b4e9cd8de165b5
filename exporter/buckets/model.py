"""The frozen records of the bucket kinds: listing aggregates, downloads, restore results.

:class:`BucketsSnapshot` is what a ``b2``/``s3`` poll produces and what
:mod:`exporter.buckets.render` turns into metric families.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from exporter.sources.targets import TargetStatus

FailReason = Literal["hash_mismatch", "missing", "too_large", "download_error", "no_candidate"]
Verified = Literal["sha1", "md5", "multipart_etag", "size", "none"]


@dataclass(frozen=True)
class PrefixStats:
    """Aggregates of the latest visible objects under one prefix."""

    prefix: str
    objects: int
    size_bytes: int
    newest: float | None
    oldest: float | None
    listed_at: float


@dataclass(frozen=True)
class SampleObject:
    """The object chosen for a restore check (``version``: B2 file id or S3 version id)."""

    key: str
    size: int
    version: str = ""


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
    """A frozen view of every configured bucket that has been listed at least once.

    ``targets``: the outcome of each configured bucket's last listing (``bucket/<name>``); a
    bucket that is down keeps its last listing in ``buckets``.
    """

    buckets: tuple[BucketState, ...]
    targets: tuple[TargetStatus, ...] = ()

    def bucket(self, name: str) -> BucketState | None:
        """Find a bucket by name."""
        return next((b for b in self.buckets if b.name == name), None)
