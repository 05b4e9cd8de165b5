"""``kind: b2`` against b2sdk's RawSimulator (in-process, no network)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from b2sdk.v3 import B2Api, B2HttpApiConfig, Bucket, InMemoryAccountInfo, RawSimulator
from b2sdk.v3.exception import B2RequestTimeout, ServiceError, interpret_b2_error
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.buckets.model import BucketsSnapshot
from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import ConfigError, parse_config
from exporter.core.poller import Poller
from exporter.sources.b2.source import B2Source, _OneTryB2Http, b2_error, production_api

MS = 1000
# 2026-01-29 21:00:03 UTC, the time of a real vzdump archive name (docs/backends.md §5).
BASE_MS = 1_769_720_403_000
NOW = BASE_MS / MS + 40 * 86400  # the exporter runs well after every upload
PAGE = 1000
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class CountingSim(RawSimulator):  # type: ignore[misc]
    """The simulated B2 service; counts the calls that reach it and injects faults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()
        self.fail_lists = False
        self.hang: threading.Event | None = None
        self.hung = threading.Event()

    def authorize_account(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["authorize_account"] += 1
        return super().authorize_account(*args, **kwargs)

    def list_buckets(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["list_buckets"] += 1
        return super().list_buckets(*args, **kwargs)

    def list_file_names(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["list_file_names"] += 1
        if self.hang is not None:
            self.hung.set()
            self.hang.wait(30)
        if self.fail_lists:
            raise interpret_b2_error(500, "internal_error", "injected failure", {})
        return super().list_file_names(*args, **kwargs)

    def download_file_from_url(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["download_file_from_url"] += 1
        return super().download_file_from_url(*args, **kwargs)


@dataclass
class World:
    """A seeded simulator plus what the test uploaded (the independent expectation)."""

    sim: CountingSim
    seed: B2Api
    bucket: Bucket
    key_id: str
    app_key: str
    latest: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (size, ms)
    file_ids: dict[str, str] = field(default_factory=dict)

    def upload(self, name: str, data: bytes, ms: int, **kwargs: Any) -> None:
        fv = self.bucket.upload_bytes(data, name, custom_upload_timestamp=ms, **kwargs)
        stored = self.sim.bucket_name_to_bucket["homelab"].file_id_to_file[fv.id_]
        if stored.upload_timestamp != ms:
            # The simulator ignores custom_upload_timestamp for large files (>= 2 parts of
            # its 200-byte minimum); set the time the real service would have recorded.
            stored.upload_timestamp = ms
        self.latest[name] = (len(data), ms)
        self.file_ids[name] = fv.id_

    def hide(self, name: str) -> None:
        self.bucket.hide_file(name)
        del self.latest[name]

    def expected(self, prefix: str) -> tuple[int, int, float, float]:
        rows = [v for k, v in self.latest.items() if k.startswith(prefix)]
        return (
            len(rows),
            sum(size for size, _ in rows),
            max(ms for _, ms in rows) / MS,
            min(ms for _, ms in rows) / MS,
        )

    def factory(self) -> B2Api:
        api = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=RawSimulator))
        api.session.raw_api = self.sim
        return api

    def corrupt(self, name: str) -> None:
        """Flip the stored bytes, keeping the recorded SHA-1 (what bit rot looks like)."""
        stored = self.sim.bucket_name_to_bucket["homelab"].file_id_to_file[self.file_ids[name]]
        stored.data_bytes = bytes(b ^ 0xFF for b in stored.data_bytes)


def body(i: int, size: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (size // 32) + b"x" * (size % 32)


@pytest.fixture
def world() -> World:
    seed = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=CountingSim))
    sim = seed.session.raw_api
    account, master = sim.create_account()
    seed.authorize_account(account, master)
    bucket = seed.create_bucket("homelab", "allPrivate")
    key = seed.create_key(["listBuckets", "listFiles", "readFiles"], "exporter")
    w = World(sim=sim, seed=seed, bucket=bucket, key_id=key.id_, app_key=key.application_key)
    minute = 60 * MS
    # immich/: versions (a second upload of the same name), hidden names, an unfinished
    # large file; only the latest visible versions count.
    for i in range(12):
        w.upload(f"immich/photo-{i:03d}.jpg", body(i, 300 + 17 * i), BASE_MS + i * minute)
    w.upload("immich/db.sql", b"v1" * 10, BASE_MS + 20 * minute)
    w.upload("immich/db.sql", b"v2" * 40, BASE_MS + 30 * minute)
    w.upload("immich/gone.jpg", b"old" * 100, BASE_MS + 40 * minute)  # newest, but hidden
    w.hide("immich/gone.jpg")
    w.upload("immich/photo-000.jpg", body(99, 777), BASE_MS + 35 * minute)
    w.hide("immich/photo-000.jpg")  # hidden after a second version
    w.seed.session.start_large_file(bucket.id_, "immich/unfinished.bin", "b2/x-auto", {})
    # pve/: several list pages.
    for i in range(2 * PAGE + 50):
        w.upload(f"pve/vzdump-{i:05d}.vma.zst", b"z" * (i % 7), BASE_MS + i * 1000)
    # docs/: a large file (content_sha1 "none", whole-file SHA-1 in file info).
    big = body(7, 1024)
    large_sha1 = hashlib.sha1(big).hexdigest()
    w.upload("docs/large.tar", big, BASE_MS - 86400 * MS, large_file_sha1=large_sha1)
    w.upload("docs/readme.txt", b"hello", BASE_MS + 86400 * MS)
    w.upload("other/not-watched.bin", b"q" * 50, BASE_MS + 90 * 86400 * MS)
    w.sim.calls.clear()
    return w


def config_yaml(w: World, *, restore: str = "", extra: str = "", prefixes: str = "") -> str:
    prefixes = prefixes or "[immich/, pve/, docs/]"
    return f"""
timezone: UTC
sources:
  b2:
    kind: b2
    key_id: {w.key_id}
    application_key: {w.app_key}
    {extra}
    buckets:
      homelab:
        prefixes: {prefixes}
        {restore}
"""


def make_source(w: World, text: str, *, seed: int = 7) -> B2Source:
    config = parse_config(text)
    return B2Source(
        config.sources["b2"],
        api_factory=w.factory,
        rng=random.Random(seed),
        sleep=lambda _s: None,
    )


def exposition(metrics: list[Metric]) -> str:
    class _C:
        def collect(self) -> list[Metric]:
            return metrics

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_C())  # type: ignore[arg-type]
    return generate_latest(reg).decode()


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def lbl(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset(kw.items())


# ------------------------------------------------------------------------------ listing


async def test_listing_counts_latest_visible_versions_and_every_page(world: World) -> None:
    clock = FakeClock(NOW)
    source = make_source(world, config_yaml(world))
    poller = Poller(source, clock=clock)
    state = await poller.poll_once()
    assert state.up, state.error
    got = samples(exposition(list(source.render(state.snapshot))))
    for prefix in ("immich/", "pve/", "docs/"):
        count, size, newest, oldest = world.expected(prefix)
        where = lbl(source="b2", bucket="homelab", prefix=prefix)
        assert got["backup_bucket_objects", where] == count
        assert got["backup_bucket_size_bytes", where] == size
        assert got["backup_bucket_newest_object_timestamp_seconds", where] == newest
        assert got["backup_bucket_oldest_object_timestamp_seconds", where] == oldest
        assert got["backup_bucket_last_listing_timestamp_seconds", where] == NOW
    # The hidden names and the first db.sql version are not counted.
    assert world.expected("immich/")[0] == 12  # photo-001..011 + db.sql
    # Every call that reached the simulated service was counted, by billing class.
    calls = world.sim.calls
    assert calls["list_file_names"] >= 3 + 1 + 1, "pve/ alone needs three pages"
    assert poller.requests["C"] == (
        calls["list_file_names"] + calls["authorize_account"] + calls["list_buckets"]
    )
    assert poller.requests["B"] == 0 == calls["download_file_from_url"]
    # Cost: listed bytes at the B2 default $6/TB-month.
    total = sum(world.expected(p)[1] for p in ("immich/", "pve/", "docs/"))
    cost = got["backup_bucket_estimated_monthly_cost_dollars", lbl(source="b2", bucket="homelab")]
    assert cost == pytest.approx(total / 1e12 * 6.0)


async def test_whole_bucket_when_no_prefix_is_configured(world: World) -> None:
    text = config_yaml(world).replace("        prefixes: [immich/, pve/, docs/]\n", "")
    source = make_source(world, text)
    poller = Poller(source, clock=FakeClock(NOW))
    state = await poller.poll_once()
    assert state.up, state.error
    (stats,) = state.snapshot.buckets[0].prefixes
    count, size, newest, oldest = world.expected("")
    assert (stats.prefix, stats.objects, stats.size_bytes) == ("", count, size)
    assert (stats.newest, stats.oldest) == (newest, oldest)


async def test_bucket_is_relisted_only_after_its_own_interval(world: World) -> None:
    clock = FakeClock(NOW)
    source = make_source(world, config_yaml(world, restore="interval: 6h"))
    poller = Poller(source, clock=clock)
    await poller.poll_once()
    lists = world.sim.calls["list_file_names"]
    world.upload("immich/new.jpg", b"n" * 10, int((NOW + 100) * MS))
    clock.advance(3600)  # the poller wakes up hourly...
    state = await poller.poll_once()
    assert state.up
    assert world.sim.calls["list_file_names"] == lists, "...but the bucket is not due yet"
    immich = state.snapshot.buckets[0].prefixes[0]
    assert immich.listed_at == NOW
    assert immich.objects == world.expected("immich/")[0] - 1
    clock.advance(5 * 3600)
    state = await poller.poll_once()
    assert world.sim.calls["list_file_names"] > lists
    immich = state.snapshot.buckets[0].prefixes[0]
    assert immich.listed_at == NOW + 6 * 3600
    assert immich.objects == world.expected("immich/")[0]
    assert immich.newest == NOW + 100


# ------------------------------------------------------------------------------ restore


def restore_yaml(**kw: str) -> str:
    inner = ", ".join(f"{k}: {v}" for k, v in kw.items())
    return f"restore_check: {{{inner}}}"


async def test_random_restore_check_passes_and_reports_bytes(world: World) -> None:
    source = make_source(world, config_yaml(world, restore=restore_yaml(max_bytes="4KiB")))
    poller = Poller(source, clock=FakeClock(NOW))
    state = await poller.poll_once()
    assert state.up, state.error
    result = state.snapshot.buckets[0].restore
    assert result is not None
    assert result.success, result
    assert result.key in world.latest, "the sample is a latest visible version"
    assert result.key.startswith(("immich/", "pve/", "docs/"))
    size = world.latest[result.key][0]
    assert 0 < size <= 4096
    assert result.verified == "sha1"
    got = samples(exposition(list(source.render(state.snapshot))))
    where = lbl(source="b2", bucket="homelab")
    assert got["backup_restore_check_success", where] == 1
    assert got["backup_restore_check_bytes", where] == size
    assert got["backup_restore_check_last_success_timestamp_seconds", where] == NOW
    assert got["backup_restore_check_info", lbl(**dict(where), result="ok", verified="sha1")] == 1
    assert world.sim.calls["download_file_from_url"] == 1 == poller.requests["B"]


async def test_sample_choice_follows_the_injected_rng(world: World) -> None:
    keys = set()
    for seed in range(6):
        source = make_source(world, config_yaml(world, restore=restore_yaml()), seed=seed)
        state = await Poller(source, clock=FakeClock(NOW)).poll_once()
        keys.add(state.snapshot.buckets[0].restore.key)
    assert len(keys) > 1, "different seeds sample different objects"


async def test_corrupted_object_fails_the_check_but_not_the_listing(world: World) -> None:
    world.corrupt("immich/db.sql")
    text = config_yaml(world, restore=restore_yaml(canary="immich/db.sql"))
    source = make_source(world, text)
    state = await Poller(source, clock=FakeClock(NOW)).poll_once()
    assert state.up, "a failed restore check does not fail the listing"
    bucket = state.snapshot.buckets[0]
    assert bucket.prefixes[0].objects == world.expected("immich/")[0]
    assert bucket.restore is not None
    assert (bucket.restore.success, bucket.restore.result) == (False, "hash_mismatch")
    assert bucket.restore_last_success is None
    got = samples(exposition(list(source.render(state.snapshot))))
    where = lbl(source="b2", bucket="homelab")
    assert got["backup_restore_check_success", where] == 0
    assert ("backup_restore_check_last_success_timestamp_seconds", where) not in got
    assert (
        got[
            "backup_restore_check_info", lbl(**dict(where), result="hash_mismatch", verified="sha1")
        ]
        == 1
    )


@pytest.mark.parametrize(
    ("canary", "max_bytes", "corrupt", "result", "verified"),
    [
        ("docs/large.tar", "16MiB", False, "ok", "sha1"),
        ("docs/large.tar", "16MiB", True, "hash_mismatch", "sha1"),
        ("docs/large.tar", "1000", False, "too_large", "none"),
        ("docs/missing.txt", "16MiB", False, "missing", "none"),
        ("immich/gone.jpg", "16MiB", False, "missing", "none"),  # hidden = not restorable
    ],
)
async def test_canary_outcomes(
    world: World, canary: str, max_bytes: str, corrupt: bool, result: str, verified: str
) -> None:
    if corrupt:
        world.corrupt(canary)
    text = config_yaml(world, restore=restore_yaml(canary=canary, max_bytes=max_bytes))
    state = await Poller(make_source(world, text), clock=FakeClock(NOW)).poll_once()
    assert state.up
    r = state.snapshot.buckets[0].restore
    assert (r.result, r.verified, r.success) == (result, verified, result == "ok")
    if result == "ok":
        assert r.bytes == world.latest[canary][0]


async def test_no_candidate_when_nothing_fits(world: World) -> None:
    text = config_yaml(world, restore=restore_yaml(max_bytes="1"), prefixes="[docs/]")
    state = await Poller(make_source(world, text), clock=FakeClock(NOW)).poll_once()
    r = state.snapshot.buckets[0].restore
    assert (r.success, r.result, r.bytes) == (False, "no_candidate", 0)
    assert world.sim.calls["download_file_from_url"] == 0


async def test_restore_check_runs_once_per_interval_and_keeps_file(
    world: World, tmp_path: Path
) -> None:
    keep = tmp_path / "sample.bin"
    restore = restore_yaml(canary="docs/readme.txt", interval="7d", keep_file=str(keep))
    clock = FakeClock(NOW)
    source = make_source(world, config_yaml(world, restore=restore))
    poller = Poller(source, clock=clock)
    await poller.poll_once()
    assert keep.read_bytes() == b"hello"
    assert world.sim.calls["download_file_from_url"] == 1
    for _ in range(6):  # listed every 6h for 36h: no new download
        clock.advance(6 * 3600)
        state = await poller.poll_once()
    assert world.sim.calls["download_file_from_url"] == 1
    assert state.snapshot.buckets[0].restore.checked_at == NOW
    clock.advance(6 * 86400)
    state = await poller.poll_once()
    assert world.sim.calls["download_file_from_url"] == 2
    assert state.snapshot.buckets[0].restore_last_success == clock.time()


async def test_without_keep_file_nothing_is_written(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = config_yaml(world, restore=restore_yaml(canary="docs/readme.txt"))
    state = await Poller(make_source(world, text), clock=FakeClock(NOW)).poll_once()
    assert state.snapshot.buckets[0].restore.success
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ failures


async def test_listing_interrupted_by_500s_keeps_values_and_bounds_calls(world: World) -> None:
    clock = FakeClock(NOW)
    sleeps: list[float] = []
    config = parse_config(config_yaml(world, extra="retries: 2"))
    source = B2Source(config.sources["b2"], api_factory=world.factory, sleep=sleeps.append)
    poller = Poller(source, clock=clock)
    good = await poller.poll_once()
    before = samples(exposition(list(source.render(good.snapshot))))
    world.upload("immich/later.jpg", b"l" * 5, int(NOW * MS))
    clock.advance(6 * 3600)
    world.sim.calls.clear()
    world.sim.fail_lists = True
    state = await poller.poll_once()
    # The API answered (the login worked): a failing bucket is a target down, not the source.
    assert state.up
    (target,) = state.snapshot.targets
    assert (target.target, target.up, target.reason) == ("bucket/homelab", False, "http")
    assert "injected failure" in target.message
    assert world.sim.calls["list_file_names"] == 3, "one call plus two retries, no more"
    assert len(sleeps) == 2 and all(s <= 30 for s in sleeps)
    assert state.snapshot.buckets == good.snapshot.buckets, "last-known values kept"
    after = samples(exposition(list(source.render(state.snapshot))))
    target_up = ("backup_target_up", lbl(source="b2", kind="b2", target="bucket/homelab"))
    assert (before.pop(target_up), after.pop(target_up)) == (1.0, 0.0)
    err = lbl(source="b2", kind="b2", target="bucket/homelab", reason="http")
    assert after.pop(("backup_target_error_info", err)) == 1.0
    assert after == before
    # Recovery: the failed bucket backs off until the next wake-up (down meanwhile), then
    # lists again and picks up the new object.
    world.sim.fail_lists = False
    state = await poller.poll_once()
    assert world.sim.calls["list_file_names"] == 3, "not retried before its back-off"
    assert (state.snapshot.targets[0].up, state.snapshot.targets[0].reason) == (False, "http")
    clock.advance(3600)
    state = await poller.poll_once()
    assert state.up and state.snapshot.targets[0].up
    assert state.snapshot.buckets[0].prefixes[0].objects == world.expected("immich/")[0]


async def test_hung_listing_times_out_keeps_values_and_bounds_calls(world: World) -> None:
    clock = FakeClock(NOW)
    text = config_yaml(
        world, extra="retries: 2\n    timeout: 4s\n    target_timeout: 1s\n    interval: 1h"
    )
    source = make_source(world, text)
    poller = Poller(source, clock=clock)
    good = await poller.poll_once()
    assert good.up
    full_listing = world.sim.calls["list_file_names"]
    clock.advance(6 * 3600)
    world.sim.calls.clear()
    world.sim.hang = threading.Event()
    state = await poller.poll_once()
    # The bucket's own target_timeout ends its listing; the source stays up.
    assert state.up
    (target,) = state.snapshot.targets
    assert (target.up, target.reason) == (False, "timeout")
    assert state.snapshot.buckets == good.snapshot.buckets
    assert world.sim.hung.is_set()
    assert world.sim.calls["list_file_names"] == 1, "a hung call is not retried"
    # Release the hung call. The abandoned listing stops at its next entry instead of
    # paging on; the next poll queues behind it in the source's single worker thread.
    hang, world.sim.hang = world.sim.hang, None
    hang.set()
    clock.advance(3600)  # the first retry of a failed listing: the next wake-up
    state = await poller.poll_once()
    assert state.up
    assert state.snapshot.targets[0].up
    assert world.sim.calls["list_file_names"] == 1 + full_listing


async def test_wrong_key_is_an_auth_error_without_the_secret(world: World) -> None:
    text = config_yaml(world).replace(world.app_key, "not-the-key-s3cr3t")
    state = await Poller(make_source(world, text), clock=FakeClock(NOW)).poll_once()
    assert (state.up, state.reason) == (False, "auth")
    assert "s3cr3t" not in state.error.message


def test_error_mapping() -> None:
    assert b2_error(B2RequestTimeout("slow")).reason == "timeout"
    assert b2_error(ServiceError("503 busy")).reason == "http"
    assert b2_error(interpret_b2_error(403, "access_denied", "no", {})).reason == "permission"
    assert b2_error(ValueError("x")) is None
    err = b2_error(ServiceError("echo K3Y-secret"), secret="K3Y-secret")
    assert "K3Y-secret" not in err.message


def test_production_api_makes_one_attempt_and_bounds_timeouts() -> None:
    api = production_api(timeout=20.0)
    http = api.session.raw_api.b2_http
    assert isinstance(http, _OneTryB2Http)
    assert http.CONNECTION_TIMEOUT == 10.0
    assert http.TIMEOUT == http.TIMEOUT_FOR_COPY == 20.0
    attempts = 0

    def fail() -> None:
        nonlocal attempts
        attempts += 1
        raise ServiceError("500 injected")

    with pytest.raises(ServiceError):
        http._translate_and_retry(fail, 5)
    assert attempts == 1, "b2sdk's own retries (with sleeps) are off"
    assert api.account_info.__class__.__name__ == "InMemoryAccountInfo"


# ------------------------------------------------------------------------------ jobs


async def test_prefix_evidence_makes_a_job_overdue_after_grace(world: World) -> None:
    text = (
        config_yaml(world)
        + """
jobs:
  immich-offsite:
    schedule: "30 1 * * *"
    grace: 8h
    evidence: {source: b2, bucket: homelab, prefix: immich/}
"""
    )
    config = parse_config(text)
    source = B2Source(config.sources["b2"], api_factory=world.factory)
    # The newest immich/ object arrives at 01:45 on 2026-03-01, after the 01:30 start.
    uploaded = datetime(2026, 3, 1, 1, 45, tzinfo=UTC).timestamp()
    world.upload("immich/upload-0301.jpg", b"p" * 64, int(uploaded * MS))
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp())
    poller = Poller(source, clock=clock)
    collector = SnapshotCollector([poller], clock=clock, jobs=config.jobs)
    await poller.poll_once()

    def overdue() -> float:
        (status,) = collector.job_statuses()
        assert status.evidence.last_success == uploaded
        return float(status.overdue)

    assert overdue() == 0
    # The next run is due 2026-03-02 01:30; nothing newer arrives. Within grace: fine.
    clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
    await poller.poll_once()
    assert overdue() == 0
    # Past 01:30 + 8h with the newest object older than the expected start: overdue.
    clock.now = datetime(2026, 3, 2, 9, 31, tzinfo=UTC).timestamp()
    await poller.poll_once()
    assert overdue() == 1
    text_out = generate_latest_text(collector)
    assert 'backup_job_overdue{backup_job="immich-offsite",source="b2",vmid=""} 1.0' in text_out


def generate_latest_text(collector: SnapshotCollector) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return generate_latest(reg).decode()


# ------------------------------------------------------------------------------ config, lint


def test_config_defaults_and_folder_prefixes(world: World, tmp_path: Path) -> None:
    key_file = tmp_path / "b2.key"
    key_file.write_text(world.app_key + "\n")
    text = f"""
sources:
  b2:
    kind: b2
    key_id: {world.key_id}
    application_key_file: {key_file}
    buckets:
      homelab:
      other: {{prefixes: [a/], price_per_tb_month: 5.5, interval: 12h}}
"""
    cfg = parse_config(text).sources["b2"]
    assert cfg.interval == 3600 and cfg.retries == 2
    assert cfg.application_key.reveal() == world.app_key
    assert "app" not in repr(cfg.application_key)
    homelab, other = cfg.buckets
    assert (homelab.prefixes, homelab.interval, homelab.price_per_tb_month) == (("",), 21600, 6.0)
    assert homelab.restore_check is None
    assert (other.price_per_tb_month, other.interval) == (5.5, 43200)
    with pytest.raises(ConfigError) as err:
        parse_config(text.replace("[a/]", "[immich]").replace("12h", "soon"))
    msg = str(err.value)
    assert "sources.b2.buckets.other.prefixes: B2 prefix 'immich' must end with '/'" in msg
    assert "sources.b2.buckets.other.interval" in msg


async def test_promtool_accepts_the_exposition(world: World) -> None:
    # A hostile prefix (quote, unicode) is a label value and must be escaped.
    world.upload('we"ird ☃/x.jpg', b"w" * 9, BASE_MS)
    text = config_yaml(world, restore=restore_yaml(), prefixes="[immich/, 'we\"ird ☃/']")
    source = make_source(world, text)
    state = await Poller(source, clock=FakeClock(NOW)).poll_once()
    assert state.up
    assert isinstance(state.snapshot, BucketsSnapshot)
    out = exposition(list(source.render(state.snapshot)))
    proc = subprocess.run(
        ["/usr/bin/promtool", "check", "metrics"],
        input=out,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr
    assert proc.returncode == 0
    got = samples(out)
    assert got["backup_bucket_objects", lbl(source="b2", bucket="homelab", prefix='we"ird ☃/')] == 1


async def test_overlapping_polls_authorize_once(world: World) -> None:
    # Two overlapping polls share one worker thread and one set of per-bucket memory.
    source = make_source(world, config_yaml(world))
    poller = Poller(source, clock=FakeClock(NOW))
    a, b = await asyncio.gather(poller.poll_once(), poller.poll_once())
    assert a.up and b.up
    assert world.sim.calls["authorize_account"] == 1
