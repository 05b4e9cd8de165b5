"""A fake TrueNAS JSON-RPC 2.0 WebSocket API with the real envelopes and quirks (tests, demo).

It serves ``/api/current`` and ``/api/v<release>`` (WebSocket) and ``GET /api/versions`` over
TLS (or plain ws:// for the refusal test), shaped as api-shapes §2 describes:

* envelopes ``{"jsonrpc": "2.0", "id", "result" | "error"}``; errors ``-32601`` (method not
  found), ``-32001`` with ``data.errname``/``data.reason`` (call errors, ``ENOTAUTHENTICATED``
  before login), ``-32700`` for a frame that is not JSON;
* dates as ejson ``{"$date": ms}``; property objects ``{parsed, rawvalue, value, source}`` with
  an unset quota as ``parsed: null, rawvalue: "0"``; snapshot ``createtxg`` as a string;
  ``pool.query`` scan byte counters swapped as py-libzfs does;
* release ``"25.04"``: ``zfs.snapshot.query`` and ``smart.test.results``; release ``"25.10"``:
  ``pool.snapshot.query`` and no ``smart.*`` (``-32601``); both accept ``auth.login_ex``
  (API_KEY_PLAIN) and ``auth.login_with_api_key``;
* release ``"24.10"``: no JSON-RPC API (the ``/api/current`` handshake and ``/api/versions``
  answer 404); the same methods as 25.04 over REST ``GET /api/v2.0/<resource>`` (api-shapes
  §2.7) with ``Authorization: Bearer <key>`` (401 otherwise), ``extra.<opt>=<json>`` query
  options, 403 for a denied method, 404 for a missing one; SMART tests without
  ``power_on_hours_ago`` (a 25.04.1 addition);
* an API-key login over plain ws:// (or a key sent over plain http) revokes the key and
  answers ``EXPIRED`` (401), as TrueNAS does.

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

import asyncio
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import WSMsgType, web
from cronsim import CronSim

from exporter.sim.server import AppServer, Hold, advance_clock, cert_path
from exporter.sim.tls import SelfSignedCert, make_self_signed_cert

__all__ = [
    "FakeCloudSync",
    "FakeDataset",
    "FakeDisk",
    "FakeScrubTask",
    "FakeTrueNAS",
    "TrueNASScenario",
    "homelab",
    "start_fake_truenas",
]

GIB = 2**30
DAY = 86400
POOL_SIZE = 8 * 2**40  # 8 TiB of usable space

_VERSIONS = {
    "24.10": "TrueNAS-SCALE-24.10.2.4",
    "25.04": "TrueNAS-25.04.2.6",
    "25.10": "TrueNAS-25.10.0",
}
_API_VERSIONS = {
    "25.04": ["v25.04.0", "v25.04.1", "v25.04.2"],
    "25.10": ["v25.04.0", "v25.04.1", "v25.04.2", "v25.10.0"],
}


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
    job: dict[str, Any] | None = None  # id, state, time_started/finished, error, outcome, ends


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
    series: str = "25.04"  # the release line: 24.10 | 25.04 | 25.10
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
        if task.behaviour == "skip":
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
        # plugins/pool_/scrub.py __run: skip while scanning or within threshold - 1 days.
        if task.pool != self.pool or self.scan.get("state") == "SCANNING":
            return
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

    def smart_entries(self) -> list[dict[str, Any]]:
        """``smart.test.results`` (25.04)."""
        return [{"disk": d.name, "tests": list(d.tests), "current_test": None} for d in self.disks]


def homelab(
    now: Callable[[], float],
    *,
    release: str = "25.04",
    history_days: int = 40,
    tz: str = "Europe/Berlin",
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
    scenario.simulated_until = start
    scenario.sync()
    return scenario


# ------------------------------------------------------------------------------- the server

_SCENARIO = web.AppKey("scenario", TrueNASScenario)


class _Sockets:
    """The open WebSockets of one app, closed at stop."""

    def __init__(self) -> None:
        self.open: set[web.WebSocketResponse] = set()


_SOCKETS = web.AppKey("sockets", _Sockets)


def _error(
    call_id: Any, code: int, message: str, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": call_id,
        "error": {"code": code, "message": message, "data": data},
    }


def _call_error(call_id: Any, errname: str, errno_: int, reason: str) -> dict[str, Any]:
    return _error(
        call_id,
        -32001,
        "Method call error",
        {
            "error": errno_,
            "errname": errname,
            "reason": reason,
            "trace": {"class": "CallError", "frames": [], "formatted": "", "repr": reason},
            "extra": None,
        },
    )


def _options(params: list[Any]) -> dict[str, Any]:
    if len(params) > 1 and isinstance(params[1], dict):
        return params[1]
    return {}


def _select(items: list[dict[str, Any]], options: dict[str, Any]) -> list[dict[str, Any]]:
    select = options.get("select")
    if not select:
        return items
    return [{k: v for k, v in item.items() if k in select} for item in items]


class _Session:
    """One connection's state."""

    def __init__(self, *, secure: bool) -> None:
        self.secure = secure
        self.authenticated = False


def _login(scenario: TrueNASScenario, session: _Session, method: str, params: list[Any]) -> Any:
    if method == "auth.login_with_api_key":
        key = params[0] if params else None
        if not session.secure:
            scenario.key_revoked = True  # the TrueNAS trap: a key seen in clear is revoked
            return False
        ok = key == scenario.api_key and not scenario.key_revoked
        session.authenticated = ok
        return ok
    data = params[0] if params and isinstance(params[0], dict) else {}
    if data.get("mechanism") != "API_KEY_PLAIN":
        return {"response_type": "AUTH_ERR"}
    if not session.secure:
        scenario.key_revoked = True
        return {"response_type": "EXPIRED"}
    if data.get("username") != scenario.username or data.get("api_key") != scenario.api_key:
        return {"response_type": "AUTH_ERR"}
    if scenario.key_revoked:
        return {"response_type": "EXPIRED"}
    session.authenticated = True
    return {"response_type": "SUCCESS", "user_info": None, "authenticator": "LEVEL_1"}


def _dispatch(
    scenario: TrueNASScenario, session: _Session, frame: dict[str, Any]
) -> dict[str, Any]:
    call_id = frame.get("id")
    method = frame.get("method")
    params = frame.get("params") or []
    if frame.get("jsonrpc") != "2.0" or not isinstance(method, str) or not isinstance(params, list):
        return _error(call_id, -32600, "Invalid Request")
    if method in scenario.missing_methods:
        return _error(call_id, -32601, "Method does not exist")
    if method in ("auth.login_with_api_key", "auth.login_ex"):
        return {
            "jsonrpc": "2.0",
            "id": call_id,
            "result": _login(scenario, session, method, params),
        }
    if method == "core.ping":
        return {"jsonrpc": "2.0", "id": call_id, "result": "pong"}
    handler = _handlers(scenario).get(method)
    if handler is None and method not in scenario.results:
        return _error(call_id, -32601, "Method does not exist")
    if not session.authenticated:
        return _call_error(call_id, "ENOTAUTHENTICATED", 13, "Not authenticated")
    if method in scenario.denied_methods:
        return _call_error(call_id, "EACCES", 13, "Not authorized")
    scenario.sync()
    if method in scenario.results:
        return {"jsonrpc": "2.0", "id": call_id, "result": scenario.results[method]}
    assert handler is not None
    return {"jsonrpc": "2.0", "id": call_id, "result": handler(_options(params))}


def _handlers(scenario: TrueNASScenario) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """Return the query methods of the scenario's release: method -> handler(options)."""
    handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
        "system.version": lambda o: scenario.version or _VERSIONS[scenario.series],
        "system.general.config": lambda o: {
            "id": 1,
            "timezone": scenario.tz,
            "language": "en",
            "kbdmap": "us",
        },
        "pool.query": lambda o: _select(scenario.pool_entries(), o),
        "pool.dataset.query": lambda o: _select(
            scenario.dataset_entries((o.get("extra") or {}).get("properties")), o
        ),
        "pool.scrub.query": lambda o: _select(scenario.scrub_entries(), o),
        "cloudsync.query": lambda o: _select(scenario.cloudsync_entries(), o),
    }

    def snapshots(o: dict[str, Any]) -> Any:
        return _select(scenario.snapshot_entries((o.get("extra") or {}).get("properties")), o)

    if scenario.series in ("24.10", "25.04"):
        handlers["zfs.snapshot.query"] = snapshots
        handlers["smart.test.results"] = lambda o: scenario.smart_entries()
    else:
        handlers["pool.snapshot.query"] = snapshots
    return handlers


async def _answer(
    ws: web.WebSocketResponse, scenario: TrueNASScenario, session: _Session, frame: dict[str, Any]
) -> None:
    await scenario._hang.wait()
    if scenario.dropping:
        await ws.close(code=1011, message=b"dropped")
        return
    reply = _dispatch(scenario, session, frame)
    if not ws.closed:
        await ws.send_str(json.dumps(reply))


async def _websocket(request: web.Request) -> web.StreamResponse:
    scenario = request.app[_SCENARIO]
    if scenario.series == "24.10":
        return web.Response(status=404, text="404: Not Found")  # no JSON-RPC API before 25.04
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    scenario.connections += 1
    session = _Session(secure=request.secure)
    sockets = request.app[_SOCKETS]
    sockets.open.add(ws)
    tasks: set[asyncio.Task[None]] = set()
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
            except ValueError:
                await ws.send_str(json.dumps(_error(None, -32700, "Parse error")))
                continue
            if not isinstance(frame, dict):
                await ws.send_str(json.dumps(_error(None, -32600, "Invalid Request")))
                continue
            scenario.frames.append(frame)
            # Answer in a task, as the middleware does: a hung call does not block the socket.
            task = asyncio.create_task(_answer(ws, scenario, session, frame))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        sockets.open.discard(ws)
    return ws


async def _versions(request: web.Request) -> web.Response:
    series = request.app[_SCENARIO].series
    if series not in _API_VERSIONS:
        return web.Response(status=404, text="404: Not Found")
    return web.json_response(_API_VERSIONS[series])


def _rest_resource(method: str) -> str:
    for suffix in (".query", ".config"):
        if method.endswith(suffix):
            method = method[: -len(suffix)]
            break
    return method.replace(".", "/")


def _rest_json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


async def _rest(request: web.Request) -> web.StreamResponse:
    """``GET /api/v2.0/<resource>``: restful.py's Bearer auth and ``_filterable_args``."""
    scenario = request.app[_SCENARIO]
    if scenario.series != "24.10":
        return web.Response(status=404, text="404: Not Found")  # REST is only faked for 24.10
    resource = request.match_info["resource"].strip("/")
    handlers = _handlers(scenario)
    names = set(handlers) | set(scenario.results)
    method = next((m for m in names if _rest_resource(m) == resource), None)
    scenario.frames.append({"method": method, "path": request.path, "query": dict(request.query)})
    await scenario._hang.wait()
    if scenario.dropping:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and not request.secure:
        scenario.key_revoked = True  # a key seen in clear is revoked
    if not auth.startswith("Bearer ") or auth[7:] != scenario.api_key or scenario.key_revoked:
        return web.Response(status=401, text="401: Unauthorized")
    if method is None or method in scenario.missing_methods:
        return web.Response(status=404, text="404: Not Found")
    if method in scenario.denied_methods:
        return web.Response(status=403)
    extra: dict[str, Any] = {}
    for key, value in request.query.items():
        if key.startswith("extra."):
            try:
                extra[key[len("extra.") :]] = json.loads(value)
            except ValueError:
                extra[key[len("extra.") :]] = value
    scenario.sync()
    if method in scenario.results:
        return _rest_json(200, scenario.results[method])
    return _rest_json(200, handlers[method]({"extra": extra}))


def create_app(scenario: TrueNASScenario) -> web.Application:
    """Build the aiohttp application serving ``scenario``."""
    app = web.Application()
    app[_SCENARIO] = scenario
    app[_SOCKETS] = _Sockets()
    app.router.add_get("/api/versions", _versions)
    app.router.add_get("/api/current", _websocket)
    app.router.add_get("/api/{version:v[0-9.]+}", _websocket)
    app.router.add_get("/api/v2.0/{resource:.+}", _rest)
    return app


@dataclass
class FakeTrueNAS:
    """A running fake: where it listens and how to authenticate."""

    scenario: TrueNASScenario
    cert: SelfSignedCert | None
    host: str
    port: int
    _server: AppServer = field(default_factory=AppServer, repr=False)

    @property
    def url(self) -> str:
        """The base URL, as a ``kind: truenas`` source's ``url:`` takes it."""
        scheme = "wss" if self.cert is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> str | None:
        """The certificate to trust (``ca_file:``); ``None`` for plain ws://."""
        return cert_path(self.cert)

    @property
    def api_key(self) -> str:
        """The accepted API key."""
        return self.scenario.api_key

    @property
    def username(self) -> str:
        """The user the API key belongs to (for ``auth.login_ex``)."""
        return self.scenario.username

    async def _start(self) -> None:
        app = create_app(self.scenario)
        self.port = await self._server.start(app, host=self.host, port=self.port, cert=self.cert)

    async def stop(self) -> None:
        """Stop serving: held calls are released and open sockets closed first."""
        self.scenario.release()
        if self._server.app is not None:
            for ws in list(self._server.app[_SOCKETS].open):
                await ws.close(code=1001, message=b"server shutdown")
        await self._server.stop()


async def start_fake_truenas(
    scenario: TrueNASScenario,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: bool = True,
    cert: SelfSignedCert | None = None,
) -> FakeTrueNAS:
    """Start the fake on ``host:port`` (0: a free port).

    It serves TLS with a fresh certificate unless ``tls=False`` (plain ws://, only for the
    refusal test).
    """
    if tls and cert is None:
        cert = make_self_signed_cert()
    fake = FakeTrueNAS(scenario=scenario, cert=cert if tls else None, host=host, port=port)
    await fake._start()
    return fake
