"""``kind: truenas``: storage, scrub and cloud-sync tasks from the TrueNAS JSON-RPC 2.0 API.

It reads datasets, snapshots, pools, scrub tasks, cloud-sync tasks and (up to 25.04) SMART
results over the WebSocket API at ``wss://HOST/api/current`` (TrueNAS 25.04+). When that
handshake answers 404 (TrueNAS 24.10 has no JSON-RPC API), it reads the same methods through
REST ``https://HOST/api/v2.0`` with ``Authorization: Bearer`` (api-shapes §2.7; the bodies are
the JSON-RPC results, so the same parsers apply); never over plain http.

One poll opens one connection, logs in with an API key and makes these read-only calls
(each counted in ``backup_source_api_requests_total``; over REST one GET each):

* ``auth.login_ex`` (API_KEY_PLAIN, with ``username``; falls back to ``auth.login_with_api_key``;
  none over REST, where each request carries the key);
* ``system.version`` -> the API profile: snapshots from ``zfs.snapshot.query`` up to 25.04,
  ``pool.snapshot.query`` from 25.10; SMART from ``smart.test.results`` up to 25.04 only
  (25.10 removed SMART from the API: use a ``kind: smartctl`` source over ssh instead);
  versions outside 24.10-26.x are refused with a clear error;
* ``system.general.config`` (only when ``timezone`` is empty) -> the NAS time zone, in which
  TrueNAS evaluates cloud-sync and scrub cron schedules;
* ``pool.query`` -> pool state and the last scan (only its times, state and error count: the
  byte counters ``bytes_to_process``/``bytes_processed`` are swapped by py-libzfs, api-shapes §2.4);
* ``pool.dataset.query`` (flat, properties used/available/quota/referenced/creation), system
  datasets (``.system``, ``ix-applications``, ``ix-apps``, ``.ix-virt``, the boot pool) skipped;
  a pool's root dataset ``creation`` counts as a scrub for the threshold, as in TrueNAS;
* the snapshot query with ``select`` and ``extra.properties: [creation]``, folded per dataset
  into count/newest/oldest while reading (the snapshot keeps O(datasets), never the list);
* ``pool.scrub.query`` and ``cloudsync.query`` -> the jobs TrueNAS schedules itself: each
  enabled cloud-sync task (its cron in the NAS time zone; grace = the per-task override, else
  the interval between two runs) and each enabled scrub task, whose due time follows the
  threshold rule of :mod:`exporter.schedule.threshold` from the last completed scrub's start.

A cloud-sync task's ``job`` holds only its *last* run, so the source remembers, per task id,
the newest success and failure it has seen across polls (lost on restart). The same holds for
a pool's last completed scrub, which a later resilver or canceled scrub would hide.

Sample exposition::

    # HELP backup_cloudsync_last_success_timestamp_seconds End of the task's last successful run.
    # TYPE backup_cloudsync_last_success_timestamp_seconds gauge
    backup_cloudsync_last_success_timestamp_seconds{source="nas",task="B2 daily"} 1.7697e+09
    # HELP backup_cloudsync_running 1 while the task runs.
    # TYPE backup_cloudsync_running gauge
    backup_cloudsync_running{source="nas",task="B2 daily"} 0.0
    # HELP backup_cloudsync_info Cloud-sync task settings (always 1).
    # TYPE backup_cloudsync_info gauge
    backup_cloudsync_info{bucket="b",direction="PUSH",provider="B2",source="nas",task="t",...} 1.0
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from yarl import URL

from exporter.core.config import (
    TLSConfig,
    zone_or_none,
)
from exporter.core.tls import ClientSSL
from exporter.schedule.expressions import Schedule, ScheduleError, parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec
from exporter.schedule.threshold import ThresholdSchedule
from exporter.sources.base import FetchContext, FetchError, Source
from exporter.sources.truenas import KIND
from exporter.sources.truenas.client import (
    PLAIN_WS_REFUSAL,
    ApiClient,
    NoJsonRpcError,
    TrueNASClient,
    TrueNASRestClient,
    api_url,
)
from exporter.sources.truenas.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.sources.truenas.config import TrueNASConfig
from exporter.storage.model import (
    DatasetFilter,
    DatasetInfo,
    PoolInfo,
    SelfTestResult,
    SmartDevice,
    render_datasets,
    render_pools,
    render_smart,
    storage_evidence,
)

log = logging.getLogger(__name__)


#: Oldest and newest (exclusive) supported releases, as (major, minor).
SUPPORTED_FROM = (24, 10)
SUPPORTED_BEFORE = (27, 0)
SUPPORTED_TEXT = "24.10–26"

_DATASET_PROPERTIES = ["used", "available", "quota", "referenced", "creation"]
_SYSTEM_COMPONENTS = frozenset({".system", "ix-applications", "ix-apps", ".ix-virt"})
_BOOT_POOLS = frozenset({"boot-pool", "freenas-boot"})
_VERSION_RE = re.compile(r"(?<![\d.])(\d{2})\.(\d{1,2})(?:\.\d+)*")
_FINISHED_JOB_STATES = frozenset({"SUCCESS", "FAILED", "ABORTED"})


# ------------------------------------------------------------------------------ snapshot


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

    @property
    def threshold_anchor(self) -> float | None:
        """What TrueNAS measures the threshold from: the last scrub, else the creation."""
        return self.completed_start if self.completed_start is not None else self.created


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


# ------------------------------------------------------------------------------ parsing


class _ShapeError(Exception):
    """A response does not have the documented shape."""


@contextlib.contextmanager
def _parsing(method: str) -> Iterator[None]:
    try:
        yield
    except _ShapeError as exc:
        raise FetchError("parse", f"unexpected answer to {method}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FetchError(
            "parse", f"unexpected answer to {method}: {type(exc).__name__} {exc}"[:300]
        ) from None


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _ShapeError(f"{what} is {type(value).__name__}, expected a list")
    return value


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _ShapeError(f"{what} is {type(value).__name__}, expected an object")
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _timestamp(value: Any) -> float | None:
    """Read a decoded ``$date`` (datetime), Unix seconds (TrueNAS 26 zpool.query) or null."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _ShapeError(f"expected a date, got {type(value).__name__}")


def detect_version(text: Any) -> ApiProfile:
    """Pick the API methods for the release ``system.version`` reports; refuse others."""
    if not isinstance(text, str):
        raise FetchError("parse", f"system.version returned {type(text).__name__}, not a string")
    m = _VERSION_RE.search(text)
    release = (int(m.group(1)), int(m.group(2))) if m else None
    if release is None or not SUPPORTED_FROM <= release < SUPPORTED_BEFORE:
        raise FetchError(
            "config", f"unsupported TrueNAS version {text[:80]!r} (supported {SUPPORTED_TEXT})"
        )
    legacy = release <= (25, 4)
    return ApiProfile(
        version=text,
        release=release,
        snapshot_method="zfs.snapshot.query" if legacy else "pool.snapshot.query",
        smart_method="smart.test.results" if legacy else None,
    )


def _is_system_dataset(name: str) -> bool:
    parts = name.split("/")
    return parts[0] in _BOOT_POOLS or any(p in _SYSTEM_COMPONENTS for p in parts[1:])


def _prop_int(entry: dict[str, Any], key: str, *, nullable: bool = False) -> int:
    """Read a ZFS property object's ``parsed`` bytes (``rawvalue`` as fallback)."""
    prop = entry.get(key)
    if prop is None:
        if nullable:
            return 0
        raise _ShapeError(f"dataset {entry.get('name')!r} has no {key}")
    prop = _dict(prop, key)
    parsed = prop.get("parsed")
    if isinstance(parsed, int) and not isinstance(parsed, bool):
        return parsed
    if parsed is None:
        raw = prop.get("rawvalue")
        if isinstance(raw, str) and raw.isdigit():
            return int(raw)  # unset quota: parsed null, rawvalue "0"
        if nullable or raw is None:
            return 0
    raise _ShapeError(f"{key} of dataset {entry.get('name')!r} is not a number")


def parse_datasets(
    result: Any, selected: DatasetFilter
) -> tuple[list[DatasetInfo], dict[str, float]]:
    """Parse ``pool.dataset.query`` (flat) into datasets, without snapshot aggregates yet.

    Also returns each pool's creation time (its root dataset's ``creation``): TrueNAS counts
    ``zpool create`` like a scrub for the scrub threshold.
    """
    datasets: list[DatasetInfo] = []
    created: dict[str, float] = {}
    for raw in _list(result, "result"):
        entry = _dict(raw, "dataset")
        name = entry.get("name") or entry.get("id")
        if not isinstance(name, str) or not name:
            raise _ShapeError("a dataset has no name")
        if "/" not in name:
            prop = entry.get("creation")
            when = _creation({"properties": {"creation": prop}})
            if when is not None:
                created[name] = when
        if _is_system_dataset(name) or not selected.matches(name):
            continue
        datasets.append(
            DatasetInfo(
                name=name,
                used=_prop_int(entry, "used"),
                available=_prop_int(entry, "available"),
                quota=_prop_int(entry, "quota", nullable=True),
                referenced=_prop_int(entry, "referenced", nullable=True),
            )
        )
    return datasets, created


def _creation(snap: dict[str, Any]) -> float | None:
    props = snap.get("properties")
    if not isinstance(props, dict):
        return None
    prop = props.get("creation")
    if not isinstance(prop, dict):
        return None
    parsed = prop.get("parsed")
    if parsed is not None:
        return _timestamp(parsed)
    raw = prop.get("rawvalue")
    return float(raw) if isinstance(raw, str) and raw.isdigit() else None


def fold_snapshots(result: Any, datasets: list[DatasetInfo]) -> list[DatasetInfo]:
    """Count snapshots per selected dataset with their newest and oldest creation time."""
    acc: dict[str, list[Any]] = {ds.name: [0, None, None] for ds in datasets}
    for raw in _list(result, "result"):
        snap = _dict(raw, "snapshot")
        name = _text(snap.get("name"))
        dataset = snap.get("dataset") or name.partition("@")[0]
        slot = acc.get(dataset)
        if slot is None:
            continue  # a system or filtered dataset
        slot[0] += 1
        created = _creation(snap)
        if created is not None:
            slot[1] = created if slot[1] is None else max(slot[1], created)
            slot[2] = created if slot[2] is None else min(slot[2], created)
    return [
        DatasetInfo(
            name=ds.name,
            used=ds.used,
            available=ds.available,
            quota=ds.quota,
            referenced=ds.referenced,
            snapshots=acc[ds.name][0],
            snapshot_newest=acc[ds.name][1],
            snapshot_oldest=acc[ds.name][2],
        )
        for ds in datasets
    ]


def parse_pools(
    result: Any, remembered: Mapping[str, tuple[float, float]]
) -> tuple[list[PoolInfo], list[PoolScrub]]:
    """Parse ``pool.query``; ``remembered`` holds each pool's last completed scrub seen."""
    pools: list[PoolInfo] = []
    scrubs: list[PoolScrub] = []
    for raw in _list(result, "result"):
        entry = _dict(raw, "pool")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise _ShapeError("a pool has no name")
        scan = entry.get("scan") or {}
        scan = _dict(scan, "scan")
        is_scrub = scan.get("function") == "SCRUB"
        state = _text(scan.get("state"))
        start = _timestamp(scan.get("start_time"))
        end = _timestamp(scan.get("end_time"))
        completed = remembered.get(name)
        if (
            is_scrub
            and state == "FINISHED"
            and start is not None
            and end is not None
            and (completed is None or end >= completed[1])
        ):
            completed = (start, end)
        errors = scan.get("errors") if is_scrub else 0
        last_start = start if is_scrub else None
        if last_start is None and completed is not None:
            last_start = completed[0]  # a resilver hides the scrub: use the remembered one
        pools.append(
            PoolInfo(
                name=name,
                state=_text(entry.get("status")) or "UNKNOWN",
                healthy=bool(entry.get("healthy")),
                scrub_last_end=None if completed is None else completed[1],
                scrub_errors=int(errors or 0),
                scrub_running=is_scrub and state == "SCANNING",
                scrub_last_start=last_start,
            )
        )
        scrubs.append(
            PoolScrub(
                pool=name,
                completed_start=None if completed is None else completed[0],
                completed_end=None if completed is None else completed[1],
                canceled=is_scrub and state == "CANCELED",
            )
        )
    return pools, scrubs


def _cron(schedule: Any) -> str:
    sched = _dict(schedule, "schedule")
    fields = [sched.get(k, "*") for k in ("minute", "hour", "dom", "month", "dow")]
    return " ".join(_text(f).strip() or "*" for f in fields)


def parse_scrub_tasks(result: Any) -> list[ScrubTask]:
    """Parse ``pool.scrub.query``."""
    tasks: list[ScrubTask] = []
    for raw in _list(result, "result"):
        entry = _dict(raw, "scrub task")
        tasks.append(
            ScrubTask(
                id=int(entry["id"]),
                pool=_text(entry.get("pool_name") or entry.get("pool")),
                threshold_days=int(entry.get("threshold", 35)),
                schedule=_cron(entry["schedule"]),
                enabled=bool(entry.get("enabled", True)),
            )
        )
    return tasks


def _provider(credentials: Any) -> str:
    if not isinstance(credentials, dict):
        return ""
    provider = credentials.get("provider")
    if isinstance(provider, dict):  # 25.x: {"type": "B2", ...}
        return _text(provider.get("type"))
    return _text(provider)  # older: "B2"


def parse_cloudsync(
    result: Any, remembered: Mapping[int, tuple[float | None, float | None]]
) -> list[CloudSyncTask]:
    """Parse ``cloudsync.query``; ``remembered`` maps task id to (last success, last failure).

    Only what the metrics need is kept: never the credentials or the encryption password.
    """
    tasks: list[CloudSyncTask] = []
    seen: set[str] = set()
    for raw in _list(result, "result"):
        entry = _dict(raw, "cloud-sync task")
        task_id = int(entry["id"])
        label = _text(entry.get("description")).strip() or f"id-{task_id}"
        if label in seen:  # two tasks with one description: keep the series apart
            label = f"{label} (id-{task_id})"
        seen.add(label)
        success, failure = remembered.get(task_id, (None, None))
        job = entry.get("job")
        state = ""
        started = ended = None
        if job is not None:
            job = _dict(job, "job")
            state = _text(job.get("state"))
            started = _timestamp(job.get("time_started"))
            ended = _timestamp(job.get("time_finished"))
            if state == "SUCCESS" and ended is not None:
                success = ended if success is None else max(success, ended)
            elif state in ("FAILED", "ABORTED"):
                when = ended if ended is not None else started
                if when is not None:
                    failure = when if failure is None else max(failure, when)
        attributes = entry.get("attributes")
        bucket = _text(attributes.get("bucket")) if isinstance(attributes, dict) else ""
        tasks.append(
            CloudSyncTask(
                id=task_id,
                task=label,
                enabled=bool(entry.get("enabled", True)),
                schedule=_cron(entry["schedule"]),
                provider=_provider(entry.get("credentials")),
                bucket=bucket,
                direction=_text(entry.get("direction")),
                transfer_mode=_text(entry.get("transfer_mode")),
                encrypted=bool(entry.get("encryption")),
                state=state,
                last_start=started,
                last_end=ended,
                last_success=success,
                last_failure=failure,
            )
        )
    return tasks


def _selftest_kind(description: str) -> str | None:
    text = description.lower()
    if "short" in text:
        return "short"
    if "long" in text or "extended" in text:
        return "long"
    return None


def parse_smart_results(result: Any, now: float) -> list[SmartDevice]:
    """Parse ``smart.test.results`` (≤25.04): the newest short/long self-test per disk.

    Times come from ``power_on_hours_ago`` (25.04.1+); without it a test has no timestamp.
    """
    devices: list[SmartDevice] = []
    for raw in _list(result, "result"):
        entry = _dict(raw, "disk")
        disk = _text(entry.get("disk"))
        if not disk:
            raise _ShapeError("a SMART result has no disk")
        tests = [_dict(t, "test") for t in _list(entry.get("tests") or [], "tests")]
        # smartctl logs newest first (ATA num 1, NVMe num 0); sort by num to be sure.
        tests.sort(key=lambda t: t["num"] if isinstance(t.get("num"), int) else 1 << 30)
        results: list[SelfTestResult] = []
        for kind in ("short", "long"):
            mine = [t for t in tests if _selftest_kind(_text(t.get("description"))) == kind]
            if not mine:
                continue
            newest = mine[0]
            success = next((t for t in mine if t.get("status") == "SUCCESS"), None)
            status = _text(newest.get("status"))
            results.append(
                SelfTestResult(
                    test=kind,
                    last_timestamp=_hours_ago(newest, now),
                    passed={"SUCCESS": True, "FAILED": False}.get(status),
                    status=_text(newest.get("status_verbose")) or status,
                    last_success=None if success is None else _hours_ago(success, now),
                )
            )
        current = entry.get("current_test", None)
        devices.append(
            SmartDevice(
                device=disk if disk.startswith("/dev/") else f"/dev/{disk}",
                selftests=tuple(results),
                selftest_running=None if "current_test" not in entry else current is not None,
            )
        )
    return devices


def _hours_ago(test: dict[str, Any], now: float) -> float | None:
    hours = test.get("power_on_hours_ago")
    if isinstance(hours, (int, float)) and not isinstance(hours, bool):
        return now - float(hours) * 3600
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _schedule_interval(schedule: Schedule, at: datetime) -> float:
    """Seconds between the run at or before ``at`` and the one after it."""
    first = schedule.latest_at_or_before(at) or schedule.next_after(at)
    return (schedule.next_after(first) - first).total_seconds()


# ------------------------------------------------------------------------------ source


class TrueNASSource(Source[TrueNASConfig, TrueNASSnapshot]):
    """Polls TrueNAS over JSON-RPC; renders storage through :mod:`exporter.storage.model`.

    Sample exposition::

        # HELP backup_cloudsync_encrypted 1 when the task encrypts the remote copy.
        # TYPE backup_cloudsync_encrypted gauge
        backup_cloudsync_encrypted{source="nas",task="Storj weekly"} 1.0
        # HELP backup_truenas_info TrueNAS release the source talks to (always 1).
        # TYPE backup_truenas_info gauge
        backup_truenas_info{source="nas",version="TrueNAS-25.04.2.6"} 1.0
    """

    kind = KIND

    def __init__(self, config: TrueNASConfig) -> None:
        super().__init__(config)
        self.filter = DatasetFilter(config.include, config.exclude)
        self._ssl = ClientSSL(TLSConfig(verify=config.verify_tls, ca_file=config.ca_file))
        # What a task's single `job` field forgets: newest success/failure per task id,
        # and each pool's last completed scrub (start, end).
        self._cloud_memory: dict[int, tuple[float | None, float | None]] = {}
        self._scrub_memory: dict[str, tuple[float, float]] = {}

    async def fetch(self, ctx: FetchContext) -> TrueNASSnapshot:
        """Log in, read everything, fold it into a snapshot and update the memories."""
        cfg = self.config
        try:
            url = api_url(cfg.url)
        except ValueError as exc:
            raise FetchError("config", str(exc)) from None
        if url.scheme == "ws":
            raise FetchError("config", PLAIN_WS_REFUSAL)  # before connecting at all
        client = await self._open(url, ctx)
        try:
            await client.login_api_key(cfg.api_key.reveal(), username=cfg.username)
            profile = detect_version(await client.call("system.version"))
            tz = cfg.cron_timezone or await self._system_timezone(client)
            now = ctx.clock.time()

            raw = await client.call(
                "pool.query", [], {"select": ["name", "status", "healthy", "scan"]}
            )
            with _parsing("pool.query"):
                pools, scrubs = parse_pools(raw, self._scrub_memory)

            raw = await client.call(
                "pool.dataset.query",
                [],
                {
                    "extra": {
                        "flat": True,
                        "retrieve_children": False,
                        "properties": _DATASET_PROPERTIES,
                        "retrieve_user_props": False,
                    }
                },
            )
            with _parsing("pool.dataset.query"):
                datasets, created = parse_datasets(raw, self.filter)
            scrubs = [dataclasses.replace(s, created=created.get(s.pool)) for s in scrubs]

            raw = await client.call(
                profile.snapshot_method,
                [],
                {
                    "select": ["name", "dataset", "properties"],
                    "extra": {"properties": ["creation"]},
                },
            )
            with _parsing(profile.snapshot_method):
                datasets = fold_snapshots(raw, datasets)
            del raw  # the snapshot list can be large: drop it before the next call

            smart: list[SmartDevice] | None = None
            if profile.smart_method is not None:
                raw = await client.call(profile.smart_method, [], {})
                with _parsing(profile.smart_method):
                    smart = parse_smart_results(raw, now)

            raw = await client.call("pool.scrub.query", [], {})
            with _parsing("pool.scrub.query"):
                scrub_tasks = parse_scrub_tasks(raw)

            raw = await client.call("cloudsync.query", [], {})
            with _parsing("cloudsync.query"):
                cloudsync = parse_cloudsync(raw, self._cloud_memory)
        finally:
            await client.close()

        for task in cloudsync:
            self._cloud_memory[task.id] = (task.last_success, task.last_failure)
        for scrub in scrubs:
            if scrub.completed_start is not None and scrub.completed_end is not None:
                self._scrub_memory[scrub.pool] = (scrub.completed_start, scrub.completed_end)
        return TrueNASSnapshot(
            version=profile.version,
            fetched_at=now,
            timezone=tz,
            datasets=tuple(datasets),
            pools=tuple(pools),
            scrubs=tuple(scrubs),
            smart=None if smart is None else tuple(smart),
            cloudsync=tuple(cloudsync),
            scrub_tasks=tuple(scrub_tasks),
        )

    async def _open(self, url: URL, ctx: FetchContext) -> ApiClient:
        """Connect over JSON-RPC; on a 404 handshake (TrueNAS 24.10) use REST on the same host."""

        def count(_method: str) -> None:
            ctx.count_request()

        ws = TrueNASClient(url, ssl_context=self._ssl.get(), on_call=count)
        try:
            await ws.connect()
        except NoJsonRpcError:
            log.debug("source=%s no JSON-RPC API at %s; using REST", self.name, url.path)
        else:
            return ws
        # wss:// was checked above, so this is https:// and the key is never sent in clear.
        rest = TrueNASRestClient(url, ssl_context=self._ssl.get(), on_call=count)
        await rest.connect()
        return rest

    async def _system_timezone(self, client: ApiClient) -> str:
        general = await client.call("system.general.config")
        tz = general.get("timezone") if isinstance(general, dict) else None
        if not isinstance(tz, str) or not tz:
            raise FetchError("parse", "system.general.config has no timezone")
        if zone_or_none(tz) is None:
            raise FetchError(
                "parse", f"TrueNAS time zone {tz[:60]!r} is unknown here (set timezone:)"
            )
        return tz

    # ---- rendering

    def render(self, snapshot: TrueNASSnapshot) -> Iterator[Metric]:
        """Render storage (shared families), cloud-sync tasks and the release."""
        yield from render_datasets(self.name, snapshot.datasets)
        yield from render_pools(self.name, snapshot.pools)
        if snapshot.smart is not None:
            yield from render_smart(self.name, snapshot.smart)
        yield from self._render_cloudsync(snapshot.cloudsync)
        release = GaugeMetricFamily(
            "backup_truenas_info",
            "TrueNAS release the source talks to (always 1).",
            labels=["source", "version"],
        )
        release.add_metric([self.name, snapshot.version], 1.0)
        yield release

    def _render_cloudsync(self, tasks: tuple[CloudSyncTask, ...]) -> Iterator[Metric]:
        labels = ["source", "task"]

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"backup_cloudsync_{name}", doc, labels=labels)

        success = gauge(
            "last_success_timestamp_seconds",
            "End of the task's last successful run (newest seen since the exporter started, "
            "or the task's last job).",
        )
        failure = gauge(
            "last_failure_timestamp_seconds",
            "End of the task's last failed or aborted run (newest seen; 0 = none seen).",
        )
        running = gauge("running", "1 while the task runs.")
        encrypted = gauge("encrypted", "1 when the task encrypts the remote copy.")
        enabled = gauge("enabled", "1 when the task's schedule is enabled.")
        info = InfoMetricFamily(
            "backup_cloudsync", "Cloud-sync task settings (always 1).", labels=labels
        )
        for task in tasks:
            values = [self.name, task.task]
            if task.last_success is not None:
                success.add_metric(values, task.last_success)
            failure.add_metric(values, task.last_failure or 0.0)
            running.add_metric(values, float(task.state == "RUNNING"))
            encrypted.add_metric(values, float(task.encrypted))
            enabled.add_metric(values, float(task.enabled))
            info.add_metric(
                values,
                {
                    "provider": task.provider,
                    "bucket": task.bucket,
                    "direction": task.direction,
                    "transfer_mode": task.transfer_mode,
                },
            )
        yield from (success, failure, running, encrypted, enabled, info)

    # ---- jobs

    def _grace(self, task: CloudSyncTask, schedule: Schedule, at: datetime) -> float:
        overrides = self.config.cloudsync_grace
        for key in (task.task, str(task.id), f"id-{task.id}"):
            if key in overrides:
                return overrides[key]
        return _schedule_interval(schedule, at)

    def jobs(self, snapshot: TrueNASSnapshot) -> Iterator[tuple[JobSpec, Evidence]]:
        """Yield each enabled cloud-sync task and each enabled scrub task as a job."""
        at = datetime.fromtimestamp(snapshot.fetched_at, UTC)
        names: set[str] = set()
        for task in snapshot.cloudsync:
            if not task.enabled:
                continue
            try:
                schedule = parse_schedule(task.schedule, snapshot.timezone)
            except ScheduleError as exc:
                log.warning("source=%s cloud-sync task %r skipped: %s", self.name, task.task, exc)
                continue
            name = f"cloudsync-{_slug(task.task) or f'id-{task.id}'}"
            if name in names:
                name = f"{name}-{task.id}"
            names.add(name)
            spec = JobSpec(
                name=name,
                source=self.name,
                schedule=schedule,
                grace=self._grace(task, schedule, at),
            )
            yield spec, task.evidence()
        history = {s.pool: s for s in snapshot.scrubs}
        pools = {p.name: p for p in snapshot.pools}
        for scrub in snapshot.scrub_tasks:
            if not scrub.enabled:
                continue
            try:
                cron = parse_schedule(scrub.schedule, snapshot.timezone)
            except ScheduleError as exc:
                log.warning("source=%s scrub of %r skipped: %s", self.name, scrub.pool, exc)
                continue
            past = history.get(scrub.pool, PoolScrub(pool=scrub.pool))
            pool = pools.get(scrub.pool)
            schedule = ThresholdSchedule(
                cron, threshold_days=scrub.threshold_days, last_run=past.threshold_anchor
            )
            duration = None
            if past.completed_start is not None and past.completed_end is not None:
                duration = past.completed_end - past.completed_start
            evidence = Evidence(
                last_success=past.completed_end,
                last_start=None if pool is None else pool.scrub_last_start,
                last_duration=duration,
                failed=past.canceled or (pool is not None and pool.scrub_errors > 0),
                running=pool is not None and pool.scrub_running,
                tracks_start=False,
            )
            spec = JobSpec(
                name=f"scrub-{scrub.pool}",
                source=self.name,
                schedule=schedule,
                grace=self.config.scrub_grace,
            )
            yield spec, evidence

    def evidence(self, snapshot: TrueNASSnapshot, selector: Mapping[str, str]) -> Evidence | None:
        """Resolve ``cloudsync`` (a task's description or id), ``pool``, ``dataset`` or ``test``."""
        if "cloudsync" in selector:
            wanted = selector["cloudsync"]
            for task in snapshot.cloudsync:
                if wanted in (task.task, str(task.id), f"id-{task.id}"):
                    return task.evidence()
            return None
        return storage_evidence(
            selector,
            datasets=snapshot.datasets,
            pools=snapshot.pools,
            devices=snapshot.smart or (),
        )
