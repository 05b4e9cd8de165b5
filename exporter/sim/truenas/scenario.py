"""The fake TrueNAS's state: a mutable scenario that simulates its schedules, and the homelab.

The data is a mutable :class:`TrueNASScenario` built from a clock (``now`` callable). Before
every call it simulates lazily what happened since the last call: cloud-sync runs at their
cron instants (in the scenario's time zone), a recursive daily 00:00 snapshot of ``storage``
kept 14 days, a Proxmox archive written to ``storage/backups/proxmox`` at 21:00 (keep 14), and
the scrub task's threshold check at its cron instants (a scrub starts when at least
``threshold - 1`` days passed since the last one started, as the middleware does). Its cron
iteration uses cronsim directly, independently of :mod:`exporter.schedule.expressions`.

Knobs: :meth:`TrueNASScenario.advance` (with a clock that can advance), :meth:`fail_cloudsync`,
:meth:`skip_cloudsync` (the task does not run), :meth:`run_cloudsync_now`, :meth:`hang` /
:meth:`release`, :meth:`drop_connections`, :meth:`revoke_key`, ``results[method] = value``
(answer that raw result, e.g. something malformed).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim

from exporter.sim.server import Hold, advance_clock

GIB = 2**30
DAY = 86400
POOL_SIZE = 8 * 2**40  # 8 TiB of usable space


def _date(ts: float | None) -> dict[str, int] | None:
    return None if ts is None else {"$date": round(ts * 1000)}


def _cron_text(schedule: dict[str, str]) -> str:
    return " ".join(schedule[k] for k in ("minute", "hour", "dom", "month", "dow"))


def cron_instants(schedule: dict[str, str], tz: str, after: float, until: float) -> Iterator[float]:
    """Yield the instants of a TrueNAS cron dict in ``(after, until]`` (cronsim, zone ``tz``)."""
    zone = ZoneInfo(tz)
    for start in CronSim(_cron_text(schedule), datetime.fromtimestamp(after, zone)):
        instant = start.timestamp()
        if instant > until:
            return
        if instant > after:
            yield instant


@dataclass
class FakeDataset:
    """A filesystem; ``own`` bytes are its own data (children add to ``used``)."""

    name: str
    own: int
    quota: int = 0  # 0 = none
    created: float = 0.0  # Unix seconds


@dataclass
class FakeCloudSync:
    """A cloud-sync task and its last job (TrueNAS keeps only the last one)."""

    id: int
    description: str
    schedule: dict[str, str]
    provider: str
    bucket: str
    path: str
    direction: str = "PUSH"
    transfer_mode: str = "SYNC"
    encryption: bool = True
    enabled: bool = True
    duration: float = 3600.0  # how long a run takes
    behaviour: str = "ok"  # ok | fail | skip (the NAS was off / the task did not fire)
    # Scheduled runs at or after this instant do not fire (the demo's stalled Storj sync).
    skip_from: float | None = None
    job: dict[str, Any] | None = None  # id, state, time_started/finished, error, outcome, ends


@dataclass
class FakeNfsShare:
    """An NFS share: empty ``hosts`` and ``networks`` export it to everyone (``*``)."""

    id: int
    path: str
    hosts: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    comment: str = ""
    ro: bool = False
    maproot_user: str | None = None
    maproot_group: str | None = None
    enabled: bool = True


@dataclass
class FakeScrubTask:
    """A pool scrub task: cron check plus threshold days."""

    id: int
    pool: str
    threshold: int
    schedule: dict[str, str]
    enabled: bool = True


@dataclass
class FakeDisk:
    """A disk and its SMART self-test log (newest first), only served by 25.04."""

    name: str
    tests: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrueNASScenario:
    """Everything the fake serves, and the knobs tests and the demo turn."""

    now: Callable[[], float]
    series: str = "25.04"  # the release line: 24.10 | 25.04 | 25.10 | 26.0
    version: str = ""  # system.version; empty: the release's usual string
    tz: str = "Europe/Berlin"
    username: str = "svc-exporter"
    api_key: str = "1-" + "k3y" * 21 + "x"  # <id>-<64 chars>, like a real key
    pool: str = "storage"
    pool_status: str = "ONLINE"
    datasets: list[FakeDataset] = field(default_factory=list)
    snapshots: dict[str, list[float]] = field(default_factory=dict)  # dataset -> creations
    archives: list[int] = field(default_factory=list)  # sizes in storage/backups/proxmox
    cloudsync: list[FakeCloudSync] = field(default_factory=list)
    scrub_tasks: list[FakeScrubTask] = field(default_factory=list)
    nfs_shares: list[FakeNfsShare] = field(default_factory=list)
    disks: list[FakeDisk] = field(default_factory=list)
    scrub_duration: float = 3 * 3600.0
    last_scrub_start: float | None = None  # what `zpool history` knows
    scan: dict[str, Any] = field(default_factory=dict)  # function, state, start, end, errors
    snapshot_keep: int = 14
    archive_keep: int = 14
    # Every frame received; over REST one {"method", "path", "query"} per request.
    frames: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    key_revoked: bool = False
    results: dict[str, Any] = field(default_factory=dict)  # method -> raw result override
    missing_methods: set[str] = field(default_factory=set)  # answered -32601
    denied_methods: set[str] = field(default_factory=set)  # answered EACCES (no role)
    # method -> seconds before its answer (a zfs.snapshot.query over many snapshots is slow)
    slow_methods: dict[str, float] = field(default_factory=dict)
    dropping: bool = False  # close the connection instead of answering
    simulated_until: float | None = None
    _job_id: int = 1000
    _archive_runs: int = 0
    _hang: Hold = field(default_factory=Hold)

    # ---- knobs

    def advance(self, seconds: float) -> None:
        """Move the clock (it must have ``advance``, like FakeClock) and simulate."""
        advance_clock(self.now, seconds)
        self.sync()

    def task(self, description: str) -> FakeCloudSync:
        """Return the cloud-sync task with this description."""
        return next(t for t in self.cloudsync if t.description == description)

    def fail_cloudsync(self, description: str) -> None:
        """Make the task's further scheduled runs fail."""
        self.task(description).behaviour = "fail"

    def skip_cloudsync(self, description: str) -> None:
        """Make the task not run at its further scheduled instants."""
        self.task(description).behaviour = "skip"

    def repair_cloudsync(self, description: str) -> None:
        """Let the task's further runs succeed again."""
        self.task(description).behaviour = "ok"

    def run_cloudsync_now(self, description: str, *, outcome: str = "SUCCESS") -> None:
        """Start a run now; it ends after the task's duration with ``outcome``."""
        self.sync()
        self._start_job(self.task(description), self.now(), outcome)

    def revoke_key(self) -> None:
        """Revoke the API key (logins then answer EXPIRED)."""
        self.key_revoked = True

    def drop_connections(self, drop: bool = True) -> None:
        """Close every connection at its next call (until called with ``False``)."""
        self.dropping = drop

    def hang(self) -> None:
        """Hold every call without answering until :meth:`release`."""
        self._hang.hold()

    def release(self) -> None:
        """Answer the calls held by :meth:`hang`."""
        self._hang.release()

    def add_dataset(self, name: str, own: int, quota: int = 0) -> FakeDataset:
        """Add a dataset (any name, hostile ones included) with no snapshots yet."""
        ds = FakeDataset(name, own, quota, created=self.now())
        self.datasets.append(ds)
        return ds

    # ---- derived values (what the API reports)

    def dataset(self, name: str) -> FakeDataset:
        """Return the dataset called ``name``."""
        return next(d for d in self.datasets if d.name == name)

    def used(self, name: str) -> int:
        """Space used by ``name`` and its descendants."""
        return sum(d.own for d in self.datasets if d.name == name or d.name.startswith(name + "/"))

    def available(self, name: str) -> int:
        """Space available to ``name``: the pool's free space, capped by its quota."""
        free = POOL_SIZE - self.used(self.pool)
        quota = self.dataset(name).quota
        return max(0, min(free, quota - self.used(name))) if quota else free

    def cron(self, schedule: dict[str, str]) -> str:
        """Return the five cron fields of a TrueNAS schedule dict."""
        return _cron_text(schedule)

    # ---- the simulation

    def sync(self) -> None:
        """Simulate everything scheduled between the last simulated instant and ``now()``."""
        now = self.now()
        since = self.simulated_until
        if since is None or now <= since:
            self.simulated_until = now if since is None else since
            return
        events: list[tuple[float, int, Callable[[float], None]]] = []
        for t in cron_instants(
            {"minute": "0", "hour": "0", "dom": "*", "month": "*", "dow": "*"}, self.tz, since, now
        ):
            events.append((t, 0, self._snapshot))
        for t in cron_instants(
            {"minute": "0", "hour": "21", "dom": "*", "month": "*", "dow": "*"}, self.tz, since, now
        ):
            events.append((t, 1, self._archive))
        for task in self.cloudsync:
            if task.enabled:
                for t in cron_instants(task.schedule, self.tz, since, now):
                    events.append((t, 2, functools.partial(self._fire, task)))
        for scrub in self.scrub_tasks:
            if scrub.enabled:
                for t in cron_instants(scrub.schedule, self.tz, since, now):
                    events.append((t, 3, functools.partial(self._check_scrub, scrub)))
        for t, _, action in sorted(events, key=lambda e: (e[0], e[1])):
            self._finish_running(t)
            action(t)
        self._finish_running(now)
        self.simulated_until = now

    def _finish_running(self, at: float) -> None:
        for task in self.cloudsync:
            job = task.job
            if job and job["state"] == "RUNNING" and job["ends"] <= at:
                job["state"] = job["outcome"]
                job["time_finished"] = job["ends"]
                if job["outcome"] != "SUCCESS":
                    job["error"] = "[EFAULT] rclone failed: upload failed: 403 Forbidden"
        scan = self.scan
        if scan.get("state") == "SCANNING" and scan["start"] + self.scrub_duration <= at:
            scan["state"] = "FINISHED"
            scan["end"] = scan["start"] + self.scrub_duration

    def _start_job(self, task: FakeCloudSync, at: float, outcome: str) -> None:
        self._job_id += 1
        # A failing run gives up after a few minutes; a good one takes the task's duration.
        ends = at + (task.duration if outcome == "SUCCESS" else 300.0)
        task.job = {
            "id": self._job_id,
            "state": "RUNNING",
            "time_started": at,
            "time_finished": None,
            "error": None,
            "outcome": outcome,
            "ends": ends,
        }
        self._finish_running(self.now())

    def _fire(self, task: FakeCloudSync, at: float) -> None:
        if task.behaviour == "skip" or (task.skip_from is not None and at >= task.skip_from):
            return
        if task.job is not None and task.job["state"] == "RUNNING":
            return  # TrueNAS does not start a task that is still running
        self._start_job(task, at, "FAILED" if task.behaviour == "fail" else "SUCCESS")

    def _snapshot(self, at: float) -> None:
        for ds in self.datasets:
            if ds.name == self.pool or ds.name.startswith(self.pool + "/"):
                kept = self.snapshots.setdefault(ds.name, [])
                kept.append(at)
                del kept[: max(0, len(kept) - self.snapshot_keep)]

    def _archive(self, at: float) -> None:
        # A growing guest (infra100): 8 GiB plus 0.05 GiB per run; vzdump prunes to keep-last
        # after writing, and a write that would pass the quota fails (EDQUOT) without an archive.
        proxmox = next((d for d in self.datasets if d.name.endswith("/backups/proxmox")), None)
        if proxmox is None:
            return
        self._archive_runs += 1
        size = 8 * GIB + self._archive_runs * (GIB // 20)
        if proxmox.quota and self.used(proxmox.name) + size > proxmox.quota:
            return
        self.archives.append(size)
        del self.archives[: max(0, len(self.archives) - self.archive_keep)]
        proxmox.own = sum(self.archives)

    def _check_scrub(self, task: FakeScrubTask, at: float) -> None:
        # Up to 25.10, plugins/pool_/scrub.py __run: skip while scanning or within
        # threshold - 1 days of the last scrub's start (zpool history). From 26.0,
        # plugins/zpool/scrub_impl.py validate_pool: skip while the last finished scrub
        # ended at or after now - (threshold - 1) days; without one, the history decides.
        if task.pool != self.pool or self.scan.get("state") == "SCANNING":
            return
        cutoff = at - (task.threshold - 1) * DAY
        scan = self.scan
        if (
            self.series == "26.0"
            and scan.get("function") == "SCRUB"
            and scan.get("state") == "FINISHED"
            and scan.get("end") is not None
        ):
            if scan["end"] >= cutoff:
                return
        else:
            last = self.last_scrub_start
            if last is not None and at - last < (task.threshold - 1) * DAY:
                return
        self.last_scrub_start = at
        self.scan = {
            "function": "SCRUB",
            "state": "SCANNING",
            "start": at,
            "end": None,
            "errors": 0,
        }

    # ---- API payloads

    def _prop(self, value: int | None, *, raw: str | None = None) -> dict[str, Any]:
        if value is None:
            return {
                "parsed": None,
                "rawvalue": raw or "0",
                "value": None,
                "source": "DEFAULT",
                "source_info": None,
            }
        return {
            "parsed": value,
            "rawvalue": str(value),
            "value": f"{value / GIB:.2f}G",
            "source": "NONE",
            "source_info": None,
        }

    def dataset_entries(self, properties: list[str] | None) -> list[dict[str, Any]]:
        """``pool.dataset.query`` with ``extra.flat``."""
        entries = []
        for ds in self.datasets:
            props = {
                "used": self._prop(self.used(ds.name)),
                "available": self._prop(self.available(ds.name)),
                "quota": self._prop(ds.quota or None),
                "refquota": self._prop(None),
                "referenced": self._prop(ds.own),
                "usedbysnapshots": self._prop(0),
                "creation": {
                    "parsed": _date(ds.created),
                    "rawvalue": str(int(ds.created)),
                    "value": datetime.fromtimestamp(ds.created, ZoneInfo(self.tz)).ctime(),
                    "source": "NONE",
                    "source_info": None,
                },
            }
            entry: dict[str, Any] = {
                "id": ds.name,
                "type": "FILESYSTEM",
                "name": ds.name,
                "pool": self.pool,
                "encrypted": False,
                "encryption_root": None,
                "key_loaded": False,
                "children": [],
                "user_properties": {},
                "locked": False,
                "mountpoint": f"/mnt/{ds.name}",
            }
            entry.update({k: v for k, v in props.items() if properties is None or k in properties})
            entries.append(entry)
        return entries

    def snapshot_entries(self, properties: list[str] | None) -> list[dict[str, Any]]:
        """Return the snapshot query's entries (``createtxg`` is a string, as in py-libzfs)."""
        entries = []
        txg = 4_800_000
        zone = ZoneInfo(self.tz)
        for dataset, creations in self.snapshots.items():
            for created in creations:
                txg += 17
                snap = f"auto-{datetime.fromtimestamp(created, zone):%Y-%m-%d_%H-%M}"
                props = {
                    "creation": {
                        "value": datetime.fromtimestamp(created, zone).ctime(),
                        "rawvalue": str(int(created)),
                        "parsed": _date(created),
                        "source": "NONE",
                    },
                    "used": {
                        "value": "1.2M",
                        "rawvalue": "1258291",
                        "parsed": 1258291,
                        "source": "NONE",
                    },
                }
                entries.append(
                    {
                        "id": f"{dataset}@{snap}",
                        "name": f"{dataset}@{snap}",
                        "pool": self.pool,
                        "type": "SNAPSHOT",
                        "snapshot_name": snap,
                        "dataset": dataset,
                        "createtxg": str(txg),
                        "properties": {
                            k: v for k, v in props.items() if properties is None or k in properties
                        },
                    }
                )
        return entries

    def pool_entries(self) -> list[dict[str, Any]]:
        """``pool.query`` (scan byte counters swapped, as py-libzfs reports them)."""
        scan = self.scan
        scanning = scan.get("state") == "SCANNING"
        examined, to_examine = 6_597_069_766_656, 6_597_069_766_656
        return [
            {
                "id": 1,
                "name": self.pool,
                "guid": "3920273586464696295",
                "status": self.pool_status,
                "path": f"/mnt/{self.pool}",
                "healthy": self.pool_status == "ONLINE",
                "warning": False,
                "status_code": "OK" if self.pool_status == "ONLINE" else "DEGRADED",
                "status_detail": None,
                "size": POOL_SIZE,
                "allocated": self.used(self.pool),
                "free": POOL_SIZE - self.used(self.pool),
                "scan": {
                    "function": scan.get("function"),
                    "state": scan.get("state"),
                    "start_time": _date(scan.get("start")),
                    "end_time": _date(scan.get("end")),
                    "percentage": 42.0 if scanning else (100.0 if scan else None),
                    "bytes_to_process": examined if scan else None,  # = examined (swapped)
                    "bytes_processed": to_examine if scan else None,  # = to examine (swapped)
                    "bytes_issued": examined if scan else None,
                    "pause": None,
                    "errors": scan.get("errors"),
                    "total_secs_left": 3600 if scanning else None,
                },
                "topology": {
                    "data": [],
                    "log": [],
                    "cache": [],
                    "spare": [],
                    "special": [],
                    "dedup": [],
                },
            }
        ]

    def scrub_entries(self) -> list[dict[str, Any]]:
        """``pool.scrub.query``."""
        return [
            {
                "id": s.id,
                "pool": 1,
                "pool_name": s.pool,
                "threshold": s.threshold,
                "description": "",
                "schedule": dict(s.schedule),
                "enabled": s.enabled,
            }
            for s in self.scrub_tasks
        ]

    def cloudsync_entries(self) -> list[dict[str, Any]]:
        """``cloudsync.query``, secrets included as TrueNAS returns them to an admin."""
        entries = []
        for t in self.cloudsync:
            job = None
            if t.job is not None:
                j = t.job
                job = {
                    "id": j["id"],
                    "method": "cloudsync.sync",
                    "arguments": [t.id],
                    "transient": False,
                    "description": None,
                    "abortable": True,
                    "logs_path": f"/var/log/jobs/{j['id']}.log",
                    "logs_excerpt": "Transferred: 12 / 12, 100%",
                    "progress": {
                        "percent": 100 if j["state"] != "RUNNING" else 40,
                        "description": "",
                        "extra": None,
                    },
                    "result": None,
                    "result_encoding_error": None,
                    "error": j["error"],
                    "exception": None,
                    "exc_info": None,
                    "state": j["state"],
                    "time_started": _date(j["time_started"]),
                    "time_finished": _date(j["time_finished"]),
                    "credentials": None,
                }
            entries.append(
                {
                    "id": t.id,
                    "description": t.description,
                    "path": t.path,
                    "credentials": {
                        "id": t.id,
                        "name": f"{t.provider.lower()}-homelab",
                        "provider": {
                            "type": t.provider,
                            "account": "0012abcdef",
                            "key": "K0012-secret-application-key",
                        },
                    },
                    "attributes": {"bucket": t.bucket, "folder": "/truenas", "fast_list": False},
                    "schedule": dict(t.schedule),
                    "pre_script": "",
                    "post_script": "",
                    "snapshot": False,
                    "include": [],
                    "exclude": [],
                    "args": "",
                    "enabled": t.enabled,
                    "job": job,
                    "locked": False,
                    "bwlimit": [],
                    "transfers": 4,
                    "direction": t.direction,
                    "transfer_mode": t.transfer_mode,
                    "encryption": t.encryption,
                    "filename_encryption": t.encryption,
                    "encryption_password": "correct horse battery staple",
                    "encryption_salt": "pepper",
                    "create_empty_src_dirs": False,
                    "follow_symlinks": False,
                }
            )
        return entries

    def nfs_entries(self) -> list[dict[str, Any]]:
        """``sharing.nfs.query`` in the release's shape.

        25.04+: truenas/middleware ``api/v25_04_2/nfs.py`` ``NfsShareEntry`` (tag
        TS-25.04.2.6); 24.10: ``plugins/nfs.py`` ``sharingnfs_create`` plus ``id`` and
        ``locked`` (tag TS-24.10.2.4), which has no ``expose_snapshots``.
        """
        entries = []
        for s in self.nfs_shares:
            entry: dict[str, Any] = {
                "id": s.id,
                "path": s.path,
                "aliases": [],
                "comment": s.comment,
                "networks": list(s.networks),
                "hosts": list(s.hosts),
                "ro": s.ro,
                "maproot_user": s.maproot_user,
                "maproot_group": s.maproot_group,
                "mapall_user": None,
                "mapall_group": None,
                "security": [],
                "enabled": s.enabled,
                "locked": False,
            }
            if self.series != "24.10":
                entry["expose_snapshots"] = False
            entries.append(entry)
        return entries

    def smart_entries(self) -> list[dict[str, Any]]:
        """``smart.test.results`` (25.04)."""
        return [{"disk": d.name, "tests": list(d.tests), "current_test": None} for d in self.disks]


def homelab(
    now: Callable[[], float],
    *,
    release: str = "25.04",
    history_days: int = 40,
    tz: str = "Europe/Berlin",
    skip_from: Mapping[str, float] | None = None,
) -> TrueNASScenario:
    """Build the strategy document's TrueNAS at ``now()``, after ``history_days`` of history.

    Pool ``storage`` with ``storage/backups/proxmox`` (the NFS export, quota 150 GiB, the PVE
    archives), ``storage/immich``, ``storage/nextcloud``, ``storage/ha-backup``; a recursive
    daily snapshot kept 14 days; cloud-sync "B2 daily" (01:30, B2) and "Storj weekly"
    (Wednesday 05:00, STORJ_IX), both encrypted; a scrub of ``storage`` every 35 days on
    Tuesdays at 02:10. SMART results for three disks on 24.10 and 25.04 (24.10's without
    ``power_on_hours_ago``, which 25.04.1 added).
    """
    cron = {"dom": "*", "month": "*"}
    scenario = TrueNASScenario(
        now=now,
        series=release,
        tz=tz,
        datasets=[
            FakeDataset("storage", 2 * GIB),
            FakeDataset("storage/backups", 1 * GIB),
            FakeDataset("storage/backups/proxmox", 0, quota=150 * GIB),
            FakeDataset("storage/immich", 480 * GIB),
            FakeDataset("storage/nextcloud", 120 * GIB),
            FakeDataset("storage/ha-backup", 6 * GIB),
        ],
        cloudsync=[
            FakeCloudSync(
                1,
                "B2 daily",
                {"minute": "30", "hour": "1", "dow": "*", **cron},
                provider="B2",
                bucket="homelab-offsite",
                path="/mnt/storage",
                duration=2 * 3600.0,
            ),
            FakeCloudSync(
                2,
                "Storj weekly",
                {"minute": "0", "hour": "5", "dow": "3", **cron},
                provider="STORJ_IX",
                bucket="homelab-weekly",
                path="/mnt/storage",
                duration=4 * 3600.0,
            ),
        ],
        scrub_tasks=[
            FakeScrubTask(1, "storage", 35, {"minute": "10", "hour": "2", "dow": "2", **cron})
        ],
        nfs_shares=[
            # The PVE backup export, restricted to pve1 (192.0.2.11) as the strategy says.
            FakeNfsShare(
                1,
                "/mnt/storage/backups/proxmox",
                hosts=["192.0.2.11"],
                comment="PVE backups",
                maproot_user="root",
                maproot_group="wheel",
            ),
        ],
    )
    if release in ("24.10", "25.04"):
        scenario.disks = [
            FakeDisk(
                "sda",
                [
                    {
                        "num": 1,
                        "description": "Short offline",
                        "status": "SUCCESS",
                        "status_verbose": "Completed without error",
                        "remaining": 0.0,
                        "lifetime": 16590,
                        "power_on_hours_ago": 10,
                        "lba_of_first_error": None,
                    },
                    {
                        "num": 2,
                        "description": "Extended offline",
                        "status": "SUCCESS",
                        "status_verbose": "Completed without error",
                        "remaining": 0.0,
                        "lifetime": 16100,
                        "power_on_hours_ago": 500,
                        "lba_of_first_error": None,
                    },
                ],
            ),
            FakeDisk(
                "sdb",
                [
                    {
                        "num": 1,
                        "description": "Short offline",
                        "status": "FAILED",
                        "status_verbose": "Completed: read failure",
                        "remaining": 0.0,
                        "lifetime": 3943,
                        "power_on_hours_ago": 10,
                        "lba_of_first_error": 1234,
                    },
                    {
                        "num": 2,
                        "description": "Short offline",
                        "status": "SUCCESS",
                        "status_verbose": "Completed without error",
                        "remaining": 0.0,
                        "lifetime": 3919,
                        "power_on_hours_ago": 34,
                        "lba_of_first_error": None,
                    },
                ],
            ),
            FakeDisk(
                "nvme0n1",
                [
                    {
                        "num": 0,
                        "description": "Short",
                        "status": "SUCCESS",
                        "status_verbose": "Completed without error",
                        "power_on_hours": 18636,
                        "power_on_hours_ago": 10,
                        "failing_lba": None,
                        "nsid": None,
                        "seg": None,
                        "sct": "0x0",
                        "code": "0x00",
                    },
                ],
            ),
        ]
    if release == "24.10":
        for disk in scenario.disks:
            for test in disk.tests:
                test.pop("power_on_hours_ago", None)
    start = now() - history_days * DAY
    for ds in scenario.datasets:
        ds.created = start - 400 * DAY  # the pool was set up long ago
    # The last scrub before the simulated history: 30 days earlier, so one falls inside it.
    scenario.last_scrub_start = start - 30 * DAY
    scenario.scan = {
        "function": "SCRUB",
        "state": "FINISHED",
        "start": start - 30 * DAY,
        "end": start - 30 * DAY + 3 * 3600,
        "errors": 0,
    }
    for description, at in (skip_from or {}).items():
        scenario.task(description).skip_from = at
    scenario.simulated_until = start
    scenario.sync()
    return scenario
