"""``kind: smartctl`` end to end against a fake ``smartctl`` that prints real captures."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import Metric

from exporter.core.clock import FakeClock
from exporter.core.config import ConfigError, parse_config
from exporter.sources.base import FetchContext, FetchError
from exporter.sources.smartctl.source import (
    SPEC,
    DeviceSpec,
    SmartctlConfig,
    SmartctlSource,
    parse_scan,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BIN = FIXTURES / "bin"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "smartctl"
KINDS = {"smartctl": SPEC}
HOUR = 3600.0

WD = "ata_hdd_wd140edfz_smartctl7.0_-a.json"  # long test passed at 1624 h of 1730 h
EVO = "ata_ssd_860evo_smartctl7.0_-x.json"  # long test passed at 12667 h of 14551 h
FAILING = "ata_hdd_hds721050_failing_exit216_-a.json"  # newest long test failed
OPEN_FAILED = "open_failed_exit2.json"

needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared fixtures folder {SHARED} is absent"
)


class FakeSmartctl:
    """Configures the fake ``smartctl``'s answers per device and reads its call log."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config_path = tmp / "fake.json"
        self.log = tmp / "calls.log"
        self.pidfile = tmp / "pids"
        self.answers: dict[str, Any] = {}
        self._write()

    def _write(self) -> None:
        self.config_path.write_text(
            json.dumps({"log": str(self.log), "pidfile": str(self.pidfile), **self.answers}),
            encoding="utf-8",
        )

    def device(self, name: str, fixture: str | None = None, **answer: Any) -> None:
        if fixture is not None:
            local = FIXTURES / "smartctl" / fixture
            answer["file"] = str(local if local.exists() else SHARED / fixture)
        self.answers[f"device:{name}"] = answer
        self._write()

    def scan(self, **answer: Any) -> None:
        self.answers["scan"] = answer
        self._write()

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line)["args"] for line in self.log.read_text("utf-8").splitlines()]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSmartctl:
    tool = FakeSmartctl(tmp_path)
    monkeypatch.setenv("FAKE_TOOL_CONFIG", str(tool.config_path))
    monkeypatch.setenv("FAKE_PYTHON", sys.executable)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return tool


def source(*devices: str | DeviceSpec, **overrides: Any) -> SmartctlSource:
    specs = tuple(d if isinstance(d, DeviceSpec) else DeviceSpec(d) for d in devices)
    fields: dict[str, Any] = {
        "name": "nas",
        "kind": "smartctl",
        "interval": 1800.0,
        "timeout": 60.0,
        "devices": specs,
    }
    fields.update(overrides)
    return SmartctlSource(SmartctlConfig(**fields))


SampleKey = tuple[str, tuple[tuple[str, str], ...]]


class Found(dict[SampleKey, float]):
    """Samples looked up by name and a subset of their labels (at most one may match)."""

    def _hits(self, key: object) -> list[SampleKey]:
        name, labels = key  # type: ignore[misc]
        want = set(labels)
        hits = [k for k in self.keys() if k[0] == name and want <= set(k[1])]
        assert len(hits) <= 1, f"{key} matches several series: {hits}"
        return hits

    def __getitem__(self, key: SampleKey) -> float:
        hits = self._hits(key)
        if not hits:
            raise KeyError(key)
        return dict.__getitem__(self, hits[0])

    def __contains__(self, key: object) -> bool:
        return bool(self._hits(key))


def samples(families: Iterable[Metric]) -> Found:
    return Found(
        {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in families
            for s in fam.samples
        }
    )


def lbl(device: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"source": "nas", "device": device, **extra}.items()))


@needs_shared
async def test_reads_each_device_and_keeps_going_past_an_open_failure(
    fake: FakeSmartctl,
) -> None:
    fake.device("/dev/sda", WD)
    fake.device("/dev/sdb", FAILING, rc=216)
    fake.device("/dev/sdz", OPEN_FAILED, rc=2)
    clock = FakeClock()
    ctx = FetchContext(clock=clock)
    src = source("/dev/sda", "/dev/sdb", "/dev/sdz")
    snap = await src.fetch(ctx)
    assert sum(ctx.requests.values()) == 3
    found = samples(src.render(snap))
    # Labels use the configured name, not the name inside the capture.
    assert found[("backup_smart_healthy", lbl("/dev/sda"))] == 1
    assert found[("backup_smart_healthy", lbl("/dev/sdb"))] == 0  # exit 216: DISK FAILING
    assert found[("backup_smart_exit_status_flag", lbl("/dev/sdb", flag="disk_failing"))] == 1
    assert found[("backup_smart_device_error_info", lbl("/dev/sdz", reason="open_failed"))] == 1
    assert ("backup_smart_healthy", lbl("/dev/sdz")) not in found
    long_ts = found[("backup_smart_selftest_last_timestamp_seconds", lbl("/dev/sda", test="long"))]
    assert long_ts == clock.time() - (1730 - 1624) * HOUR
    # The device argv: JSON, the -a subset plus -c, no wake-up, "--" before the name.
    assert fake.calls()[0] == [
        "--json", "-i", "-H", "-c", "-A", "-l", "selftest", "--nocheck=standby", "--", "/dev/sda",
    ]  # fmt: skip


@needs_shared
async def test_every_device_failing_fails_the_poll(fake: FakeSmartctl) -> None:
    fake.device("/dev/sda", OPEN_FAILED, rc=2)
    fake.device("/dev/sdb", stdout="Segmentation fault", rc=139)
    with pytest.raises(FetchError) as err:
        await source("/dev/sda", "/dev/sdb").fetch(FetchContext(clock=FakeClock()))
    assert err.value.reason == "config"
    assert "all 2 devices failed" in err.value.message
    assert "could not be opened" in err.value.message


@needs_shared
async def test_standby_keeps_the_previous_values(fake: FakeSmartctl) -> None:
    fake.device("/dev/sdb", WD)
    clock = FakeClock()
    src = source("/dev/sdb")
    first = await src.fetch(FetchContext(clock=clock))
    clock.advance(1800)
    fake.device("/dev/sdb", "ata_standby_exit2.json", rc=2)
    second = await src.fetch(FetchContext(clock=clock))
    (before,) = first.devices
    (after,) = second.devices
    assert after.standby is True
    assert after.error is None
    assert after.healthy is True
    assert after.selftests == before.selftests  # absolute times: still right while asleep
    assert after.exit_status == before.exit_status == 0
    found = samples(src.render(second))
    assert found[("backup_smart_standby", lbl("/dev/sdb"))] == 1
    assert found[("backup_smart_temperature_celsius", lbl("/dev/sdb"))] == 32
    assert ("backup_smart_device_error_info", lbl("/dev/sdb", reason="open_failed")) not in found


async def test_standby_without_previous_values_is_not_a_failure(fake: FakeSmartctl) -> None:
    fake.device("/dev/sdb", "ata_standby_exit2.json", rc=2)
    snap = await source("/dev/sdb").fetch(FetchContext(clock=FakeClock()))
    (dev,) = snap.devices
    assert (dev.standby, dev.error, dev.healthy, dev.exit_status) == (True, None, None, None)


@needs_shared
async def test_scan_finds_devices_with_their_type(fake: FakeSmartctl) -> None:
    fake.scan(file=str(FIXTURES / "smartctl" / "scan.json"))
    fake.device("/dev/sda", EVO)
    fake.device("/dev/nvme0", "nvme_selftest_log_holes_smartctl7.4.json")
    snap = await source(nocheck="never").fetch(FetchContext(clock=FakeClock()))
    assert [d.device for d in snap.devices] == ["/dev/sda", "/dev/nvme0"]
    calls = fake.calls()
    assert calls[0] == ["--scan", "--json"]
    assert calls[1][-4:] == ["-d", "sat", "--", "/dev/sda"]
    assert calls[2][-4:] == ["-d", "nvme", "--", "/dev/nvme0"]
    assert not any(a.startswith("--nocheck") for a in calls[1])


async def test_scan_without_devices_key(fake: FakeSmartctl) -> None:
    fake.scan(file=str(FIXTURES / "smartctl" / "scan_empty.json"))
    with pytest.raises(FetchError) as err:
        await source().fetch(FetchContext(clock=FakeClock()))
    assert err.value.reason == "config"
    assert "found no devices" in err.value.message
    fake.scan(stdout="not json")
    with pytest.raises(FetchError) as err:
        await source().fetch(FetchContext(clock=FakeClock()))
    assert err.value.reason == "parse"


def test_parse_scan_ignores_junk() -> None:
    doc = {
        "devices": [
            {"name": "/dev/sda", "type": "sat"},
            "x",
            {"type": "nvme"},
            {"name": "/dev/sdb", "type": "bad type;"},
        ]
    }
    assert parse_scan(doc) == (DeviceSpec("/dev/sda", "sat"), DeviceSpec("/dev/sdb", ""))
    assert parse_scan({}) == ()


@needs_shared
async def test_hanging_device_times_out_alone(fake: FakeSmartctl) -> None:
    fake.device("/dev/sda", hang=True)
    fake.device("/dev/sdb", WD)
    async with asyncio.timeout(20):
        snap = await source("/dev/sda", "/dev/sdb", device_timeout=0.5).fetch(
            FetchContext(clock=FakeClock())
        )
    hung, ok = snap.devices
    assert (hung.error_reason, ok.error) == ("timeout", None)
    assert hung.error is not None
    assert "did not finish within 0.5s" in hung.error
    for pid in (int(p) for p in fake.pidfile.read_text("utf-8").split()):
        assert await _gone(pid)


async def _gone(pid: int) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text("utf-8")
        except FileNotFoundError:
            return True
        if "\nState:\tZ" in status:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_garbage_output_is_a_device_error(fake: FakeSmartctl) -> None:
    fake.device("/dev/sda", stdout="\x00\x01 not json", stderr="weird\n", rc=4)
    fake.device("/dev/sdb", "ata_standby_exit2.json", rc=2)
    snap = await source("/dev/sda", "/dev/sdb").fetch(FetchContext(clock=FakeClock()))
    bad = snap.devices[0]
    assert (bad.error_reason, bad.exit_status) == ("parse", 4)
    assert bad.error is not None
    assert "weird" in bad.error


async def test_missing_smartctl_fails_the_source(
    fake: FakeSmartctl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(FetchError) as err:
        await source("/dev/sda").fetch(FetchContext(clock=FakeClock()))
    assert (err.value.reason, err.value.message) == ("config", "smartctl: command not found")


@needs_shared
async def test_long_test_evidence_waits_for_every_disk(fake: FakeSmartctl) -> None:
    fake.device("/dev/sda", WD)
    fake.device("/dev/sdb", EVO)
    clock = FakeClock()
    src = source("/dev/sda", "/dev/sdb")
    snap = await src.fetch(FetchContext(clock=clock))
    ev = src.evidence(snap, {"source": "nas", "test": "long"})
    assert ev is not None
    # The SSD's newest passed long test (1884 h ago) is older than the HDD's (106 h ago).
    assert ev.last_success == clock.time() - (14551 - 12667) * HOUR
    assert (ev.failed, ev.tracks_start) == (False, False)
    one = src.evidence(snap, {"source": "nas", "test": "long", "device": "/dev/sda"})
    assert one is not None
    assert one.last_success == clock.time() - (1730 - 1624) * HOUR
    assert src.evidence(snap, {"source": "nas", "test": "conveyance"}) is None

    fake.device("/dev/sdb", FAILING, rc=216)
    snap = await src.fetch(FetchContext(clock=clock))
    ev = src.evidence(snap, {"source": "nas", "test": "long"})
    assert ev is not None
    assert ev.failed is True
    assert ev.last_success is None  # the failing disk never passed a long test


def test_config_keys() -> None:
    yaml = """
sources:
  disks:
    kind: smartctl
    devices:
      - /dev/sda
      - {name: /dev/sdb, type: sat}
    command_prefix: [ssh, root@nas]
    nocheck: never
    device_timeout: 45s
"""
    cfg = parse_config(yaml, kinds=KINDS).sources["disks"]
    assert isinstance(cfg, SmartctlConfig)
    assert cfg.devices == (DeviceSpec("/dev/sda"), DeviceSpec("/dev/sdb", "sat"))
    assert (cfg.command_prefix, cfg.nocheck, cfg.device_timeout) == (
        ("ssh", "root@nas"),
        "never",
        45.0,
    )
    assert (cfg.interval, cfg.timeout) == (1800.0, 60.0)
    default = parse_config("sources:\n  d:\n    kind: smartctl\n", kinds=KINDS).sources["d"]
    assert isinstance(default, SmartctlConfig)
    assert (default.devices, default.nocheck) == ((), "standby")


def test_config_problems() -> None:
    yaml = """
sources:
  disks:
    kind: smartctl
    devices: [/dev/sda, 5, {type: sat}, {name: /dev/sdc, type: "sat; rm -rf /"}, {name: x, typ: y}]
    nocheck: always
"""
    with pytest.raises(ConfigError) as err:
        parse_config(yaml, kinds=KINDS)
    text = "\n".join(err.value.problems)
    assert "sources.disks.devices[1]: must be a device name" in text
    assert "sources.disks.devices[2]: name: missing" in text
    assert "sources.disks.devices[3]: type: not a smartctl -d type" in text
    assert "sources.disks.devices[4]: unknown key typ" in text
    assert "sources.disks.nocheck: must be one of standby, sleep, idle, never" in text


# ------------------------------------------------------------- SAS disks, disks behind MegaRAID

MEGARAID_SLOTS = (
    "scrutiny_smart-megaraid0.json",  # SATA behind the controller: sat+megaraid,0
    "scrutiny_smart-megaraid1.json",  # its twin, same redacted serial, another WWN
    "libblockdev_scsi_SEAGATE_ST600MP0036.json",
    "libblockdev_scsi_TOSHIBA_AL15SEB120NY.json",
    "libblockdev_scsi_HGST_HUSMR3280ASS200.json",
    "libblockdev_scsi_TOSHIBA_KPM5XMUG400G.json",
    "libblockdev_scsi_WD4001FYYG-01SL3.json",
)


def megaraid(fake: FakeSmartctl) -> None:
    fake.scan(file=str(FIXTURES / "smartctl" / "scan_megaraid7.json"))
    for slot, fixture in enumerate(MEGARAID_SLOTS):
        fake.device(f"/dev/bus/0@megaraid,{slot}", fixture)


async def test_seven_disks_behind_one_megaraid_node_never_collide(fake: FakeSmartctl) -> None:
    megaraid(fake)
    src = source()
    ctx = FetchContext(clock=FakeClock())
    snap = await src.fetch(ctx)
    # The twins' pinned self-test times stay apart although their (redacted) serials match.
    assert {"serial:XXXXXXXXXXXX", "serial:XXXXXXXXXXXX@/dev/bus/0,megaraid,1"} <= set(
        ctx.memory["selftests"]
    )
    assert [(d.device, d.device_type) for d in snap.devices] == [
        ("/dev/bus/0", f"megaraid,{n}") for n in range(7)
    ]
    calls = fake.calls()[1:]
    assert [c[-4:] for c in calls] == [
        ["-d", f"megaraid,{n}", "--", "/dev/bus/0"] for n in range(7)
    ]
    families = list(src.render(snap))
    for fam in families:
        label_sets = [tuple(sorted(s.labels.items())) for s in fam.samples]
        assert len(label_sets) == len(set(label_sets)), fam.name
    healthy = {
        (s.labels["type"], s.labels["disk"]): s.value
        for fam in families
        for s in fam.samples
        if s.name == "backup_smart_healthy"
    }
    # The two SATA disks carry the same (redacted) serial: the type still tells them apart.
    assert healthy == {
        ("megaraid,0", "XXXXXXXXXXXX"): 1.0,
        ("megaraid,1", "XXXXXXXXXXXX"): 1.0,
        ("megaraid,2", "WAF1ABCD"): 1.0,
        ("megaraid,3", "Z9W012345678"): 1.0,
        ("megaraid,4", "74747474X"): 1.0,
        ("megaraid,5", "99A012345678"): 1.0,
        ("megaraid,6", "WMC1F0123456"): 1.0,
    }


async def test_a_sleeping_disk_keeps_its_own_values_not_its_neighbours(
    fake: FakeSmartctl,
) -> None:
    megaraid(fake)
    clock = FakeClock()
    src = source()
    first = await src.fetch(FetchContext(clock=clock))
    clock.advance(1800)
    fake.device("/dev/bus/0@megaraid,1", "ata_standby_exit2.json", rc=2)
    second = await src.fetch(FetchContext(clock=clock))
    slot1 = second.devices[1]
    assert slot1.standby is True
    assert slot1 == replace(first.devices[1], standby=True)
    assert slot1.power_on_seconds == 37788 * HOUR  # megaraid,1's own; megaraid,0 has 37787 h
    assert second.devices[0].power_on_seconds == 37787 * HOUR


async def test_sas_long_test_satisfies_the_long_test_job(fake: FakeSmartctl) -> None:
    # Real SAS captures: "Background long" (code 2) completed at 1 h of 4596 h / 4665 h.
    fake.device("/dev/sdc", "libblockdev_scsi_HGST_HUSMR3280ASS200.json")
    fake.device("/dev/sda", "libblockdev_scsi_TOSHIBA_KPM5XMUG400G.json")
    now = 1_800_000_000.0
    src = source("/dev/sdc", "/dev/sda")
    snap = await src.fetch(FetchContext(clock=FakeClock(now)))
    sdc, sda = snap.devices
    assert sdc.selftest("long") is not None and sdc.selftest("long").passed is True
    assert sdc.selftest("long").last_success == now - (4596 - 1) * HOUR
    assert sda.selftest("long").last_success == now - (4665 - 1) * HOUR
    assert sdc.selftest_running is False
    evidence = src.evidence(snap, {"test": "long"})
    assert evidence is not None
    assert evidence.last_success == now - (4665 - 1) * HOUR  # the older of the two disks
    assert evidence.failed is False
    one = src.evidence(snap, {"test": "long", "disk": "74747474X"})
    assert one is not None and one.last_success == now - (4596 - 1) * HOUR
    assert src.evidence(snap, {"test": "long", "disk": "nope"}) is None


async def test_evidence_selects_one_slot_behind_the_controller(fake: FakeSmartctl) -> None:
    megaraid(fake)
    now = 1_800_000_000.0
    src = source()
    snap = await src.fetch(FetchContext(clock=FakeClock(now)))
    slot4 = src.evidence(snap, {"test": "short", "device": "/dev/bus/0", "type": "megaraid,4"})
    assert slot4 is not None and slot4.last_success == now - (4596 - 1) * HOUR
    # The SAS WD4001FYYG (slot 6) logged no self-test: the node as a whole has no success.
    node = src.evidence(snap, {"test": "short", "device": "/dev/bus/0"})
    assert node is not None and node.last_success is None


async def test_the_fake_controllers_sas_disks_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    # exporter.sim.smartctl with its MegaRAID controller: three SAS disks on /dev/bus/0.
    from exporter.sim.smartctl import SAS_SLOTS, _tests

    now = 1_780_000_000.0
    monkeypatch.setenv("FAKE_SMARTCTL_CONTROLLER", "1")
    monkeypatch.setenv("FAKE_SMARTCTL_NOW", str(now))
    src = source(command_prefix=(sys.executable, "-m", "exporter.sim.smartctl"))
    snap = await src.fetch(FetchContext(clock=FakeClock(now)))
    sas = [d for d in snap.devices if d.device == "/dev/bus/0"]
    assert [(d.device_type, d.disk) for d in sas] == [
        (f"megaraid,{n}", serial) for n, (_, serial, *_) in SAS_SLOTS.items()
    ]
    newest_long = max(end for kind, end in _tests(now) if kind.startswith("Extended"))
    for dev in sas:
        long = dev.selftest("long")
        assert long is not None and long.passed is True
        # Hour resolution: the entry's stamp is the power-on hour the test ended in.
        assert abs(long.last_success - newest_long) < HOUR  # type: ignore[operator]
    evidence = src.evidence(snap, {"test": "long", "device": "/dev/bus/0"})
    assert evidence is not None and evidence.last_success is not None


async def test_a_disk_listed_twice_is_rendered_once(fake: FakeSmartctl) -> None:
    fake.device("/dev/sdc", "libblockdev_scsi_HGST_HUSMR3280ASS200.json")
    src = source("/dev/sdc", "/dev/sdc")
    snap = await src.fetch(FetchContext(clock=FakeClock()))
    assert len(snap.devices) == 2
    healthy = [
        s for fam in src.render(snap) for s in fam.samples if s.name == "backup_smart_healthy"
    ]
    assert [s.labels["disk"] for s in healthy] == ["74747474X"]
