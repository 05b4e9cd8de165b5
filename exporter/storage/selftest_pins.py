"""SMART self-test times pinned the first time each log entry is seen, kept in a kind's memory.

A self-test log stamps each entry with the disk's power-on hours, not a wall-clock time, so
the time of a test is estimated as ``now - (power-on hours now - stamp)``. Estimated anew on
every poll it drifts by up to an hour, and since power-on hours stop while a disk sleeps, a
monthly long test would look fresher the longer the disk slept. :class:`SelfTestPins`
computes that estimate once, when an entry is first seen, and keeps it in the source's
durable memory (:attr:`exporter.sources.base.FetchContext.memory`), so it survives polls
and restarts.

Memory layout (JSON-safe), under ``selftests``::

    {"serial:9RJ1XXXA": {"seen": 1767225600.0, "tests": {"long:16100:0": 1765425600.0}}}

A disk is keyed by its serial number, else its WWN, else its device path (:func:`disk_identity`);
an entry by its kind, power-on-hours stamp and status (:func:`entry_key`). Two entries of one
kind in the same power-on hour with the same status share a time (they are indistinguishable
in the log, which has a resolution of one hour anyway). The memory stays bounded: each read
of a disk's log keeps only the entries still in it, and a disk not read for
:data:`FORGET_AFTER` seconds (replaced, or asleep for a year) is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.storage.values import as_dict, as_int, as_str

MEMORY_KEY = "selftests"
#: A disk whose log has not been read for this long is forgotten (a year).
FORGET_AFTER = 365 * 86400.0


def disk_identity(serial: str = "", wwn: str = "", device: str = "", device_type: str = "") -> str:
    """Name a disk stably: by serial number, else WWN, else the device path and ``-d`` type.

    Disks behind one controller node (``-d megaraid,N`` on ``/dev/bus/0``) share the path,
    so the type is part of the last resort.
    """
    if serial:
        return f"serial:{serial}"
    if wwn:
        return f"wwn:{wwn}"
    return f"device:{device}" + (f",{device_type}" if device_type else "")


_HEX = frozenset("0123456789abcdef")


def smartctl_wwn(doc: Mapping[str, object]) -> str:
    """Return the WWN of a ``smartctl --json`` document as hex digits, or ``""``.

    ATA and NVMe print ``wwn`` {naa, oui, id} (16 hex digits); SCSI/SAS prints the
    logical unit's NAA designator as ``logical_unit_id`` ("0x5000c500a1b2c3d4",
    smartmontools ``scsiprint.cpp`` ``scsiGetDriveInfo``), used without its ``0x``.
    """
    wwn = as_dict(doc.get("wwn"))
    naa, oui, ident = as_int(wwn.get("naa")), as_int(wwn.get("oui")), as_int(wwn.get("id"))
    if naa is not None and oui is not None and ident is not None:
        return f"{naa:x}{oui:06x}{ident:09x}"
    lu = as_str(doc.get("logical_unit_id")).lower().removeprefix("0x")
    return lu if lu and set(lu) <= _HEX else ""


def smartctl_identity(doc: Mapping[str, object], device: str, device_type: str = "") -> str:
    """Return the :func:`disk_identity` of the disk a ``smartctl --json`` document names."""
    return disk_identity(as_str(doc.get("serial_number")), smartctl_wwn(doc), device, device_type)


def entry_key(kind: str, stamp: int, status: object) -> str:
    """Name one self-test log entry: its kind, power-on-hours stamp and status."""
    return f"{kind}:{stamp}:{status}"


class DiskPins:
    """The pinned entry times of one disk during one read of its log."""

    def __init__(self, stored: Mapping[str, float]) -> None:
        self._stored = stored
        self.pinned: dict[str, float] = {}

    def pin(self, key: str | None, estimate: float | None) -> float | None:
        """Return the time pinned for entry ``key``, pinning ``estimate`` if it is new.

        Without a key (the entry has no power-on-hours stamp) the estimate is returned as is.
        """
        if key is None:
            return estimate
        when = self._stored.get(key, estimate)
        if when is not None:
            self.pinned[key] = when
        return when


class SelfTestPins:
    """Self-test entry times per disk in a kind's memory (see the module docstring)."""

    def __init__(self, memory: dict[str, Any], now: float) -> None:
        raw = memory.get(MEMORY_KEY)
        if not isinstance(raw, dict):
            raw = memory[MEMORY_KEY] = {}
        self._disks: dict[str, Any] = raw
        self._now = now
        self._claimed: set[str] = set()

    def claim(self, identity: str, fallback: str) -> str:
        """Reserve ``identity`` for one disk of this poll; a second claimant gets ``fallback``.

        Two disks should never share a serial number, but redacted or cloned serials do
        happen (USB bridges, RAID volumes); their pins must not mix.
        """
        chosen = fallback if identity in self._claimed else identity
        self._claimed.add(chosen)
        return chosen

    def disk(self, identity: str) -> DiskPins:
        """Start reading the log of disk ``identity``."""
        tests = as_dict(as_dict(self._disks.get(identity)).get("tests"))
        stored = {
            str(k): float(v)
            for k, v in tests.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        return DiskPins(stored)

    def commit(self, identity: str, pins: DiskPins) -> None:
        """Record a successful read of the disk: keep only the entries seen in its log now.

        A read that found no timed entry (no log in the answer) keeps what was pinned before.
        """
        old = as_dict(self._disks.get(identity)).get("tests")
        tests = pins.pinned if pins.pinned or not isinstance(old, dict) else old
        self._disks[identity] = {"seen": self._now, "tests": dict(tests)}

    def forget_stale(self) -> None:
        """Drop the disks whose log was not read for :data:`FORGET_AFTER` seconds."""
        for identity in list(self._disks):
            seen = as_dict(self._disks[identity]).get("seen")
            if not isinstance(seen, (int, float)) or self._now - seen > FORGET_AFTER:
                del self._disks[identity]
