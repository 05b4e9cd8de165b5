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

        The sum of the keep options: an upper bound (each option only covers periods the
        shorter ones did not), and vzdump's backup limit when ``remove=0``. What PVE really
        keeps is computed by :mod:`~exporter.sources.proxmox.retention`.
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
    remove: bool = True  # prune after each backup (vzdump's default)


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
    standard_name: bool = True  # a vzdump/PBS name: pruning applies (others PVE never prunes)


@dataclass(frozen=True)
class TaskLog:
    """What a multi-guest vzdump task's log says (:func:`~.tasks.parse_task_log`).

    The selection and storage come from its first line (``starting new backup job: vzdump
    ...``), the per-guest outcomes from its ``Starting/Finished Backup of VM n`` and ``Backup of
    VM n failed`` lines.
    """

    all: bool = False
    vmids: frozenset[int] = frozenset()
    exclude: frozenset[int] = frozenset()
    pool: str = ""
    node: str = ""
    storage: str = ""
    guests: tuple[tuple[int, str, int], ...] = ()  # (vmid, status, warnings) in log order
    task_warnings: int = 0  # WARN lines outside any guest's part (hook scripts, job level)
    complete: bool = True  # False: the log was longer than the lines read


@dataclass(frozen=True)
class VzdumpTask:
    """One vzdump task; ``vmid`` is ``None`` when the task covered several guests."""

    node: str
    starttime: float
    endtime: float | None
    status: str  # ok | warning | error | unknown | running
    vmid: int | None
    upid: str = ""
    warnings: int = 0  # n of a final status "WARNINGS: n"
    log: TaskLog | None = None  # multi-guest tasks whose log was read

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
    hidden: tuple[HiddenBackups, ...] = field(default=())  # per-storage permission findings
    # (job id, when first seen disabled) of the disabled jobs (see .orphans.disabled_since).
    disabled_since: tuple[tuple[str, float], ...] = field(default=())


@dataclass(frozen=True)
class HiddenBackups:
    """A backup storage whose listing hides guests that vzdump tasks wrote to it."""

    storage: str
    vmids: tuple[int, ...]
    message: str  # names the missing privileges (safe to log and show)
