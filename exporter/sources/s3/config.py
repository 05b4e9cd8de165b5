"""The ``kind: s3`` configuration keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from exporter.buckets.config import BucketSourceConfig, parse_buckets, parse_retries
from exporter.core.config import Secret, Section, SourceConfigBase

STORJ_LEGACY_PRICE = 4.0  # $/TB-month, projects created before 2025-11-01 (for one year)
B2_PRICE = 6.0  # $/TB-month, Backblaze pay-as-you-go since 2023-10-03


def default_price(endpoint: str) -> float:
    """Return the documented default price per TB-month for an endpoint (0: unknown)."""
    host = (urlsplit(endpoint).hostname or "").lower()
    if "storj" in host:
        return STORJ_LEGACY_PRICE
    if host.endswith("backblazeb2.com"):
        return B2_PRICE
    return 0.0


@dataclass(frozen=True, kw_only=True)
class S3Config(BucketSourceConfig):
    """An S3 endpoint, its credentials and the buckets to watch."""

    endpoint: str
    region: str
    access_key_id: str
    secret_access_key: Secret
    ca_file: Path | None = None


def parse(sec: Section, base: SourceConfigBase) -> S3Config:
    """Read the ``kind: s3`` keys."""
    endpoint = sec.str("endpoint", required=True).rstrip("/")
    parts = urlsplit(endpoint)
    if endpoint and (parts.scheme not in ("http", "https") or not parts.hostname):
        sec.problem(
            "endpoint",
            f"must be an http(s) URL such as https://gateway.storjshare.io, got {endpoint!r}",
        )
    price = sec.float("price_per_tb_month", default_price(endpoint))
    if price < 0:
        sec.problem("price_per_tb_month", "must be >= 0")
        price = 0.0
    # S3 has no verify_tls: an endpoint is either publicly trusted or has its own CA.
    ca_file = sec.tls(insecure_allowed=False).ca_file
    return S3Config(
        name=base.name,
        kind=base.kind,
        interval=base.interval,
        timeout=base.timeout,
        jitter=base.jitter,
        endpoint=endpoint,
        region=sec.str("region", "us-east-1"),
        access_key_id=sec.str("access_key_id", required=True),
        secret_access_key=sec.secret("secret_access_key") or Secret(""),
        ca_file=ca_file,
        retries=parse_retries(sec),
        buckets=parse_buckets(sec, default_price=price),
    )
