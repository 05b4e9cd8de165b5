"""Parse vzdump archive file names and Proxmox backup volume ids (pure, no I/O).

Two spellings name one backup (docs/backends.md §1.1,
``pve-storage:src/PVE/Storage.pm:archive_info``):

* a file on a directory/NFS/CIFS storage,
  ``vzdump-<type>-<vmid>-<YYYY>_<MM>_<DD>-<hh>_<mm>_<ss>.<ext>`` with ``<type>`` in
  ``qemu|lxc|openvz`` and ``<ext>`` one of ``vma``, ``tar`` (each optionally ``.gz``/``.lzo``/
  ``.zst``/``.bz2``) or ``tgz``; its volume id is ``<storage>:backup/<file>``. The time stamp is
  the **node's local wall-clock time** (Proxmox parses it with Perl's ``timelocal()``), so
  turning it into an instant needs the node's time zone;
* a Proxmox Backup Server snapshot ``<storage>:backup/<vm|ct|host>/<id>/<YYYY-MM-DDTHH:MM:SSZ>``
  whose time stamp is UTC.

Anything else (side files ``.log``/``.notes``, non-standard names, other content) gives ``None``:
the caller decides what an unknown name means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

__all__ = ["ArchiveName", "parse_archive_name", "parse_volid", "split_volid"]

# archive_info's own pattern: the vmid has 3-9 digits and no leading zero.
_FILE_RE = re.compile(
    r"vzdump-(?P<type>qemu|lxc|openvz)-(?P<vmid>[1-9][0-9]{2,8})-"
    r"(?P<Y>\d{4})_(?P<m>\d{2})_(?P<d>\d{2})-(?P<H>\d{2})_(?P<M>\d{2})_(?P<S>\d{2})"
    r"\.(?P<ext>tgz|(?:tar|vma)(?:\.(?P<comp>gz|lzo|zst|bz2))?)",
    re.ASCII,
)
_PBS_RE = re.compile(
    r"(?:backup/)?(?P<type>vm|ct|host)/(?P<id>[^/]+)/"
    r"(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)",
    re.ASCII,
)
_PBS_TYPES = {"vm": "qemu", "ct": "lxc", "host": "host"}
_VMID_RE = re.compile(r"[1-9][0-9]{2,8}")


@dataclass(frozen=True)
class ArchiveName:
    """What a backup's name says about it."""

    vmid: int
    guest_type: str  # qemu | lxc | openvz (files); qemu | lxc (PBS)
    ctime: float  # Unix seconds of the backup's start, as Proxmox reports it
    format: str  # vma.zst, tar.gz, tgz, ... ; PBS: pbs-vm / pbs-ct
    compression: str | None  # gz | lzo | zst | bz2 (tgz counts as gz); None if uncompressed/PBS
    pbs: bool = False


def _zone(tz: str | tzinfo) -> tzinfo:
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def parse_archive_name(name: str, tz: str | tzinfo = "UTC") -> ArchiveName | None:
    """Parse a vzdump file name (a bare name or a path); ``tz`` is the node's time zone.

    A local time that occurs twice (DST fall-back) resolves to its first occurrence, and one
    that does not exist (spring-forward gap) is read with the offset before the gap; both match
    what ``timelocal()`` does for the hour in question closely enough for backup ages.
    """
    base = name.rsplit("/", 1)[-1]
    m = _FILE_RE.fullmatch(base)
    if m is None:
        return None
    try:
        local = datetime(
            int(m["Y"]), int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"]), int(m["S"])
        )
    except ValueError:  # 2026_02_30 and the like
        return None
    ext = m["ext"]
    compression = "gz" if ext == "tgz" else m["comp"]
    return ArchiveName(
        vmid=int(m["vmid"]),
        guest_type=m["type"],
        ctime=local.replace(tzinfo=_zone(tz)).timestamp(),
        format=ext,
        compression=compression,
    )


def split_volid(volid: str) -> tuple[str, str] | None:
    """Split ``<storage>:<path>`` into its two parts, or ``None`` if there is no storage."""
    storage, sep, path = volid.partition(":")
    if not sep or not storage or not path:
        return None
    return storage, path


def parse_volid(volid: str, tz: str | tzinfo = "UTC") -> ArchiveName | None:
    """Parse a backup volume id of a file storage or of a PBS storage.

    ``tz`` is the node's time zone for file names; PBS time stamps are UTC by definition.
    """
    parts = split_volid(volid)
    if parts is None:
        return None
    path = parts[1]
    pbs = _PBS_RE.fullmatch(path)
    if pbs is not None:
        backup_type = _PBS_TYPES[pbs["type"]]
        if backup_type == "host" or not _VMID_RE.fullmatch(pbs["id"]):
            return None  # host backups (proxmox-backup-client) belong to no guest
        try:
            when = datetime.strptime(pbs["ts"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return None
        return ArchiveName(
            vmid=int(pbs["id"]),
            guest_type=backup_type,
            ctime=when.timestamp(),
            format=f"pbs-{pbs['type']}",
            compression=None,
            pbs=True,
        )
    if not path.startswith("backup/"):
        return None
    return parse_archive_name(path.removeprefix("backup/"), tz)
