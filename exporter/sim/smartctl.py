"""A stand-in ``smartctl`` for the simulated homelab's disks (``--json`` output only).

The homelab runs it through ``kind: smartctl``'s ``command_prefix`` exactly as a real
deployment runs ``ssh root@nas``: ``python -m exporter.sim.smartctl smartctl --json ...``.
The disks are the TrueNAS box's two HDDs and its NVMe boot drive. Self-tests follow the
strategy document: SMART short daily at 00:15 and long on day 1 of each month except
Tuesdays at 02:30 (Europe/Berlin); the log is computed from the current time (or
``FAKE_SMARTCTL_NOW``), so the demo's disks age in real time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from exporter.schedule.expressions import parse_schedule

TZ = ZoneInfo("Europe/Berlin")
SHORT = "15 0 * * *"
LONG = "Mon,Wed..Sun *-*-01 02:30"
# name -> (model, serial, protocol, power-on hours at INSTALLED + age, temperature)
DISKS: dict[str, tuple[str, str, str, int, int]] = {
    "/dev/sda": ("WDC WD140EDFZ-11A0VA0", "9RJ1XXXA", "ATA", 16590, 34),
    "/dev/sdb": ("WDC WD140EDFZ-11A0VA0", "9RJ1XXXB", "ATA", 3943, 33),
    "/dev/nvme0": ("CT250P2SSD8", "2119E5A1B2C3", "NVMe", 18636, 41),
}
INSTALLED = 1_767_225_600.0  # 2026-01-01: power-on hours count up from here
#: SAS disks behind a MegaRAID controller, all on ``/dev/bus/0`` and told apart by
#: ``-d megaraid,N`` (slot -> model, serial, logical unit id, power-on hours, temperature).
#: Not in the reference homelab: shown only with ``FAKE_SMARTCTL_CONTROLLER=1``.
CONTROLLER = "/dev/bus/0"
SAS_SLOTS: dict[int, tuple[str, str, str, int, int]] = {
    0: ("SEAGATE ST4000NM0023", "Z1Z0AAA0", "0x5000c50058aa0001", 41000, 31),
    1: ("SEAGATE ST4000NM0023", "Z1Z0AAA1", "0x5000c50058aa0002", 41020, 32),
    2: ("HGST HUS726T4TAL5204", "V6G0BBB2", "0x5000cca097bb0003", 12000, 30),
}


#: How long each test runs (a 14 TB drive's extended test takes far longer; 3 h is enough to
#: keep an hour-resolution stamp after the scheduled start).
DURATION = {"Short offline": timedelta(minutes=2), "Extended offline": timedelta(hours=3)}


def _tests(now: float) -> list[tuple[str, float]]:
    """Return the finished self-tests, newest first: (kind, completion instant).

    A log entry's stamp is the power-on hours when the test *completed* (ATA ACS "Life
    Timestamp", SPC-3 self-test results "TIME STAMP"): a test started by the schedule is
    logged only once it ended, stamped with its end.
    """
    at = datetime.fromtimestamp(now, TZ)
    out: list[tuple[str, float]] = []
    for kind, expr, count in (("Short offline", SHORT, 5), ("Extended offline", LONG, 2)):
        sched = parse_schedule(expr, TZ)
        t = sched.latest_at_or_before(at - DURATION[kind])
        for _ in range(count):
            if t is None:
                break
            out.append((kind, (t + DURATION[kind]).timestamp()))
            t = sched.latest_at_or_before(t - timedelta(seconds=1))
    out.sort(key=lambda e: -e[1])
    return out


def _ata(name: str, now: float) -> dict[str, Any]:
    model, serial, _, base, temp = DISKS[name]
    power_on = base + int((now - INSTALLED) // 3600)
    table = []
    for num, (kind, end) in enumerate(_tests(now), start=1):
        # The drive stamps a test with its power-on hours when it completed: a fixed
        # value, as on a real disk (not recomputed from "now", which would flip by one).
        stamp = base + int((end - INSTALLED) // 3600)
        table.append(
            {
                "type": {"value": 1 if kind.startswith("Short") else 2, "string": kind},
                "status": {"value": 0, "string": "Completed without error", "passed": True},
                # ATA keeps lifetime hours in 16 bits: the log wraps at 65,536.
                "lifetime_hours": stamp % 65536,
                "num": num,
            }
        )
    return {
        "ata_smart_attributes": {
            "table": [
                {"id": 5, "name": "Reallocated_Sector_Ct", "raw": {"value": 0}},
                {"id": 9, "name": "Power_On_Hours", "raw": {"value": power_on}},
                {"id": 194, "name": "Temperature_Celsius", "raw": {"value": temp}},
                {"id": 197, "name": "Current_Pending_Sector", "raw": {"value": 0}},
            ]
        },
        "ata_smart_self_test_log": {"standard": {"revision": 1, "table": table}},
        "ata_smart_data": {"self_test": {"status": {"value": 0, "passed": True}}},
        "model_name": model,
        "serial_number": serial,
        "power_on_time": {"hours": power_on},
        "temperature": {"current": temp},
        "smart_status": {"passed": True},
        "device": {"name": name, "info_name": name, "type": "sat", "protocol": "ATA"},
    }


def _nvme(name: str, now: float) -> dict[str, Any]:
    model, serial, _, base, temp = DISKS[name]
    power_on = base + int((now - INSTALLED) // 3600)
    table = [
        {
            "self_test_code": {"value": 1 if kind.startswith("Short") else 2, "string": kind},
            "self_test_result": {"value": 0, "string": "Completed without error"},
            "power_on_hours": base + int((end - INSTALLED) // 3600),
        }
        for kind, end in _tests(now)
    ]
    return {
        "model_name": model,
        "serial_number": serial,
        "power_on_time": {"hours": power_on},
        "temperature": {"current": temp},
        "smart_status": {"passed": True, "nvme": {"value": 0}},
        "nvme_smart_health_information_log": {
            "temperature": temp,
            "power_on_hours": power_on,
            "media_errors": 0,
            "critical_warning": 0,
        },
        "nvme_self_test_log": {"current_self_test_operation": {"value": 0}, "table": table},
        "device": {"name": name, "info_name": name, "type": "nvme", "protocol": "NVMe"},
    }


def _sas(slot: int, now: float) -> dict[str, Any]:
    """One SAS disk as smartctl 7.3+ prints it (smartmontools ``scsiprint.cpp``).

    ``scsiPrintSelfTest`` emits ``scsi_self_test_0`` (newest) onwards with ``code``
    (1 background short, 2 background long), ``result`` (0 completed) and the 16-bit
    power-on-hours stamp; ``scsiGetDriveInfo`` the ``logical_unit_id``.
    """
    model, serial, lu, base, temp = SAS_SLOTS[slot]
    power_on = base + int((now - INSTALLED) // 3600)
    doc: dict[str, Any] = {
        "device": {
            "name": CONTROLLER,
            "info_name": f"{CONTROLLER} [megaraid_disk_{slot:02d}]",
            "type": f"megaraid,{slot}",
            "protocol": "SCSI",
        },
        "scsi_vendor": model.split()[0],
        "scsi_product": model.split()[1],
        "scsi_model_name": model,
        "model_name": model,
        "serial_number": serial,
        "logical_unit_id": lu,
        "smart_status": {"passed": True},
        "temperature": {"current": temp, "drive_trip": 60},
        "power_on_time": {"hours": power_on, "minutes": 0},
        "scsi_grown_defect_list": 0,
    }
    for n, (kind, end) in enumerate(_tests(now)):
        short = kind.startswith("Short")
        doc[f"scsi_self_test_{n}"] = {
            "code": {
                "value": 1 if short else 2,
                "string": "Background short" if short else "Background long",
            },
            "result": {"value": 0, "string": "Completed"},
            "power_on_time": {
                "hours": (base + int((end - INSTALLED) // 3600)) % 65536,
                "aka": "accumulated_power_on_hours",
            },
        }
    return doc


def _controller() -> bool:
    return os.environ.get("FAKE_SMARTCTL_CONTROLLER") == "1"


def output(argv: Sequence[str], now: float) -> tuple[dict[str, Any], int]:
    """Return the JSON document and exit status smartctl would give for ``argv``."""
    envelope: dict[str, Any] = {
        "json_format_version": [1, 0],
        "smartctl": {"version": [7, 3], "argv": list(argv), "exit_status": 0},
    }
    if "--scan" in argv:
        kinds = {"ATA": "sat", "NVMe": "nvme"}
        envelope["devices"] = [
            {"name": name, "info_name": name, "type": kinds[d[2]], "protocol": d[2]}
            for name, d in DISKS.items()
        ]
        if _controller():
            envelope["devices"] += [
                {
                    "name": CONTROLLER,
                    "info_name": f"{CONTROLLER} [megaraid_disk_{slot:02d}]",
                    "type": f"megaraid,{slot}",
                    "protocol": "SCSI",
                }
                for slot in SAS_SLOTS
            ]
        return envelope, 0
    name = argv[-1]
    dtype = argv[argv.index("-d") + 1] if "-d" in argv[:-1] else ""
    if _controller() and name == CONTROLLER and dtype.startswith("megaraid,"):
        slot = dtype.removeprefix("megaraid,")
        if slot.isdigit() and int(slot) in SAS_SLOTS:
            return {**envelope, **_sas(int(slot), now)}, 0
    if name not in DISKS:
        envelope["smartctl"]["exit_status"] = 2
        envelope["smartctl"]["messages"] = [
            {"string": f"Smartctl open device: {name} failed: No such device", "severity": "error"}
        ]
        return envelope, 2
    doc = _nvme(name, now) if DISKS[name][2] == "NVMe" else _ata(name, now)
    return {**envelope, **doc}, 0


def main(argv: Sequence[str] | None = None) -> int:
    """Print smartctl's JSON for the arguments (the first may be the word ``smartctl``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "smartctl":
        args = args[1:]
    now = float(os.environ.get("FAKE_SMARTCTL_NOW", time.time()))
    doc, status = output(args, now)
    print(json.dumps(doc))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
