"""The bucket keys shared by ``kind: b2`` and ``kind: s3``: ``buckets:``, ``restore_check``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exporter.core.config import Section, SourceConfig

DEFAULT_BUCKET_INTERVAL = 6 * 3600.0
DEFAULT_RESTORE_INTERVAL = 7 * 86400.0
DEFAULT_MAX_BYTES = 16 * 2**20
MAX_RETRIES = 10


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class RestoreCheckConfig:
    """When and how to restore a sample object of a bucket."""

    interval: float = DEFAULT_RESTORE_INTERVAL
    max_bytes: int = DEFAULT_MAX_BYTES
    canary: str | None = None
    keep_file: Path | None = None


@dataclass(frozen=True, kw_only=True)
class BucketConfig:
    """One watched bucket: its prefixes, listing interval, restore check and price."""

    name: str
    prefixes: tuple[str, ...] = ("",)
    interval: float = DEFAULT_BUCKET_INTERVAL
    restore_check: RestoreCheckConfig | None = None
    price_per_tb_month: float = 0.0


@dataclass(frozen=True, kw_only=True)
class BucketSourceConfig(SourceConfig):
    """Keys shared by ``kind: b2`` and ``kind: s3``."""

    buckets: tuple[BucketConfig, ...]
    retries: int = 2


def parse_retries(sec: Section, default: int = 2) -> int:
    """Read ``retries`` (0..10): extra attempts per API call after the first."""
    retries = sec.int("retries", default, minimum=0)
    if retries > MAX_RETRIES:
        sec.problem("retries", f"must be <= {MAX_RETRIES}, got {retries}")
        return default
    return retries


def parse_buckets(
    sec: Section,
    *,
    default_price: float,
    check_prefix: Callable[[str], str | None] | None = None,
) -> tuple[BucketConfig, ...]:
    """Read the ``buckets:`` map; ``check_prefix`` returns a problem text for a bad prefix."""
    if not sec.has("buckets"):
        sec.problem("buckets", "missing (name at least one bucket)")
        return ()
    buckets: list[BucketConfig] = []
    for name, bsec in sec.sections("buckets"):
        if not name.strip() or len(name) > 255:
            bsec.problems.add(bsec.path, "bucket names must be 1-255 characters")
        prefixes = bsec.str_list("prefixes") or ("",)
        seen: set[str] = set()
        for prefix in prefixes:
            if prefix in seen:
                bsec.problem("prefixes", f"duplicate prefix {prefix!r}")
            seen.add(prefix)
            if prefix.startswith("/"):
                bsec.problem("prefixes", f"prefix {prefix!r} must not start with '/'")
            elif check_prefix is not None and (problem := check_prefix(prefix)):
                bsec.problem("prefixes", problem)
        interval = bsec.duration("interval", DEFAULT_BUCKET_INTERVAL)
        price = bsec.float("price_per_tb_month", default_price)
        if price < 0:
            bsec.problem("price_per_tb_month", "must be >= 0")
        restore = _parse_restore(bsec) if bsec.has("restore_check") else None
        bsec.finish()
        buckets.append(
            BucketConfig(
                name=name,
                prefixes=tuple(dict.fromkeys(prefixes)),
                interval=interval,
                restore_check=restore,
                price_per_tb_month=max(price, 0.0),
            )
        )
    if not buckets:
        sec.problem("buckets", "name at least one bucket")
    return tuple(buckets)


def _parse_restore(bsec: Section) -> RestoreCheckConfig:
    rsec = bsec.section("restore_check")
    interval = rsec.duration("interval", DEFAULT_RESTORE_INTERVAL)
    max_bytes = rsec.size("max_bytes", DEFAULT_MAX_BYTES)
    if max_bytes <= 0:
        rsec.problem("max_bytes", "must be greater than 0")
        max_bytes = DEFAULT_MAX_BYTES
    elif max_bytes > 2**30:
        # The sample is held in memory; a restore check is a spot check, not a full restore.
        rsec.problem("max_bytes", "must be at most 1GiB (the sample is held in memory)")
        max_bytes = DEFAULT_MAX_BYTES
    canary = rsec.str("canary") or None
    if canary is not None and canary.startswith("/"):
        rsec.problem("canary", "object keys do not start with '/'")
    keep_file = rsec.path_value("keep_file") if rsec.has("keep_file") else None
    rsec.finish()
    return RestoreCheckConfig(
        interval=interval, max_bytes=max_bytes, canary=canary, keep_file=keep_file
    )
