"""The ``kind: b2`` configuration keys and job evidence selector."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic.dataclasses import dataclass

from exporter.buckets.config import BucketSourceConfig
from exporter.core.config import EvidenceSelector, KindSpec, Secret
from exporter.core.fields import STRICT, Duration, NonNegative, Text

DEFAULT_PRICE_PER_TB_MONTH = 6.0  # Backblaze pay-as-you-go since 2023-10-03
DEFAULT_LIST_CALLS_PER_DAY = 250.0


@dataclass(frozen=True, kw_only=True, config=STRICT)
class B2Config(BucketSourceConfig):
    """``key_id`` and ``application_key`` of an application key that may list and read."""

    kind: Literal["b2"] = "b2"
    interval: Duration = 3600.0
    timeout: Duration = 300.0
    key_id: Text
    application_key: Secret
    #: 10 % of B2's free 2,500 Class C calls a day (docs/backends.md §5).
    list_calls_per_day: NonNegative = DEFAULT_LIST_CALLS_PER_DAY
    #: The default price of the buckets (each bucket may set its own).
    price_per_tb_month: NonNegative = DEFAULT_PRICE_PER_TB_MONTH

    @classmethod
    def bucket_price(cls, raw: Mapping[str, Any]) -> Any:
        """Buckets cost the source's ``price_per_tb_month`` unless they set their own."""
        return raw.get("price_per_tb_month", DEFAULT_PRICE_PER_TB_MONTH)

    @classmethod
    def prefix_problem(cls, prefix: str) -> str | None:
        """B2 lists folders: a prefix is ``""`` or ends with ``/``."""
        return _folder_prefix(prefix)


def _folder_prefix(prefix: str) -> str | None:
    if prefix == "" or prefix.endswith("/"):
        return None
    return (
        f"B2 prefix {prefix!r} must end with '/' (b2sdk lists folders), or be \"\" for the "
        "whole bucket; for other prefixes use kind: s3 with B2's S3 endpoint"
    )


@dataclass(frozen=True, kw_only=True, config=STRICT)
class B2Evidence(EvidenceSelector):
    """``{source, bucket, prefix}``: the newest object under a prefix of a bucket."""

    bucket: Text = ""
    prefix: Text = ""


SPEC = KindSpec(config=B2Config, evidence=B2Evidence, source="exporter.sources.b2.source:B2Source")
