"""The ``kind: s3`` configuration keys and job evidence selector."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import field_validator
from pydantic.dataclasses import dataclass

from exporter.buckets.config import BucketSourceConfig
from exporter.core.config import EvidenceSelector, KindSpec, Secret, tls_problems
from exporter.core.fields import STRICT, ConfigPath, Duration, NonNegative, Text, problem

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


@dataclass(frozen=True, kw_only=True, config=STRICT)
class S3Config(BucketSourceConfig):
    """An S3 endpoint, its credentials and the buckets to watch.

    S3 has no ``verify_tls``: an endpoint is either publicly trusted or has its own CA.
    """

    kind: Literal["s3"] = "s3"
    interval: Duration = 3600.0
    timeout: Duration = 300.0
    endpoint: Text
    region: Text = "us-east-1"
    access_key_id: Text
    secret_access_key: Secret
    ca_file: ConfigPath | None = None
    #: The default price of the buckets; absent: the endpoint's documented price.
    price_per_tb_month: NonNegative | None = None

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        endpoint = value.rstrip("/")
        parts = urlsplit(endpoint)
        if endpoint and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise problem(
                f"must be an http(s) URL such as https://gateway.storjshare.io, got {endpoint!r}"
            )
        return endpoint

    @classmethod
    def bucket_price(cls, raw: Mapping[str, Any]) -> Any:
        """Buckets cost the source's price, else the endpoint's documented price."""
        if "price_per_tb_month" in raw:
            return raw["price_per_tb_month"]
        endpoint = raw.get("endpoint")
        return default_price(endpoint.rstrip("/")) if isinstance(endpoint, str) else 0.0

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Run the common checks and check ``ca_file``."""
        yield from super().problems(context)
        yield from tls_problems(True, self.ca_file)


@dataclass(frozen=True, kw_only=True, config=STRICT)
class S3Evidence(EvidenceSelector):
    """``{source, bucket, prefix}``: the newest object under a prefix of a bucket."""

    bucket: Text = ""
    prefix: Text = ""


SPEC = KindSpec(config=S3Config, evidence=S3Evidence, source="exporter.sources.s3.source:S3Source")
