"""A fake Proxmox VE API over HTTPS, with the real shapes and quirks, for tests and the demo.

It serves the endpoints :mod:`exporter.sources.proxmox.source` reads, shaped as api-shapes §1
describes them: every answer wrapped in ``{"data": ...}``, booleans as ``0``/``1``,
``prune-backups`` values as strings, backup volumes sorted alphabetically by volid, ``total``
beside ``data`` on task lists, a multi-guest vzdump task's ``id`` empty, and, without the
backup privileges, an empty ``content=backup`` list with HTTP 200 (the permission trap).

The data is a mutable :class:`PVEScenario` built from a clock (``now`` callable). It simulates
the enabled jobs whose schedule is a plain daily ``HH:MM`` lazily: before every request, each
scheduled run between the last simulated instant and ``now()`` happens (an archive per covered
guest and a vzdump task, or a failed task while :meth:`PVEScenario.break_backups` is in
effect), then ``keep-last`` pruning. So advancing the clock advances the homelab's days.

Its own schedule and coverage rules are written independently of the exporter's so the tests
compare two implementations rather than one with itself.

It also serves the read-only endpoints the peer tool prometheus-pve-exporter scrapes
(``cluster/status``, ``cluster/config/qdevice``, ``nodes/{n}/qemu``, ``nodes/{n}/lxc``, their
``config``, ``nodes/{n}/replication`` and ``nodes/{n}/subscription``), so
``bench/scrape_latency.py`` can run it against the same fake.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from exporter.sim.server import AppServer, Hold
from exporter.sim.tls import SelfSignedCert, make_self_signed_cert

__all__ = [
    "FakeArchive",
    "FakeGuest",
    "FakeJob",
    "FakePVE",
    "FakeStorage",
    "FakeTask",
    "PVEScenario",
    "homelab",
    "start_fake_pve",
]

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

    def covered(self, job: FakeJob) -> list[FakeGuest]:
        """Return the guests ``job`` backs up (templates never)."""
        excluded = _vmids(job.exclude)
        listed = _vmids(job.vmid)
        out = []
        for g in self.guests:
            if g.template or (job.node and g.node != job.node):
                continue
            if job.all:
                if g.vmid not in excluded:
                    out.append(g)
            elif job.pool:
                if g.pool == job.pool:
                    out.append(g)
            elif g.vmid in listed:
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
        """Return the guests no job covers (disabled jobs still cover, as in PVE)."""
        covered = {g.vmid for j in self.jobs for g in self.covered(j)}
        return [g for g in self.guests if not g.template and g.vmid not in covered]

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
        for g, step in zip(guests, steps, strict=True):
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
        task.status = "OK"
        task.endtime = at if end_at is None else max(end_at, task.starttime)

    def _prune(self, job: FakeJob, vmid: int) -> None:
        keep = (job.prune_backups or {}).get("keep-last")
        if keep is None:
            return
        # Protected archives are neither pruned nor counted, as in PVE::Storage::prune_mark.
        candidates = [a for a in self.archives_of(job.storage, vmid) if not a.protected]
        for old in candidates[: max(0, len(candidates) - int(keep))]:
            self.archives.remove(old)


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


# ------------------------------------------------------------------------------- the server

_SCENARIO = web.AppKey("scenario", PVEScenario)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bit(value: bool) -> int:
    return 1 if value else 0


def _ok(data: Any, **extra: Any) -> web.Response:
    return web.json_response({"data": data, **extra})


def _listing(request: web.Request, items: list[Any], **extra: Any) -> web.Response:
    if request.app[_SCENARIO].malformed:
        return _ok({"unexpected": "object instead of a list"}, **extra)
    return _ok(items, **extra)


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    sc = request.app[_SCENARIO]
    sc.requests.append(request.path)
    if sc.latency:
        await asyncio.sleep(sc.latency)
    await sc._hang.wait()
    expected = f"PVEAPIToken={sc.token_id}={sc.token_secret}"
    if request.headers.get("Authorization") != expected:
        return web.json_response({"data": None}, status=401, reason="invalid token value")
    if sc.fail_status is not None:
        return web.json_response({"data": None}, status=sc.fail_status, reason="fake failure")
    sc.sync()
    return await handler(request)


def _node(request: web.Request) -> str:
    sc = request.app[_SCENARIO]
    node = request.match_info["node"]
    if node not in sc.nodes:
        raise web.HTTPBadRequest(reason="no such node")
    if node in sc.offline_nodes:
        raise web.HTTPInternalServerError(reason=f"node '{node}' not online")
    return node


async def _nodes(request: web.Request) -> web.Response:
    sc = request.app[_SCENARIO]
    items = [
        {
            "node": n,
            "status": "offline" if n in sc.offline_nodes else "online",
            "type": "node",
            "id": f"node/{n}",
            "maxcpu": 8,
            "level": "",
        }
        for n in sc.nodes
    ]
    return _listing(request, items)


async def _resources(request: web.Request) -> web.Response:
    sc = request.app[_SCENARIO]
    kind = request.query.get("type", "")
    items: list[dict[str, Any]] = []
    if kind in ("", "vm"):
        for g in sc.guests:
            item: dict[str, Any] = {
                "id": f"{g.guest_type}/{g.vmid}",
                "type": g.guest_type,
                "vmid": g.vmid,
                "name": g.name,
                "node": g.node,
                "status": "unknown" if g.node in sc.offline_nodes else "running",
                "template": _bit(g.template),
            }
            if g.pool:
                item["pool"] = g.pool
            items.append(item)
    return _listing(request, items)


async def _storage_config(request: web.Request) -> web.Response:
    sc = request.app[_SCENARIO]
    items = []
    for s in sc.storages:
        item: dict[str, Any] = {
            "storage": s.storage,
            "type": s.type,
            "content": s.content,
            "digest": "0123456789abcdef0123456789abcdef01234567",
        }
        if s.prune_backups is not None:
            item["prune-backups"] = s.prune_backups
        if s.type == "nfs":
            item.update({"server": "192.0.2.10", "export": "/mnt/storage/backups/proxmox"})
        if not s.enabled:
            item["disable"] = 1
        items.append(item)
    return _listing(request, items)


async def _node_storage(request: web.Request) -> web.Response:
    sc = request.app[_SCENARIO]
    _node(request)
    content = request.query.get("content")
    items = []
    for s in sc.storages:
        if content and (content not in s.content.split(",") or not s.enabled):
            continue
        total = s.total if s.active else 0
        used = sc.used(s) if s.active else 0
        item: dict[str, Any] = {
            "storage": s.storage,
            "type": s.type,
            "content": s.content,
            "enabled": _bit(s.enabled),
            "active": _bit(s.active),
            "shared": _bit(s.shared),
            "total": total,
            "used": used,
            "avail": total - used,
        }
        if total > 0:
            item["used_fraction"] = used / total
        items.append(item)
    return _listing(request, items)


async def _content(request: web.Request) -> web.Response:
    sc = request.app[_SCENARIO]
    _node(request)
    storage_id = request.match_info["storage"]
    try:
        storage = sc.storage(storage_id)
    except StopIteration:
        raise web.HTTPInternalServerError(reason=f"storage '{storage_id}' does not exist") from None
    if not storage.active:
        raise web.HTTPInternalServerError(reason=f"storage '{storage_id}' is not online")
    content = request.query.get("content")
    if content not in (None, "backup") or "backup" not in storage.content.split(","):
        return _listing(request, [])
    if not sc.privileged:
        # check_volume_access drops every backup volume silently: HTTP 200, empty list.
        return _listing(request, [])
    vmid = request.query.get("vmid")
    items = []
    for a in sc.archives:
        if a.storage != storage_id or (vmid is not None and str(a.vmid) != vmid):
            continue
        volid = sc.volid(a)
        pbs = storage.type == "pbs"
        item: dict[str, Any] = {
            "volid": volid,
            "content": "backup",
            "format": ("pbs-vm" if a.guest_type == "qemu" else "pbs-ct")
            if pbs
            else sc.extension(a),
            "subtype": a.guest_type,
            "vmid": a.vmid,
            "ctime": a.ctime,
            "size": a.size,
        }
        if a.notes:
            item["notes"] = a.notes
        if a.protected:
            item["protected"] = 1
        if pbs and a.verification is not None:
            item["verification"] = {
                "state": a.verification,
                "upid": f"UPID:pbs:0000C0DE:0012ABCD:{a.ctime + 3600:08X}:verify::root@pam:",
            }
        items.append(item)
    items.sort(key=lambda i: str(i["volid"]).lower())
    return _listing(request, items)


async def _backup_jobs(request: web.Request) -> web.Response:
    sc = request.app[_SCENARIO]
    items = []
    for j in sc.jobs:
        item: dict[str, Any] = {
            "id": j.id,
            "type": "vzdump",
            "schedule": j.schedule,
            "enabled": _bit(j.enabled),
            "storage": j.storage,
            "mode": j.mode,
            "compress": j.compress,
            "notes-template": "{{guestname}}",
            "notification-mode": "auto",
            "repeat-missed": 0,
        }
        nxt = next(iter(daily_starts(j.schedule, sc.tz, sc.now(), sc.now() + 2 * 86400)), None)
        if nxt is not None:
            item["next-run"] = int(nxt)
        if j.all:
            item["all"] = 1
        for key, value in (
            ("vmid", j.vmid),
            ("exclude", j.exclude),
            ("pool", j.pool),
            ("node", j.node),
        ):
            if value:
                item[key] = value
        if j.prune_backups is not None:
            item["prune-backups"] = dict(j.prune_backups)
        items.append(item)
    return _listing(request, items)


async def _not_backed_up(request: web.Request) -> web.Response:
    sc = request.app[_SCENARIO]
    items = [{"vmid": g.vmid, "type": g.guest_type, "name": g.name} for g in sc.not_backed_up()]
    return _listing(request, items)


async def _tasks(request: web.Request) -> web.Response:
    sc = request.app[_SCENARIO]
    node = _node(request)
    q = request.query
    source = q.get("source", "archive")
    typefilter = q.get("typefilter")
    selected = []
    for t in sc.tasks:
        if t.node != node or (typefilter and typefilter != "vzdump"):
            continue
        running = t.endtime is None
        if (source == "archive" and running) or (source == "active" and not running):
            continue
        if "vmid" in q and t.id != q["vmid"]:
            continue
        selected.append(t)
    selected.sort(key=lambda t: t.starttime, reverse=True)
    start = int(q.get("start", "0"))
    limit = int(q.get("limit", "50"))
    items = []
    for t in selected[start : start + limit]:
        item: dict[str, Any] = {
            "upid": t.upid,
            "node": t.node,
            "pid": t.pid,
            "pstart": t.pid * 7,
            "starttime": t.starttime,
            "type": "vzdump",
            "id": t.id,
            "user": t.user,
        }
        if t.endtime is None:
            item["status"] = "RUNNING"
        else:
            item["endtime"] = t.endtime
            item["status"] = t.status
        items.append(item)
    return _listing(request, items, total=len(selected))


async def _version(request: web.Request) -> web.Response:
    return _ok({"version": "9.1.7", "release": "9.1", "repoid": "0c56bad8"})


# ---- endpoints only the peer tool (prometheus-pve-exporter) reads; the exporter never calls them

CLUSTER_NAME = "homelab"
_DIGEST = "9f3c2a7d4e1b0c8a6f5e4d3c2b1a09f8e7d6c5b4"


async def _cluster_status(request: web.Request) -> web.Response:
    """``GET /cluster/status``: a ``cluster`` entry (only when clustered), then one per node.

    A standalone node (one node, no corosync) lists just itself with ``nodeid`` 0; the first
    node answers the request, so it is the ``local`` one.
    """
    sc = request.app[_SCENARIO]
    items: list[dict[str, Any]] = []
    clustered = len(sc.nodes) > 1
    if clustered:
        online = [n for n in sc.nodes if n not in sc.offline_nodes]
        items.append(
            {
                "type": "cluster",
                "id": "cluster",
                "name": CLUSTER_NAME,
                "nodes": len(sc.nodes),
                "quorate": _bit(2 * len(online) > len(sc.nodes)),
                "version": len(sc.nodes),
            }
        )
    for index, n in enumerate(sc.nodes):
        items.append(
            {
                "type": "node",
                "id": f"node/{n}",
                "name": n,
                "ip": f"192.0.2.{20 + index}",
                "level": "",
                "local": _bit(index == 0),
                "nodeid": index + 1 if clustered else 0,
                "online": _bit(n not in sc.offline_nodes),
            }
        )
    return _listing(request, items)


async def _qdevice(request: web.Request) -> web.Response:
    """``GET /cluster/config/qdevice``: no QDevice configured answers an empty object."""
    return _ok({})


def _node_guests(request: web.Request, guest_type: str) -> list[FakeGuest]:
    node = _node(request)
    sc = request.app[_SCENARIO]
    return [g for g in sc.guests if g.node == node and g.guest_type == guest_type]


async def _qemu_list(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/qemu``: the node's VMs (templates included, flagged)."""
    items: list[dict[str, Any]] = []
    for g in _node_guests(request, "qemu"):
        item: dict[str, Any] = {
            "vmid": g.vmid,
            "name": g.name,
            "status": "stopped" if g.template else "running",
            "cpus": 2,
            "maxmem": 4 * GIB,
            "maxdisk": 32 * GIB,
        }
        if g.template:
            item["template"] = 1
        items.append(item)
    return _listing(request, items)


async def _lxc_list(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/lxc``: the node's containers; ``vmid`` is a string here.

    Some PVE versions serialise the container list's ``vmid`` as a JSON string (the VM list
    uses a number), so clients must accept both.
    """
    items: list[dict[str, Any]] = []
    for g in _node_guests(request, "lxc"):
        item: dict[str, Any] = {
            "vmid": str(g.vmid),
            "name": g.name,
            "type": "lxc",
            "status": "stopped" if g.template else "running",
            "cpus": 1,
            "maxmem": GIB // 2,
            "maxdisk": 8 * GIB,
        }
        if g.template:
            item["template"] = 1
        items.append(item)
    return _listing(request, items)


def _node_guest(request: web.Request, guest_type: str) -> FakeGuest:
    vmid = request.match_info["vmid"]
    if not (vmid.isascii() and vmid.isdigit()):
        raise web.HTTPBadRequest(reason="Parameter verification failed.")
    for g in _node_guests(request, guest_type):
        if str(g.vmid) == vmid:
            return g
    folder = "qemu-server" if guest_type == "qemu" else "lxc"
    node = request.match_info["node"]
    raise web.HTTPInternalServerError(
        reason=f"Configuration file 'nodes/{node}/{folder}/{vmid}.conf' does not exist"
    )


async def _qemu_config(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/qemu/{vmid}/config``: the VM's config; booleans as ``0``/``1``."""
    g = _node_guest(request, "qemu")
    config: dict[str, Any] = {
        "name": g.name,
        "onboot": _bit(not g.template),
        "cores": 2,
        "memory": "4096",
        "ostype": "l26",
        "boot": "order=scsi0;net0",
        "scsi0": f"local-lvm:vm-{g.vmid}-disk-0,size=32G",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
        "digest": _DIGEST,
    }
    if g.template:
        config["template"] = 1
    return _ok(config)


async def _lxc_config(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/lxc/{vmid}/config``: the container's config (``hostname``)."""
    g = _node_guest(request, "lxc")
    config: dict[str, Any] = {
        "hostname": g.name,
        "onboot": _bit(not g.template),
        "cores": 1,
        "memory": 512,
        "swap": 512,
        "ostype": "debian",
        "arch": "amd64",
        "rootfs": f"local-lvm:vm-{g.vmid}-disk-0,size=8G",
        "net0": "name=eth0,bridge=vmbr0,ip=dhcp,type=veth",
        "digest": _DIGEST,
    }
    if g.template:
        config["template"] = 1
    return _ok(config)


async def _replication(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/replication``: no storage replication jobs in a homelab."""
    _node(request)
    return _listing(request, [])


async def _subscription(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/subscription``: a node without a subscription key."""
    _node(request)
    return _ok(
        {
            "status": "notfound",
            "message": "There is no subscription key",
            "serverid": "0123456789ABCDEF0123456789ABCDEF",
            "url": "https://www.proxmox.com/en/proxmox-virtual-environment/pricing",
        }
    )


def create_app(scenario: PVEScenario) -> web.Application:
    """Build the aiohttp application serving ``scenario`` under ``/api2/json``."""
    app = web.Application(middlewares=[_middleware])
    app[_SCENARIO] = scenario
    api = "/api2/json"
    app.router.add_get(f"{api}/version", _version)
    app.router.add_get(f"{api}/nodes", _nodes)
    app.router.add_get(f"{api}/cluster/resources", _resources)
    app.router.add_get(f"{api}/storage", _storage_config)
    app.router.add_get(f"{api}/cluster/backup", _backup_jobs)
    app.router.add_get(f"{api}/cluster/backup-info/not-backed-up", _not_backed_up)
    app.router.add_get(f"{api}/nodes/{{node}}/storage", _node_storage)
    app.router.add_get(f"{api}/nodes/{{node}}/storage/{{storage}}/content", _content)
    app.router.add_get(f"{api}/nodes/{{node}}/tasks", _tasks)
    # Read only by the peer tool in bench/scrape_latency.py.
    app.router.add_get(f"{api}/cluster/status", _cluster_status)
    app.router.add_get(f"{api}/cluster/config/qdevice", _qdevice)
    app.router.add_get(f"{api}/nodes/{{node}}/qemu", _qemu_list)
    app.router.add_get(f"{api}/nodes/{{node}}/qemu/{{vmid}}/config", _qemu_config)
    app.router.add_get(f"{api}/nodes/{{node}}/lxc", _lxc_list)
    app.router.add_get(f"{api}/nodes/{{node}}/lxc/{{vmid}}/config", _lxc_config)
    app.router.add_get(f"{api}/nodes/{{node}}/replication", _replication)
    app.router.add_get(f"{api}/nodes/{{node}}/subscription", _subscription)
    return app


@dataclass
class FakePVE:
    """A running fake: where it listens and how to authenticate."""

    scenario: PVEScenario
    cert: SelfSignedCert
    host: str
    port: int
    _server: AppServer = field(default_factory=AppServer, repr=False)

    @property
    def url(self) -> str:
        """The base URL, as a ``kind: proxmox`` source's ``url:`` takes it."""
        return f"https://{self.host}:{self.port}"

    @property
    def ca_file(self) -> str:
        """The certificate to trust (``ca_file:`` / proxmoxer ``verify_ssl=``)."""
        return str(self.cert.cert_file)

    @property
    def token_id(self) -> str:
        """The accepted API token id, ``user@realm!name``."""
        return self.scenario.token_id

    @property
    def token_secret(self) -> str:
        """The accepted API token secret."""
        return self.scenario.token_secret

    async def _start(self) -> None:
        app = create_app(self.scenario)
        self.port = await self._server.start(app, host=self.host, port=self.port, cert=self.cert)

    async def stop(self) -> None:
        """Stop serving (held requests are released first); the port is then refused."""
        self.scenario.release()
        await self._server.stop(abort_connections=True)

    async def restart(self) -> None:
        """Serve again on the same port, with the same certificate and scenario."""
        await self.stop()
        await self._start()


async def start_fake_pve(
    scenario: PVEScenario,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    cert: SelfSignedCert | None = None,
) -> FakePVE:
    """Start the fake over HTTPS on ``host:port`` (0: a free port) with a fresh certificate."""
    fake = FakePVE(scenario=scenario, cert=cert or make_self_signed_cert(), host=host, port=port)
    await fake._start()
    return fake
