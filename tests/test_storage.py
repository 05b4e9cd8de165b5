"""The shared storage model: smartctl/zfs/zpool parsers, rendering and evidence."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.storage.evidence import (
    scrub_evidence,
    selftest_evidence,
    snapshot_evidence,
    storage_evidence,
)
from exporter.storage.models import (
    EXIT_STATUS_FLAGS,
    POOL_STATES,
    DatasetFilter,
    DatasetInfo,
    PoolInfo,
    SelfTestResult,
    SmartDevice,
)
from exporter.storage.render import render_datasets, render_pools, render_smart
from exporter.storage.smartctl import (
    ata_selftest_age_hours,
    decode_exit_status,
    describe_exit_status,
    parse_smartctl_json,
)
from exporter.storage.zfs import (
    StorageParseError,
    parse_zfs_list,
    parse_zfs_list_json,
    parse_zfs_list_text,
    parse_zfs_size,
    parse_zfs_version,
    parse_zpool_status_json,
    parse_zpool_status_text,
)

NOW = 1_800_000_000.0
HOUR = 3600.0
SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
LOCAL = Path(__file__).resolve().parent / "fixtures"
SHARED_MISSING = f"shared fixtures folder {SHARED} is absent"

Key = tuple[str, tuple[tuple[str, str], ...]]


def samples(families: Iterable[Metric]) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for fam in families:
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[Key, float], name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels`` (at most one may match)."""
    want = set(labels.items())
    hits = [k for k in found if k[0] == name and want <= set(k[1])]
    assert len(hits) <= 1, f"{name} {labels} matches several series: {hits}"
    return found[hits[0]] if hits else None


def shared_files(sub: str) -> list[object]:
    folder = SHARED / sub
    if not folder.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=SHARED_MISSING))]
    return sorted(p.name for p in folder.glob("*.json"))


def load_shared(sub: str, name: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads((SHARED / sub / name).read_text(encoding="utf-8"))
    return doc


# ---------------------------------------------------------------- smartctl: every real capture


def _attr_raw(doc: dict, attr_id: int) -> int | None:
    for attr in doc.get("ata_smart_attributes", {}).get("table", []):
        if attr["id"] == attr_id:
            return int(attr["raw"]["value"])
    return None


def _expected_scsi_selftests(doc: dict) -> dict[str, tuple[float | None, bool | None]]:
    """SAS/SCSI: ``scsi_self_test_0`` (newest) onwards, codes and results per SPC-3."""
    poh = doc.get("power_on_time", {}).get("hours")
    found: dict[str, tuple[float | None, bool | None]] = {}
    n = 0
    while f"scsi_self_test_{n}" in doc:
        entry = doc[f"scsi_self_test_{n}"]
        n += 1
        kind = {1: "short", 5: "short", 2: "long", 6: "long"}.get(entry["code"]["value"])
        result = entry["result"]["value"]
        if kind is None or kind in found or result == 15:
            continue
        age = (poh - entry["power_on_time"]["hours"]) % 65536
        passed = True if result == 0 else False if 3 <= result <= 7 else None
        found[kind] = (NOW - age * HOUR, passed)
    return found


def _expected_selftests(doc: dict) -> dict[str, tuple[float | None, bool | None]]:
    """Newest finished short/long test per kind, read straight from the log table."""
    if "scsi_self_test_0" in doc:
        return _expected_scsi_selftests(doc)
    log = doc.get("ata_smart_self_test_log", {})
    table = (log.get("extended") or log.get("standard") or {}).get("table", [])
    poh = doc.get("power_on_time", {}).get("hours")
    found: dict[str, tuple[float | None, bool | None]] = {}
    for entry in table:
        desc = entry["type"]["string"].lower()
        kind = "short" if "short" in desc else "long" if "extended" in desc else None
        nibble = entry["status"]["value"] >> 4
        if kind is None or kind in found or nibble == 15:
            continue
        lt = entry["lifetime_hours"]
        # 16-bit lifetime counter: the age in hours is the difference modulo 2**16.
        age = (poh - lt) % 65536
        passed = True if nibble == 0 else False if 3 <= nibble <= 8 else None
        found[kind] = (NOW - age * HOUR, passed)
    return found


LOCAL = Path(__file__).resolve().parent / "fixtures"
#: Real captures shipped in tests/fixtures/smartctl (see its README), besides the shared ones.
LOCAL_CAPTURES = sorted(
    p.name
    for p in (LOCAL / "smartctl").glob("*.json")
    if p.name.startswith(("libblockdev_", "scrutiny_smart-", "netdata_"))
)


def _wwn(doc: dict) -> str:
    if w := doc.get("wwn"):
        return f"{w['naa']:x}{w['oui']:06x}{w['id']:09x}"
    lu = str(doc.get("logical_unit_id", ""))
    return lu[2:] if lu.startswith("0x") else lu


@pytest.mark.parametrize(
    ("where", "name"),
    [
        ("shared", n) if isinstance(n, str) else pytest.param("shared", None, marks=n.marks)
        for n in shared_files("smartctl")
    ]
    + [("local", n) for n in LOCAL_CAPTURES],
)
def test_every_smartctl_capture(where: str, name: object) -> None:
    if where == "shared":
        doc = load_shared("smartctl", str(name))
    else:
        doc = json.loads((LOCAL / "smartctl" / str(name)).read_text(encoding="utf-8"))
    dev = parse_smartctl_json(doc, now=NOW)
    found = samples(render_smart("nas", [dev]))
    device = doc.get("device", {}).get("name") or doc["smartctl"]["argv"][-1]
    assert dev.device == device
    labels = {
        "source": "nas",
        "device": device,
        "type": doc.get("device", {}).get("type", ""),
        "disk": doc.get("serial_number") or _wwn(doc),
    }

    passed = doc.get("smart_status", {}).get("passed")
    assert value(found, "backup_smart_healthy", **labels) == (
        None if passed is None else float(passed)
    )
    temp = doc.get("temperature", {}).get("current")
    assert value(found, "backup_smart_temperature_celsius", **labels) == temp
    hours = doc.get("power_on_time", {}).get("hours")
    minutes = doc.get("power_on_time", {}).get("minutes", 0)
    assert value(found, "backup_smart_power_on_seconds", **labels) == (
        None if hours is None else hours * HOUR + minutes * 60
    )
    # SCSI/SAS has no attribute 5: the grown defect list counts the reallocated blocks.
    realloc = _attr_raw(doc, 5)
    assert value(found, "backup_smart_reallocated_sectors", **labels) == (
        doc.get("scsi_grown_defect_list") if realloc is None else realloc
    )
    assert value(found, "backup_smart_pending_sectors", **labels) == _attr_raw(doc, 197)
    media = doc.get("nvme_smart_health_information_log", {}).get("media_errors")
    assert value(found, "backup_smart_media_errors", **labels) == media

    for kind, (ts, ok) in _expected_selftests(doc).items():
        tl = {**labels, "test": kind}
        assert value(found, "backup_smart_selftest_last_timestamp_seconds", **tl) == ts
        assert value(found, "backup_smart_selftest_last_passed", **tl) == (
            None if ok is None else float(ok)
        )
    if not _expected_selftests(doc):
        assert not any(k[0].startswith("backup_smart_selftest_last") for k in found)

    if "smartctl" not in doc:  # scrutiny's smart-scsi.json was trimmed of its header
        return
    code = doc["smartctl"]["exit_status"]
    for bit, flag in enumerate(EXIT_STATUS_FLAGS):
        got = value(found, "backup_smart_exit_status_flag", **labels, flag=flag)
        assert got == float(bool(code & (1 << bit))), flag
    opened = not code & 2
    assert (value(found, "backup_smart_device_error_info", **labels, reason="open_failed")) == (
        None if opened else 1.0
    )
    if model := doc.get("model_name"):
        info = {**labels, "model": model, "serial": doc["serial_number"]}
        assert value(found, "backup_smart_device_info", **info) == 1.0


def test_failing_disk_exit_216_with_lifetime_wrap() -> None:
    if not SHARED.is_dir():
        pytest.skip(SHARED_MISSING)
    dev = parse_smartctl_json(
        load_shared("smartctl", "ata_hdd_hds721050_failing_exit216_-a.json"), now=NOW
    )
    assert dev.healthy is False
    assert dev.exit_status == 216
    assert dev.error is None  # bits 3-7 describe the disk, the read itself worked
    # 65,592 power-on hours = 56 after the 16-bit wrap. Newest short at 42 → 14 h ago;
    # newest long (read failure) at 4 → 52 h ago.
    short, long_ = dev.selftest("short"), dev.selftest("long")
    assert short is not None and long_ is not None
    assert short.last_timestamp == NOW - 14 * HOUR
    assert short.passed is True
    assert long_.last_timestamp == NOW - 52 * HOUR
    assert long_.passed is False
    assert long_.status == "Completed: read failure"
    # Every logged long test failed (also the ones before the wrap): no success at all.
    assert long_.last_success is None
    reasons = decode_exit_status(216)
    assert len(reasons) == 4
    assert "SMART status says DISK FAILING" in reasons
    assert "the self-test log contains errors" in reasons


def test_selftest_in_progress_and_standard_log() -> None:
    if not SHARED.is_dir():
        pytest.skip(SHARED_MISSING)
    dev = parse_smartctl_json(
        load_shared("smartctl", "ata_hdd_wd140edfz_smartctl7.0_-a.json"), now=NOW
    )
    # ata_smart_data.self_test.status = 241 (0xF1): "in progress, 10% remaining".
    assert dev.selftest_running is True
    assert dev.selftest_remaining_percent == 10
    long_ = dev.selftest("long")
    assert long_ is not None
    assert long_.last_timestamp == NOW - (1730 - 1624) * HOUR
    assert long_.last_success == long_.last_timestamp
    found = samples(render_smart("nas", [dev]))
    assert value(found, "backup_smart_selftest_running", source="nas", device="/dev/sdb") == 1.0


def test_x_extended_log_is_read() -> None:
    if not SHARED.is_dir():
        pytest.skip(SHARED_MISSING)
    doc = load_shared("smartctl", "ata_ssd_860evo_smartctl7.0_-x.json")
    assert "standard" not in doc["ata_smart_self_test_log"]
    dev = parse_smartctl_json(doc, now=NOW)
    short, long_ = dev.selftest("short"), dev.selftest("long")
    assert short is not None and long_ is not None
    assert short.last_timestamp == NOW - (14551 - 14417) * HOUR
    assert long_.last_timestamp == NOW - (14551 - 12667) * HOUR
    assert dev.selftest_running is False


def test_open_failure_gives_a_clear_reason() -> None:
    if not SHARED.is_dir():
        pytest.skip(SHARED_MISSING)
    dev = parse_smartctl_json(load_shared("smartctl", "open_failed_exit2.json"), now=NOW)
    assert dev.device == "/dev/sda"  # from smartctl.argv: there is no "device" object
    assert dev.error_reason == "open_failed"
    assert dev.error is not None
    assert "could not be opened" in dev.error
    assert "Open failed, Error=5" in dev.error  # smartctl's own message is kept
    assert dev.healthy is None
    assert dev.selftests == ()
    found = samples(render_smart("nas", [dev]))
    assert not any(k[0] == "backup_smart_healthy" for k in found)


# ---------------------------------------------------------------- smartctl: synthetic cases


def _ata_doc(poh: int, table: list[dict], **extra: object) -> dict[str, object]:
    return {
        "smartctl": {"exit_status": 0},
        "device": {"name": "/dev/sdx", "type": "sat", "protocol": "ATA"},
        "smart_status": {"passed": True},
        "power_on_time": {"hours": poh},
        "ata_smart_self_test_log": {"standard": {"revision": 1, "table": table}},
        **extra,
    }


def _entry(kind: str, status_value: int, lifetime: int, **status: object) -> dict[str, object]:
    return {
        "type": {"value": 1, "string": kind},
        "status": {"value": status_value, "string": f"status {status_value:#x}", **status},
        "lifetime_hours": lifetime,
    }


def test_aborted_test_has_no_verdict_but_older_success_counts() -> None:
    doc = _ata_doc(
        1000,
        [
            _entry("Extended offline", 0x10, 990),  # aborted by host: no "passed" key
            _entry("Extended offline", 0x00, 900, passed=True),
            _entry("Short offline", 0x30, 980),  # fatal or unknown error: smartctl omits passed
        ],
    )
    dev = parse_smartctl_json(doc, now=NOW)
    long_, short = dev.selftest("long"), dev.selftest("short")
    assert long_ == SelfTestResult(
        test="long",
        last_timestamp=NOW - 10 * HOUR,
        passed=None,
        status="status 0x10",
        last_success=NOW - 100 * HOUR,
    )
    assert short is not None
    assert short.passed is False  # 0x3 counts as a failure, as smartctl's exit bit 7 does
    found = samples(render_smart("nas", [dev]))
    lbl = {"source": "nas", "device": "/dev/sdx", "test": "long"}
    assert value(found, "backup_smart_selftest_last_passed", **lbl) is None
    assert value(found, "backup_smart_selftest_last_success_timestamp_seconds", **lbl) == (
        NOW - 100 * HOUR
    )


def test_in_progress_log_entry_marks_running_and_is_not_the_last_test() -> None:
    doc = _ata_doc(
        500,
        [_entry("Extended offline", 0xF3, 500), _entry("Extended offline", 0, 300, passed=True)],
    )
    dev = parse_smartctl_json(doc, now=NOW)
    assert dev.selftest_running is True
    long_ = dev.selftest("long")
    assert long_ is not None
    assert long_.last_timestamp == NOW - 200 * HOUR


def test_inconsistent_lifetime_without_wrap_gives_no_timestamp() -> None:
    # 100 power-on hours cannot have wrapped, so lifetime 200 is a counter mismatch.
    dev = parse_smartctl_json(_ata_doc(100, [_entry("Short offline", 0, 200)]), now=NOW)
    short = dev.selftest("short")
    assert short is not None
    assert short.last_timestamp is None
    assert short.passed is True


@pytest.mark.parametrize(
    ("poh", "lifetime", "age"),
    [
        (1730, 1708, 22),
        (65535, 65535, 0),
        (65536, 65535, 1),  # the very first wrap
        (65592, 42, 14),
        (65592, 65530, 62),
        (131072 + 10, 65530, 16),  # second wrap
        (100, 200, None),
    ],
)
def test_ata_age_examples(poh: int, lifetime: int, age: int | None) -> None:
    assert ata_selftest_age_hours(poh, lifetime) == age


@given(poh=st.integers(0, 10**7), age=st.integers(0, 65535))
def test_ata_age_recovers_any_age_below_the_wrap(poh: int, age: int) -> None:
    if age > poh:
        age = poh
    lifetime = (poh - age) % 65536  # what the drive logged: the low 16 bits
    assert ata_selftest_age_hours(poh, lifetime) == age


def test_nvme_log_with_holes_and_running_extended_test() -> None:
    doc = json.loads(
        (LOCAL / "smartctl" / "nvme_selftest_log_holes_smartctl7.4.json").read_text("utf-8")
    )
    dev = parse_smartctl_json(doc, now=NOW)
    short, long_ = dev.selftest("short"), dev.selftest("long")
    assert short is not None and long_ is not None
    assert (short.last_timestamp, short.passed) == (NOW - 25 * HOUR, True)
    assert (long_.last_timestamp, long_.passed) == (NOW - 265 * HOUR, True)
    assert dev.selftest_running is True
    assert dev.selftest_remaining_percent == 65
    assert dev.media_errors == 3
    assert dev.reallocated_sectors is None


def test_nvme_failed_segment_is_a_failure() -> None:
    doc = {
        "smartctl": {"exit_status": 128},
        "device": {"name": "/dev/nvme1", "protocol": "NVMe"},
        "smart_status": {"passed": True},
        "power_on_time": {"hours": 50},
        "nvme_self_test_log": {
            "current_self_test_operation": {"value": 0},
            "table": [
                None,
                {
                    "self_test_code": {"value": 2, "string": "Extended"},
                    "self_test_result": {"value": 7, "string": "Completed: failed segments"},
                    "power_on_hours": 40,
                },
            ],
        },
    }
    dev = parse_smartctl_json(doc, now=NOW)
    long_ = dev.selftest("long")
    assert long_ is not None
    assert (long_.passed, long_.last_timestamp) == (False, NOW - 10 * HOUR)
    assert dev.selftest_running is False


def test_standby_response_is_not_an_error() -> None:
    doc = json.loads((LOCAL / "smartctl" / "ata_standby_exit2.json").read_text("utf-8"))
    dev = parse_smartctl_json(doc, now=NOW)
    assert dev.standby is True
    assert dev.error is None
    assert dev.healthy is None


def test_command_line_error_reason() -> None:
    doc = {"smartctl": {"exit_status": 1, "messages": [{"string": "bad -d", "severity": "error"}]}}
    dev = parse_smartctl_json(doc, now=NOW, device="/dev/sdq")
    assert dev.device == "/dev/sdq"
    assert dev.error_reason == "command_line"
    assert dev.error is not None
    assert "bad -d" in dev.error


def test_describe_exit_status() -> None:
    assert describe_exit_status(0) == "exit 0: ok"
    assert describe_exit_status(4).startswith("exit 4: a SMART or ATA command")


def test_garbage_smartctl_document_does_not_crash() -> None:
    doc: dict[str, object] = {
        "smartctl": {"exit_status": "x", "messages": "nope"},
        "device": ["not", "a", "dict"],
        "power_on_time": {"hours": "many"},
        "temperature": {"current": True},
        "ata_smart_attributes": {"table": [None, {"id": 5, "raw": {"value": "7"}}]},
        "ata_smart_self_test_log": {"standard": {"table": [None, {"type": 3}]}},
        "nvme_self_test_log": {"table": "x"},
    }
    dev = parse_smartctl_json(doc, now=NOW, device="/dev/sdz")
    assert dev.device == "/dev/sdz"
    assert dev.temperature_celsius is None
    assert dev.reallocated_sectors == 7
    assert dev.power_on_seconds is None


# ---------------------------------------------------------------- rendering


def test_render_smart_hostile_labels_round_trip() -> None:
    dev = SmartDevice(device='/dev/disk/by-id/a"b\nc', model="Ünïcødé \\ model", serial="s")
    registry = CollectorRegistry()

    class Collector:
        def collect(self) -> Iterable[Metric]:
            return render_smart("nas", [dev])

    registry.register(Collector())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    parsed = {
        (s.name, s.labels.get("device"), s.labels.get("model"))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert ("backup_smart_device_info", dev.device, dev.model) in parsed


def test_render_smart_emits_only_known_values() -> None:
    found = samples(render_smart("nas", [SmartDevice(device="/dev/sda")]))
    assert {k[0] for k in found} == {"backup_smart_standby"}


def test_render_pools_stateset() -> None:
    pools = [
        PoolInfo(name="tank", state="DEGRADED", healthy=False, scrub_errors=2),
        PoolInfo(name="odd", state="WEIRD", healthy=False),
    ]
    found = samples(render_pools("nas", pools))
    states = {
        dict(k[1])["state"]: v
        for k, v in found.items()
        if k[0] == "backup_zfs_pool_state" and dict(k[1])["pool"] == "tank"
    }
    assert states == {s: float(s == "DEGRADED") for s in POOL_STATES}
    odd = [
        dict(k[1])["state"]
        for k in found
        if k[0] == "backup_zfs_pool_state" and ("pool", "odd") in k[1]
    ]
    assert "WEIRD" in odd
    assert len(odd) == len(POOL_STATES) + 1
    assert value(found, "backup_zfs_scrub_errors", source="nas", pool="tank") == 2
    assert (
        value(found, "backup_zfs_scrub_last_end_timestamp_seconds", source="nas", pool="tank")
        is None
    )


def test_render_datasets() -> None:
    ds = DatasetInfo(name="tank/x", used=10, available=20, quota=0, referenced=5, snapshots=0)
    found = samples(render_datasets("nas", [ds]))
    lbl = {"source": "nas", "dataset": "tank/x"}
    assert value(found, "backup_zfs_dataset_quota_bytes", **lbl) == 0
    assert value(found, "backup_zfs_snapshots", **lbl) == 0
    assert value(found, "backup_zfs_snapshot_newest_timestamp_seconds", **lbl) is None


# ---------------------------------------------------------------- zfs list


def _nice(text: str) -> int:
    units = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    return int(float(text[:-1]) * units[text[-1]])


def test_shared_zfs_list_json_manpage_example() -> None:
    if not SHARED.is_dir():
        pytest.skip(SHARED_MISSING)
    doc = load_shared("zfs", "zfs_list_j_filesystem_snapshot.manpage-example.json")
    got = {d.name: d for d in parse_zfs_list(doc)}
    entries = doc["datasets"]
    assert isinstance(entries, dict)
    filesystems = {n for n, e in entries.items() if e["type"] == "FILESYSTEM"}
    assert set(got) == filesystems
    for name in filesystems:
        props = entries[name]["properties"]
        assert got[name].used == _nice(props["used"]["value"])
        assert got[name].available == _nice(props["available"]["value"])
        assert got[name].referenced == _nice(props["referenced"]["value"])
        assert got[name].quota == 0  # not asked for in that example
        snaps = [e for e in entries.values() if e.get("dataset") == name]
        assert got[name].snapshots == len(snaps)
        # The example has no "creation" column: the age is unknown, not invented.
        assert got[name].snapshot_newest is None


def test_zfs_list_text_folds_snapshots() -> None:
    text = (LOCAL / "zfs" / "zfs_list_hp.txt").read_text("utf-8")
    got = {d.name: d for d in parse_zfs_list_text(text)}
    assert set(got) == {
        "tank",
        "tank/backups",
        "tank/media files",
        "tank/vm-100-disk-0",
        'tank/été "q"',
    }
    backups = got["tank/backups"]
    assert backups == DatasetInfo(
        name="tank/backups",
        used=1319413953331,
        available=879609302221,
        quota=2199023255552,
        referenced=1209462790553,
        snapshots=3,
        snapshot_newest=1769644800,
        snapshot_oldest=1769472000,
    )
    assert got["tank/vm-100-disk-0"].quota == 0  # a volume prints "-"
    assert got["tank/vm-100-disk-0"].snapshots == 1
    assert got["tank"].snapshots == 0


def test_zfs_list_json_int_matches_text_shape() -> None:
    doc = json.loads((LOCAL / "zfs" / "zfs_list_j_int.json").read_text("utf-8"))
    got = {d.name: d for d in parse_zfs_list_json(doc)}
    assert got["tank/backups"].snapshots == 2
    assert got["tank/backups"].snapshot_newest == 1769644800
    assert got["tank/backups"].snapshot_oldest == 1769558400
    assert got["tank/backups"].quota == 2199023255552
    assert got["tank/vol1"].quota == 0


def test_dataset_filter_is_anchored() -> None:
    text = (LOCAL / "zfs" / "zfs_list_hp.txt").read_text("utf-8")
    flt = DatasetFilter(include=(r"tank/.*",), exclude=(r"tank/vm-.*",))
    got = {d.name for d in parse_zfs_list_text(text, dataset_filter=flt)}
    assert got == {"tank/backups", "tank/media files", 'tank/été "q"'}
    assert DatasetFilter(include=("tank",)).matches("tank/backups") is False
    assert DatasetFilter(include=("tank(/.*)?",)).matches("tank/backups") is True
    assert DatasetFilter().matches("anything") is True


@pytest.mark.parametrize(
    "text",
    [
        "tank\t1\t2\t0\n",  # too few fields
        "tank\tlots\t2\t0\t3\t4\n",  # not a size
    ],
)
def test_zfs_list_text_malformed(text: str) -> None:
    with pytest.raises(StorageParseError, match="line 1"):
        parse_zfs_list_text(text)


def test_zfs_list_json_malformed() -> None:
    with pytest.raises(StorageParseError):
        parse_zfs_list_json({"output_version": {}})


def test_parse_zfs_size_and_version() -> None:
    assert parse_zfs_size("1319413953331") == 1319413953331
    assert parse_zfs_size("30.5G") == int(30.5 * 2**30)
    assert parse_zfs_size("0B") == 0
    assert parse_zfs_size("-") is None
    assert parse_zfs_version("zfs-2.3.0-1\nzfs-kmod-2.3.0-1\n") == (2, 3)
    assert parse_zfs_version("zfs-0.8.3-1ubuntu12.17\n") == (0, 8)
    assert parse_zfs_version("usage: zfs command args ...") is None


# ---------------------------------------------------------------- zpool status


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_shared_zpool_status_json_manpage_example() -> None:
    if not SHARED.is_dir():
        pytest.skip(SHARED_MISSING)
    doc = load_shared("zfs", "zpool_status_j.manpage-example.json")
    pools = parse_zpool_status_json(doc)
    assert pools == (
        PoolInfo(name="tank", state="ONLINE", healthy=True),  # no scan_stats in the example
    )
    found = samples(render_pools("nas", pools))
    assert value(found, "backup_zfs_pool_state", source="nas", pool="tank", state="ONLINE") == 1
    assert value(found, "backup_zfs_scrub_running", source="nas", pool="tank") == 0


def test_zpool_status_json_scan_stats() -> None:
    doc = json.loads((LOCAL / "zfs" / "zpool_status_jp.json").read_text("utf-8"))
    got = {p.name: p for p in parse_zpool_status_json(doc)}
    assert got["tank"] == PoolInfo(
        name="tank",
        state="ONLINE",
        healthy=True,
        scrub_last_end=1768091642,
        scrub_last_start=1768090441,
    )
    assert got["backup"].scrub_running is True
    assert got["backup"].scrub_last_start == 1769475600
    assert got["backup"].scrub_last_end is None
    assert got["backup"].healthy is False
    assert got["fresh"].scrub_last_end is None  # the last scan was a resilver


def test_zpool_status_text_two_pools() -> None:
    text = (LOCAL / "zfs" / "zpool_status_two_pools.txt").read_text("utf-8")
    got = {p.name: p for p in parse_zpool_status_text(text, tz=UTC)}
    assert got["tank"] == PoolInfo(
        name="tank",
        state="ONLINE",
        healthy=True,
        scrub_last_end=utc(2026, 1, 11, 0, 34, 2),
        scrub_last_start=utc(2026, 1, 11, 0, 24, 1),
    )
    assert got["backup"] == PoolInfo(
        name="backup",
        state="DEGRADED",
        healthy=False,
        scrub_running=True,
        scrub_last_start=utc(2026, 1, 27, 1, 0, 0),
    )


def _status(scan: str, state: str = "ONLINE") -> str:
    return (
        f"  pool: p\n state: {state}\n  scan: {scan}\nconfig:\n\n"
        "\tNAME        STATE     READ WRITE CKSUM\n\tp           ONLINE       0     0     0\n\n"
        "errors: No known data errors\n"
    )


@pytest.mark.parametrize(
    ("scan", "end", "start", "errors", "running"),
    [
        # 2.x: no days when 0
        (
            "scrub repaired 0B in 00:10:01 with 0 errors on Sun Jan 11 00:34:02 2026",
            utc(2026, 1, 11, 0, 34, 2),
            utc(2026, 1, 11, 0, 24, 1),
            0,
            False,
        ),
        # 2.x, several days; ctime pads a one-digit day with a space
        (
            "scrub repaired 12K in 2 days 03:04:05 with 3 errors on Sun Feb  1 10:00:00 2026",
            utc(2026, 2, 1, 10),
            utc(2026, 2, 1, 10) - (2 * 86400 + 3 * 3600 + 4 * 60 + 5),
            3,
            False,
        ),
        # 0.8.x: "0 days"
        (
            "scrub repaired 0B in 0 days 00:10:00 with 0 errors on Sun Jan  4 00:34:02 2026",
            utc(2026, 1, 4, 0, 34, 2),
            utc(2026, 1, 4, 0, 24, 2),
            0,
            False,
        ),
        # 0.7.x: "1h39m", bytes without a unit
        (
            "scrub repaired 0 in 1h39m with 1 errors on Sun Mar  1 02:03:04 2020",
            utc(2020, 3, 1, 2, 3, 4),
            utc(2020, 3, 1, 2, 3, 4) - 99 * 60,
            1,
            False,
        ),
        ("scrub canceled on Mon Jan  5 09:00:00 2026", None, None, 0, False),
        (
            "scrub in progress since Tue Jan 27 01:00:00 2026\n"
            "\t1.20T / 3.50T scanned at 410M/s, 900G / 3.50T issued at 300M/s\n"
            "\t0B repaired, 25.11% done, 02:31:07 to go",
            None,
            utc(2026, 1, 27, 1),
            0,
            True,
        ),
        (
            "scrub paused since Mon Feb  2 10:00:00 2026\n"
            "\tscrub started on Sun Feb  1 00:24:01 2026\n"
            "\t1.2T / 2.0T scanned, 600G / 2.0T issued\n"
            "\t0B repaired, 30.00% done",
            None,
            utc(2026, 2, 1, 0, 24, 1),
            0,
            True,
        ),
        (
            "resilvered 1.50G in 00:03:21 with 0 errors on Sun Jan 11 00:34:02 2026",
            None,
            None,
            0,
            False,
        ),
        ("resilver in progress since Sun Jan 11 00:34:02 2026", None, None, 0, False),
        ("none requested", None, None, 0, False),
        (
            "thorough scrub repaired 0B in 00:00:10 with 0 errors on Sun Jan 11 00:00:10 2026",
            utc(2026, 1, 11, 0, 0, 10),
            utc(2026, 1, 11),
            0,
            False,
        ),
    ],
)
def test_zpool_scan_line_variants(
    scan: str, end: float | None, start: float | None, errors: int, running: bool
) -> None:
    (pool,) = parse_zpool_status_text(_status(scan), tz=UTC)
    assert (pool.scrub_last_end, pool.scrub_last_start) == (end, start)
    assert (pool.scrub_errors, pool.scrub_running) == (errors, running)


def test_zpool_status_text_dates_use_the_configured_zone() -> None:
    scan = "scrub repaired 0B in 00:00:01 with 0 errors on Sun Jan 11 00:34:02 2026"
    (pool,) = parse_zpool_status_text(_status(scan), tz=ZoneInfo("Europe/Berlin"))
    assert pool.scrub_last_end == utc(2026, 1, 10, 23, 34, 2)  # CET = UTC+1


def test_zpool_status_text_data_errors_and_no_pools() -> None:
    text = _status("none requested").replace(
        "No known data errors", "5 data errors, use '-v' for a list"
    )
    (pool,) = parse_zpool_status_text(text, tz=UTC)
    assert pool.state == "ONLINE"
    assert pool.healthy is False
    assert parse_zpool_status_text("no pools available\n", tz=UTC) == ()


@pytest.mark.parametrize(
    "text",
    [
        "garbage\n",
        "  pool: p\n  scan: none requested\n",  # no state line
        _status("scrub repariert 0B in 00:00:01 mit 0 Fehlern am So 11 Jan 2026"),  # a locale
        _status("scrub repaired 0B in 00:00:01 with 0 errors on Sun Jan 99 00:34:02 2026"),
    ],
)
def test_zpool_status_text_malformed(text: str) -> None:
    with pytest.raises(StorageParseError):
        parse_zpool_status_text(text, tz=UTC)


def test_zpool_status_json_malformed() -> None:
    with pytest.raises(StorageParseError):
        parse_zpool_status_json({"pools": {"p": {"name": "p"}}})


# ---------------------------------------------------------------- evidence


def _dev(name: str, *results: SelfTestResult, error: str | None = None) -> SmartDevice:
    return SmartDevice(device=name, selftests=results, error=error)


def _long(success: float | None, passed: bool | None = True) -> SelfTestResult:
    return SelfTestResult(test="long", last_timestamp=success, passed=passed, last_success=success)


def test_selftest_evidence_needs_every_disk() -> None:
    devices = [
        _dev("/dev/sda", _long(NOW - 10 * HOUR)),
        _dev("/dev/sdb", _long(NOW - 50 * HOUR)),
        _dev("/dev/sdz", error="open failed"),  # skipped: reported by its error metric
    ]
    ev = selftest_evidence(devices, "long")
    assert ev is not None
    assert ev.last_success == NOW - 50 * HOUR  # the disk tested longest ago decides
    assert ev.failed is False
    assert ev.tracks_start is False
    one = selftest_evidence(devices, "long", "/dev/sda")
    assert one is not None
    assert one.last_success == NOW - 10 * HOUR
    # A disk that never passed a long test leaves the job without a success.
    never = selftest_evidence([*devices, _dev("/dev/sdc")], "long")
    assert never is not None
    assert never.last_success is None
    failed = selftest_evidence([_dev("/dev/sda", _long(NOW - HOUR, passed=False))], "long")
    assert failed is not None
    assert failed.failed is True
    assert selftest_evidence(devices, "long", "/dev/nope") is None


def test_scrub_and_snapshot_evidence() -> None:
    pools = [
        PoolInfo(name="tank", state="ONLINE", healthy=True, scrub_last_end=5.0, scrub_running=True)
    ]
    ev = scrub_evidence(pools, "tank")
    assert ev is not None
    assert (ev.last_success, ev.running, ev.tracks_start) == (5.0, True, False)
    assert scrub_evidence(pools, "other") is None
    ds = [DatasetInfo(name="tank/x", used=0, available=0, snapshots=2, snapshot_newest=9.0)]
    snap = snapshot_evidence(ds, "tank/x")
    assert snap is not None
    assert snap.last_success == 9.0
    assert storage_evidence({"source": "nas", "dataset": "tank/x"}, datasets=ds) == snap
    assert storage_evidence({"source": "nas", "pool": "tank"}, pools=pools) == ev
    assert storage_evidence({"source": "nas"}) is None


# ---------------------------------------------------------------- smartctl: SAS/SCSI self-test log


def _scsi(code: int, result: int, hours: int | None, **extra: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "code": {"value": code, "string": "x"},
        "result": {"value": result, "string": "y"},
        **extra,
    }
    if hours is not None:
        entry["power_on_time"] = {"hours": hours, "aka": "accumulated_power_on_hours"}
    return entry


def _scsi_doc(power_on: int, *entries: dict[str, object]) -> dict[str, object]:
    doc: dict[str, object] = {
        "smartctl": {"exit_status": 0},
        "device": {"name": "/dev/sdb", "type": "scsi", "protocol": "SCSI"},
        "serial_number": "WAF1ABCD",
        "logical_unit_id": "0x5000c500a1b2c3d4",
        "smart_status": {"passed": True},
        "power_on_time": {"hours": power_on, "minutes": 0},
    }
    for n, entry in enumerate(entries):
        doc[f"scsi_self_test_{n}"] = entry
    return doc


def test_sas_selftest_log_kinds_results_and_order() -> None:
    # smartmontools scsiprint.cpp scsiPrintSelfTest: entry 0 is the newest; code 1/5 short,
    # 2/6 long; result 0 completed, 1/2 aborted, 3-7 failed, 15 in progress.
    doc = _scsi_doc(
        5000,
        _scsi(1, 15, None, self_test_in_progress=True),  # a short test running now
        _scsi(2, 1, 4990),  # long aborted by the host: no verdict
        _scsi(6, 0, 4900),  # foreground long completed
        _scsi(5, 5, 4800, failed_segment={"value": 1}),  # short failed in its first segment
        _scsi(1, 0, 4700),  # an older short that passed
        _scsi(0, 0, 4990),  # "Default" self-test: neither short nor long
    )
    dev = parse_smartctl_json(doc, now=NOW)
    long, short = dev.selftest("long"), dev.selftest("short")
    assert long is not None and short is not None
    assert (long.passed, long.last_timestamp, long.last_success) == (
        None,
        NOW - 10 * HOUR,
        NOW - 100 * HOUR,
    )
    assert (short.passed, short.last_timestamp, short.last_success) == (
        False,
        NOW - 200 * HOUR,
        NOW - 300 * HOUR,
    )
    assert dev.selftest_running is True
    assert (dev.disk, dev.wwn, dev.device_type) == ("WAF1ABCD", "5000c500a1b2c3d4", "scsi")


def test_sas_stamp_wraps_at_16_bits_and_no_log_claims_no_state() -> None:
    # The SCSI log stamp is 16 bits (sg_get_unaligned_be16), like ATA's lifetime hours.
    dev = parse_smartctl_json(_scsi_doc(65536 + 10, _scsi(2, 0, 65530)), now=NOW)
    long = dev.selftest("long")
    assert long is not None and long.last_success == NOW - 16 * HOUR
    assert dev.selftest_running is False
    bare = parse_smartctl_json(_scsi_doc(100), now=NOW)  # "No Self-tests have been logged"
    assert bare.selftests == () and bare.selftest_running is None


def test_sas_entries_with_strings_only() -> None:
    # truenas/middleware src/middlewared/middlewared/pytest/unit/plugins/test_smart.py
    # (test__parse_smart_selftest_results__scsiprint__1): only the strings are present.
    doc = {
        "power_on_time": {"hours": 3943},
        "scsi_self_test_0": {
            "code": {"string": "Background short"},
            "result": {"string": "Completed, segment failed"},
            "power_on_time": {"hours": 3943},
        },
    }
    dev = parse_smartctl_json(doc, now=NOW, device="/dev/sda")
    short = dev.selftest("short")
    assert short is not None and (short.passed, short.last_timestamp) == (False, NOW)
    assert dev.disk == ""
