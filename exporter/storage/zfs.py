"""Parsers of ``zfs list`` and ``zpool status`` output (text and OpenZFS 2.3+ JSON).

Pure functions of the command output (plus a time zone where the text needs one) that
return the shared :mod:`exporter.storage.models`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from exporter.storage.models import DatasetFilter, DatasetInfo, PoolInfo
from exporter.storage.values import as_dict, as_int, as_str

# --------------------------------------------------------------------------------------
# zfs list
# --------------------------------------------------------------------------------------

_NICE_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_NICE_UNITS["E"] = 2**60
_NICE_RE = re.compile(r"^(\d+(?:\.\d+)?)([BKMGTPE]?)$")
#: The ``-o`` columns asked of ``zfs list`` (text and JSON).
ZFS_LIST_COLUMNS = ("name", "used", "avail", "quota", "refer", "creation")
# JSON keys are the full property names, whatever alias ``-o`` used.
_JSON_PROPS = {"avail": "available", "refer": "referenced"}


class StorageParseError(ValueError):
    """Command output that does not have the expected shape."""


def parse_zfs_size(value: object) -> int | None:
    """Parse a ZFS size: exact (``-p``: ``1319413953331``) or human (``30.5G``, ``0B``).

    ``-``, ``none`` and empty give ``None``. Human values use ZFS's 1024-based units
    and are approximate (``zfs_nicenum`` keeps 3 significant digits); pass ``-p``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip() if value is not None else ""
    if text in ("", "-", "none"):
        return None
    m = _NICE_RE.match(text)
    if not m:
        raise StorageParseError(f"not a size: {text[:40]!r}")
    return int(float(m.group(1)) * _NICE_UNITS[m.group(2)])


def _zfs_time(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if value > 0 else None
    text = str(value).strip()
    if text in ("", "-"):
        return None
    try:
        seconds = float(text)
    except ValueError:
        return None  # a localized date without -p: unknown rather than guessed
    return seconds if seconds > 0 else None


@dataclass
class _DatasetAcc:
    used: int | None = None
    available: int | None = None
    quota: int = 0
    referenced: int = 0
    count: int = 0
    newest: float | None = None
    oldest: float | None = None
    listed: bool = False


class _DatasetAggregator:
    """Folds ``zfs list`` rows into per-dataset totals; memory is O(datasets)."""

    def __init__(self, dataset_filter: DatasetFilter | None) -> None:
        self.filter = dataset_filter or DatasetFilter()
        self.acc: dict[str, _DatasetAcc] = {}
        self._skip: dict[str, bool] = {}

    def _selected(self, name: str) -> bool:
        hit = self._skip.get(name)
        if hit is None:
            hit = self._skip[name] = not self.filter.matches(name)
        return not hit

    def dataset(
        self, name: str, used: int | None, avail: int | None, quota: int | None, refer: int | None
    ) -> None:
        if not self._selected(name):
            return
        a = self.acc.setdefault(name, _DatasetAcc())
        a.listed = True
        a.used, a.available = used or 0, avail or 0
        a.quota, a.referenced = quota or 0, refer or 0

    def snapshot(self, dataset: str, creation: float | None) -> None:
        if not self._selected(dataset):
            return
        a = self.acc.setdefault(dataset, _DatasetAcc())
        a.count += 1
        if creation is not None:
            a.newest = creation if a.newest is None else max(a.newest, creation)
            a.oldest = creation if a.oldest is None else min(a.oldest, creation)

    def result(self) -> tuple[DatasetInfo, ...]:
        # Snapshots of a dataset that was not listed (e.g. a bookmark-only race) are dropped.
        return tuple(
            DatasetInfo(
                name=name,
                used=a.used or 0,
                available=a.available or 0,
                quota=a.quota,
                referenced=a.referenced,
                snapshots=a.count,
                snapshot_newest=a.newest,
                snapshot_oldest=a.oldest,
            )
            for name, a in sorted(self.acc.items())
            if a.listed
        )


def parse_zfs_list_text(
    text: str, *, dataset_filter: DatasetFilter | None = None
) -> tuple[DatasetInfo, ...]:
    """Parse ``zfs list -Hp -t filesystem,volume,snapshot -o name,used,avail,quota,refer,creation``.

    Snapshot rows (``tank/ds@snap``) are folded into their dataset (count, newest and
    oldest ``creation``); bookmarks (``#``) are ignored. Tab-separated, so dataset names
    with spaces are fine; a row with the wrong number of fields is a parse error.
    """
    agg = _DatasetAggregator(dataset_filter)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(ZFS_LIST_COLUMNS):
            raise StorageParseError(
                f"zfs list line {lineno}: expected {len(ZFS_LIST_COLUMNS)} tab-separated "
                f"fields, got {len(fields)}"
            )
        name, used, avail, quota, refer, creation = fields
        try:
            if "@" in name:
                agg.snapshot(name.split("@", 1)[0], _zfs_time(creation))
            elif "#" not in name:
                agg.dataset(
                    name,
                    parse_zfs_size(used),
                    parse_zfs_size(avail),
                    parse_zfs_size(quota),
                    parse_zfs_size(refer),
                )
        except StorageParseError as exc:
            raise StorageParseError(f"zfs list line {lineno}: {exc}") from None
    return agg.result()


def parse_zfs_list_json(
    doc: Mapping[str, object], *, dataset_filter: DatasetFilter | None = None
) -> tuple[DatasetInfo, ...]:
    """Parse ``zfs list -j [--json-int] -p ...`` (OpenZFS 2.3+); same folding as the text form."""
    datasets = doc.get("datasets")
    if not isinstance(datasets, dict):
        raise StorageParseError("zfs list JSON has no 'datasets' object")
    agg = _DatasetAggregator(dataset_filter)
    for key, raw in datasets.items():
        entry = as_dict(raw)
        name = as_str(entry.get("name")) or str(key)
        kind = as_str(entry.get("type")).upper()
        props = as_dict(entry.get("properties"))

        def prop(column: str, props: dict[str, object] = props) -> object:
            return as_dict(props.get(_JSON_PROPS.get(column, column))).get("value")

        try:
            if kind == "SNAPSHOT" or "@" in name:
                parent = as_str(entry.get("dataset")) or name.split("@", 1)[0]
                agg.snapshot(parent, _zfs_time(prop("creation")))
            elif kind in ("FILESYSTEM", "VOLUME", ""):
                agg.dataset(
                    name,
                    parse_zfs_size(prop("used")),
                    parse_zfs_size(prop("avail")),
                    parse_zfs_size(prop("quota")),
                    parse_zfs_size(prop("refer")),
                )
        except StorageParseError as exc:
            raise StorageParseError(f"zfs list JSON {name[:80]!r}: {exc}") from None
    return agg.result()


def parse_zfs_list(
    output: str | Mapping[str, object], *, dataset_filter: DatasetFilter | None = None
) -> tuple[DatasetInfo, ...]:
    """Parse ``zfs list`` output: a decoded JSON document or the ``-H`` tab text."""
    if isinstance(output, Mapping):
        return parse_zfs_list_json(output, dataset_filter=dataset_filter)
    return parse_zfs_list_text(output, dataset_filter=dataset_filter)


_ZFS_VERSION_RE = re.compile(r"zfs-(\d+)\.(\d+)")


def parse_zfs_version(text: str) -> tuple[int, int] | None:
    """Parse ``zfs version`` (first line ``zfs-2.3.0-1``) into ``(major, minor)``."""
    m = _ZFS_VERSION_RE.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


# --------------------------------------------------------------------------------------
# zpool status
# --------------------------------------------------------------------------------------

_CTIME = r"(?P<date>\w{3} \w{3} [ \d]?\d \d{1,2}:\d{2}:\d{2} \d{4})"
# Durations: 0.7 "1h39m", 0.8 "0 days 00:10:00", 2.x "00:10:01" or "3 days 01:02:03".
_DURATION = r"(?P<dur>\d+h\d+m|(?:\d+ days? )?\d+:\d{2}:\d{2})"
_SCRUB_DONE_RE = re.compile(
    rf"^(?:thorough )?scrub repaired \S+ in {_DURATION} with (?P<errors>\d+) errors on {_CTIME}"
)
_SCRUB_CANCELED_RE = re.compile(rf"^(?:thorough )?scrub canceled on {_CTIME}")
_SCRUB_RUNNING_RE = re.compile(rf"^(?:thorough )?scrub in progress since {_CTIME}")
_SCRUB_PAUSED_RE = re.compile(rf"^(?:thorough )?scrub paused since {_CTIME}")
_SCRUB_STARTED_RE = re.compile(rf"scrub started on {_CTIME}")
_SCRUB_WORD_RE = re.compile(r"^(?:thorough )?scrub\b")
_DATA_ERRORS_RE = re.compile(r"^(\d+) data errors?")


def _parse_ctime(text: str, tz: tzinfo) -> float:
    dt = datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")
    return dt.replace(tzinfo=tz).timestamp()


def _parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+)h(\d+)m", text)
    if m:
        return int(m.group(1)) * 3600.0 + int(m.group(2)) * 60.0
    days = 0
    if "day" in text:
        head, text = text.split("day", 1)
        days = int(head)
        text = text.lstrip("s ")
    h, mi, s = (int(x) for x in text.split(":"))
    return days * 86400.0 + h * 3600.0 + mi * 60.0 + s


@dataclass
class _PoolAcc:
    name: str
    state: str = ""
    data_errors: int = 0
    scan: list[str] = field(default_factory=list)


def _scrub_from_scan(
    lines: Sequence[str], tz: tzinfo
) -> tuple[float | None, float | None, int, bool]:
    """Return (last_end, last_start, errors, running) from a pool's ``scan:`` text."""
    for i, line in enumerate(lines):
        if m := _SCRUB_DONE_RE.match(line):
            end = _parse_ctime(m.group("date"), tz)
            return end, end - _parse_duration(m.group("dur")), int(m.group("errors")), False
        if _SCRUB_CANCELED_RE.match(line):
            return None, None, 0, False
        if m := _SCRUB_RUNNING_RE.match(line):
            return None, _parse_ctime(m.group("date"), tz), 0, True
        if _SCRUB_PAUSED_RE.match(line):
            # A paused scrub is unfinished and resumes later: report it as running.
            started = _SCRUB_STARTED_RE.search("\n".join(lines[i:]))
            start = _parse_ctime(started.group("date"), tz) if started else None
            return None, start, 0, True
        if _SCRUB_WORD_RE.match(line):
            # A scrub line in a shape we do not know (another locale, a new release):
            # fail loudly instead of silently dropping the scrub time.
            raise StorageParseError(f"unrecognized scan line {line[:120]!r}")
    return None, None, 0, False  # none requested, or only resilver/rebuild lines


def parse_zpool_status_text(text: str, *, tz: tzinfo) -> tuple[PoolInfo, ...]:
    """Parse plain ``zpool status`` (all pools); dates are local time of the host, in ``tz``.

    Only the last scan is kept by ZFS, so after a resilver the previous scrub is unknown.
    A pool is healthy when its state is ONLINE and it reports no data errors.
    """
    pools: list[_PoolAcc] = []
    current: _PoolAcc | None = None
    in_scan = False
    for raw in text.splitlines():
        stripped = raw.strip()
        key, sep, value = stripped.partition(":")
        if sep and key in (
            "pool",
            "state",
            "scan",
            "errors",
            "status",
            "action",
            "config",
            "see",
            "remove",
            "checkpoint",
            "expand",
            "dedup",
            "scrub",
        ):
            in_scan = False
            value = value.strip()
            if key == "pool":
                current = _PoolAcc(name=value)
                pools.append(current)
            elif current is None:
                continue
            elif key == "state":
                current.state = value.upper()
            elif key == "scan":
                current.scan.append(value)
                in_scan = True
            elif key == "errors":
                m = _DATA_ERRORS_RE.match(value)
                current.data_errors = int(m.group(1)) if m else 0
            continue
        if in_scan and current is not None and raw.startswith(("\t", "        ")):
            # Continuation lines ("\tscrub started on ...", progress).
            current.scan.append(stripped)
        else:
            in_scan = False
    if not pools and text.strip() and "no pools available" not in text:
        raise StorageParseError("zpool status printed no 'pool:' line")
    result = []
    for p in pools:
        if not p.state:
            raise StorageParseError(f"zpool status: pool {p.name[:80]!r} has no state line")
        try:
            end, start, errors, running = _scrub_from_scan(p.scan, tz)
        except ValueError as exc:  # StorageParseError, or a date strptime refused
            raise StorageParseError(f"zpool status: pool {p.name[:80]!r}: {exc}") from None
        result.append(
            PoolInfo(
                name=p.name,
                state=p.state,
                healthy=p.state == "ONLINE" and p.data_errors == 0,
                scrub_last_end=end,
                scrub_errors=errors,
                scrub_running=running,
                scrub_last_start=start,
            )
        )
    return tuple(result)


def parse_zpool_status_json(doc: Mapping[str, object]) -> tuple[PoolInfo, ...]:
    """Parse ``zpool status -j -p [--json-int]`` (OpenZFS 2.3+): ``pools.<name>.scan_stats``."""
    pools = doc.get("pools")
    if not isinstance(pools, dict):
        raise StorageParseError("zpool status JSON has no 'pools' object")
    result = []
    for key, raw in pools.items():
        pool = as_dict(raw)
        name = as_str(pool.get("name")) or str(key)
        state = as_str(pool.get("state")).upper()
        if not state:
            raise StorageParseError(f"zpool status JSON: pool {name[:80]!r} has no state")
        data_errors = as_int(pool.get("error_count")) or 0
        scan = as_dict(pool.get("scan_stats"))
        end = start = None
        errors = 0
        running = False
        if as_str(scan.get("function")).upper() == "SCRUB":
            scan_state = as_str(scan.get("state")).upper()
            start = _zfs_time(scan.get("start_time"))
            if scan_state == "FINISHED":
                end = _zfs_time(scan.get("end_time"))
                errors = as_int(scan.get("errors")) or 0
            elif scan_state == "SCANNING":
                running = True
                errors = as_int(scan.get("errors")) or 0
            else:  # CANCELED / NONE
                start = None
        result.append(
            PoolInfo(
                name=name,
                state=state,
                healthy=state == "ONLINE" and data_errors == 0,
                scrub_last_end=end,
                scrub_errors=errors,
                scrub_running=running,
                scrub_last_start=start,
            )
        )
    return tuple(result)
