"""Metric families of the shared storage models (datasets, pools, SMART devices).

Every backend renders its :mod:`exporter.storage.models` with :func:`render_datasets`,
:func:`render_pools` and :func:`render_smart`, so the metric names and labels are identical
whichever backend produced them.

Sample exposition::

    # HELP backup_zfs_dataset_used_bytes Space used by the dataset and its descendants.
    # TYPE backup_zfs_dataset_used_bytes gauge
    backup_zfs_dataset_used_bytes{dataset="tank/backups",source="nas"} 1.319413953331e+12
    # HELP backup_zfs_snapshot_newest_timestamp_seconds Creation time of the newest snapshot.
    # TYPE backup_zfs_snapshot_newest_timestamp_seconds gauge
    backup_zfs_snapshot_newest_timestamp_seconds{dataset="tank/backups",source="nas"} 1.7696448e+09
    # HELP backup_zfs_pool_state Pool state (one series per known state, 1 for the current one).
    # TYPE backup_zfs_pool_state gauge
    backup_zfs_pool_state{pool="tank",source="nas",state="ONLINE"} 1.0
    # HELP backup_smart_selftest_last_timestamp_seconds Estimated end of the newest self-test.
    # TYPE backup_smart_selftest_last_timestamp_seconds gauge
    backup_smart_selftest_last_timestamp_seconds{device="/dev/sda",disk="9RJ1XXXA",source="nas",\
test="long",type=""} 1.7e+09
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.storage.models import (
    EXIT_STATUS_FLAGS,
    POOL_STATES,
    DatasetInfo,
    PoolInfo,
    SmartDevice,
)


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def render_datasets(source: str, datasets: Iterable[DatasetInfo]) -> Iterator[Metric]:
    """Render per-dataset space and snapshot aggregates (no per-snapshot series).

    Sample exposition::

        # HELP backup_zfs_dataset_quota_bytes Quota of the dataset (0 = none).
        # TYPE backup_zfs_dataset_quota_bytes gauge
        backup_zfs_dataset_quota_bytes{dataset="tank/backups",source="nas"} 2.199023255552e+12
        # HELP backup_zfs_snapshots Number of snapshots of the dataset.
        # TYPE backup_zfs_snapshots gauge
        backup_zfs_snapshots{dataset="tank/backups",source="nas"} 42.0
    """
    labels = ("source", "dataset")
    used = _gauge(
        "backup_zfs_dataset_used_bytes", "Space used by the dataset and its descendants.", labels
    )
    avail = _gauge("backup_zfs_dataset_available_bytes", "Space available to the dataset.", labels)
    quota = _gauge("backup_zfs_dataset_quota_bytes", "Quota of the dataset (0 = none).", labels)
    refer = _gauge(
        "backup_zfs_dataset_referenced_bytes",
        "Data referenced by the dataset (shared with snapshots or not).",
        labels,
    )
    count = _gauge("backup_zfs_snapshots", "Number of snapshots of the dataset.", labels)
    newest = _gauge(
        "backup_zfs_snapshot_newest_timestamp_seconds",
        "Creation time of the newest snapshot.",
        labels,
    )
    oldest = _gauge(
        "backup_zfs_snapshot_oldest_timestamp_seconds",
        "Creation time of the oldest snapshot.",
        labels,
    )
    for ds in datasets:
        values = [source, ds.name]
        used.add_metric(values, ds.used)
        avail.add_metric(values, ds.available)
        quota.add_metric(values, ds.quota)
        refer.add_metric(values, ds.referenced)
        count.add_metric(values, ds.snapshots)
        if ds.snapshot_newest is not None:
            newest.add_metric(values, ds.snapshot_newest)
        if ds.snapshot_oldest is not None:
            oldest.add_metric(values, ds.snapshot_oldest)
    yield from (used, avail, quota, refer, count, newest, oldest)


def render_pools(source: str, pools: Iterable[PoolInfo]) -> Iterator[Metric]:
    """Render pool health (a StateSet as a gauge) and the last scrub.

    Sample exposition::

        # HELP backup_zfs_pool_healthy 1 when the pool is ONLINE without data errors.
        # TYPE backup_zfs_pool_healthy gauge
        backup_zfs_pool_healthy{pool="tank",source="nas"} 1.0
        # HELP backup_zfs_scrub_last_end_timestamp_seconds End of the pool's last completed scrub.
        # TYPE backup_zfs_scrub_last_end_timestamp_seconds gauge
        backup_zfs_scrub_last_end_timestamp_seconds{pool="tank",source="nas"} 1.768091642e+09
    """
    labels = ("source", "pool")
    healthy = _gauge(
        "backup_zfs_pool_healthy", "1 when the pool is ONLINE without data errors.", labels
    )
    state = _gauge(
        "backup_zfs_pool_state",
        "Pool state (one series per known state, 1 for the current one).",
        (*labels, "state"),
    )
    last_end = _gauge(
        "backup_zfs_scrub_last_end_timestamp_seconds",
        "End of the pool's last completed scrub.",
        labels,
    )
    last_start = _gauge(
        "backup_zfs_scrub_last_start_timestamp_seconds",
        "Start of the pool's last (or running) scrub.",
        labels,
    )
    errors = _gauge(
        "backup_zfs_scrub_errors", "Errors the last (or running) scrub could not repair.", labels
    )
    running = _gauge("backup_zfs_scrub_running", "1 while a scrub is in progress.", labels)
    for pool in pools:
        values = [source, pool.name]
        healthy.add_metric(values, float(pool.healthy))
        states = POOL_STATES if pool.state in POOL_STATES else (*POOL_STATES, pool.state)
        for st in states:
            state.add_metric([*values, st], float(st == pool.state))
        if pool.scrub_last_end is not None:
            last_end.add_metric(values, pool.scrub_last_end)
        if pool.scrub_last_start is not None:
            last_start.add_metric(values, pool.scrub_last_start)
        errors.add_metric(values, pool.scrub_errors)
        running.add_metric(values, float(pool.scrub_running))
    yield from (healthy, state, last_end, last_start, errors, running)


def render_smart(source: str, devices: Iterable[SmartDevice]) -> Iterator[Metric]:
    """Render per-disk SMART health and self-test results; a value is emitted only when known.

    Sample exposition::

        # HELP backup_smart_healthy 1 when the SMART overall-health self-assessment passed.
        # TYPE backup_smart_healthy gauge
        backup_smart_healthy{device="/dev/bus/0",disk="ZL2A01",source="nas",type="megaraid,0"} 1.0
        backup_smart_healthy{device="/dev/bus/0",disk="ZL2A02",source="nas",type="megaraid,1"} 1.0
        # HELP backup_smart_selftest_last_passed 1 when the newest self-test of this kind passed.
        # TYPE backup_smart_selftest_last_passed gauge
        backup_smart_selftest_last_passed{device="/dev/sda",disk="9RJ1XXXA",source="nas",\
test="long",type="sat"} 1.0

    Every series carries ``device`` (the path read), ``type`` (the ``-d`` type) and
    ``disk`` (serial number, else WWN): the disks behind one MegaRAID node share
    ``device`` and differ in ``type`` and ``disk``. A device listed twice is rendered once.
    """
    labels = ("source", "device", "type", "disk")
    test_labels = (*labels, "test")
    info = _gauge(
        "backup_smart_device_info",
        "Model and serial number of the disk (always 1).",
        (*labels, "model", "serial"),
    )
    healthy = _gauge(
        "backup_smart_healthy",
        "1 when the SMART overall-health self-assessment passed.",
        labels,
    )
    temp = _gauge("backup_smart_temperature_celsius", "Current drive temperature.", labels)
    power_on = _gauge("backup_smart_power_on_seconds", "Drive power-on time.", labels)
    realloc = _gauge(
        "backup_smart_reallocated_sectors",
        "Reallocated sector count (ATA attribute 5, raw).",
        labels,
    )
    pending = _gauge(
        "backup_smart_pending_sectors",
        "Current pending sector count (ATA attribute 197, raw).",
        labels,
    )
    media = _gauge(
        "backup_smart_media_errors",
        "Unrecovered media and data integrity errors (NVMe health log).",
        labels,
    )
    st_last = _gauge(
        "backup_smart_selftest_last_timestamp_seconds",
        "Estimated end of the newest self-test.",
        test_labels,
    )
    st_passed = _gauge(
        "backup_smart_selftest_last_passed",
        "1 when the newest self-test of this kind passed, 0 when it failed "
        "(absent when aborted or in progress).",
        test_labels,
    )
    st_success = _gauge(
        "backup_smart_selftest_last_success_timestamp_seconds",
        "Estimated end time of the newest self-test of this kind that passed.",
        test_labels,
    )
    st_running = _gauge(
        "backup_smart_selftest_running", "1 while a self-test is in progress.", labels
    )
    standby = _gauge(
        "backup_smart_standby",
        "1 when the disk was in standby at the last poll (values are from an earlier poll).",
        labels,
    )
    exit_bits = _gauge(
        "backup_smart_exit_status_flag",
        "smartctl exit status bits (smartctl(8) EXIT STATUS), one series per bit.",
        (*labels, "flag"),
    )
    error_info = _gauge(
        "backup_smart_device_error_info",
        "The disk could not be read at the last poll; reason says why (always 1).",
        (*labels, "reason"),
    )
    seen: set[tuple[str, str, str]] = set()
    for dev in devices:
        ident = (dev.device, dev.device_type, dev.disk)
        if ident in seen:
            continue  # the same disk listed twice: identical labels would be invalid
        seen.add(ident)
        values = [source, *ident]
        if dev.model or dev.serial:
            info.add_metric([*values, dev.model, dev.serial], 1.0)
        if dev.healthy is not None:
            healthy.add_metric(values, float(dev.healthy))
        for family, value in (
            (temp, dev.temperature_celsius),
            (power_on, dev.power_on_seconds),
            (realloc, dev.reallocated_sectors),
            (pending, dev.pending_sectors),
            (media, dev.media_errors),
        ):
            if value is not None:
                family.add_metric(values, float(value))
        for result in dev.selftests:
            tvalues = [*values, result.test]
            if result.last_timestamp is not None:
                st_last.add_metric(tvalues, result.last_timestamp)
            if result.passed is not None:
                st_passed.add_metric(tvalues, float(result.passed))
            if result.last_success is not None:
                st_success.add_metric(tvalues, result.last_success)
        if dev.selftest_running is not None:
            st_running.add_metric(values, float(dev.selftest_running))
        standby.add_metric(values, float(dev.standby))
        if dev.exit_status is not None:
            for bit, flag in enumerate(EXIT_STATUS_FLAGS):
                exit_bits.add_metric([*values, flag], float(bool(dev.exit_status & (1 << bit))))
        if dev.error is not None:
            error_info.add_metric([*values, dev.error_reason or "error"], 1.0)
    yield from (
        info,
        healthy,
        temp,
        power_on,
        realloc,
        pending,
        media,
        st_last,
        st_passed,
        st_success,
        st_running,
        standby,
        exit_bits,
        error_info,
    )
