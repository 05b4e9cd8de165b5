"""Per-target status: one failing bucket or PVE storage leaves the others untouched.

Against the fakes: b2sdk's RawSimulator, moto behind the FaultProxy of tests/test_s3.py and the
fake PVE API (a storage whose content listing is slow or fails). Each test polls once with
every target healthy, breaks one target, polls again and checks that the source stays up,
the broken target is ``backup_target_up 0`` with its reason and its last-known series, and
every other target's series and job states are what a poll without the fault gives.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import yaml
from b2sdk.v3 import B2Api, B2HttpApiConfig, InMemoryAccountInfo, RawSimulator
from b2sdk.v3.exception import interpret_b2_error
from test_proxmox import exposition, samples
from test_s3 import FaultProxy, moto_port, seed_client
from test_truenas import START as NAS_START
from test_truenas import make_source as truenas_source
from test_zfs import FIXTURES, FakeTools, tools

from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import ConfigError, parse_config
from exporter.core.poller import Poller
from exporter.sim.pve import FakePVE, PVEScenario, homelab, start_fake_pve
from exporter.sim.truenas import homelab as nas_homelab
from exporter.sim.truenas import start_fake_truenas
from exporter.sources.b2.source import B2Source
from exporter.sources.base import FetchContext, FetchError
from exporter.sources.proxmox.model import ProxmoxSnapshot
from exporter.sources.proxmox.source import SPEC as PVE_SPEC
from exporter.sources.proxmox.source import ProxmoxSource
from exporter.sources.s3.source import S3Source
from exporter.sources.targets import TargetStatus
from exporter.sources.zfs.source import ZfsConfig, ZfsSource

__all__ = ["moto_port", "tools"]  # fixtures shared with tests/test_s3.py and tests/test_zfs.py

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
MS = 1000
# 2026-01-29 21:00:03 UTC, the time of a real vzdump archive name (docs/backends.md §5).
BASE_MS = 1_769_720_403_000
NOW = BASE_MS / MS + 40 * 86400


def about(values: Samples, label: str, value: str) -> Samples:
    """The samples whose ``label`` is ``value`` (one bucket's or one storage's series)."""
    return {k: v for k, v in values.items() if (label, value) in k[1]}


def targets(values: Samples) -> dict[str, float]:
    return {dict(k[1])["target"]: v for k, v in values.items() if k[0] == "backup_target_up"}


def reasons(values: Samples) -> dict[str, str]:
    return {
        dict(k[1])["target"]: dict(k[1])["reason"]
        for k in values
        if k[0] == "backup_target_error_info"
    }


# ------------------------------------------------------------------------------ b2


class FaultySim(RawSimulator):  # type: ignore[misc]
    """The B2 simulator with faults per bucket: 500s, or a listing slower than allowed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail: set[str] = set()
        self.slow: dict[str, threading.Event] = {}
        self.lists: Counter[str] = Counter()

    def list_file_names(self, api_url: str, token: str, bucket_id: str, *a: Any, **kw: Any) -> Any:
        name = self._get_bucket_by_id(bucket_id).bucket_name
        self.lists[name] += 1
        if name in self.slow:
            # A slow page: it answers, but after the bucket's own timeout.
            self.slow[name].wait(2.0)
        if name in self.fail:
            raise interpret_b2_error(500, "internal_error", "injected failure", {})
        return super().list_file_names(api_url, token, bucket_id, *a, **kw)


class B2World:
    def __init__(self) -> None:
        self.seed = B2Api(
            InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=FaultySim)
        )
        self.sim: FaultySim = self.seed.session.raw_api
        account, master = self.sim.create_account()
        self.seed.authorize_account(account, master)
        self.buckets = {n: self.seed.create_bucket(n, "allPrivate") for n in ("homelab", "photos")}
        key = self.seed.create_key(["listBuckets", "listFiles", "readFiles"], "exporter")
        self.key_id, self.app_key = key.id_, key.application_key

    def upload(self, bucket: str, name: str, size: int, ms: int) -> None:
        fv = self.buckets[bucket].upload_bytes(b"x" * size, name, custom_upload_timestamp=ms)
        # As in tests/test_b2.py: make sure the simulator recorded the time we gave it.
        self.sim.bucket_name_to_bucket[bucket].file_id_to_file[fv.id_].upload_timestamp = ms

    def factory(self) -> B2Api:
        api = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=RawSimulator))
        api.session.raw_api = self.sim
        return api

    def config(self, extra: str = "") -> str:
        return f"""
timezone: UTC
sources:
  b2:
    kind: b2
    key_id: {self.key_id}
    application_key: {self.app_key}
    interval: 1h
    {extra}
    buckets:
      homelab: {{prefixes: [pve/]}}
      photos: {{prefixes: [immich/]}}
jobs:
  pve-offsite:
    schedule: "0 3 * * *"
    grace: 6h
    evidence: {{source: b2, bucket: homelab, prefix: pve/}}
  photos-offsite:
    schedule: "0 3 * * *"
    grace: 6h
    evidence: {{source: b2, bucket: photos, prefix: immich/}}
"""


@pytest.fixture
def b2world() -> B2World:
    w = B2World()
    for i in range(5):
        w.upload("homelab", f"pve/vzdump-{i}.vma.zst", 100 + i, BASE_MS + i * 60_000)
        w.upload("photos", f"immich/p-{i}.jpg", 10 + i, BASE_MS + i * 60_000)
    return w


def b2_setup(w: B2World, extra: str = "") -> tuple[Poller, SnapshotCollector, FakeClock]:
    config = parse_config(w.config(extra))
    clock = FakeClock(NOW)
    source = B2Source(config.sources["b2"], api_factory=w.factory, sleep=lambda _s: None)
    poller = Poller(source, clock=clock)
    return poller, SnapshotCollector([poller], clock=clock, jobs=config.jobs), clock


def scrape(collector: SnapshotCollector) -> Samples:
    return samples(exposition(collector.collect()))


def job_states(collector: SnapshotCollector) -> dict[str, str]:
    return {s.spec.name: s.state for s in collector.job_statuses()}


async def test_one_failing_b2_bucket_leaves_the_other_untouched(b2world: B2World) -> None:
    w = b2world
    poller, collector, clock = b2_setup(w, "retries: 0")
    assert (await poller.poll_once()).up
    first = scrape(collector)
    assert targets(first) == {"bucket/homelab": 1.0, "bucket/photos": 1.0}
    assert reasons(first) == {}
    # A day later both buckets got a new object; photos' listing fails from now on.
    clock.advance(86400)
    new_ms = int(clock.time() * MS) - 3600 * MS
    w.upload("homelab", "pve/vzdump-new.vma.zst", 999, new_ms)
    w.upload("photos", "immich/p-new.jpg", 77, new_ms)
    w.sim.fail.add("photos")
    state = await poller.poll_once()
    assert state.up, "one bucket failing does not fail its source"
    second = scrape(collector)
    assert targets(second) == {"bucket/homelab": 1.0, "bucket/photos": 0.0}
    assert reasons(second) == {"bucket/photos": "http"}
    # photos keeps its last listing, series for series.
    assert about(second, "bucket", "photos") == about(first, "bucket", "photos")
    # homelab is listed as if nothing had happened: compare with a poll without the fault.
    where = frozenset({"source": "b2", "bucket": "homelab", "prefix": "pve/"}.items())
    assert second[("backup_bucket_objects", where)] == 6
    assert second[("backup_bucket_newest_object_timestamp_seconds", where)] == new_ms / MS
    w.sim.fail.clear()
    healthy, hcollector, hclock = b2_setup(w, "retries: 0")
    hclock.now = clock.now
    assert (await healthy.poll_once()).up
    assert about(second, "bucket", "homelab") == about(scrape(hcollector), "bucket", "homelab")
    # The job states: homelab's job is judged on its fresh evidence like in the healthy poll.
    assert job_states(collector)["pve-offsite"] == job_states(hcollector)["pve-offsite"] == "ok"
    # Recovery: photos is listed again at the next poll and is up.
    clock.advance(3600)
    assert (await poller.poll_once()).up
    third = scrape(collector)
    assert targets(third) == {"bucket/homelab": 1.0, "bucket/photos": 1.0}
    assert reasons(third) == {}
    photos = frozenset({"source": "b2", "bucket": "photos", "prefix": "immich/"}.items())
    assert third[("backup_bucket_objects", photos)] == 6


async def test_a_slow_bucket_times_out_alone_and_the_next_bucket_gets_its_full_time(
    b2world: B2World,
) -> None:
    w = b2world
    # homelab (listed first) answers after 2 s, its own timeout is 300 ms; the poll has 5 s.
    poller, collector, _clock = b2_setup(
        w, "retries: 0\n    timeout: 5s\n    target_timeout: 300ms"
    )
    release = threading.Event()
    w.sim.slow["homelab"] = release
    try:
        state = await poller.poll_once()
    finally:
        release.set()
    assert state.up
    got = scrape(collector)
    assert targets(got) == {"bucket/homelab": 0.0, "bucket/photos": 1.0}
    assert reasons(got) == {"bucket/homelab": "timeout"}
    assert about(got, "bucket", "homelab") == {}, "never listed: no value, not zero"
    photos = frozenset({"source": "b2", "bucket": "photos", "prefix": "immich/"}.items())
    assert got[("backup_bucket_objects", photos)] == 5
    assert w.sim.lists["homelab"] == 1, "one attempt (retries: 0), no retry after the timeout"


async def test_every_bucket_failing_while_the_api_answers_keeps_the_source_up(
    b2world: B2World,
) -> None:
    w = b2world
    poller, collector, _clock = b2_setup(w, "retries: 0")
    w.sim.fail.update({"homelab", "photos"})
    state = await poller.poll_once()
    # The login worked: the API is reachable; what fails is each bucket's listing.
    assert state.up
    got = scrape(collector)
    assert targets(got) == {"bucket/homelab": 0.0, "bucket/photos": 0.0}
    assert not [k for k in got if k[0] == "backup_bucket_objects"]
    # Unknown is never success: the jobs have no evidence, and a run is long due.
    assert set(job_states(collector).values()) == {"overdue"}


async def test_wrong_key_fails_the_whole_source(b2world: B2World) -> None:
    w = b2world
    text = w.config().replace(w.app_key, "not-the-key")
    config = parse_config(text)
    source = B2Source(config.sources["b2"], api_factory=w.factory, sleep=lambda _s: None)
    state = await Poller(source, clock=FakeClock(NOW)).poll_once()
    assert (state.up, state.reason) == (False, "auth")


# ------------------------------------------------------------------------------ s3 (moto)


@pytest.fixture
def proxy(moto_port: int) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_port)
    p.thread.start()
    try:
        yield p
    finally:
        p.server.shutdown()
        p.server.server_close()


@pytest.fixture(scope="module")
def two_buckets(moto_port: int) -> None:
    c = seed_client(moto_port)
    for name in ("tgt-a", "tgt-b"):
        c.create_bucket(Bucket=name)
        for i in range(3):
            c.put_object(Bucket=name, Key=f"restic/data-{i}", Body=b"d" * (i + 1))


async def test_one_failing_s3_bucket_leaves_the_other_untouched(
    two_buckets: None, proxy: FaultProxy
) -> None:
    text = f"""
timezone: UTC
sources:
  storj:
    kind: s3
    endpoint: {proxy.url}
    access_key_id: exporter
    secret_access_key: "s3cr3t-value"
    retries: 0
    buckets:
      tgt-a: {{prefixes: [restic/]}}
      tgt-b: {{prefixes: [restic/]}}
"""
    clock = FakeClock(NOW)
    source = S3Source(parse_config(text).sources["storj"], rng=random.Random(1))
    poller = Poller(source, clock=clock)
    good = await poller.poll_once()
    assert good.up, good.error
    first = samples(exposition(source.render(good.snapshot)))
    clock.advance(7 * 3600)
    proxy.fail_buckets.add("tgt-b")
    state = await poller.poll_once()
    assert state.up
    assert state.snapshot.targets == (
        TargetStatus("bucket/tgt-a", up=True),
        TargetStatus(
            "bucket/tgt-b",
            up=False,
            reason="http",
            message=state.snapshot.targets[1].message,
        ),
    )
    assert "InternalError" in state.snapshot.targets[1].message
    assert "s3cr3t" not in state.snapshot.targets[1].message
    second = samples(exposition(source.render(state.snapshot)))
    assert about(second, "bucket", "tgt-b") == about(first, "bucket", "tgt-b")
    # tgt-a was listed again (a new listing time), with the same objects.
    a = frozenset({"source": "storj", "bucket": "tgt-a", "prefix": "restic/"}.items())
    assert second[("backup_bucket_objects", a)] == first[("backup_bucket_objects", a)] == 3
    listed = "backup_bucket_last_listing_timestamp_seconds"
    assert second[(listed, a)] == clock.time() > first[(listed, a)]
    assert reasons(second) == {"bucket/tgt-b": "http"}


# ------------------------------------------------------------------------------ proxmox


def pve_config(fake: FakePVE, **extra: Any) -> str:
    source = {
        "kind": "proxmox",
        "url": fake.url,
        "token_id": fake.token_id,
        "token_secret": fake.token_secret,
        "ca_file": fake.ca_file,
        "timezone": "Europe/Berlin",
        "interval": "5m",
        "timeout": "5s",
        "target_timeout": "500ms",
        **extra,
    }
    return yaml.safe_dump({"sources": {"pve1": source}})


START = 1_780_000_000.0  # 2026-05-28 22:26:40 in Berlin, after that day's runs


@pytest.fixture
async def pbs_fake() -> AsyncIterator[tuple[FakePVE, PVEScenario, FakeClock]]:
    clock = FakeClock(START)
    scenario = homelab(clock.time, pbs=True)
    fake = await start_fake_pve(scenario)
    yield fake, scenario, clock
    await fake.stop()


def pve_source(fake: FakePVE) -> ProxmoxSource:
    config = parse_config(pve_config(fake), kinds={"proxmox": PVE_SPEC})
    source = PVE_SPEC.build(config.sources["pve1"])
    assert isinstance(source, ProxmoxSource)
    return source


@pytest.mark.parametrize("fault", ["slow", "http"])
async def test_one_slow_or_failing_pve_storage_leaves_the_other_untouched(
    pbs_fake: tuple[FakePVE, PVEScenario, FakeClock], fault: str
) -> None:
    fake, scenario, clock = pbs_fake
    source = pve_source(fake)
    memory: dict[str, Any] = {}
    poller = Poller(source, clock=clock, memory=memory)
    collector = SnapshotCollector([poller], clock=clock)
    try:
        assert (await poller.poll_once()).up
        first = scrape(collector)
        assert targets(first) == {
            "storage/local": 1.0,
            "storage/pbs-offsite": 1.0,
            "storage/truenas-backups": 1.0,
        }
        jobs_before = job_states(collector)
        # The PBS datastore hangs (answers after 3 s, its listing may take 0.5 s) or fails.
        pbs = scenario.storage("pbs-offsite")
        if fault == "slow":
            pbs.content_delay = 3.0
        else:
            pbs.content_fail_status = 500
        state = await poller.poll_once()
        assert state.up, "one storage failing does not fail its source"
        second = scrape(collector)
        assert targets(second) == {
            "storage/local": 1.0,
            "storage/pbs-offsite": 0.0,
            "storage/truenas-backups": 1.0,
        }
        assert reasons(second) == {"storage/pbs-offsite": "timeout" if fault == "slow" else "http"}
        # Both storages' series, the PBS one from its last-known archives, are unchanged
        # (the fake's clock did not move: nothing else changed either).
        for sid in ("local", "pbs-offsite", "truenas-backups"):
            assert about(second, "storage", sid) == about(first, "storage", sid), sid
        assert job_states(collector) == jobs_before
        assert set(jobs_before.values()) == {"ok"}
        # A restart while the storage is down: its archives come from the source's memory.
        restarted = pve_source(fake)
        try:
            again = Poller(restarted, clock=clock, memory=memory)
            state = await again.poll_once()
            assert state.up
            assert isinstance(state.snapshot, ProxmoxSnapshot)
            third = samples(exposition(restarted.render(state.snapshot)))
            assert about(third, "storage", "pbs-offsite") == about(first, "storage", "pbs-offsite")
        finally:
            await restarted.close()
    finally:
        await source.close()


# ------------------------------------------------------------------------------ zfs


async def test_zfs_dataset_listing_is_a_target_per_pool(tools: FakeTools) -> None:
    tools.set("zfs_list", file=str(FIXTURES / "zfs" / "zfs_list_hp.txt"))
    tools.set("zpool_status", file=str(FIXTURES / "zfs" / "zpool_status_two_pools.txt"))
    source = ZfsSource(
        ZfsConfig(
            name="nas",
            kind="zfs",
            interval=300.0,
            timeout=10.0,
            target_timeout=2.0,
            json="false",
        )
    )
    ctx = FetchContext(clock=FakeClock(NOW))
    first = await source.fetch(ctx)
    before = samples(exposition(source.render(first)))
    assert targets(before) == {"dataset/tank": 1.0, "dataset/backup": 1.0}
    datasets = {k: v for k, v in before.items() if k[0].startswith("backup_zfs_dataset")}
    assert datasets
    # `zfs list` hangs (a pool with very many snapshots): killed at its own 2 s, the pools
    # are still read and the datasets keep their last-known values.
    tools.set("zfs_list", hang=True)
    second = await source.fetch(ctx)
    after = samples(exposition(source.render(second)))
    assert targets(after) == {"dataset/tank": 0.0, "dataset/backup": 0.0}
    assert reasons(after) == {"dataset/tank": "timeout", "dataset/backup": "timeout"}
    assert second.datasets == first.datasets
    assert {k: v for k, v in after.items() if k[0].startswith("backup_zfs_dataset")} == datasets
    pools = {k: v for k, v in before.items() if k[0].startswith("backup_zfs_pool")}
    assert {k: v for k, v in after.items() if k[0].startswith("backup_zfs_pool")} == pools
    assert [c["tool"] for c in tools.calls()][-2:] == ["zfs", "zpool"], "the pools were read"
    # A refused listing is the target's too; a host that cannot run ZFS is the source's.
    tools.set("zfs_list", stderr="cannot open 'tank': permission denied\n", rc=1)
    third = samples(exposition(source.render(await source.fetch(ctx))))
    assert reasons(third) == {"dataset/tank": "permission", "dataset/backup": "permission"}
    tools.set("zfs_list", stderr="failed to initialize ZFS library\n", rc=1)
    with pytest.raises(FetchError) as err:
        await source.fetch(ctx)
    assert err.value.reason == "connection"


# ------------------------------------------------------------------------------ truenas


@pytest.mark.parametrize("release", ["24.10", "25.10"])
async def test_truenas_dataset_listing_fails_alone(release: str) -> None:
    clock = FakeClock(NAS_START)
    scenario = nas_homelab(clock.time, release=release)
    fake = await start_fake_truenas(scenario)
    try:
        source = truenas_source(fake, "    timeout: 10s\n    target_timeout: 500ms")
        poller = Poller(source, clock=clock)
        collector = SnapshotCollector([poller], clock=clock)
        assert (await poller.poll_once()).up
        first = scrape(collector)
        pools = set(targets(first))
        assert pools and all(t.startswith("dataset/") for t in pools)
        jobs_before = job_states(collector)
        # The snapshot listing answers after 3 s: only the dataset listing times out.
        snapshot_method = "zfs.snapshot.query" if release == "24.10" else "pool.snapshot.query"
        scenario.slow_methods[snapshot_method] = 3.0
        state = await poller.poll_once()
        assert state.up
        second = scrape(collector)
        assert targets(second) == dict.fromkeys(pools, 0.0)
        assert set(reasons(second).values()) == {"timeout"}

        # Datasets keep their last-known values; everything else (pools, cloud sync, SMART,
        # job states) was read as usual.
        def kept(values: Samples) -> Samples:
            skip = ("backup_target_", "backup_source_api_requests_total")
            return {k: v for k, v in values.items() if not k[0].startswith(skip)}

        assert kept(second) == kept(first)
        assert job_states(collector) == jobs_before
        # A key without the DATASET_READ role: the listing is refused, the rest is read.
        del scenario.slow_methods[snapshot_method]
        scenario.denied_methods.add("pool.dataset.query")
        state = await poller.poll_once()
        assert state.up
        assert set(reasons(scrape(collector)).values()) == {"permission"}
        scenario.denied_methods.clear()
        assert (await poller.poll_once()).up
        assert reasons(scrape(collector)) == {}
    finally:
        await fake.stop()


# ------------------------------------------------------------------------------ config


def test_target_timeout_defaults_to_half_the_timeout_and_must_be_shorter() -> None:
    base = """
sources:
  b2:
    kind: b2
    key_id: k
    application_key: s
    timeout: 60s
    {extra}
    buckets: {{homelab: {{}}}}
"""
    cfg = parse_config(base.format(extra="")).sources["b2"]
    assert cfg.bucket_timeout == 30.0  # type: ignore[attr-defined]
    cfg = parse_config(base.format(extra="target_timeout: 10s")).sources["b2"]
    assert cfg.bucket_timeout == 10.0  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="target_timeout: must be shorter than timeout"):
        parse_config(base.format(extra="target_timeout: 60s"))
    with pytest.raises(ConfigError, match="target_timeout"):
        parse_config(base.format(extra="target_timeout: soon"))


def test_pve_target_timeout_is_checked() -> None:
    text = """
sources:
  pve1:
    kind: proxmox
    url: https://pve.example:8006
    token_id: monitor@pve!exporter
    token_secret: x
    timeout: 20s
    target_timeout: {value}
"""
    assert parse_config(text.format(value="5s")).sources["pve1"].storage_timeout == 5.0  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="target_timeout: must be shorter than timeout"):
        parse_config(text.format(value="30s"))
