"""The frozen storage models every backend (``zfs``, ``smartctl``, ``truenas``) produces.

The parsers (:mod:`exporter.storage.zfs`, :mod:`exporter.storage.smartctl` and the TrueNAS
kind's own) build these; :mod:`exporter.storage.render` and :mod:`exporter.storage.evidence`
read them, so the metric names and labels are identical whichever backend produced them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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

    A series is labelled ``device`` (the path read), ``type`` (smartctl's ``-d`` type,
    ``megaraid,3``) and ``disk`` (the identity: the serial number, else the WWN, ``""``
    when unread): disks behind one controller node share ``device`` but not ``type``.
    """

    device: str
    device_type: str = ""
    disk: str = ""
    wwn: str = ""
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
