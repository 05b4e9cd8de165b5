"""The ``kind: b2`` configuration keys."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.buckets.config import BucketSourceConfig, parse_buckets, parse_retries
from exporter.core.config import Secret, Section, SourceConfigBase

DEFAULT_PRICE_PER_TB_MONTH = 6.0  # Backblaze pay-as-you-go since 2023-10-03


@dataclass(frozen=True, kw_only=True)
class B2Config(BucketSourceConfig):
    """``key_id`` and ``application_key`` of an application key that may list and read."""

    key_id: str
    application_key: Secret


def _folder_prefix(prefix: str) -> str | None:
    if prefix == "" or prefix.endswith("/"):
        return None
    return (
        f"B2 prefix {prefix!r} must end with '/' (b2sdk lists folders), or be \"\" for the "
        "whole bucket; for other prefixes use kind: s3 with B2's S3 endpoint"
    )


def parse(sec: Section, base: SourceConfigBase) -> B2Config:
    """Read the ``kind: b2`` keys."""
    key_id = sec.str("key_id", required=True)
    application_key = sec.secret("application_key") or Secret("")
    price = sec.float("price_per_tb_month", DEFAULT_PRICE_PER_TB_MONTH)
    if price < 0:
        sec.problem("price_per_tb_month", "must be >= 0")
        price = DEFAULT_PRICE_PER_TB_MONTH
    return B2Config(
        name=base.name,
        kind=base.kind,
        interval=base.interval,
        timeout=base.timeout,
        jitter=base.jitter,
        key_id=key_id,
        application_key=application_key,
        retries=parse_retries(sec),
        buckets=parse_buckets(sec, default_price=price, check_prefix=_folder_prefix),
    )
