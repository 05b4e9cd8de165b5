"""Parsers of the TrueNAS API answers (pool.query, pool.dataset.query, snapshots, tasks, SMART).

Pure functions of the decoded results (plus ``now`` and the memories a source keeps across
polls); a wrong shape raises ``FetchError("parse", ...)`` through :func:`parsing`.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from exporter.sources.base import FetchError
from exporter.sources.truenas.model import (
    ApiProfile,
    CloudSyncTask,
    NfsShare,
    PoolScrub,
    ScrubTask,
)
from exporter.storage.models import (
    DatasetFilter,
    DatasetInfo,
    PoolInfo,
    SelfTestResult,
    SmartDevice,
)
from exporter.storage.selftest_pins import DiskPins, SelfTestPins, disk_identity, entry_key
from exporter.storage.values import as_int

#: Oldest and newest (exclusive) supported releases, as (major, minor).
SUPPORTED_FROM = (24, 10)
SUPPORTED_BEFORE = (27, 0)
SUPPORTED_TEXT = "24.10–26"

_SYSTEM_COMPONENTS = frozenset({".system", "ix-applications", "ix-apps", ".ix-virt"})
_BOOT_POOLS = frozenset({"boot-pool", "freenas-boot"})
_VERSION_RE = re.compile(r"(?<![\d.])(\d{2})\.(\d{1,2})(?:\.\d+)*")


class _ShapeError(Exception):
    """A response does not have the documented shape."""


@contextlib.contextmanager
def parsing(method: str) -> Iterator[None]:
    """Turn a bad shape in the answer to ``method`` into a ``parse`` :class:`FetchError`."""
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


_YIELD_EVERY = 1024


class SnapshotFold:
    """Per-dataset snapshot count, newest and oldest creation, folded page by page.

    The snapshot query is read in pages (``query-options`` ``limit``/``offset``, see
    :mod:`exporter.sources.truenas.source`); each page is folded as it arrives and dropped,
    so memory stays O(datasets) however many snapshots the NAS keeps.
    """

    def __init__(self, datasets: list[DatasetInfo]) -> None:
        self._datasets = datasets
        self._acc: dict[str, list[Any]] = {ds.name: [0, None, None] for ds in datasets}
        self.seen = 0

    def add(self, result: Any) -> int:
        """Fold one page (a list of snapshot entries); return how many entries it held."""
        entries = _list(result, "result")
        acc = self._acc
        for i, raw in enumerate(entries):
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                time.sleep(0)  # in a worker thread: let the event loop have the GIL now
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
        self.seen += len(entries)
        return len(entries)

    def result(self) -> list[DatasetInfo]:
        """Return the datasets with their snapshot aggregates."""
        return [
            DatasetInfo(
                name=ds.name,
                used=ds.used,
                available=ds.available,
                quota=ds.quota,
                referenced=ds.referenced,
                snapshots=self._acc[ds.name][0],
                snapshot_newest=self._acc[ds.name][1],
                snapshot_oldest=self._acc[ds.name][2],
            )
            for ds in self._datasets
        ]


def fold_snapshots(result: Any, datasets: list[DatasetInfo]) -> list[DatasetInfo]:
    """Count snapshots per selected dataset with their newest and oldest creation time."""
    fold = SnapshotFold(datasets)
    fold.add(result)
    return fold.result()


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


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):  # never sent so, but a space-separated list is the stored form
        return tuple(value.split())
    return tuple(_text(v).strip() for v in _list(value, what) if _text(v).strip())


def parse_nfs_shares(result: Any) -> list[NfsShare]:
    """Parse ``sharing.nfs.query`` (REST ``GET /sharing/nfs``): path, hosts, networks, enabled.

    The shape is ``NfsShareEntry`` of truenas/middleware ``api/v25_04_2/nfs.py`` (25.04+) and
    the ``sharingnfs_create`` schema plus ``id``/``locked`` of ``plugins/nfs.py`` (24.10):
    ``path`` (one string since 22.12; older releases had a ``paths`` list), ``hosts`` and
    ``networks`` lists (``SharingNFSService.extend`` splits the stored space-separated
    strings), ``enabled``.
    """
    shares: list[NfsShare] = []
    for raw in _list(result, "result"):
        entry = _dict(raw, "NFS share")
        paths = entry.get("paths")
        path = entry.get("path")
        names = [_text(path)] if path is not None else list(_strings(paths or [], "paths"))
        for name in names:
            shares.append(
                NfsShare(
                    id=int(entry["id"]),
                    path=name,
                    hosts=_strings(entry.get("hosts") or [], "hosts"),
                    networks=_strings(entry.get("networks") or [], "networks"),
                    enabled=bool(entry.get("enabled", True)),
                )
            )
    return shares


def _selftest_kind(description: str) -> str | None:
    text = description.lower()
    if "short" in text:
        return "short"
    if "long" in text or "extended" in text:
        return "long"
    return None


def parse_smart_results(
    result: Any, now: float, pins: SelfTestPins | None = None
) -> list[SmartDevice]:
    """Parse ``smart.test.results`` (≤25.04): the newest short/long self-test per disk.

    Times come from ``power_on_hours_ago`` (25.04.1+); without it a test has no timestamp.
    With ``pins`` a test keeps the time it was given when first seen (keyed by the disk's
    device path and the entry's ``lifetime``/``power_on_hours`` stamp and status).
    """
    devices: list[SmartDevice] = []
    for raw in _list(result, "result"):
        entry = _dict(raw, "disk")
        disk = _text(entry.get("disk"))
        if not disk:
            raise _ShapeError("a SMART result has no disk")
        device = disk if disk.startswith("/dev/") else f"/dev/{disk}"
        tests = [_dict(t, "test") for t in _list(entry.get("tests") or [], "tests")]
        # smartctl logs newest first (ATA num 1, NVMe num 0); sort by num to be sure.
        tests.sort(key=lambda t: t["num"] if isinstance(t.get("num"), int) else 1 << 30)
        identity = disk_identity(device=device)
        disk_pins = pins.disk(identity) if pins is not None else DiskPins({})
        times = [_test_time(t, now, disk_pins) for t in tests]
        if pins is not None:
            pins.commit(identity, disk_pins)
        results: list[SelfTestResult] = []
        for kind in ("short", "long"):
            mine = [
                (t, ts)
                for t, ts in zip(tests, times, strict=True)
                if _selftest_kind(_text(t.get("description"))) == kind
            ]
            if not mine:
                continue
            newest, newest_at = mine[0]
            success = next((ts for t, ts in mine if t.get("status") == "SUCCESS"), None)
            status = _text(newest.get("status"))
            results.append(
                SelfTestResult(
                    test=kind,
                    last_timestamp=newest_at,
                    passed={"SUCCESS": True, "FAILED": False}.get(status),
                    status=_text(newest.get("status_verbose")) or status,
                    last_success=success,
                )
            )
        current = entry.get("current_test", None)
        devices.append(
            SmartDevice(
                device=device,
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


def _test_time(test: dict[str, Any], now: float, pins: DiskPins) -> float | None:
    """Return one logged test's time: pinned when first seen, from ``power_on_hours_ago``."""
    kind = _selftest_kind(_text(test.get("description")))
    stamp = as_int(test.get("lifetime"))  # ATA; NVMe logs the full power-on hours
    if stamp is None:
        stamp = as_int(test.get("power_on_hours"))
    key = None
    if kind is not None and stamp is not None:
        key = entry_key(kind, stamp, _text(test.get("status")))
    return pins.pin(key, _hours_ago(test, now))
