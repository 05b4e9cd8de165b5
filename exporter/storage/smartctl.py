"""Parser of ``smartctl --json`` documents into :class:`~exporter.storage.models.SmartDevice`.

A pure function of the document plus ``now`` (self-test times are estimated from power-on
hours) and, optionally, the times pinned when the entries were first seen
(:mod:`exporter.storage.selftest_pins`), plus the exit status helpers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter.storage.models import SELFTEST_KINDS, SelfTestResult, SmartDevice
from exporter.storage.selftest_pins import DiskPins, entry_key, smartctl_wwn
from exporter.storage.values import as_dict, as_int, as_num, as_str

# Explanations of the exit status bits, bit 0 first, parallel to models.EXIT_STATUS_FLAGS.
_EXIT_STATUS_TEXT: tuple[str, ...] = (
    "the command line did not parse",
    "the device could not be opened (or gave no IDENTIFY data, or is in a low-power mode)",
    "a SMART or ATA command to the disk failed, or a SMART data checksum was wrong",
    "SMART status says DISK FAILING",
    "prefail attributes are at or below their threshold",
    "some attributes were at or below their threshold in the past",
    "the device error log contains errors",
    "the self-test log contains errors",
)
#: How long a drive's 16-bit ATA self-test ``lifetime_hours`` counter runs before it wraps.
ATA_LIFETIME_WRAP = 65536


def decode_exit_status(code: int) -> tuple[str, ...]:
    """Explain each bit set in smartctl's exit status, bit 0 first."""
    return tuple(text for bit, text in enumerate(_EXIT_STATUS_TEXT) if code & (1 << bit))


def describe_exit_status(code: int) -> str:
    """One line for smartctl's exit status, e.g. ``exit 2: the device could not be opened``."""
    reasons = decode_exit_status(code)
    return f"exit {code}: " + ("; ".join(reasons) if reasons else "ok")


def _selftest_kind(description: str) -> str | None:
    text = description.lower()
    if "short" in text:
        return "short"
    if "extended" in text or "long" in text:
        return "long"
    return None  # conveyance, selective, offline data collection, vendor specific


def ata_selftest_age_hours(power_on_hours: int, lifetime_hours: int) -> int | None:
    """Hours between an ATA (or SCSI) self-test log entry and now, or ``None`` if inconsistent.

    SCSI logs the same 16-bit stamp: smartmontools ``scsiprint.cpp`` ``scsiPrintSelfTest``
    reads each entry's "accumulated power on hours" with ``sg_get_unaligned_be16``.

    The log stores the low 16 bits of the power-on hours (``lifetime_hours`` wraps at
    65,536 h, about 7.5 years), while ``power_on_time.hours`` is the full counter. The
    age is therefore ``(power_on_hours - lifetime_hours) mod 65536``: with 65,592 power-on
    hours, an entry at 42 is 14 h old and one at 65,530 (before the wrap) is 62 h old.
    This assumes no logged test is more than 65,535 h old, which holds because the log
    keeps only the newest 21 (or, extended log, a few hundred) entries of a drive that
    logs tests regularly. When the drive has fewer than 65,536 power-on hours, a
    ``lifetime_hours`` above the power-on hours cannot come from a wrap: the counters
    disagree (e.g. attribute 9 in another unit), and the age is unknown (``None``).
    """
    if power_on_hours < 0 or lifetime_hours < 0:
        return None
    if power_on_hours < ATA_LIFETIME_WRAP:
        return power_on_hours - lifetime_hours if lifetime_hours <= power_on_hours else None
    return (power_on_hours - lifetime_hours) % ATA_LIFETIME_WRAP


# ATA self-test status, high nibble (ataprint.cpp): 0 passed; 1 aborted by host,
# 2 interrupted (no verdict); 3 fatal/unknown error and 4-8 failures (smartctl counts
# all of 3..8 as errors, even though its JSON omits ``passed`` for 3); 15 in progress.
_ATA_ABORTED = frozenset({1, 2})
_ATA_FAILED = frozenset(range(3, 9))
_ATA_RUNNING = 15
# NVMe self-test result (NVMe base spec, Device Self-test log): 0 passed; 5 fatal,
# 6/7 failed segments; 1-4, 8, 9 aborted; 15 unused entry.
_NVME_FAILED = frozenset({5, 6, 7})
_NVME_ABORTED = frozenset({1, 2, 3, 4, 8, 9})


@dataclass
class _TestAcc:
    last: float | None = None
    passed: bool | None = None
    status: str = ""
    seen: bool = False
    last_success: float | None = None


def _collect_selftests(
    entries: Iterable[tuple[str, float | None, bool | None, str]],
) -> tuple[SelfTestResult, ...]:
    """Reduce log entries (newest first: kind, timestamp, passed, status) per kind."""
    acc: dict[str, _TestAcc] = {}
    for kind, ts, passed, status in entries:
        a = acc.setdefault(kind, _TestAcc())
        if not a.seen:
            a.seen, a.last, a.passed, a.status = True, ts, passed, status
        if passed is True and a.last_success is None and ts is not None:
            a.last_success = ts
    return tuple(
        SelfTestResult(
            test=kind,
            last_timestamp=acc[kind].last,
            passed=acc[kind].passed,
            status=acc[kind].status,
            last_success=acc[kind].last_success,
        )
        for kind in SELFTEST_KINDS
        if kind in acc
    )


def _ata_selftests(
    doc: Mapping[str, object], power_on_hours: int | None, now: float, pins: DiskPins
) -> tuple[tuple[SelfTestResult, ...], bool]:
    log = as_dict(doc.get("ata_smart_self_test_log"))
    # -x reads the GP log ("extended", more entries); -a the SMART log ("standard").
    table = as_dict(log.get("extended")).get("table") or as_dict(log.get("standard")).get("table")
    entries: list[tuple[str, float | None, bool | None, str]] = []
    running = False
    for raw in table if isinstance(table, list) else []:
        entry = as_dict(raw)
        kind = _selftest_kind(as_str(as_dict(entry.get("type")).get("string")))
        status = as_dict(entry.get("status"))
        value = as_int(status.get("value"))
        nibble = None if value is None else value >> 4
        if nibble == _ATA_RUNNING:
            running = True
            continue  # no end time yet; the previous test of this kind stays "last"
        if kind is None:
            continue
        if nibble is None:
            passed_raw = status.get("passed")
            passed = passed_raw if isinstance(passed_raw, bool) else None
        elif nibble == 0:
            passed = True
        elif nibble in _ATA_FAILED:
            passed = False
        else:  # aborted, interrupted, reserved codes: no verdict
            passed = None
        lifetime = as_int(entry.get("lifetime_hours"))
        ts = None
        if lifetime is not None and power_on_hours is not None:
            age = ata_selftest_age_hours(power_on_hours, lifetime)
            ts = None if age is None else now - age * 3600.0
        key = None
        if lifetime is not None:
            key = entry_key(
                kind, lifetime, as_str(status.get("string")) if value is None else value
            )
        entries.append((kind, pins.pin(key, ts), passed, as_str(status.get("string"))))
    return _collect_selftests(entries), running


def _nvme_selftests(
    doc: Mapping[str, object], power_on_hours: int | None, now: float, pins: DiskPins
) -> tuple[tuple[SelfTestResult, ...], bool, float | None]:
    log = as_dict(doc.get("nvme_self_test_log"))
    current = as_int(as_dict(log.get("current_self_test_operation")).get("value"))
    running = bool(current)
    completion = as_num(log.get("current_self_test_completion_percent"))
    remaining = 100.0 - completion if running and completion is not None else None
    table = log.get("table")
    entries: list[tuple[str, float | None, bool | None, str]] = []
    # Entries sit at their hardware slot index, so the list can hold null holes.
    for raw in table if isinstance(table, list) else []:
        entry = as_dict(raw)
        if not entry:
            continue
        code = as_dict(entry.get("self_test_code"))
        kind = {1: "short", 2: "long"}.get(as_int(code.get("value")) or 0) or _selftest_kind(
            as_str(code.get("string"))
        )
        result = as_dict(entry.get("self_test_result"))
        value = as_int(result.get("value"))
        if kind is None or value is None or value == 15:
            continue
        passed = True if value == 0 else False if value in _NVME_FAILED else None
        entry_hours = as_int(entry.get("power_on_hours"))
        ts = None
        if entry_hours is not None and power_on_hours is not None:
            # NVMe logs the full power-on hour counter: no wrap, only clock skew to clamp.
            ts = now - max(power_on_hours - entry_hours, 0) * 3600.0
        key = None if entry_hours is None else entry_key(kind, entry_hours, value)
        entries.append((kind, pins.pin(key, ts), passed, as_str(result.get("string"))))
    return _collect_selftests(entries), running, remaining


# SCSI self-test log page (SPC-3 7.2.10), as smartctl >= 7.3 prints it in JSON:
# smartmontools src/scsiprint.cpp scsiPrintSelfTest writes one object per logged entry,
# ``scsi_self_test_0`` (newest, parameter code 1) to ``scsi_self_test_19``, each with
# ``code`` {value, string}: the self-test code (1 background short, 2 background long,
# 5 foreground short, 6 foreground long; 0 default, 4 abort, 3/7 reserved),
# ``result`` {value, string}: 0 completed; 1 aborted by the host, 2 aborted by a reset
# (no verdict); 3 unknown error and 4-7 a failed segment (smartctl sets FAILSMART for 3
# and FAILLOG for 4-7: all failures); 8-14 reserved; 15 in progress, then with
# ``self_test_in_progress: true`` and no ``power_on_time``; otherwise
# ``power_on_time.hours``: the 16-bit power-on-hours stamp; ``failed_segment`` etc.
_SCSI_CODES = {1: "short", 2: "long", 5: "short", 6: "long"}
_SCSI_FAILED = frozenset(range(3, 8))
_SCSI_RUNNING = 15
_SCSI_KEY = re.compile(r"scsi_self_test_(\d+)")


def _scsi_entries(doc: Mapping[str, object]) -> list[dict[str, object]]:
    """Return the ``scsi_self_test_N`` objects, newest (N = 0) first."""
    found: list[tuple[int, dict[str, object]]] = []
    for key, raw in doc.items():
        match = _SCSI_KEY.fullmatch(key)
        if match and isinstance(raw, dict):
            found.append((int(match.group(1)), raw))
    return [entry for _, entry in sorted(found, key=lambda item: item[0])]


def _scsi_selftests(
    doc: Mapping[str, object], power_on_hours: int | None, now: float, pins: DiskPins
) -> tuple[tuple[SelfTestResult, ...], bool, bool]:
    """Reduce a SAS/SCSI self-test log: (results per kind, running, log was printed)."""
    raw_entries = _scsi_entries(doc)
    entries: list[tuple[str, float | None, bool | None, str]] = []
    running = False
    for entry in raw_entries:
        code = as_dict(entry.get("code"))
        result = as_dict(entry.get("result"))
        code_value = as_int(code.get("value"))
        kind = _SCSI_CODES.get(code_value) if code_value is not None else None
        if code_value is None:  # older captures (TrueNAS tests) carry only the strings
            kind = _selftest_kind(as_str(code.get("string")))
        value = as_int(result.get("value"))
        text = as_str(result.get("string"))
        if value is None:
            low = text.lower()
            value = (
                0
                if low == "completed"
                else _SCSI_RUNNING
                if "in progress" in low
                else 3
                if "unknown error" in low
                else 4
                if "fail" in low
                else 1
                if "abort" in low
                else None
            )
        if value == _SCSI_RUNNING or entry.get("self_test_in_progress") is True:
            running = True
            continue
        if kind is None:
            continue
        passed = True if value == 0 else False if value in _SCSI_FAILED else None
        stamp = as_int(as_dict(entry.get("power_on_time")).get("hours"))
        ts = None
        if stamp is not None and power_on_hours is not None:
            age = ata_selftest_age_hours(power_on_hours, stamp)
            ts = None if age is None else now - age * 3600.0
        key = (
            None if stamp is None else entry_key(kind, stamp, value if value is not None else text)
        )
        entries.append((kind, pins.pin(key, ts), passed, text))
    return _collect_selftests(entries), running, bool(raw_entries)


def _ata_attribute_raw(doc: Mapping[str, object], attr_id: int) -> int | None:
    table = as_dict(doc.get("ata_smart_attributes")).get("table")
    for raw in table if isinstance(table, list) else []:
        attr = as_dict(raw)
        if as_int(attr.get("id")) == attr_id:
            return as_int(as_dict(attr.get("raw")).get("value"))
    return None


def _messages(doc: Mapping[str, object]) -> list[tuple[str, str]]:
    msgs = as_dict(doc.get("smartctl")).get("messages")
    out = []
    for raw in msgs if isinstance(msgs, list) else []:
        m = as_dict(raw)
        out.append((as_str(m.get("severity")), as_str(m.get("string"))))
    return out


_STANDBY_RE = re.compile(r"Device is in \S+.* mode", re.IGNORECASE)


def is_standby_response(doc: Mapping[str, object]) -> bool:
    """Tell whether smartctl skipped the disk because ``--nocheck`` found it asleep.

    smartctl then exits with status 2 (bit 1, "low-power mode"), prints the message
    ``Device is in STANDBY mode, exit(2)`` and (7.3+) a ``power_mode`` object, and
    reads nothing else (``ataprint.cpp`` ``ataPrintMain``).
    """
    exit_status = as_int(as_dict(doc.get("smartctl")).get("exit_status")) or 0
    if not exit_status & 2:
        return False
    return any(_STANDBY_RE.search(text) for _, text in _messages(doc))


def parse_smartctl_json(
    doc: Mapping[str, object],
    *,
    now: float,
    device: str | None = None,
    device_type: str | None = None,
    pins: DiskPins | None = None,
) -> SmartDevice:
    """Turn one ``smartctl --json`` document (any exit status) into a :class:`SmartDevice`.

    ``device`` is the name the caller asked for and becomes the label; without it the
    document's ``device.name`` is used. ``device_type`` is the ``-d`` type asked for (the
    ``type`` label; ``""`` when smartctl chose); without it the document's ``device.type``.
    The disk's identity (the ``disk`` label) is its serial number, else its WWN.
    Self-test times are estimated from power-on hours (see :func:`ata_selftest_age_hours`),
    so they have a resolution of one hour;
    with ``pins`` an entry seen before keeps the time it was given then, and every timed
    entry read is recorded in ``pins.pinned``.
    """
    info = as_dict(doc.get("device"))
    argv = as_dict(doc.get("smartctl")).get("argv")
    # An open failure prints no "device" object; the last argument is the device then.
    from_argv = as_str(argv[-1]) if isinstance(argv, list) and len(argv) > 1 else ""
    name = device or as_str(info.get("name")) or from_argv or "unknown"
    exit_status = as_int(as_dict(doc.get("smartctl")).get("exit_status"))
    protocol = as_str(info.get("protocol"))
    standby = is_standby_response(doc)

    error = reason = None
    if exit_status is not None and exit_status & 3 and not standby:
        # Bits 0/1: nothing was read. Keep smartctl's own messages: they say why.
        errors = [text for sev, text in _messages(doc) if sev == "error"] or [
            text for _, text in _messages(doc)
        ]
        error = describe_exit_status(exit_status & 3)
        if errors:
            error += " (" + "; ".join(errors) + ")"
        reason = "command_line" if exit_status & 1 else "open_failed"
    elif not info and "smart_status" not in doc and not standby:
        error, reason = "smartctl printed no device data", "no_data"

    status = as_dict(doc.get("smart_status"))
    passed = status.get("passed")
    healthy = passed if isinstance(passed, bool) else None

    power = as_dict(doc.get("power_on_time"))
    nvme_log = as_dict(doc.get("nvme_smart_health_information_log"))
    hours = as_int(power.get("hours"))
    if hours is None:
        hours = as_int(nvme_log.get("power_on_hours"))
    power_on_seconds = None
    if hours is not None:
        power_on_seconds = hours * 3600.0 + (as_int(power.get("minutes")) or 0) * 60.0

    temperature = as_num(as_dict(doc.get("temperature")).get("current"))
    if temperature is None:
        temperature = as_num(nvme_log.get("temperature"))

    reallocated = _ata_attribute_raw(doc, 5)
    if reallocated is None:
        # SCSI/SAS: the grown defect list counts reallocated blocks.
        reallocated = as_int(doc.get("scsi_grown_defect_list"))

    pins = pins if pins is not None else DiskPins({})
    selftests, running = _ata_selftests(doc, hours, now, pins)
    scsi_tests, scsi_running, scsi_log = _scsi_selftests(doc, hours, now, pins)
    selftests = selftests or scsi_tests
    running = running or scsi_running
    remaining: float | None = None
    current = as_dict(as_dict(doc.get("ata_smart_data")).get("self_test"))
    if current:
        cur_status = as_dict(current.get("status"))
        value = as_int(cur_status.get("value"))
        if value is not None and value >> 4 == _ATA_RUNNING:
            running = True
            remaining = as_num(cur_status.get("remaining_percent"))
    nvme_running = False
    if "nvme_self_test_log" in doc:
        nvme_tests, nvme_running, nvme_remaining = _nvme_selftests(doc, hours, now, pins)
        selftests = selftests or nvme_tests
        remaining = remaining if remaining is not None else nvme_remaining
    # Only claim "not running" when smartctl reported the current self-test state.
    has_state = bool(current) or "nvme_self_test_log" in doc or scsi_log
    selftest_running = (running or nvme_running) if has_state or running else None

    serial = as_str(doc.get("serial_number"))
    wwn = smartctl_wwn(doc)
    return SmartDevice(
        device=name,
        device_type=as_str(info.get("type")) if device_type is None else device_type,
        disk=serial or wwn,
        wwn=wwn,
        model=as_str(doc.get("model_name")) or as_str(doc.get("scsi_model_name")),
        serial=serial,
        protocol=protocol,
        healthy=healthy,
        temperature_celsius=temperature,
        power_on_seconds=power_on_seconds,
        reallocated_sectors=reallocated,
        pending_sectors=_ata_attribute_raw(doc, 197),
        media_errors=as_int(nvme_log.get("media_errors")),
        selftests=selftests,
        selftest_running=selftest_running,
        selftest_remaining_percent=remaining,
        error=error,
        error_reason=reason or "",
        exit_status=exit_status,
        standby=standby,
    )
