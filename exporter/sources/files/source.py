"""Backup files on disk (``kind: files``): newest mtime, count and total size of a glob.

This covers Home Assistant backups on an SMB share, database dumps and config exports.
With ``vzdump: true`` it also reads Proxmox ``vzdump-*`` archive names, a fallback for
a vzdump-on-NFS share that needs no PVE privileges.

Sample exposition::

    # HELP backup_files_newest_timestamp_seconds Modification time of the newest matching file.
    # TYPE backup_files_newest_timestamp_seconds gauge
    backup_files_newest_timestamp_seconds{source="ha-backups"} 1.7697e+09
    # HELP backup_files Number of matching files.
    # TYPE backup_files gauge
    backup_files{source="ha-backups"} 14.0
    # HELP backup_files_size_bytes Total size of the matching files.
    # TYPE backup_files_size_bytes gauge
    backup_files_size_bytes{source="ha-backups"} 2.1e+09
    # HELP backup_pve_archives Number of backup archives of the guest on the storage.
    # TYPE backup_pve_archives gauge
    backup_pve_archives{source="nfs-dumps",storage="nfs-dumps",vmid="100"} 14.0
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.schedule.jobs import Evidence
from exporter.sources.base import FetchContext, FetchError, Reason, Source
from exporter.sources.files import KIND
from exporter.sources.files.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.sources.files.config import FilesConfig
from exporter.vzdump import parse_archive_name


@dataclass(frozen=True)
class GuestArchives:
    """Aggregates of one guest's vzdump archives."""

    vmid: int
    count: int
    total_bytes: int
    newest: float
    newest_bytes: int


@dataclass(frozen=True)
class FilesSnapshot:
    """What one scan found (aggregates only: memory does not grow with the file count)."""

    count: int
    total_bytes: int
    newest: float | None
    oldest: float | None
    guests: tuple[GuestArchives, ...] = ()


class _GuestAcc:
    __slots__ = ("count", "newest", "newest_bytes", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.newest = float("-inf")
        self.newest_bytes = 0


#: The scan child (see :mod:`exporter.sources.files.scan`), run by path with this interpreter.
SCAN_SCRIPT = Path(__file__).with_name("scan.py")

#: A JSON line of the child is a file name and two numbers; longer is a broken child.
_MAX_LINE = 64 * 2**10

#: How long a killed scan child is waited for before it is left to the kernel.
_KILL_WAIT = 1.0


class _Aggregate:
    """Folds the child's ``f`` lines as they are read (memory does not grow with files)."""

    def __init__(self, cfg: FilesConfig) -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.timezone or "UTC")
        self.count = self.total = 0
        self.newest: float | None = None
        self.oldest: float | None = None
        self.guests: dict[int, _GuestAcc] = {}

    def add(self, name: str, size: int, mtime: float) -> None:
        self.count += 1
        self.total += size
        self.newest = mtime if self.newest is None else max(self.newest, mtime)
        self.oldest = mtime if self.oldest is None else min(self.oldest, mtime)
        if not self.cfg.vzdump:
            return
        archive = parse_archive_name(name, tz=self.tz)
        if archive is None:
            return
        acc = self.guests.setdefault(archive.vmid, _GuestAcc())
        acc.count += 1
        acc.total += size
        if archive.ctime > acc.newest:
            acc.newest, acc.newest_bytes = archive.ctime, size

    def snapshot(self) -> FilesSnapshot:
        return FilesSnapshot(
            count=self.count,
            total_bytes=self.total,
            newest=self.newest,
            oldest=self.oldest,
            guests=tuple(
                GuestArchives(vmid, a.count, a.total, a.newest, a.newest_bytes)
                for vmid, a in sorted(self.guests.items())
            ),
        )


def _line(raw: bytes) -> list[Any]:
    try:
        item = json.loads(raw)
    except ValueError:
        raise FetchError("parse", "the file scan sent a line that is not JSON") from None
    if not isinstance(item, list) or not item or not isinstance(item[0], str):
        raise FetchError("parse", "the file scan sent an unexpected line")
    return item


async def scan(cfg: FilesConfig) -> FilesSnapshot:
    """Walk the glob in a child process, aggregating its lines as they arrive.

    The child is killed (SIGKILL) when this coroutine is cancelled, by the poll's timeout or
    at shutdown, and waited for at most ``_KILL_WAIT``: a process stuck on a hung mount
    cannot hold the poll, the event loop or the exit.
    """
    request = json.dumps({"path": str(cfg.path), "glob": cfg.glob})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCAN_SCRIPT),
        request,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,  # a terminal's Ctrl-C is the exporter's to handle, not its
        limit=_MAX_LINE,
    )
    assert proc.stdout is not None
    agg = _Aggregate(cfg)
    done = False
    try:
        while raw := await proc.stdout.readline():
            item = _line(raw)
            if item[0] == "f" and len(item) == 4:
                agg.add(str(item[1]), int(item[2]), float(item[3]))
            elif item[0] == "e" and len(item) == 3 and item[1] in _CHILD_REASONS:
                raise FetchError(item[1], str(item[2]))
            elif item[0] == "done":
                done = True
            else:
                raise FetchError("parse", f"the file scan sent an unexpected {item[0]!r} line")
        status = await proc.wait()
    except ValueError:  # a line over the limit
        raise FetchError("parse", "the file scan sent an overlong line") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            # Reap it if the kernel lets it die at once; a process in an uninterruptible
            # wait is left behind (asyncio reaps it later), never waited for here.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), _KILL_WAIT)
    if not done:
        raise FetchError("connection", f"the scan of {cfg.path} ended early (status {status})")
    return agg.snapshot()


_CHILD_REASONS: frozenset[Reason] = frozenset({"config", "permission", "connection"})


class FilesSource(Source[FilesConfig, FilesSnapshot]):
    """Scans a directory glob in a child process that a hung mount cannot wedge.

    Sample exposition::

        # HELP backup_files Number of matching files.
        # TYPE backup_files gauge
        backup_files{source="ha-backups"} 14.0
    """

    kind = KIND

    async def fetch(self, ctx: FetchContext) -> FilesSnapshot:
        """Scan the files in a child process (killed at the poll's timeout)."""
        return await scan(self.config)

    def render(self, snapshot: FilesSnapshot) -> Iterator[Metric]:
        """Render file aggregates, and per-guest archives when ``vzdump`` is on."""
        src = [self.name]
        newest = GaugeMetricFamily(
            "backup_files_newest_timestamp_seconds",
            "Modification time of the newest matching file.",
            labels=["source"],
        )
        if snapshot.newest is not None:
            newest.add_metric(src, snapshot.newest)
        yield newest
        yield _family("backup_files", "Number of matching files.", src, snapshot.count)
        yield _family(
            "backup_files_size_bytes",
            "Total size of the matching files.",
            src,
            snapshot.total_bytes,
        )
        if self.config.vzdump:
            yield from self._render_guests(snapshot.guests)

    def _render_guests(self, guests: Iterable[GuestArchives]) -> Iterator[Metric]:
        labels = ["source", "storage", "vmid"]
        fams = {
            "last": GaugeMetricFamily(
                "backup_pve_archive_last_timestamp_seconds",
                "Time of the newest backup archive of the guest on the storage.",
                labels=labels,
            ),
            "last_size": GaugeMetricFamily(
                "backup_pve_archive_last_size_bytes",
                "Size of the newest backup archive of the guest on the storage.",
                labels=labels,
            ),
            "count": GaugeMetricFamily(
                "backup_pve_archives",
                "Number of backup archives of the guest on the storage.",
                labels=labels,
            ),
            "size": GaugeMetricFamily(
                "backup_pve_archive_size_bytes",
                "Total size of the guest's backup archives on the storage.",
                labels=labels,
            ),
        }
        for g in guests:
            values = [self.name, self.config.storage, str(g.vmid)]
            fams["last"].add_metric(values, g.newest)
            fams["last_size"].add_metric(values, g.newest_bytes)
            fams["count"].add_metric(values, g.count)
            fams["size"].add_metric(values, g.total_bytes)
        yield from fams.values()

    def evidence(self, snapshot: FilesSnapshot, selector: Mapping[str, str]) -> Evidence | None:
        """Newest file time, or with ``vmid:`` the guest's newest vzdump archive."""
        vmid = selector.get("vmid")
        if vmid is None:
            return Evidence(last_success=snapshot.newest)
        for g in snapshot.guests:
            if str(g.vmid) == vmid:
                return Evidence(last_success=g.newest)
        return None


def _family(name: str, doc: str, labels: list[str], value: float) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, doc, labels=["source"])
    fam.add_metric(labels, value)
    return fam
