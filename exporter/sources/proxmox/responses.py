"""Parsing of the PVE API's answers into the snapshot's dataclasses.

One function per endpoint; the vzdump task list is parsed in
:mod:`~exporter.sources.proxmox.tasks`. Pure: the answers come from
:class:`~exporter.sources.proxmox.api.ProxmoxApi`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.sources.base import FetchError
from exporter.sources.proxmox.model import Archive, BackupJob, Guest, Retention
from exporter.sources.proxmox.reader import Reader, as_int, object_list
from exporter.sources.proxmox.retention import parse_retention
from exporter.vzdump import parse_volid

# vzdump's own default target when a job names no storage.
DEFAULT_JOB_STORAGE = "local"
_VMID_LIST_SPLIT = re.compile(r"[,;\s]+")


def _vmid_set(text: str, what: str) -> frozenset[int]:
    out = set()
    for part in _VMID_LIST_SPLIT.split(text.strip()):
        if not part:
            continue
        number = as_int(part)
        if number is None or number <= 0:
            raise FetchError("parse", f"{what}: bad vmid {part!r} in list")
        out.add(number)
    return frozenset(out)


def _retention(value: Any, what: str) -> Retention | None:
    try:
        return parse_retention(value)
    except ValueError as exc:
        raise FetchError("parse", f"{what}: {exc}") from None


def parse_nodes(data: Any) -> tuple[tuple[str, bool], ...]:
    """Parse ``GET /nodes`` into sorted ``(name, online)`` pairs."""
    nodes = []
    for item in object_list(data, "GET /nodes"):
        r = Reader(item, "GET /nodes")
        nodes.append((r.ident("node"), r.text("status", "unknown") == "online"))
    return tuple(sorted(nodes))


def parse_guests(data: Any) -> tuple[Guest, ...]:
    """Parse ``GET /cluster/resources?type=vm`` into the guests (VMs and containers)."""
    what = "GET /cluster/resources"
    guests = []
    for item in object_list(data, what):
        r = Reader(item, what)
        guest_type = r.text("type", "")
        if guest_type not in ("qemu", "lxc"):
            continue  # the API may add other resource types; they are not guests
        guests.append(
            Guest(
                vmid=r.integer("vmid"),
                name=r.text("name", ""),
                node=r.ident("node"),
                guest_type=guest_type,
                pool=r.text("pool", ""),
                template=r.flag("template"),
            )
        )
    return tuple(sorted(guests, key=lambda g: g.vmid))


def parse_jobs(data: Any) -> tuple[BackupJob, ...]:
    """Parse ``GET /cluster/backup`` into the backup jobs."""
    jobs = []
    for item in object_list(data, "GET /cluster/backup"):
        r = Reader(item, "GET /cluster/backup")
        job_id = r.text("id")
        what = f"backup job {job_id!r}"
        r.what = what
        jobs.append(
            BackupJob(
                id=job_id,
                schedule=r.text("schedule", ""),
                enabled=r.flag("enabled", default=True),
                storage=r.text("storage", DEFAULT_JOB_STORAGE),
                mode=r.text("mode", "snapshot"),
                all=r.flag("all"),
                vmids=_vmid_set(r.text("vmid", ""), what),
                exclude=_vmid_set(r.text("exclude", ""), what),
                pool=r.text("pool", ""),
                node=r.text("node", ""),
                retention=_retention(item.get("prune-backups"), what),
                remove=r.flag("remove", default=True),
            )
        )
    return tuple(sorted(jobs, key=lambda j: j.id))


def parse_storage_config(data: Any) -> dict[str, Retention | None]:
    """Parse ``GET /storage`` into each storage's ``prune-backups``."""
    what = "GET /storage"
    out = {}
    for item in object_list(data, what):
        r = Reader(item, what)
        sid = r.text("storage")
        out[sid] = _retention(item.get("prune-backups"), f"storage {sid!r}")
    return out


def parse_not_backed_up(data: Any) -> frozenset[int]:
    """Parse ``GET /cluster/backup-info/not-backed-up`` into vmids."""
    what = "GET /cluster/backup-info/not-backed-up"
    return frozenset(Reader(item, what).integer("vmid") for item in object_list(data, what))


@dataclass(frozen=True)
class NodeStorage:
    """One backup storage as a node reports it (``GET /nodes/{node}/storage``)."""

    storage: str
    type: str
    shared: bool
    active: bool
    total: int
    used: int


def parse_node_storages(data: Any, node: str) -> list[NodeStorage]:
    """Return the storages of ``node`` that hold ``backup`` content."""
    what = f"GET /nodes/{node}/storage"
    out = []
    for item in object_list(data, what):
        r = Reader(item, what)
        if "backup" not in r.text("content", "").split(","):
            continue
        out.append(
            NodeStorage(
                storage=r.ident("storage"),
                type=r.text("type", ""),
                shared=r.flag("shared"),
                active=r.flag("active"),
                total=r.integer("total", 0),
                used=r.integer("used", 0),
            )
        )
    return out


def parse_content(data: Any, node: str, storage: str, tz: str) -> list[Archive]:
    """Parse a ``content=backup`` listing into archives (files of no guest are skipped)."""
    what = f"GET /nodes/{node}/storage/{storage}/content"
    archives = []
    for item in object_list(data, what):
        r = Reader(item, what)
        if r.text("content", "backup") != "backup":
            continue
        volid = r.text("volid")
        name = parse_volid(volid, tz)
        vmid = r.optional_integer("vmid")
        ctime = r.optional_integer("ctime")
        if vmid is None and name is not None:
            vmid = name.vmid
        if ctime is None and name is not None:
            ctime = int(name.ctime)
        if vmid is None or ctime is None:
            continue  # a file that belongs to no guest
        verification = item.get("verification")
        verified = None
        if isinstance(verification, Mapping):
            state = verification.get("state")
            verified = True if state == "ok" else False if state == "failed" else None
        archives.append(
            Archive(
                storage=storage,
                vmid=vmid,
                ctime=float(ctime),
                size=r.integer("size", 0),
                protected=r.flag("protected"),
                verified=verified,
                standard_name=name is not None,
            )
        )
    return archives
