"""The fake PVE's state: guests, storages, jobs, archives and tasks, and the simulated runs.

:class:`PVEScenario` is what the fake serves and the knobs tests and the demo turn;
:func:`homelab` builds the strategy document's homelab.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from exporter.sim.server import Hold
from exporter.sources.proxmox.retention import parse_retention, prune_marks

GIB = 2**30
_DAILY_RE = re.compile(r"^(\d{1,2}):(\d{2})$")


@dataclass
class FakeGuest:
    """A VM or container."""

    vmid: int
    name: str
    node: str = "pve1"
    guest_type: str = "qemu"  # qemu | lxc
    pool: str = ""
    template: bool = False


@dataclass
class FakeStorage:
    """A storage as both ``/storage`` (config) and ``/nodes/{n}/storage`` (status) show it."""

    storage: str
    total: int
    type: str = "nfs"
    content: str = "backup"
    shared: bool = True
    active: bool = True
    enabled: bool = True
    prune_backups: str | None = None  # property string as in storage.cfg: "keep-last=3,..."
    other_used: int = 0  # bytes used by things that are not vzdump archives
    # A slow or failing backend behind this one storage (a PBS datastore that hangs):
    # its content listing waits ``content_delay`` seconds, or answers ``content_fail_status``
    # (PVE's PBSPlugin list_volumes dies "error listing snapshots": HTTP 500 for that storage;
    # pve-storage src/PVE/Storage/PBSPlugin.pm, commit 210b070d).
    content_delay: float = 0.0
    content_fail_status: int | None = None


@dataclass
class FakeJob:
    """A ``vzdump`` entry of jobs.cfg."""

    id: str
    schedule: str
    storage: str
    vmid: str = ""
    all: bool = False
    exclude: str = ""
    pool: str = ""
    node: str = ""
    mode: str = "snapshot"
    compress: str = "zstd"
    enabled: bool = True
    prune_backups: dict[str, str] | None = None  # GET shape: strings, e.g. {"keep-last": "14"}


@dataclass
class FakeArchive:
    """One backup on a storage."""

    storage: str
    vmid: int
    guest_type: str
    ctime: int  # instant (Unix s) of the start of this guest's dump
    size: int
    protected: bool = False
    notes: str = ""
    verification: str | None = None  # PBS only: "ok" | "failed"


@dataclass
class FakeTask:
    """One vzdump task in a node's task list."""

    node: str
    starttime: int
    endtime: int | None  # None while running
    status: str  # "OK", "WARNINGS: 1", "job errors", "unexpected status"; ignored while running
    id: str  # the vmid when exactly one guest was backed up, else ""
    pid: int
    user: str = "root@pam"
    log: list[str] = field(default_factory=list)  # the task log's lines, as PVE writes them

    @property
    def upid(self) -> str:
        """The task's UPID, as ``PVE::Tools::upid_encode`` writes it."""
        return (
            f"UPID:{self.node}:{self.pid:08X}:{self.pid * 7:08X}:{self.starttime:08X}:"
            f"vzdump:{self.id}:{self.user}:"
        )


@dataclass
class PVEScenario:
    """Everything the fake serves, and the knobs tests and the demo turn.

    Mutate the fields directly (``privileged = False``, ``latency = 2.0``, ``fail_status =
    500``, ``malformed = True``) or use the methods for what needs bookkeeping.
    """

    now: Callable[[], float]
    tz: str = "Europe/Berlin"
    nodes: list[str] = field(default_factory=lambda: ["pve1"])
    offline_nodes: set[str] = field(default_factory=set)
    guests: list[FakeGuest] = field(default_factory=list)
    storages: list[FakeStorage] = field(default_factory=list)
    jobs: list[FakeJob] = field(default_factory=list)
    archives: list[FakeArchive] = field(default_factory=list)
    tasks: list[FakeTask] = field(default_factory=list)
    token_id: str = "monitor@pve!exporter"  # noqa: S105 - a fake's token
    token_secret: str = "0b4c3c4e-1111-2222-3333-444455556666"  # noqa: S105 - a fake's token
    privileged: bool = True  # False: the token lacks Datastore.Allocate / VM.Backup
    latency: float = 0.0  # seconds each request waits before answering
    fail_status: int | None = None  # answer every request with this HTTP status
    malformed: bool = False  # list endpoints answer an object instead of a list
    broken: bool = False  # scheduled and manual runs fail ("job errors", no archive)
    failing: set[int] = field(default_factory=set)  # guests whose part of a run fails
    warning: set[int] = field(default_factory=set)  # guests whose part of a run warns once
    hidden_storages: set[str] = field(default_factory=set)  # no Datastore.* on these storages
    hidden_guests: set[int] = field(default_factory=set)  # no VM.Backup on these guests
    # The token's effective privileges by ACL path ("/", "/storage/nas", "/vms/100"), inherited
    # downwards; None: only ``privileged`` and the hidden_* knobs decide what it sees.
    acl: dict[str, set[str]] | None = None
    task_logs_forbidden: bool = False  # no Sys.Audit on /nodes/<node>: task logs are HTTP 403
    requests: list[str] = field(default_factory=list)  # paths served, for tests
    simulated_until: float | None = None  # None: the first sync only starts the simulation
    _pid: int = 0x3A000
    _runs: dict[tuple[int, str], int] = field(default_factory=dict)
    _running: list[tuple[FakeTask, FakeJob]] = field(default_factory=list)
    _hang: Hold = field(default_factory=Hold)

    # ---- knobs

    def break_backups(self) -> None:
        """Make every further run fail with ``job errors`` and write no archive."""
        self.broken = True

    def repair(self) -> None:
        """Let further runs succeed again."""
        self.broken = False

    def hang(self) -> None:
        """Make every request wait, without answering, until :meth:`release`."""
        self._hang.hold()

    def release(self) -> None:
        """Answer the requests held by :meth:`hang` (and all later ones at once)."""
        self._hang.release()

    @property
    def hanging(self) -> bool:
        """Whether requests are being held."""
        return self._hang.holding

    def may_see(self, storage: str, vmid: int) -> bool:
        """Tell whether the token sees ``vmid``'s backups on ``storage``.

        pve-storage src/PVE/Storage.pm ``check_volume_access`` for a backup volume:
        ``Datastore.Allocate`` on the storage, or ``Datastore.AllocateSpace`` there plus
        ``VM.Backup`` on ``/vms/<owner>``.
        """
        if not self.privileged or storage in self.hidden_storages or vmid in self.hidden_guests:
            return False
        if self.acl is None:
            return True
        on_storage = self.privileges(f"/storage/{storage}")
        if "Datastore.Allocate" in on_storage:
            return True
        return "Datastore.AllocateSpace" in on_storage and "VM.Backup" in self.privileges(
            f"/vms/{vmid}"
        )

    def privileges(self, path: str) -> set[str]:
        """Return the token's privileges on ``path``: those granted on it or any parent."""
        out: set[str] = set()
        parts = path.strip("/").split("/")
        for depth in range(len(parts) + 1):
            prefix = "/" + "/".join(parts[:depth])
            out |= (self.acl or {}).get(prefix, set())
        return out

    def run_at(self, job_id: str, start: int) -> None:
        """Run ``job_id`` as if it had started at ``start`` (a finished run)."""
        self._run(self.job(job_id), start, finished=True)

    # ---- lookups

    def job(self, job_id: str) -> FakeJob:
        """Return the job with this id."""
        return next(j for j in self.jobs if j.id == job_id)

    def storage(self, storage_id: str) -> FakeStorage:
        """Return the storage with this id."""
        return next(s for s in self.storages if s.storage == storage_id)

    def guest(self, vmid: int) -> FakeGuest:
        """Return the guest with this vmid."""
        return next(g for g in self.guests if g.vmid == vmid)

    def covered(self, job: FakeJob, *, templates: bool = False) -> list[FakeGuest]:
        """Return the guests ``job`` backs up (templates only with ``templates=True``)."""
        excluded = _vmids(job.exclude)
        listed = _vmids(job.vmid)
        out = []
        for g in self.guests:
            if (g.template and not templates) or (job.node and g.node != job.node):
                continue
            # pve-manager PVE/VZDump.pm get_included_guests: pool, else vmid list, else all.
            if job.pool:
                if g.pool == job.pool:
                    out.append(g)
            elif listed:
                if g.vmid in listed:
                    out.append(g)
            elif job.all and g.vmid not in excluded:
                out.append(g)
        return out

    def archives_of(self, storage: str, vmid: int) -> list[FakeArchive]:
        """Return the archives of ``vmid`` on ``storage``, oldest first."""
        return sorted(
            (a for a in self.archives if a.storage == storage and a.vmid == vmid),
            key=lambda a: a.ctime,
        )

    def used(self, storage: FakeStorage) -> int:
        """Return the bytes used on ``storage`` (never more than its size, like df)."""
        archived = sum(a.size for a in self.archives if a.storage == storage.storage)
        return min(storage.total, storage.other_used + archived)

    def volid(self, archive: FakeArchive) -> str:
        """Return the volume id of ``archive`` (file name in node-local time, or PBS path)."""
        if self.storage(archive.storage).type == "pbs":
            kind = "vm" if archive.guest_type == "qemu" else "ct"
            stamp = datetime.fromtimestamp(archive.ctime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return f"{archive.storage}:backup/{kind}/{archive.vmid}/{stamp}"
        local = datetime.fromtimestamp(archive.ctime, ZoneInfo(self.tz))
        return (
            f"{archive.storage}:backup/vzdump-{archive.guest_type}-{archive.vmid}-"
            f"{local:%Y_%m_%d-%H_%M_%S}.{self.extension(archive)}"
        )

    @staticmethod
    def extension(archive: FakeArchive) -> str:
        """Return the file extension (the API's ``format``) of a file-storage archive."""
        return "vma.zst" if archive.guest_type == "qemu" else "tar.zst"

    def not_backed_up(self) -> list[FakeGuest]:
        """Return the guests no job covers, templates included, as PVE lists them.

        Disabled jobs still cover (``pve-manager:PVE/API2/Cluster/BackupInfo.pm``,
        ``get_included_vmids`` ignores ``enabled``), and nothing skips templates there.
        """
        covered = {g.vmid for j in self.jobs for g in self.covered(j, templates=True)}
        return [g for g in self.guests if g.vmid not in covered]

    # ---- the simulation

    def sync(self) -> None:
        """Run every scheduled start between the last simulated instant and ``now()``."""
        now = self.now()
        since = self.simulated_until
        if since is None or now <= since:
            self.simulated_until = now if since is None else since
            return
        starts: list[tuple[float, int, FakeJob]] = []
        for index, job in enumerate(self.jobs):
            if job.enabled:
                starts.extend(
                    (t, index, job) for t in daily_starts(job.schedule, self.tz, since, now)
                )
        for t, _, job in sorted(starts, key=lambda s: (s[0], s[1])):
            self._run(job, int(t), finished=True)
        self.simulated_until = now

    def run_backup(self, job_id: str) -> None:
        """Run ``job_id`` now: a run of up to 5 minutes that has just ended.

        It starts after the last task of its nodes ended, so it is always the newest run.
        """
        self.sync()
        job = self.job(job_id)
        now = int(self.now())
        nodes = {g.node for g in self.covered(job)}
        previous = max((t.endtime or t.starttime for t in self.tasks if t.node in nodes), default=0)
        self._run(job, min(now, max(now - 300, previous + 1)), finished=True, end_at=now)

    def start_backup(self, job_id: str) -> None:
        """Start ``job_id`` now and leave its task ``RUNNING`` until :meth:`finish_backups`."""
        self.sync()
        self._run(self.job(job_id), int(self.now()), finished=False)

    def finish_backups(self) -> None:
        """End the runs started by :meth:`start_backup` now (success unless broken)."""
        self.sync()
        running, self._running = self._running, []
        for task, job in running:
            self._complete(task, job, int(self.now()))

    def _next_pid(self) -> int:
        self._pid += 0x101
        return self._pid

    def _run(self, job: FakeJob, start: int, *, finished: bool, end_at: int | None = None) -> None:
        by_node: dict[str, list[FakeGuest]] = {}
        for g in self.covered(job):
            if g.node not in self.offline_nodes:
                by_node.setdefault(g.node, []).append(g)
        for node, guests in sorted(by_node.items()):
            task_id = str(guests[0].vmid) if len(guests) == 1 else ""
            task = FakeTask(node, start, None, "", task_id, self._next_pid())
            task.log.append(f"INFO: starting new backup job: {command_line(job)}")
            if not finished:
                task.log.append(_guest_start(guests[0]))
            self.tasks.append(task)
            if finished:
                self._complete(task, job, end_at)
            else:
                self._running.append((task, job))

    def _complete(self, task: FakeTask, job: FakeJob, end_at: int | None) -> None:
        guests = [
            g
            for g in self.covered(job)
            if g.node == task.node and (not task.id or str(g.vmid) == task.id)
        ]
        if self.broken:
            for g in guests:
                if not task.log or task.log[-1] != _guest_start(g):
                    task.log.append(_guest_start(g))
                task.log.append(
                    f"ERROR: Backup of VM {g.vmid} failed - unable to open file "
                    f"'/mnt/pve/{job.storage}/dump/vzdump-{g.guest_type}-{g.vmid}.tmp' - "
                    f"Input/output error"
                )
                task.log.append(_local_line(self.tz, "INFO: Failed at", task.starttime + 31))
            task.log += ["INFO: Backup job finished with errors", "TASK ERROR: job errors"]
            task.status = "job errors"
            task.endtime = end_at if end_at is not None else task.starttime + 31
            return
        if end_at is None:
            steps = [
                random.Random(f"{g.vmid}-{task.starttime}").randint(180, 420)  # noqa: S311
                for g in guests
            ]  # one guest's dump takes a few minutes
        else:  # squeeze the dumps between the start and the given end
            span = max(0, end_at - task.starttime - 2)
            steps = [span // max(1, len(guests))] * len(guests)
        at = task.starttime + 2
        errors = warnings = 0
        for g, step in zip(guests, steps, strict=True):
            if not task.log or task.log[-1] != _guest_start(g):
                task.log.append(_guest_start(g))
            task.log.append(_local_line(self.tz, "INFO: Backup started at", at))
            if g.vmid in self.failing:
                errors += 1
                task.log.append(
                    f"ERROR: Backup of VM {g.vmid} failed - command 'zstd' failed: exit code 1"
                )
                task.log.append(_local_line(self.tz, "INFO: Failed at", at + 30))
                at += 30
                continue
            if g.vmid in self.warning:
                warnings += 1
                task.log.append(
                    "WARN: unable to add notes - property is not defined in schema "
                    "and the schema does not allow additional properties"
                )
            task.log.append(
                f"INFO: Finished Backup of VM {g.vmid} "
                f"({step // 3600:02d}:{step % 3600 // 60:02d}:{step % 60:02d})"
            )
            task.log.append(_local_line(self.tz, "INFO: Backup finished at", at + step))
            run = self._runs.get((g.vmid, job.storage), 0)
            self._runs[(g.vmid, job.storage)] = run + 1
            self.archives.append(
                FakeArchive(
                    storage=job.storage,
                    vmid=g.vmid,
                    guest_type=g.guest_type,
                    ctime=at if end_at is None else min(at, end_at),
                    size=archive_size(g.vmid, run),
                    notes=g.name,
                    verification="ok" if self.storage(job.storage).type == "pbs" else None,
                )
            )
            at += step
            self._prune(job, g.vmid)
        if errors:
            task.log += ["INFO: Backup job finished with errors", "TASK ERROR: job errors"]
            task.status = "job errors"
        else:
            task.log.append("INFO: Backup job finished successfully")
            task.status = f"WARNINGS: {warnings}" if warnings else "OK"
            task.log.append(f"TASK {task.status}")
        task.endtime = at if end_at is None else max(end_at, task.starttime)

    def _prune(self, job: FakeJob, vmid: int) -> None:
        """Prune as vzdump does after a backup: the job's prune-backups, else the storage's.

        The selection is PVE's ``prune_mark_backup_group`` (as the exporter implements it,
        checked against pve-storage's own test expectations); protected archives are neither
        pruned nor counted.
        """
        setting = job.prune_backups or self.storage(job.storage).prune_backups
        retention = parse_retention(setting)
        if retention is None or retention.keep_all:
            return
        group = self.archives_of(job.storage, vmid)
        marks = prune_marks(
            [a.ctime for a in group], retention, self.tz, protected=[a.protected for a in group]
        )
        for archive, mark in zip(group, marks, strict=True):
            if mark == "remove":
                self.archives.remove(archive)


def command_line(job: FakeJob) -> str:
    """Return the ``vzdump`` command line a run of ``job`` logs (pve-guest-common)."""
    words = ["vzdump", *sorted(_vmids(job.vmid))] if job.vmid and not job.all else ["vzdump"]
    parts = [str(w) for w in words]
    if job.all:
        parts += ["--all", "1"]
    for key, value in (("exclude", job.exclude), ("pool", job.pool), ("node", job.node)):
        if value:
            parts += [f"--{key}", value]
    parts += ["--storage", job.storage, "--mode", job.mode, "--compress", job.compress]
    parts += ["--notes-template", "'{{guestname}}'", "--quiet", "1"]
    return " ".join(parts)


def _guest_start(guest: FakeGuest) -> str:
    return f"INFO: Starting Backup of VM {guest.vmid} ({guest.guest_type})"


def _local_line(tz: str, prefix: str, at: float) -> str:
    return f"{prefix} {datetime.fromtimestamp(at, ZoneInfo(tz)):%Y-%m-%d %H:%M:%S}"


def _vmids(text: str) -> set[int]:
    return {int(v) for v in re.split(r"[,;\s]+", text) if v.strip().isdigit()}


def daily_starts(schedule: str, tz: str, after: float, until: float) -> Iterable[float]:
    """Yield the starts of a daily ``HH:MM`` schedule in ``(after, until]`` (others: none)."""
    m = _DAILY_RE.match(schedule.strip())
    if m is None:
        return
    zone = ZoneInfo(tz)
    at = time(int(m.group(1)), int(m.group(2)))
    day = datetime.fromtimestamp(max(after, until - 400 * 86400), zone).date()
    while True:
        instant = datetime.combine(day, at, tzinfo=zone).timestamp()
        if instant > until:
            return
        if instant > after:
            yield instant
        day += timedelta(days=1)


def archive_size(vmid: int, run: int) -> int:
    """Return the size of run number ``run`` of ``vmid``: ~10.7 GB growing 0.1 GB a run."""
    jitter = random.Random(f"size-{vmid}-{run}").randint(  # noqa: S311 - fake data
        -40_000_000, 40_000_000
    )
    return min(30_000_000_000, 10_700_000_000 + 100_000_000 * run + jitter)


def homelab(
    now: Callable[[], float], *, days: int = 14, tz: str = "Europe/Berlin", pbs: bool = False
) -> PVEScenario:
    """Build the strategy document's homelab as it stands at ``now()``.

    Node ``pve1``; VM 100 ``infra100`` backed up daily at 21:00 (Europe/Berlin) by
    ``backup-infra-daily`` to the shared NFS storage ``truenas-backups`` (150 GiB) with
    keep-last 14, and ``days`` successful runs so far; CT 101 ``dns101`` covered by no job.
    The archives grow from about 10.7 GB, so 14 of them fit today while 14 times the newest
    does not: the retention projection exceeds the quota.

    With ``pbs=True`` a PBS storage ``pbs-offsite`` and a daily 22:30 job
    ``backup-infra-pbs`` (keep-daily 7, keep-weekly 4) for VM 100 are added, with 7 verified
    snapshots, the oldest of which failed verification.
    """
    scenario = PVEScenario(
        now=now,
        tz=tz,
        guests=[
            FakeGuest(100, "infra100", guest_type="qemu"),
            FakeGuest(101, "dns101", guest_type="lxc"),
        ],
        storages=[
            FakeStorage("truenas-backups", total=150 * GIB, type="nfs", shared=True),
            FakeStorage(
                "local",
                total=100 * GIB,
                type="dir",
                content="iso,vztmpl,backup",
                shared=False,
                other_used=12 * GIB,
                prune_backups="keep-all=1",
            ),
        ],
        jobs=[
            FakeJob(
                "backup-infra-daily",
                schedule="21:00",
                storage="truenas-backups",
                vmid="100",
                prune_backups={"keep-last": "14"},
            )
        ],
    )
    current = now()
    history = [("backup-infra-daily", days)]
    if pbs:
        scenario.storages.append(
            FakeStorage("pbs-offsite", total=2048 * GIB, type="pbs", shared=True)
        )
        scenario.jobs.append(
            FakeJob(
                "backup-infra-pbs",
                schedule="22:30",
                storage="pbs-offsite",
                vmid="100",
                prune_backups={"keep-daily": "7", "keep-weekly": "4"},
            )
        )
        history.append(("backup-infra-pbs", 7))
    # Replay the last runs of each job in time order, as they happened.
    runs: list[tuple[float, FakeJob]] = []
    for job_id, count in history:
        job = scenario.job(job_id)
        starts = list(daily_starts(job.schedule, tz, current - (count + 2) * 86400, current))
        runs.extend((t, job) for t in starts[len(starts) - count :])
    scenario.simulated_until = current
    for t, job in sorted(runs, key=lambda r: r[0]):
        scenario._run(job, int(t), finished=True)
    if pbs:
        oldest = scenario.archives_of("pbs-offsite", 100)[0]
        oldest.verification = "failed"
    return scenario
