"""The snapshot of one TrueNAS poll and the task/scrub records it holds."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.schedule.jobs import Evidence
from exporter.sources.targets import TargetStatus
from exporter.storage.models import DatasetInfo, PoolInfo, SmartDevice

_FINISHED_JOB_STATES = frozenset({"SUCCESS", "FAILED", "ABORTED"})


@dataclass(frozen=True)
class ApiProfile:
    """Which methods this TrueNAS release offers."""

    version: str
    release: tuple[int, int]
    snapshot_method: str
    smart_method: str | None


@dataclass(frozen=True, kw_only=True)
class CloudSyncTask:
    """One cloud-sync task and what is known of its runs (Unix seconds)."""

    id: int
    task: str  # the label: the description, or id-<n> when it is empty
    enabled: bool
    schedule: str  # five cron fields, TrueNAS dow 1=Mon..7=Sun (cron accepts 7 = Sunday)
    provider: str
    bucket: str
    direction: str
    transfer_mode: str
    encrypted: bool
    state: str = ""  # the last job's state; "" = never ran
    last_start: float | None = None
    last_end: float | None = None
    last_success: float | None = None  # newest success seen, across polls
    last_failure: float | None = None  # newest failure/abort seen, across polls

    def evidence(self) -> Evidence:
        """Return the job evidence of this task."""
        duration = None
        if self.state in _FINISHED_JOB_STATES and self.last_start and self.last_end:
            duration = max(self.last_end - self.last_start, 0.0)
        return Evidence(
            last_success=self.last_success,
            last_start=self.last_start,
            last_duration=duration,
            failed=self.state in ("FAILED", "ABORTED"),
            running=self.state == "RUNNING",
            tracks_start=True,
        )


@dataclass(frozen=True, kw_only=True)
class ScrubTask:
    """One pool scrub task: a cron check plus a threshold in days."""

    id: int
    pool: str
    threshold_days: int
    schedule: str
    enabled: bool


@dataclass(frozen=True, kw_only=True)
class PoolScrub:
    """A pool's last *completed* scrub (remembered across polls) and the last scrub's fate."""

    pool: str
    completed_start: float | None = None
    completed_end: float | None = None
    canceled: bool = False  # the last scrub was canceled
    created: float | None = None  # the pool's creation (counts as a scrub for the threshold)
    anchor_on_end: bool = False  # 26.0+: the threshold runs from the last scrub's end

    @property
    def threshold_anchor(self) -> float | None:
        """What TrueNAS measures the threshold from: the last scrub, else the creation.

        Up to 25.10 ``pool.scrub.run`` takes the newest ``zpool scrub|create|import`` line
        of ``zpool history``, i.e. the *start* of the last scrub (truenas/middleware
        ``src/middlewared/middlewared/plugins/pool_/scrub.py`` ``PoolScrubService.__run``,
        tag TS-25.10.3.1). From 26.0 ``zpool.scrub.run`` measures from the *end* of the
        last finished scrub and skips the start silently while ``scan.end_time >= now -
        (threshold - 1) days`` (``src/middlewared/middlewared/plugins/zpool/scrub_impl.py``
        ``validate_pool``, raising ``ZpoolScrubNotDueException``: no alert, not a failure),
        falling back to the history (pool creation or import) when no scrub finished.
        The comparison is inclusive, so the first eligible second is one after the end.
        """
        if self.anchor_on_end and self.completed_end is not None:
            return self.completed_end + 1.0
        return self.completed_start if self.completed_start is not None else self.created


@dataclass(frozen=True, kw_only=True)
class NfsShare:
    """One NFS share of ``sharing.nfs.query``: who may mount it (empty lists: everyone)."""

    id: int
    path: str
    hosts: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class TrueNASSnapshot:
    """One poll of a TrueNAS system."""

    version: str
    fetched_at: float
    timezone: str
    datasets: tuple[DatasetInfo, ...] = ()
    pools: tuple[PoolInfo, ...] = ()
    scrubs: tuple[PoolScrub, ...] = ()
    smart: tuple[SmartDevice, ...] | None = None  # None: this release has no SMART API
    cloudsync: tuple[CloudSyncTask, ...] = ()
    scrub_tasks: tuple[ScrubTask, ...] = ()
    # The dataset listing as dataset/<pool>; a listing that is down keeps its last datasets.
    targets: tuple[TargetStatus, ...] = ()
    # Read only when an nfs_export policy names this source; None: not read.
    nfs_shares: tuple[NfsShare, ...] | None = None
