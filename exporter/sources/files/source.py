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

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.schedule.jobs import Evidence
from exporter.sources.base import FetchContext, FetchError, Source
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


def scan(cfg: FilesConfig) -> FilesSnapshot:
    """Walk the glob once, aggregating as it goes (blocking; run in a worker thread)."""
    if not cfg.path.is_dir():
        raise FetchError("config", f"{cfg.path} is not a readable directory")
    tz = ZoneInfo(cfg.timezone or "UTC")
    count = total = 0
    newest: float | None = None
    oldest: float | None = None
    guests: dict[int, _GuestAcc] = {}
    try:
        for entry in cfg.path.glob(cfg.glob):
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue  # removed by a prune while we walked
            if not entry.is_file():
                continue
            count += 1
            total += st.st_size
            newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
            oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
            if cfg.vzdump:
                archive = parse_archive_name(entry.name, tz=tz)
                if archive is None:
                    continue
                acc = guests.setdefault(archive.vmid, _GuestAcc())
                acc.count += 1
                acc.total += st.st_size
                if archive.ctime > acc.newest:
                    acc.newest, acc.newest_bytes = archive.ctime, st.st_size
    except PermissionError as exc:
        raise FetchError("permission", f"cannot read {exc.filename or cfg.path}") from exc
    except OSError as exc:
        raise FetchError("connection", f"{cfg.path}: {exc.strerror or exc}") from exc
    return FilesSnapshot(
        count=count,
        total_bytes=total,
        newest=newest,
        oldest=oldest,
        guests=tuple(
            GuestArchives(vmid, a.count, a.total, a.newest, a.newest_bytes)
            for vmid, a in sorted(guests.items())
        ),
    )


class FilesSource(Source[FilesConfig, FilesSnapshot]):
    """Scans a directory glob in a worker thread.

    Sample exposition::

        # HELP backup_files Number of matching files.
        # TYPE backup_files gauge
        backup_files{source="ha-backups"} 14.0
    """

    kind = KIND

    async def fetch(self, ctx: FetchContext) -> FilesSnapshot:
        """Scan the files."""
        return await ctx.run_blocking(scan, self.config)

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
