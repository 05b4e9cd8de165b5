"""The frozen snapshot of one Proxmox VE poll: guests, jobs, storages, archives and tasks.

Plain data, no I/O: :mod:`~exporter.sources.proxmox.responses` and
:mod:`~exporter.sources.proxmox.tasks` build it from the API's answers, the other modules only
read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.sources.targets import TargetStatus


@dataclass(frozen=True)
class Guest:
    """A VM or container of the cluster."""

    vmid: int
    name: str
    node: str
    guest_type: str  # qemu | lxc
    pool: str = ""
    template: bool = False


@dataclass(frozen=True)
class Retention:
    """A ``prune-backups`` setting: the non-zero ``keep-*`` counts, or keep-all."""

    keep: tuple[tuple[str, int], ...] = ()
    keep_all: bool = False

    @property
    def expected(self) -> int | None:
        """How many archives it keeps at most; ``None`` when unbounded (keep-all).

        For a single ``keep-last=N`` that is exactly N once N runs happened. Several keep-*
        options select overlapping archives, so their sum is an upper bound.
        """
        if self.keep_all or not self.keep:
            return None
        return sum(n for _, n in self.keep)


@dataclass(frozen=True)
class BackupJob:
    """A backup job of ``/cluster/backup``."""

    id: str
    schedule: str
    enabled: bool
    storage: str
    mode: str
    all: bool = False
    vmids: frozenset[int] = frozenset()
    exclude: frozenset[int] = frozenset()
    pool: str = ""
    node: str = ""
    retention: Retention | None = None


@dataclass(frozen=True)
class BackupStorage:
    """A storage with ``backup`` content, once per id (a shared one counts once)."""

    storage: str
    type: str
    shared: bool
    active: bool
    total: int
    used: int
    nodes: tuple[str, ...]
    listed: bool  # its content was read (active somewhere)
    retention: Retention | None = None  # from the cluster storage config


@dataclass(frozen=True)
class Archive:
    """One backup on a storage (kept in the snapshot, never rendered one by one)."""

    storage: str
    vmid: int
    ctime: float
    size: int
    protected: bool = False
    verified: bool | None = None  # PBS verification: ok True, failed False, none None


@dataclass(frozen=True)
class VzdumpTask:
    """One vzdump task; ``vmid`` is ``None`` when the task covered several guests."""

    node: str
    starttime: float
    endtime: float | None
    status: str  # ok | warning | error | unknown | running
    vmid: int | None

    @property
    def succeeded(self) -> bool:
        """OK or with warnings (the archive was written)."""
        return self.status in ("ok", "warning")

    @property
    def failed(self) -> bool:
        """Ended in an error or an unknown state (no evidence of success)."""
        return self.status in ("error", "unknown")


@dataclass(frozen=True)
class ProxmoxSnapshot:
    """What one poll saw."""

    time: float
    timezone: str
    nodes: tuple[tuple[str, bool], ...]  # (name, online)
    guests: tuple[Guest, ...]
    storages: tuple[BackupStorage, ...]
    archives: tuple[Archive, ...]
    jobs: tuple[BackupJob, ...]
    not_backed_up: frozenset[int]
    tasks: tuple[VzdumpTask, ...]
    tasks_read_nodes: tuple[str, ...] = field(default=())
    # The last content listing of each backup storage (``storage/<id>``); a storage that is
    # down keeps its last-known archives in ``archives``.
    targets: tuple[TargetStatus, ...] = field(default=())
