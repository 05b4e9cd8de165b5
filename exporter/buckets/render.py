"""Metric families of the bucket kinds (``b2``, ``s3``): prefix aggregates, cost, restore checks.

Sample exposition::

    # HELP backup_bucket_objects Latest visible objects under the prefix.
    # TYPE backup_bucket_objects gauge
    backup_bucket_objects{bucket="homelab",prefix="immich/",source="b2"} 2042.0
    # HELP backup_bucket_size_bytes Total size of the latest visible objects under the prefix.
    # TYPE backup_bucket_size_bytes gauge
    backup_bucket_size_bytes{bucket="homelab",prefix="immich/",source="b2"} 2.1e+11
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

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.buckets.listing import billed_bytes
from exporter.buckets.model import BucketsSnapshot

TB = 10**12  # providers bill in decimal terabytes


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
