"""What kinds remember across polls and restarts, through ``FetchContext.memory`` (issue #10).

Every restart here goes through the real core: a :class:`StateKeeper` on a SQLite file, a
:class:`Poller` given the keeper's stored memory (as ``build_pollers`` does) and a
:class:`SnapshotCollector` that persists each successful poll; the restarted exporter gets a
new source object, so only what went through the store survives.

* SMART self-test times are pinned when first seen (``kind: smartctl`` and TrueNAS ≤ 25.04);
* TrueNAS keeps its scrub and cloud-sync history;
* bucket listings and restore checks (``kind: b2`` against b2sdk's simulator, ``kind: s3``
  against moto) are not repeated at start while the stored ones are younger than their interval.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest
from b2sdk.v3 import B2Api, B2HttpApiConfig, InMemoryAccountInfo, RawSimulator
from botocore.config import Config
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.buckets.memory import decode
from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import parse_config
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.sim.truenas import FakeTrueNAS, TrueNASScenario, homelab, start_fake_truenas
from exporter.sources.b2.source import B2Source
from exporter.sources.base import FetchContext, Source
from exporter.sources.s3.source import S3Source
from exporter.sources.smartctl.source import DeviceSpec, SmartctlConfig, SmartctlSource
from exporter.sources.truenas.source import SPEC as TRUENAS
from exporter.sources.truenas.source import TrueNASSource
from exporter.storage.selftest_pins import (
    FORGET_AFTER,
    DiskPins,
    SelfTestPins,
    smartctl_identity,
)
from exporter.storage.smartctl import parse_smartctl_json

H = 3600.0
BERLIN = ZoneInfo("Europe/Berlin")
BIN = Path(__file__).resolve().parent / "fixtures" / "bin"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Exporter:
    """The exporter's core around one source, with its durable memory in a state database."""

    def __init__(self, path: Path, clock: FakeClock, source: Source[Any, Any]) -> None:
        self.keeper = StateKeeper(path)
        self.keeper.load()
        stored = self.keeper.results.get(source.name)
        self.poller = Poller(
            source,
            clock=clock,
            last_success=stored.taken_at if stored else None,
            memory=self.keeper.memories.setdefault(source.name, {}),
        )
        self.collector = SnapshotCollector([self.poller], clock=clock, keeper=self.keeper)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    async def poll(self) -> Any:
        state = await self.poller.poll_once()
        assert state.up, state.error
        await self.keeper.flush()
        return state.snapshot

    def samples(self) -> Samples:
        text = generate_latest(self.registry).decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    async def stop(self) -> None:
        await self.keeper.close()


def lbl(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


# --------------------------------------------------------------------------- smartctl


def ata_doc(
    power_on: int,
    log: list[tuple[str, int, int]],
    *,
    serial: str = "WD-WX12A3456789",
    device: str = "/dev/sda",
) -> dict[str, Any]:
    """A ``smartctl --json`` answer of an ATA disk; ``log`` is (type, lifetime_hours, status)."""
    return {
        "smartctl": {"version": [7, 3], "argv": ["smartctl", "--json", device], "exit_status": 0},
        "device": {"name": device, "info_name": device, "type": "sat", "protocol": "ATA"},
        "model_name": "WDC WD140EDFZ-11A0VA0",
        "serial_number": serial,
        "smart_status": {"passed": True},
        "power_on_time": {"hours": power_on},
        "ata_smart_data": {"self_test": {"status": {"value": 0, "passed": True}}},
        "ata_smart_self_test_log": {
            "standard": {
                "revision": 1,
                "table": [
                    {
                        "type": {"value": 2 if kind == "long" else 1, "string": f"{kind} offline"},
                        "status": {
                            "value": status,
                            "string": "Completed without error" if status == 0 else "failed",
                            "passed": status == 0,
                        },
                        "lifetime_hours": lifetime,
                    }
                    for kind, lifetime, status in log
                ],
            }
        },
    }


class FakeSmartctl:
    """Points the fake ``smartctl`` (tests/fixtures/bin) at a JSON answer per device."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "fake.json"
        self.answers: dict[str, Any] = {}

    def answer(self, device: str, doc: dict[str, Any]) -> None:
        self.answers[f"device:{device}"] = {"stdout": json.dumps(doc)}
        self.path.write_text(json.dumps(self.answers), encoding="utf-8")


@pytest.fixture
def smartctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSmartctl:
    tool = FakeSmartctl(tmp_path)
    monkeypatch.setenv("FAKE_TOOL_CONFIG", str(tool.path))
    monkeypatch.setenv("FAKE_PYTHON", sys.executable)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return tool


def smart_source(*devices: str) -> SmartctlSource:
    return SmartctlSource(
        SmartctlConfig(
            name="nas",
            kind="smartctl",
            interval=1800.0,
            timeout=60.0,
            devices=tuple(DeviceSpec(d) for d in devices),
        )
    )


async def test_a_selftest_keeps_its_time_across_polls_and_a_restart(
    smartctl: FakeSmartctl, tmp_path: Path
) -> None:
    t0 = 1_780_000_000.0
    clock = FakeClock(t0)
    log = [("short", 990, 0), ("long", 900, 0)]
    smartctl.answer("/dev/sda", ata_doc(1000, log))
    first = Exporter(tmp_path / "state.db", clock, smart_source("/dev/sda"))
    long_at, short_at = t0 - 100 * H, t0 - 10 * H
    where = lbl(source="nas", device="/dev/sda", test="long", type="", disk="WD-WX12A3456789")
    power_on = 1000
    for poll in range(10):
        (dev,) = (await first.poll()).devices
        assert dev.selftest("long").last_timestamp == long_at, poll
        assert dev.selftest("long").last_success == long_at, poll
        assert dev.selftest("short").last_timestamp == short_at, poll
        assert first.samples()["backup_smart_selftest_last_timestamp_seconds", where] == long_at
        # Three hours pass, but the disk sleeps for two of them: power-on hours gain one.
        clock.advance(3 * H)
        power_on += 1
        smartctl.answer("/dev/sda", ata_doc(power_on, log))
    await first.stop()

    # Re-estimated now, the long test would look 20 hours fresher than it is.
    fresh = await smart_source("/dev/sda").fetch(FetchContext(clock=clock))
    assert fresh.devices[0].selftest("long").last_timestamp == long_at + 20 * H

    clock.advance(H)
    second = Exporter(tmp_path / "state.db", clock, smart_source("/dev/sda"))
    (dev,) = (await second.poll()).devices
    assert dev.selftest("long").last_timestamp == long_at
    assert dev.selftest("short").last_timestamp == short_at
    assert second.samples()["backup_smart_selftest_last_timestamp_seconds", where] == long_at
    await second.stop()


async def test_pins_survive_json_and_are_bounded(smartctl: FakeSmartctl) -> None:
    clock = FakeClock(1_780_000_000.0)
    src = smart_source("/dev/sda", "/dev/sdb")
    memory: dict[str, Any] = {}
    smartctl.answer("/dev/sda", ata_doc(1000, [("long", 900, 0)]))
    smartctl.answer("/dev/sdb", ata_doc(50, [("short", 40, 0)], serial="S2", device="/dev/sdb"))
    await src.fetch(FetchContext(clock=clock, memory=memory))
    pinned = memory["selftests"]["serial:WD-WX12A3456789"]["tests"]["long:900:0"]
    assert pinned == clock.time() - 100 * H

    # A restart: the memory comes back from JSON; the next log drops nothing.
    clock.advance(5 * H)
    memory = json.loads(json.dumps(memory))
    smartctl.answer("/dev/sda", ata_doc(1001, [("short", 1001, 0), ("long", 900, 0)]))
    snap = await smart_source("/dev/sda", "/dev/sdb").fetch(
        FetchContext(clock=clock, memory=memory)
    )
    sda = memory["selftests"]["serial:WD-WX12A3456789"]["tests"]
    assert sda == {"long:900:0": pinned, "short:1001:0": clock.time()}
    assert snap.devices[0].selftest("long").last_timestamp == pinned

    # The log wrapped: the long test is gone from it, and from the memory.
    smartctl.answer("/dev/sda", ata_doc(1002, [("short", 1002, 0), ("short", 1001, 0)]))
    await src.fetch(FetchContext(clock=clock, memory=memory))
    assert set(memory["selftests"]["serial:WD-WX12A3456789"]["tests"]) == {
        "short:1002:0",
        "short:1001:0",
    }

    # A disk not read for a year (pulled, or asleep all along) is forgotten.
    clock.advance(FORGET_AFTER + H)
    sda_only = smart_source("/dev/sda")
    await sda_only.fetch(FetchContext(clock=clock, memory=memory))
    assert set(memory["selftests"]) == {"serial:WD-WX12A3456789"}


def test_disk_identity_prefers_serial_then_wwn_then_the_device() -> None:
    doc = ata_doc(10, [])
    assert smartctl_identity(doc, "/dev/sda") == "serial:WD-WX12A3456789"
    doc["serial_number"] = ""
    doc["wwn"] = {"naa": 5, "oui": 0x0014EE, "id": 0x2B1C3D4E5}
    assert smartctl_identity(doc, "/dev/sda") == "wwn:50014ee2b1c3d4e5"
    del doc["wwn"]
    assert smartctl_identity(doc, "/dev/sda") == "device:/dev/sda"


def test_nvme_entries_are_pinned_by_their_power_on_hours() -> None:
    def nvme(power_on: int) -> dict[str, Any]:
        return {
            "device": {"name": "/dev/nvme0", "protocol": "NVMe"},
            "serial_number": "NV1",
            "smart_status": {"passed": True},
            "power_on_time": {"hours": power_on},
            "nvme_self_test_log": {
                "current_self_test_operation": {"value": 0},
                "table": [
                    {
                        "self_test_code": {"value": 2, "string": "Extended"},
                        "self_test_result": {"value": 0, "string": "Completed without error"},
                        "power_on_hours": 500,
                    },
                    None,
                ],
            },
        }

    now = 1_780_000_000.0
    memory: dict[str, Any] = {}
    pins = SelfTestPins(memory, now)
    disk = pins.disk("serial:NV1")
    dev = parse_smartctl_json(nvme(510), now=now, pins=disk)
    pins.commit("serial:NV1", disk)
    assert dev.selftest("long").last_timestamp == now - 10 * H
    later = parse_smartctl_json(
        nvme(512), now=now + 5 * H, pins=SelfTestPins(memory, now + 5 * H).disk("serial:NV1")
    )
    assert later.selftest("long").last_timestamp == now - 10 * H
    # Without pins the parser estimates as before.
    plain = parse_smartctl_json(nvme(512), now=now + 5 * H)
    assert plain.selftest("long").last_timestamp == now + 5 * H - 12 * H
    assert DiskPins({}).pin(None, 1.0) == 1.0


# --------------------------------------------------------------------------- TrueNAS

# Tuesday 2026-03-10 13:00 in Berlin: the fake's history put a scrub on this very morning.
START = datetime(2026, 3, 10, 13, 0, tzinfo=BERLIN).timestamp()


@pytest.fixture
def nas_clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def scenario(nas_clock: FakeClock) -> TrueNASScenario:
    return homelab(nas_clock.time, release="25.04")


@pytest.fixture
async def nas(scenario: TrueNASScenario) -> AsyncIterator[FakeTrueNAS]:
    server = await start_fake_truenas(scenario)
    yield server
    await server.stop()


def truenas_source(fake: FakeTrueNAS) -> TrueNASSource:
    text = f"""
timezone: UTC
sources:
  nas:
    kind: truenas
    url: {fake.url}
    username: {fake.username}
    api_key: "{fake.api_key}"
    ca_file: {fake.ca_file}
"""
    source = TRUENAS.build(parse_config(text, kinds={"truenas": TRUENAS}).sources["nas"])
    assert isinstance(source, TrueNASSource)
    return source


async def test_truenas_selftest_times_are_pinned_across_polls_and_a_restart(
    nas: FakeTrueNAS, nas_clock: FakeClock, tmp_path: Path
) -> None:
    # The fake reports a fixed power_on_hours_ago (the disks sleep): re-estimated on every
    # poll, each test would move forward an hour per hour.
    first = Exporter(tmp_path / "state.db", nas_clock, truenas_source(nas))
    long_at = START - 500 * H
    where = lbl(source="nas", device="/dev/sda", test="long", type="", disk="")
    for poll in range(10):
        snap = await first.poll()
        sda = next(d for d in snap.smart if d.device == "/dev/sda")
        assert sda.selftest("long").last_timestamp == long_at, poll
        assert sda.selftest("short").last_timestamp == START - 10 * H, poll
        nas_clock.advance(H)
    assert first.samples()["backup_smart_selftest_last_timestamp_seconds", where] == long_at
    await first.stop()

    second = Exporter(tmp_path / "state.db", nas_clock, truenas_source(nas))
    snap = await second.poll()
    sdb = next(d for d in snap.smart if d.device == "/dev/sdb")
    # sdb's newest short test failed; its last success (34 h before START) is pinned too.
    assert sdb.selftest("short").last_success == START - 34 * H
    assert second.samples()["backup_smart_selftest_last_timestamp_seconds", where] == long_at
    await second.stop()


async def test_a_restart_after_a_resilver_does_not_make_the_scrub_overdue(
    nas: FakeTrueNAS, scenario: TrueNASScenario, nas_clock: FakeClock, tmp_path: Path
) -> None:
    scrub = dict(scenario.scan)
    assert scrub["function"] == "SCRUB" and scrub["state"] == "FINISHED"
    job = ("backup_job_overdue", lbl(source="nas", backup_job="scrub-storage", vmid=""))
    pool_end = ("backup_zfs_scrub_last_end_timestamp_seconds", lbl(source="nas", pool="storage"))
    first = Exporter(tmp_path / "state.db", nas_clock, truenas_source(nas))
    await first.poll()
    assert first.samples()[job] == 0
    await first.stop()

    # A disk is replaced: the resilver is now the pool's last scan and hides the scrub.
    nas_clock.advance(H)
    scenario.scan = {
        "function": "RESILVER",
        "state": "FINISHED",
        "start": nas_clock.time() - 1200,
        "end": nas_clock.time() - 600,
        "errors": 0,
    }
    second = Exporter(tmp_path / "state.db", nas_clock, truenas_source(nas))
    await second.poll()
    got = second.samples()
    assert got[job] == 0
    assert got[pool_end] == scrub["end"]
    await second.stop()

    # Without the memory the scrub would be judged from the pool's creation: overdue.
    forgetful = Poller(truenas_source(nas), clock=nas_clock)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector([forgetful], clock=nas_clock))
    assert (await forgetful.poll_once()).up
    text = generate_latest(registry).decode()
    overdue = {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert overdue[job] == 1


async def test_a_cloudsync_success_is_remembered_across_a_restart(
    nas: FakeTrueNAS, scenario: TrueNASScenario, nas_clock: FakeClock, tmp_path: Path
) -> None:
    b2 = scenario.task("B2 daily")
    assert b2.job is not None and b2.job["state"] == "SUCCESS"
    good_end = b2.job["time_finished"]
    first = Exporter(tmp_path / "state.db", nas_clock, truenas_source(nas))
    await first.poll()
    await first.stop()
    scenario.fail_cloudsync("B2 daily")
    nas_clock.advance(86400)  # through the next 01:30 run, which fails
    second = Exporter(tmp_path / "state.db", nas_clock, truenas_source(nas))
    await second.poll()
    assert b2.job["state"] == "FAILED"
    task = lbl(source="nas", task="B2 daily")
    got = second.samples()
    assert got["backup_cloudsync_last_success_timestamp_seconds", task] == good_end
    assert got["backup_cloudsync_last_failure_timestamp_seconds", task] == b2.job["time_finished"]
    memory = second.poller.memory
    assert memory["cloudsync"]["1"] == [good_end, b2.job["time_finished"]]
    assert memory["scrubs"]["storage"] == [scenario.scan["start"], scenario.scan["end"]]
    await second.stop()


# --------------------------------------------------------------------------- b2

MS = 1000
BUCKET_NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()


class CountingSim(RawSimulator):  # type: ignore[misc]
    """The simulated B2 service, counting every call that reaches it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def authorize_account(self, *args: Any, **kwargs: Any) -> Any:
        self._count("authorize_account")
        return super().authorize_account(*args, **kwargs)

    def list_buckets(self, *args: Any, **kwargs: Any) -> Any:
        self._count("list_buckets")
        return super().list_buckets(*args, **kwargs)

    def list_file_names(self, *args: Any, **kwargs: Any) -> Any:
        self._count("list_file_names")
        return super().list_file_names(*args, **kwargs)

    def download_file_from_url(self, *args: Any, **kwargs: Any) -> Any:
        self._count("download_file_from_url")
        return super().download_file_from_url(*args, **kwargs)


class B2World:
    """A simulated B2 account with one bucket of a few backups."""

    def __init__(self) -> None:
        seed = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=CountingSim))
        self.sim: CountingSim = seed.session.raw_api
        account, master = self.sim.create_account()
        seed.authorize_account(account, master)
        bucket = seed.create_bucket("homelab", "allPrivate")
        key = seed.create_key(["listBuckets", "listFiles", "readFiles"], "exporter")
        self.key_id, self.app_key = key.id_, key.application_key
        base = int((BUCKET_NOW - 86400) * MS)
        for i in range(5):
            name = f"pve/vzdump-{i}.vma.zst"
            bucket.upload_bytes(b"p" * (100 + i), name, custom_upload_timestamp=base + i * MS)
        for i in range(3):
            bucket.upload_bytes(
                b"i" * 50, f"immich/{i}.jpg", custom_upload_timestamp=base + i * 60 * MS
            )
        self.sim.calls.clear()

    def factory(self) -> B2Api:
        api = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=RawSimulator))
        api.session.raw_api = self.sim
        return api

    def source(self, prefixes: str = "[pve/, immich/]") -> B2Source:
        text = f"""
timezone: UTC
sources:
  b2:
    kind: b2
    key_id: {self.key_id}
    application_key: {self.app_key}
    buckets:
      homelab:
        prefixes: {prefixes}
        restore_check: {{canary: pve/vzdump-0.vma.zst, interval: 7d}}
"""
        return B2Source(
            parse_config(text).sources["b2"],
            api_factory=self.factory,
            rng=random.Random(1),
            sleep=lambda _s: None,
        )


def bucket_series(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0].startswith(("backup_bucket_", "backup_rest"))}


async def test_b2_restart_lists_nothing_before_the_interval(tmp_path: Path) -> None:
    world = B2World()
    clock = FakeClock(BUCKET_NOW)
    first = Exporter(tmp_path / "state.db", clock, world.source())
    snap = await first.poll()
    assert world.sim.calls["list_file_names"] >= 2
    assert world.sim.calls["download_file_from_url"] == 1
    assert snap.buckets[0].restore.success
    before = bucket_series(first.samples())
    await first.stop()

    clock.advance(600)  # restarted ten minutes later (an upgrade, a crash loop)
    world.sim.calls.clear()
    second = Exporter(tmp_path / "state.db", clock, world.source())
    restored = await second.poll()
    assert world.sim.calls == {}, "no call at all reached B2"
    assert sum(second.poller.requests.values()) == 0
    assert restored == snap
    assert bucket_series(second.samples()) == before

    # Once the bucket interval (6h) has passed, it is listed again, but the restore check
    # (7d) is not repeated.
    clock.advance(6 * H - 600)
    relisted = await second.poll()
    assert world.sim.calls["list_file_names"] >= 2
    assert "download_file_from_url" not in world.sim.calls
    assert relisted.buckets[0].prefixes[0].listed_at == clock.time()
    assert relisted.buckets[0].restore == snap.buckets[0].restore
    await second.stop()

    # A prefix added to the config is listed at the next start, whatever the interval.
    clock.advance(60)
    world.sim.calls.clear()
    third = Exporter(tmp_path / "state.db", clock, world.source("[pve/, immich/, docs/]"))
    changed = await third.poll()
    assert world.sim.calls["list_file_names"] >= 3
    assert [p.prefix for p in changed.buckets[0].prefixes] == ["pve/", "immich/", "docs/"]
    assert "download_file_from_url" not in world.sim.calls
    await third.stop()


async def test_a_stored_bucket_memory_that_does_not_decode_means_a_listing() -> None:
    world = B2World()
    clock = FakeClock(BUCKET_NOW)
    memory: dict[str, Any] = {"buckets": {"homelab": {"listed_from": "yesterday"}, "gone": {}}}
    assert decode(memory["buckets"]["homelab"]) is None
    snap = await world.source().fetch(FetchContext(clock=clock, memory=memory))
    assert world.sim.calls["list_file_names"] >= 2
    assert set(memory["buckets"]) == {"homelab"}, "unconfigured buckets are dropped"
    stored = decode(copy.deepcopy(memory["buckets"]["homelab"]))
    assert stored is not None and stored.prefixes == snap.buckets[0].prefixes
    assert stored.restore == snap.buckets[0].restore


# --------------------------------------------------------------------------- s3


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()[1]
    finally:
        server.stop()


async def test_s3_restart_lists_nothing_before_the_interval(moto_port: int, tmp_path: Path) -> None:
    from test_s3 import FaultProxy  # the counting proxy in front of moto

    seed = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{moto_port}",
        region_name="us-east-1",
        aws_access_key_id="seed",
        aws_secret_access_key="seed",
        config=Config(
            s3={"addressing_style": "path"}, request_checksum_calculation="when_required"
        ),
    )
    seed.create_bucket(Bucket="memory")
    for i in range(4):
        seed.put_object(Bucket="memory", Key=f"restic/data/{i}", Body=b"r" * (10 + i))
    proxy = FaultProxy(moto_port)
    proxy.thread.start()
    try:
        text = f"""
timezone: UTC
sources:
  storj:
    kind: s3
    endpoint: {proxy.url}
    access_key_id: exporter
    secret_access_key: "s3cr3t-value"
    buckets:
      memory:
        prefixes: [restic/]
        restore_check: {{max_bytes: 1KiB}}
"""
        now = datetime.now(UTC).timestamp() + 60  # moto stamps uploads with the wall clock
        clock = FakeClock(now)
        first = Exporter(
            tmp_path / "state.db", clock, S3Source(parse_config(text).sources["storj"])
        )
        snap = await first.poll()
        assert proxy.counts["list"] >= 1 and proxy.counts["get"] == 1
        assert snap.buckets[0].restore.success
        assert snap.buckets[0].prefixes[0].objects == 4
        await first.stop()

        clock.advance(timedelta(minutes=30).total_seconds())
        proxy.counts.clear()
        second = Exporter(
            tmp_path / "state.db", clock, S3Source(parse_config(text).sources["storj"])
        )
        restored = await second.poll()
        assert sum(proxy.counts.values()) == 0, "no request reached the S3 service"
        assert sum(second.poller.requests.values()) == 0
        assert restored == snap

        clock.advance(6 * H)
        relisted = await second.poll()
        assert proxy.counts["list"] >= 1
        assert proxy.counts["get"] == 0, "the restore check waits for its own interval"
        assert relisted.buckets[0].restore == snap.buckets[0].restore
        await second.stop()
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()
