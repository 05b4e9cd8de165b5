"""Metric families of a TrueNAS snapshot: the shared storage families, cloud-sync tasks, release.

Sample exposition::

    # HELP backup_cloudsync_last_success_timestamp_seconds End of the task's last successful run.
    # TYPE backup_cloudsync_last_success_timestamp_seconds gauge
    backup_cloudsync_last_success_timestamp_seconds{source="nas",task="B2 daily"} 1.7697e+09
    # HELP backup_cloudsync_running 1 while the task runs.
    # TYPE backup_cloudsync_running gauge
    backup_cloudsync_running{source="nas",task="B2 daily"} 0.0
    # HELP backup_cloudsync_info Cloud-sync task settings (always 1).
    # TYPE backup_cloudsync_info gauge
    backup_cloudsync_info{bucket="b",direction="PUSH",provider="B2",source="nas",task="t",...} 1.0
    # HELP backup_cloudsync_encrypted 1 when the task encrypts the remote copy.
    # TYPE backup_cloudsync_encrypted gauge
    backup_cloudsync_encrypted{source="nas",task="Storj weekly"} 1.0
    # HELP backup_truenas_info TrueNAS release the source talks to (always 1).
    # TYPE backup_truenas_info gauge
    backup_truenas_info{source="nas",version="TrueNAS-25.04.2.6"} 1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric

from exporter.sources.truenas.model import CloudSyncTask, TrueNASSnapshot
from exporter.storage.render import render_datasets, render_pools, render_smart


def render_snapshot(source: str, snapshot: TrueNASSnapshot) -> Iterator[Metric]:
    """Render storage (shared families), cloud-sync tasks and the release."""
    yield from render_datasets(source, snapshot.datasets)
    yield from render_pools(source, snapshot.pools)
    if snapshot.smart is not None:
        yield from render_smart(source, snapshot.smart)
    yield from render_cloudsync(source, snapshot.cloudsync)
    release = GaugeMetricFamily(
        "backup_truenas_info",
        "TrueNAS release the source talks to (always 1).",
        labels=["source", "version"],
    )
    release.add_metric([source, snapshot.version], 1.0)
    yield release


def render_cloudsync(source: str, tasks: Iterable[CloudSyncTask]) -> Iterator[Metric]:
    """Render each cloud-sync task's last runs, state and settings (``backup_cloudsync_*``)."""
    labels = ["source", "task"]

    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"backup_cloudsync_{name}", doc, labels=labels)

    success = gauge(
        "last_success_timestamp_seconds",
        "End of the task's last successful run (newest seen since the exporter started, "
        "or the task's last job).",
    )
    failure = gauge(
        "last_failure_timestamp_seconds",
        "End of the task's last failed or aborted run (newest seen; 0 = none seen).",
    )
    running = gauge("running", "1 while the task runs.")
    encrypted = gauge("encrypted", "1 when the task encrypts the remote copy.")
    enabled = gauge("enabled", "1 when the task's schedule is enabled.")
    info = InfoMetricFamily(
        "backup_cloudsync", "Cloud-sync task settings (always 1).", labels=labels
    )
    for task in tasks:
        values = [source, task.task]
        if task.last_success is not None:
            success.add_metric(values, task.last_success)
        failure.add_metric(values, task.last_failure or 0.0)
        running.add_metric(values, float(task.state == "RUNNING"))
        encrypted.add_metric(values, float(task.encrypted))
        enabled.add_metric(values, float(task.enabled))
        info.add_metric(
            values,
            {
                "provider": task.provider,
                "bucket": task.bucket,
                "direction": task.direction,
                "transfer_mode": task.transfer_mode,
            },
        )
    yield from (success, failure, running, encrypted, enabled, info)
