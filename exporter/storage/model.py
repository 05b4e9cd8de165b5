"""Storage health shared by the ``zfs``, ``smartctl`` and ``truenas`` kinds.

Every backend turns what it reads into the same frozen models (:class:`DatasetInfo`,
:class:`PoolInfo`, :class:`SmartDevice`) and renders them with :func:`render_datasets`,
:func:`render_pools` and :func:`render_smart`, so the metric names and labels are identical
whichever backend produced them. The parsers for the local command line tools
(``zfs list``, ``zpool status``, ``smartctl --json``) live here too; they are pure
functions of the command output (plus ``now`` / a time zone where the output needs it).

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
    backup_smart_selftest_last_timestamp_seconds{device="/dev/sda",source="nas",test="long"} 1.7e+09
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.schedule.jobs import Evidence

# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------

#: The pool states ``zpool status`` can report (``zpool_state_to_name``/``zpool_pool_state``).
POOL_STATES: tuple[str, ...] = (
    "ONLINE",
    "DEGRADED",
    "FAULTED",
    "OFFLINE",
    "UNAVAIL",
    "REMOVED",
    "SUSPENDED",
)

#: The self-test kinds tracked per device; other kinds (conveyance, selective, vendor) are ignored.
SELFTEST_KINDS: tuple[str, ...] = ("short", "long")


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """One ZFS filesystem or volume, with its snapshots aggregated (never listed)."""

    name: str
    used: int
    available: int
    quota: int = 0  # 0 = no quota
    referenced: int = 0
    snapshots: int = 0
    snapshot_newest: float | None = None  # Unix seconds, creation of the newest snapshot
    snapshot_oldest: float | None = None


@dataclass(frozen=True, kw_only=True)
class PoolInfo:
    """One ZFS pool's state and its last scrub (``zpool status`` keeps only the last scan)."""

    name: str
    state: str
    healthy: bool
    scrub_last_end: float | None = None  # end of the last *completed* scrub
    scrub_errors: int = 0  # unrepaired errors found by that scrub (or the running one)
    scrub_running: bool = False
    scrub_last_start: float | None = None  # start of the last or the running scrub


@dataclass(frozen=True, kw_only=True)
class SelfTestResult:
    """The newest logged SMART self-test of one kind (``short`` or ``long``) on one device.

    ``passed`` is ``None`` when that test was aborted, interrupted, hit a fatal/unknown
    error or is still in progress; ``last_success`` is the newest test of this kind that
    completed without error (it may be older than ``last_timestamp``).
    """

    test: str
    last_timestamp: float | None
    passed: bool | None
    status: str = ""
    last_success: float | None = None


@dataclass(frozen=True, kw_only=True)
class SmartDevice:
    """What one ``smartctl`` run (or the TrueNAS API) says about one disk.

    Every measurement is ``None`` when unknown. ``error`` (a message) and ``error_reason``
    (a short code used as a label: ``open_failed``, ``command_line``, ``timeout``,
    ``parse``, ``no_data``) are set when the device could not be read. ``exit_status`` is
    smartctl's bitmask (``None`` when the data did not come from smartctl). ``standby``
    marks a device that was asleep at the last poll; the values are then those of the
    previous poll.
    """

    device: str
    model: str = ""
    serial: str = ""
    protocol: str = ""
    healthy: bool | None = None
    temperature_celsius: float | None = None
    power_on_seconds: float | None = None
    reallocated_sectors: int | None = None
    pending_sectors: int | None = None
    media_errors: int | None = None
    selftests: tuple[SelfTestResult, ...] = ()
    selftest_running: bool | None = None
    selftest_remaining_percent: float | None = None
    error: str | None = None
    error_reason: str = ""
    exit_status: int | None = None
    standby: bool = False

    def selftest(self, test: str) -> SelfTestResult | None:
        """Return the newest result of kind ``test`` (``short``/``long``), if any was logged."""
        for result in self.selftests:
            if result.test == test:
                return result
        return None


@dataclass(frozen=True)
class DatasetFilter:
    """Include/exclude regexes for dataset names, each matched against the whole name.

    A dataset is kept when it matches any ``include`` pattern (or ``include`` is empty)
    and no ``exclude`` pattern. Patterns are anchored (``re.fullmatch``), as in
    Prometheus relabelling: ``tank/backups(/.*)?`` selects a dataset and its children.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    _include_re: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _exclude_re: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiling raises re.error for a bad pattern; config parsing validates first.
        object.__setattr__(self, "_include_re", tuple(re.compile(p) for p in self.include))
        object.__setattr__(self, "_exclude_re", tuple(re.compile(p) for p in self.exclude))

    def matches(self, name: str) -> bool:
        """Tell whether dataset ``name`` is selected."""
        if self._include_re and not any(p.fullmatch(name) for p in self._include_re):
            return False
        return not any(p.fullmatch(name) for p in self._exclude_re)


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


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
        backup_smart_healthy{device="/dev/sda",source="nas"} 1.0
        # HELP backup_smart_selftest_last_passed 1 when the newest self-test of this kind passed.
        # TYPE backup_smart_selftest_last_passed gauge
        backup_smart_selftest_last_passed{device="/dev/sda",source="nas",test="long"} 1.0
    """
    labels = ("source", "device")
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
    for dev in devices:
        values = [source, dev.device]
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


# --------------------------------------------------------------------------------------
# Evidence for configured jobs (shared by every backend)
# --------------------------------------------------------------------------------------


def scrub_evidence(pools: Iterable[PoolInfo], pool: str) -> Evidence | None:
    """Evidence of pool ``pool``'s scrubs: the last completed scrub's end, running, errors."""
    for info in pools:
        if info.name == pool:
            return Evidence(
                last_success=info.scrub_last_end,
                last_start=info.scrub_last_start,
                running=info.scrub_running,
                failed=info.scrub_errors > 0,
                tracks_start=False,
            )
    return None


def snapshot_evidence(datasets: Iterable[DatasetInfo], dataset: str) -> Evidence | None:
    """Evidence of ``dataset``'s snapshots: the newest snapshot's creation time."""
    for info in datasets:
        if info.name == dataset:
            return Evidence(last_success=info.snapshot_newest, tracks_start=False)
    return None


def selftest_evidence(
    devices: Iterable[SmartDevice], test: str, device: str | None = None
) -> Evidence | None:
    """Evidence of ``test`` self-tests across disks (or on one ``device``).

    ``last_success`` is the *oldest* among the disks of each disk's newest passed test of
    that kind, so a job is satisfied only once every disk ran it; a disk that never passed
    one makes it ``None``. ``failed`` is set when any disk's newest test of that kind failed.
    Disks that could not be read are skipped (their own error metric reports them).
    """
    chosen = [d for d in devices if (device is None or d.device == device) and d.error is None]
    if not chosen:
        return None
    successes: list[float | None] = []
    failed = False
    running = False
    for dev in chosen:
        result = dev.selftest(test)
        successes.append(None if result is None else result.last_success)
        failed = failed or (result is not None and result.passed is False)
        running = running or bool(dev.selftest_running)
    known = [s for s in successes if s is not None]
    last = min(known) if known and len(known) == len(successes) else None
    return Evidence(last_success=last, failed=failed, running=running, tracks_start=False)


def storage_evidence(
    selector: Mapping[str, str],
    *,
    datasets: Iterable[DatasetInfo] = (),
    pools: Iterable[PoolInfo] = (),
    devices: Iterable[SmartDevice] = (),
) -> Evidence | None:
    """Resolve an ``evidence:`` selector: ``pool``, ``dataset`` or ``test`` [+ ``device``]."""
    if "pool" in selector:
        return scrub_evidence(pools, selector["pool"])
    if "dataset" in selector:
        return snapshot_evidence(datasets, selector["dataset"])
    if "test" in selector:
        return selftest_evidence(devices, selector["test"], selector.get("device"))
    return None


# --------------------------------------------------------------------------------------
# smartctl --json
# --------------------------------------------------------------------------------------

#: Label values of the smartctl exit status bits, bit 0 first (smartctl(8) EXIT STATUS).
EXIT_STATUS_FLAGS: tuple[str, ...] = (
    "command_line",
    "open_failed",
    "command_failed",
    "disk_failing",
    "prefail_threshold",
    "threshold_past",
    "error_log",
    "selftest_log",
)
_EXIT_STATUS_TEXT: tuple[str, ...] = (
    "the command line did not parse",
    "the device could not be opened (or gave no IDENTIFY data, or is in a low-power mode)",
    "a SMART or ATA command to the disk failed, or a SMART data checksum was wrong",
    "SMART status says DISK FAILING",
    "prefail attributes are at or below their threshold",
    "some attributes were at or below their threshold in the past",
    "the device error log contains errors",
    "the self-test log contains errors",
)
#: How long a drive's 16-bit ATA self-test ``lifetime_hours`` counter runs before it wraps.
ATA_LIFETIME_WRAP = 65536


def decode_exit_status(code: int) -> tuple[str, ...]:
    """Explain each bit set in smartctl's exit status, bit 0 first."""
    return tuple(text for bit, text in enumerate(_EXIT_STATUS_TEXT) if code & (1 << bit))


def describe_exit_status(code: int) -> str:
    """One line for smartctl's exit status, e.g. ``exit 2: the device could not be opened``."""
    reasons = decode_exit_status(code)
    return f"exit {code}: " + ("; ".join(reasons) if reasons else "ok")


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _num(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _str(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _selftest_kind(description: str) -> str | None:
    text = description.lower()
    if "short" in text:
        return "short"
    if "extended" in text or "long" in text:
        return "long"
    return None  # conveyance, selective, offline data collection, vendor specific


def ata_selftest_age_hours(power_on_hours: int, lifetime_hours: int) -> int | None:
    """Hours between an ATA self-test log entry and now, or ``None`` when inconsistent.

    The log stores the low 16 bits of the power-on hours (``lifetime_hours`` wraps at
    65,536 h, about 7.5 years), while ``power_on_time.hours`` is the full counter. The
    age is therefore ``(power_on_hours - lifetime_hours) mod 65536``: with 65,592 power-on
    hours, an entry at 42 is 14 h old and one at 65,530 (before the wrap) is 62 h old.
    This assumes no logged test is more than 65,535 h old, which holds because the log
    keeps only the newest 21 (or, extended log, a few hundred) entries of a drive that
    logs tests regularly. When the drive has fewer than 65,536 power-on hours, a
    ``lifetime_hours`` above the power-on hours cannot come from a wrap: the counters
    disagree (e.g. attribute 9 in another unit), and the age is unknown (``None``).
    """
    if power_on_hours < 0 or lifetime_hours < 0:
        return None
    if power_on_hours < ATA_LIFETIME_WRAP:
        return power_on_hours - lifetime_hours if lifetime_hours <= power_on_hours else None
    return (power_on_hours - lifetime_hours) % ATA_LIFETIME_WRAP


# ATA self-test status, high nibble (ataprint.cpp): 0 passed; 1 aborted by host,
# 2 interrupted (no verdict); 3 fatal/unknown error and 4-8 failures (smartctl counts
# all of 3..8 as errors, even though its JSON omits ``passed`` for 3); 15 in progress.
_ATA_ABORTED = frozenset({1, 2})
_ATA_FAILED = frozenset(range(3, 9))
_ATA_RUNNING = 15
# NVMe self-test result (NVMe base spec, Device Self-test log): 0 passed; 5 fatal,
# 6/7 failed segments; 1-4, 8, 9 aborted; 15 unused entry.
_NVME_FAILED = frozenset({5, 6, 7})
_NVME_ABORTED = frozenset({1, 2, 3, 4, 8, 9})


@dataclass
class _TestAcc:
    last: float | None = None
    passed: bool | None = None
    status: str = ""
    seen: bool = False
    last_success: float | None = None


def _collect_selftests(
    entries: Iterable[tuple[str, float | None, bool | None, str]],
) -> tuple[SelfTestResult, ...]:
    """Reduce log entries (newest first: kind, timestamp, passed, status) per kind."""
    acc: dict[str, _TestAcc] = {}
    for kind, ts, passed, status in entries:
        a = acc.setdefault(kind, _TestAcc())
        if not a.seen:
            a.seen, a.last, a.passed, a.status = True, ts, passed, status
        if passed is True and a.last_success is None and ts is not None:
            a.last_success = ts
    return tuple(
        SelfTestResult(
            test=kind,
            last_timestamp=acc[kind].last,
            passed=acc[kind].passed,
            status=acc[kind].status,
            last_success=acc[kind].last_success,
        )
        for kind in SELFTEST_KINDS
        if kind in acc
    )


def _ata_selftests(
    doc: Mapping[str, object], power_on_hours: int | None, now: float
) -> tuple[tuple[SelfTestResult, ...], bool]:
    log = _dict(doc.get("ata_smart_self_test_log"))
    # -x reads the GP log ("extended", more entries); -a the SMART log ("standard").
    table = _dict(log.get("extended")).get("table") or _dict(log.get("standard")).get("table")
    entries: list[tuple[str, float | None, bool | None, str]] = []
    running = False
    for raw in table if isinstance(table, list) else []:
        entry = _dict(raw)
        kind = _selftest_kind(_str(_dict(entry.get("type")).get("string")))
        status = _dict(entry.get("status"))
        value = _int(status.get("value"))
        nibble = None if value is None else value >> 4
        if nibble == _ATA_RUNNING:
            running = True
            continue  # no end time yet; the previous test of this kind stays "last"
        if kind is None:
            continue
        if nibble is None:
            passed_raw = status.get("passed")
            passed = passed_raw if isinstance(passed_raw, bool) else None
        elif nibble == 0:
            passed = True
        elif nibble in _ATA_FAILED:
            passed = False
        else:  # aborted, interrupted, reserved codes: no verdict
            passed = None
        lifetime = _int(entry.get("lifetime_hours"))
        ts = None
        if lifetime is not None and power_on_hours is not None:
            age = ata_selftest_age_hours(power_on_hours, lifetime)
            ts = None if age is None else now - age * 3600.0
        entries.append((kind, ts, passed, _str(status.get("string"))))
    return _collect_selftests(entries), running


def _nvme_selftests(
    doc: Mapping[str, object], power_on_hours: int | None, now: float
) -> tuple[tuple[SelfTestResult, ...], bool, float | None]:
    log = _dict(doc.get("nvme_self_test_log"))
    current = _int(_dict(log.get("current_self_test_operation")).get("value"))
    running = bool(current)
    completion = _num(log.get("current_self_test_completion_percent"))
    remaining = 100.0 - completion if running and completion is not None else None
    table = log.get("table")
    entries: list[tuple[str, float | None, bool | None, str]] = []
    # Entries sit at their hardware slot index, so the list can hold null holes.
    for raw in table if isinstance(table, list) else []:
        entry = _dict(raw)
        if not entry:
            continue
        code = _dict(entry.get("self_test_code"))
        kind = {1: "short", 2: "long"}.get(_int(code.get("value")) or 0) or _selftest_kind(
            _str(code.get("string"))
        )
        result = _dict(entry.get("self_test_result"))
        value = _int(result.get("value"))
        if kind is None or value is None or value == 15:
            continue
        passed = True if value == 0 else False if value in _NVME_FAILED else None
        entry_hours = _int(entry.get("power_on_hours"))
        ts = None
        if entry_hours is not None and power_on_hours is not None:
            # NVMe logs the full power-on hour counter: no wrap, only clock skew to clamp.
            ts = now - max(power_on_hours - entry_hours, 0) * 3600.0
        entries.append((kind, ts, passed, _str(result.get("string"))))
    return _collect_selftests(entries), running, remaining


def _ata_attribute_raw(doc: Mapping[str, object], attr_id: int) -> int | None:
    table = _dict(doc.get("ata_smart_attributes")).get("table")
    for raw in table if isinstance(table, list) else []:
        attr = _dict(raw)
        if _int(attr.get("id")) == attr_id:
            return _int(_dict(attr.get("raw")).get("value"))
    return None


def _messages(doc: Mapping[str, object]) -> list[tuple[str, str]]:
    msgs = _dict(doc.get("smartctl")).get("messages")
    out = []
    for raw in msgs if isinstance(msgs, list) else []:
        m = _dict(raw)
        out.append((_str(m.get("severity")), _str(m.get("string"))))
    return out


_STANDBY_RE = re.compile(r"Device is in \S+.* mode", re.IGNORECASE)


def is_standby_response(doc: Mapping[str, object]) -> bool:
    """Tell whether smartctl skipped the disk because ``--nocheck`` found it asleep.

    smartctl then exits with status 2 (bit 1, "low-power mode"), prints the message
    ``Device is in STANDBY mode, exit(2)`` and (7.3+) a ``power_mode`` object, and
    reads nothing else (``ataprint.cpp`` ``ataPrintMain``).
    """
    exit_status = _int(_dict(doc.get("smartctl")).get("exit_status")) or 0
    if not exit_status & 2:
        return False
    return any(_STANDBY_RE.search(text) for _, text in _messages(doc))


def parse_smartctl_json(
    doc: Mapping[str, object], *, now: float, device: str | None = None
) -> SmartDevice:
    """Turn one ``smartctl --json`` document (any exit status) into a :class:`SmartDevice`.

    ``device`` is the name the caller asked for and becomes the label; without it the
    document's ``device.name`` is used. Self-test times are estimated from power-on
    hours (see :func:`ata_selftest_age_hours`), so they have a resolution of one hour.
    """
    info = _dict(doc.get("device"))
    argv = _dict(doc.get("smartctl")).get("argv")
    # An open failure prints no "device" object; the last argument is the device then.
    from_argv = _str(argv[-1]) if isinstance(argv, list) and len(argv) > 1 else ""
    name = device or _str(info.get("name")) or from_argv or "unknown"
    exit_status = _int(_dict(doc.get("smartctl")).get("exit_status"))
    protocol = _str(info.get("protocol"))
    standby = is_standby_response(doc)

    error = reason = None
    if exit_status is not None and exit_status & 3 and not standby:
        # Bits 0/1: nothing was read. Keep smartctl's own messages: they say why.
        errors = [text for sev, text in _messages(doc) if sev == "error"] or [
            text for _, text in _messages(doc)
        ]
        error = describe_exit_status(exit_status & 3)
        if errors:
            error += " (" + "; ".join(errors) + ")"
        reason = "command_line" if exit_status & 1 else "open_failed"
    elif not info and "smart_status" not in doc and not standby:
        error, reason = "smartctl printed no device data", "no_data"

    status = _dict(doc.get("smart_status"))
    passed = status.get("passed")
    healthy = passed if isinstance(passed, bool) else None

    power = _dict(doc.get("power_on_time"))
    nvme_log = _dict(doc.get("nvme_smart_health_information_log"))
    hours = _int(power.get("hours"))
    if hours is None:
        hours = _int(nvme_log.get("power_on_hours"))
    power_on_seconds = None
    if hours is not None:
        power_on_seconds = hours * 3600.0 + (_int(power.get("minutes")) or 0) * 60.0

    temperature = _num(_dict(doc.get("temperature")).get("current"))
    if temperature is None:
        temperature = _num(nvme_log.get("temperature"))

    reallocated = _ata_attribute_raw(doc, 5)
    if reallocated is None:
        # SCSI/SAS: the grown defect list counts reallocated blocks.
        reallocated = _int(doc.get("scsi_grown_defect_list"))

    selftests, running = _ata_selftests(doc, hours, now)
    remaining: float | None = None
    current = _dict(_dict(doc.get("ata_smart_data")).get("self_test"))
    if current:
        cur_status = _dict(current.get("status"))
        value = _int(cur_status.get("value"))
        if value is not None and value >> 4 == _ATA_RUNNING:
            running = True
            remaining = _num(cur_status.get("remaining_percent"))
    nvme_running = False
    if "nvme_self_test_log" in doc:
        nvme_tests, nvme_running, nvme_remaining = _nvme_selftests(doc, hours, now)
        selftests = selftests or nvme_tests
        remaining = remaining if remaining is not None else nvme_remaining
    # Only claim "not running" when smartctl reported the current self-test state.
    has_state = bool(current) or "nvme_self_test_log" in doc
    selftest_running = (running or nvme_running) if has_state or running else None

    return SmartDevice(
        device=name,
        model=_str(doc.get("model_name")) or _str(doc.get("scsi_model_name")),
        serial=_str(doc.get("serial_number")),
        protocol=protocol,
        healthy=healthy,
        temperature_celsius=temperature,
        power_on_seconds=power_on_seconds,
        reallocated_sectors=reallocated,
        pending_sectors=_ata_attribute_raw(doc, 197),
        media_errors=_int(nvme_log.get("media_errors")),
        selftests=selftests,
        selftest_running=selftest_running,
        selftest_remaining_percent=remaining,
        error=error,
        error_reason=reason or "",
        exit_status=exit_status,
        standby=standby,
    )


# --------------------------------------------------------------------------------------
# zfs list
# --------------------------------------------------------------------------------------

_NICE_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_NICE_UNITS["E"] = 2**60
_NICE_RE = re.compile(r"^(\d+(?:\.\d+)?)([BKMGTPE]?)$")
#: The ``-o`` columns asked of ``zfs list`` (text and JSON).
ZFS_LIST_COLUMNS = ("name", "used", "avail", "quota", "refer", "creation")
# JSON keys are the full property names, whatever alias ``-o`` used.
_JSON_PROPS = {"avail": "available", "refer": "referenced"}


class StorageParseError(ValueError):
    """Command output that does not have the expected shape."""


def parse_zfs_size(value: object) -> int | None:
    """Parse a ZFS size: exact (``-p``: ``1319413953331``) or human (``30.5G``, ``0B``).

    ``-``, ``none`` and empty give ``None``. Human values use ZFS's 1024-based units
    and are approximate (``zfs_nicenum`` keeps 3 significant digits); pass ``-p``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip() if value is not None else ""
    if text in ("", "-", "none"):
        return None
    m = _NICE_RE.match(text)
    if not m:
        raise StorageParseError(f"not a size: {text[:40]!r}")
    return int(float(m.group(1)) * _NICE_UNITS[m.group(2)])


def _zfs_time(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if value > 0 else None
    text = str(value).strip()
    if text in ("", "-"):
        return None
    try:
        seconds = float(text)
    except ValueError:
        return None  # a localized date without -p: unknown rather than guessed
    return seconds if seconds > 0 else None


@dataclass
class _DatasetAcc:
    used: int | None = None
    available: int | None = None
    quota: int = 0
    referenced: int = 0
    count: int = 0
    newest: float | None = None
    oldest: float | None = None
    listed: bool = False


class _DatasetAggregator:
    """Folds ``zfs list`` rows into per-dataset totals; memory is O(datasets)."""

    def __init__(self, dataset_filter: DatasetFilter | None) -> None:
        self.filter = dataset_filter or DatasetFilter()
        self.acc: dict[str, _DatasetAcc] = {}
        self._skip: dict[str, bool] = {}

    def _selected(self, name: str) -> bool:
        hit = self._skip.get(name)
        if hit is None:
            hit = self._skip[name] = not self.filter.matches(name)
        return not hit

    def dataset(
        self, name: str, used: int | None, avail: int | None, quota: int | None, refer: int | None
    ) -> None:
        if not self._selected(name):
            return
        a = self.acc.setdefault(name, _DatasetAcc())
        a.listed = True
        a.used, a.available = used or 0, avail or 0
        a.quota, a.referenced = quota or 0, refer or 0

    def snapshot(self, dataset: str, creation: float | None) -> None:
        if not self._selected(dataset):
            return
        a = self.acc.setdefault(dataset, _DatasetAcc())
        a.count += 1
        if creation is not None:
            a.newest = creation if a.newest is None else max(a.newest, creation)
            a.oldest = creation if a.oldest is None else min(a.oldest, creation)

    def result(self) -> tuple[DatasetInfo, ...]:
        # Snapshots of a dataset that was not listed (e.g. a bookmark-only race) are dropped.
        return tuple(
            DatasetInfo(
                name=name,
                used=a.used or 0,
                available=a.available or 0,
                quota=a.quota,
                referenced=a.referenced,
                snapshots=a.count,
                snapshot_newest=a.newest,
                snapshot_oldest=a.oldest,
            )
            for name, a in sorted(self.acc.items())
            if a.listed
        )


def parse_zfs_list_text(
    text: str, *, dataset_filter: DatasetFilter | None = None
) -> tuple[DatasetInfo, ...]:
    """Parse ``zfs list -Hp -t filesystem,volume,snapshot -o name,used,avail,quota,refer,creation``.

    Snapshot rows (``tank/ds@snap``) are folded into their dataset (count, newest and
    oldest ``creation``); bookmarks (``#``) are ignored. Tab-separated, so dataset names
    with spaces are fine; a row with the wrong number of fields is a parse error.
    """
    agg = _DatasetAggregator(dataset_filter)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(ZFS_LIST_COLUMNS):
            raise StorageParseError(
                f"zfs list line {lineno}: expected {len(ZFS_LIST_COLUMNS)} tab-separated "
                f"fields, got {len(fields)}"
            )
        name, used, avail, quota, refer, creation = fields
        try:
            if "@" in name:
                agg.snapshot(name.split("@", 1)[0], _zfs_time(creation))
            elif "#" not in name:
                agg.dataset(
                    name,
                    parse_zfs_size(used),
                    parse_zfs_size(avail),
                    parse_zfs_size(quota),
                    parse_zfs_size(refer),
                )
        except StorageParseError as exc:
            raise StorageParseError(f"zfs list line {lineno}: {exc}") from None
    return agg.result()


def parse_zfs_list_json(
    doc: Mapping[str, object], *, dataset_filter: DatasetFilter | None = None
) -> tuple[DatasetInfo, ...]:
    """Parse ``zfs list -j [--json-int] -p ...`` (OpenZFS 2.3+); same folding as the text form."""
    datasets = doc.get("datasets")
    if not isinstance(datasets, dict):
        raise StorageParseError("zfs list JSON has no 'datasets' object")
    agg = _DatasetAggregator(dataset_filter)
    for key, raw in datasets.items():
        entry = _dict(raw)
        name = _str(entry.get("name")) or str(key)
        kind = _str(entry.get("type")).upper()
        props = _dict(entry.get("properties"))

        def prop(column: str, props: dict[str, object] = props) -> object:
            return _dict(props.get(_JSON_PROPS.get(column, column))).get("value")

        try:
            if kind == "SNAPSHOT" or "@" in name:
                parent = _str(entry.get("dataset")) or name.split("@", 1)[0]
                agg.snapshot(parent, _zfs_time(prop("creation")))
            elif kind in ("FILESYSTEM", "VOLUME", ""):
                agg.dataset(
                    name,
                    parse_zfs_size(prop("used")),
                    parse_zfs_size(prop("avail")),
                    parse_zfs_size(prop("quota")),
                    parse_zfs_size(prop("refer")),
                )
        except StorageParseError as exc:
            raise StorageParseError(f"zfs list JSON {name[:80]!r}: {exc}") from None
    return agg.result()


def parse_zfs_list(
    output: str | Mapping[str, object], *, dataset_filter: DatasetFilter | None = None
) -> tuple[DatasetInfo, ...]:
    """Parse ``zfs list`` output: a decoded JSON document or the ``-H`` tab text."""
    if isinstance(output, Mapping):
        return parse_zfs_list_json(output, dataset_filter=dataset_filter)
    return parse_zfs_list_text(output, dataset_filter=dataset_filter)


_ZFS_VERSION_RE = re.compile(r"zfs-(\d+)\.(\d+)")


def parse_zfs_version(text: str) -> tuple[int, int] | None:
    """Parse ``zfs version`` (first line ``zfs-2.3.0-1``) into ``(major, minor)``."""
    m = _ZFS_VERSION_RE.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


# --------------------------------------------------------------------------------------
# zpool status
# --------------------------------------------------------------------------------------

_CTIME = r"(?P<date>\w{3} \w{3} [ \d]?\d \d{1,2}:\d{2}:\d{2} \d{4})"
# Durations: 0.7 "1h39m", 0.8 "0 days 00:10:00", 2.x "00:10:01" or "3 days 01:02:03".
_DURATION = r"(?P<dur>\d+h\d+m|(?:\d+ days? )?\d+:\d{2}:\d{2})"
_SCRUB_DONE_RE = re.compile(
    rf"^(?:thorough )?scrub repaired \S+ in {_DURATION} with (?P<errors>\d+) errors on {_CTIME}"
)
_SCRUB_CANCELED_RE = re.compile(rf"^(?:thorough )?scrub canceled on {_CTIME}")
_SCRUB_RUNNING_RE = re.compile(rf"^(?:thorough )?scrub in progress since {_CTIME}")
_SCRUB_PAUSED_RE = re.compile(rf"^(?:thorough )?scrub paused since {_CTIME}")
_SCRUB_STARTED_RE = re.compile(rf"scrub started on {_CTIME}")
_SCRUB_WORD_RE = re.compile(r"^(?:thorough )?scrub\b")
_DATA_ERRORS_RE = re.compile(r"^(\d+) data errors?")


def _parse_ctime(text: str, tz: tzinfo) -> float:
    dt = datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")
    return dt.replace(tzinfo=tz).timestamp()


def _parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+)h(\d+)m", text)
    if m:
        return int(m.group(1)) * 3600.0 + int(m.group(2)) * 60.0
    days = 0
    if "day" in text:
        head, text = text.split("day", 1)
        days = int(head)
        text = text.lstrip("s ")
    h, mi, s = (int(x) for x in text.split(":"))
    return days * 86400.0 + h * 3600.0 + mi * 60.0 + s


@dataclass
class _PoolAcc:
    name: str
    state: str = ""
    data_errors: int = 0
    scan: list[str] = field(default_factory=list)


def _scrub_from_scan(
    lines: Sequence[str], tz: tzinfo
) -> tuple[float | None, float | None, int, bool]:
    """Return (last_end, last_start, errors, running) from a pool's ``scan:`` text."""
    for i, line in enumerate(lines):
        if m := _SCRUB_DONE_RE.match(line):
            end = _parse_ctime(m.group("date"), tz)
            return end, end - _parse_duration(m.group("dur")), int(m.group("errors")), False
        if _SCRUB_CANCELED_RE.match(line):
            return None, None, 0, False
        if m := _SCRUB_RUNNING_RE.match(line):
            return None, _parse_ctime(m.group("date"), tz), 0, True
        if _SCRUB_PAUSED_RE.match(line):
            # A paused scrub is unfinished and resumes later: report it as running.
            started = _SCRUB_STARTED_RE.search("\n".join(lines[i:]))
            start = _parse_ctime(started.group("date"), tz) if started else None
            return None, start, 0, True
        if _SCRUB_WORD_RE.match(line):
            # A scrub line in a shape we do not know (another locale, a new release):
            # fail loudly instead of silently dropping the scrub time.
            raise StorageParseError(f"unrecognized scan line {line[:120]!r}")
    return None, None, 0, False  # none requested, or only resilver/rebuild lines


def parse_zpool_status_text(text: str, *, tz: tzinfo) -> tuple[PoolInfo, ...]:
    """Parse plain ``zpool status`` (all pools); dates are local time of the host, in ``tz``.

    Only the last scan is kept by ZFS, so after a resilver the previous scrub is unknown.
    A pool is healthy when its state is ONLINE and it reports no data errors.
    """
    pools: list[_PoolAcc] = []
    current: _PoolAcc | None = None
    in_scan = False
    for raw in text.splitlines():
        stripped = raw.strip()
        key, sep, value = stripped.partition(":")
        if sep and key in (
            "pool",
            "state",
            "scan",
            "errors",
            "status",
            "action",
            "config",
            "see",
            "remove",
            "checkpoint",
            "expand",
            "dedup",
            "scrub",
        ):
            in_scan = False
            value = value.strip()
            if key == "pool":
                current = _PoolAcc(name=value)
                pools.append(current)
            elif current is None:
                continue
            elif key == "state":
                current.state = value.upper()
            elif key == "scan":
                current.scan.append(value)
                in_scan = True
            elif key == "errors":
                m = _DATA_ERRORS_RE.match(value)
                current.data_errors = int(m.group(1)) if m else 0
            continue
        if in_scan and current is not None and raw.startswith(("\t", "        ")):
            # Continuation lines ("\tscrub started on ...", progress).
            current.scan.append(stripped)
        else:
            in_scan = False
    if not pools and text.strip() and "no pools available" not in text:
        raise StorageParseError("zpool status printed no 'pool:' line")
    result = []
    for p in pools:
        if not p.state:
            raise StorageParseError(f"zpool status: pool {p.name[:80]!r} has no state line")
        try:
            end, start, errors, running = _scrub_from_scan(p.scan, tz)
        except ValueError as exc:  # StorageParseError, or a date strptime refused
            raise StorageParseError(f"zpool status: pool {p.name[:80]!r}: {exc}") from None
        result.append(
            PoolInfo(
                name=p.name,
                state=p.state,
                healthy=p.state == "ONLINE" and p.data_errors == 0,
                scrub_last_end=end,
                scrub_errors=errors,
                scrub_running=running,
                scrub_last_start=start,
            )
        )
    return tuple(result)


def parse_zpool_status_json(doc: Mapping[str, object]) -> tuple[PoolInfo, ...]:
    """Parse ``zpool status -j -p [--json-int]`` (OpenZFS 2.3+): ``pools.<name>.scan_stats``."""
    pools = doc.get("pools")
    if not isinstance(pools, dict):
        raise StorageParseError("zpool status JSON has no 'pools' object")
    result = []
    for key, raw in pools.items():
        pool = _dict(raw)
        name = _str(pool.get("name")) or str(key)
        state = _str(pool.get("state")).upper()
        if not state:
            raise StorageParseError(f"zpool status JSON: pool {name[:80]!r} has no state")
        data_errors = _int(pool.get("error_count")) or 0
        scan = _dict(pool.get("scan_stats"))
        end = start = None
        errors = 0
        running = False
        if _str(scan.get("function")).upper() == "SCRUB":
            scan_state = _str(scan.get("state")).upper()
            start = _zfs_time(scan.get("start_time"))
            if scan_state == "FINISHED":
                end = _zfs_time(scan.get("end_time"))
                errors = _int(scan.get("errors")) or 0
            elif scan_state == "SCANNING":
                running = True
                errors = _int(scan.get("errors")) or 0
            else:  # CANCELED / NONE
                start = None
        result.append(
            PoolInfo(
                name=name,
                state=state,
                healthy=state == "ONLINE" and data_errors == 0,
                scrub_last_end=end,
                scrub_errors=errors,
                scrub_running=running,
                scrub_last_start=start,
            )
        )
    return tuple(result)
