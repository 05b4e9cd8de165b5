"""``kind: truenas`` against the fake TrueNAS (24.10 over REST, 25.04 and 25.10 JSON-RPC)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import ConfigError, Secret, parse_config
from exporter.core.poller import Poller, PollState
from exporter.schedule.jobs import evaluate
from exporter.sim.truenas import GIB, FakeTrueNAS, TrueNASScenario, homelab, start_fake_truenas
from exporter.sources.base import FetchContext, FetchError
from exporter.sources.truenas.config import TrueNASConfig
from exporter.sources.truenas.model import TrueNASSnapshot
from exporter.sources.truenas.parse import detect_version, parse_datasets
from exporter.sources.truenas.source import SPEC, TrueNASSource
from exporter.storage.models import DatasetFilter

PROMTOOL = Path("/usr/bin/promtool")
BERLIN = ZoneInfo("Europe/Berlin")
# Tuesday 2026-03-10 13:00 in Berlin: the fake's history put a scrub on this very morning.
START = datetime(2026, 3, 10, 13, 0, tzinfo=BERLIN).timestamp()
KINDS = {"truenas": SPEC}

Key = tuple[str, frozenset[tuple[str, str]]]


def key(name: str, **labels: str) -> Key:
    if name.startswith("backup_smart_"):
        # TrueNAS names a disk by its device only: the -d type and identity labels are empty.
        labels = {"type": "", "disk": "", **labels}
    return name, frozenset({"source": "nas", **labels}.items())


def exposition(families: Iterable[Metric]) -> str:
    items = list(families)

    class Collector:
        def collect(self) -> Iterable[Metric]:
            return items

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry).decode()


def samples(text: str) -> dict[Key, float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture(params=["24.10", "25.04", "25.10"])
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def scenario(clock: FakeClock, release: str) -> TrueNASScenario:
    return homelab(clock.time, release=release)


@pytest.fixture
async def fake(scenario: TrueNASScenario) -> AsyncIterator[FakeTrueNAS]:
    server = await start_fake_truenas(scenario)
    yield server
    await server.stop()


def yaml_config(fake: FakeTrueNAS, extra: str = "") -> str:
    return f"""
timezone: UTC
sources:
  nas:
    kind: truenas
    url: {fake.url}
    username: {fake.username}
    api_key: "{fake.api_key}"
    ca_file: {fake.ca_file}
{extra}
"""


def make_source(fake: FakeTrueNAS, extra: str = "") -> TrueNASSource:
    config = parse_config(yaml_config(fake, extra), kinds=KINDS)
    source = SPEC.build(config.sources["nas"])
    assert isinstance(source, TrueNASSource)
    return source


async def good_poll(poller: Poller) -> TrueNASSnapshot:
    state: PollState = await poller.poll_once()
    assert state.error is None, state.error
    assert isinstance(state.snapshot, TrueNASSnapshot)
    return state.snapshot


def collect(poller: Poller, clock: FakeClock) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector([poller], clock=clock))
    return generate_latest(registry).decode()


def promtool(text: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return result.returncode, result.stdout, result.stderr


# ------------------------------------------------------------------------------ a full poll


async def test_once_poll_renders_the_fakes_values(
    fake: FakeTrueNAS, scenario: TrueNASScenario, clock: FakeClock, release: str
) -> None:
    poller = Poller(make_source(fake), clock=clock)
    snapshot = await good_poll(poller)
    text = collect(poller, clock)
    got = samples(text)

    # Datasets: values as the fake computes them, the NFS export with its 150 GiB quota.
    proxmox = "storage/backups/proxmox"
    assert scenario.dataset(proxmox).quota == 161061273600
    for ds in scenario.datasets:
        lab = {"dataset": ds.name}
        assert got[key("backup_zfs_dataset_used_bytes", **lab)] == scenario.used(ds.name)
        assert got[key("backup_zfs_dataset_available_bytes", **lab)] == scenario.available(ds.name)
        assert got[key("backup_zfs_dataset_quota_bytes", **lab)] == ds.quota
        snaps = scenario.snapshots[ds.name]
        assert got[key("backup_zfs_snapshots", **lab)] == len(snaps) == 14
        assert got[key("backup_zfs_snapshot_newest_timestamp_seconds", **lab)] == max(snaps)
        assert got[key("backup_zfs_snapshot_oldest_timestamp_seconds", **lab)] == min(snaps)
    assert scenario.used(proxmox) == sum(scenario.archives) > 0

    # The scrub of this morning (the fake ran the 35-day threshold check itself).
    scan = scenario.scan
    assert scan["state"] == "FINISHED"
    pool = {"pool": "storage"}
    assert got[key("backup_zfs_scrub_last_end_timestamp_seconds", **pool)] == scan["end"]
    assert got[key("backup_zfs_scrub_last_start_timestamp_seconds", **pool)] == scan["start"]
    assert got[key("backup_zfs_pool_healthy", **pool)] == 1
    assert got[key("backup_zfs_pool_state", state="ONLINE", **pool)] == 1

    # Cloud sync: last success = the fake's last job end; settings as the tasks have them.
    for task in scenario.cloudsync:
        lab = {"task": task.description}
        assert task.job is not None and task.job["state"] == "SUCCESS"
        assert (
            got[key("backup_cloudsync_last_success_timestamp_seconds", **lab)]
            == task.job["time_finished"]
        )
        assert got[key("backup_cloudsync_running", **lab)] == 0
        assert got[key("backup_cloudsync_encrypted", **lab)] == 1
        info = {
            "provider": task.provider,
            "bucket": task.bucket,
            "direction": "PUSH",
            "transfer_mode": "SYNC",
        }
        assert got[key("backup_cloudsync_info", **lab, **info)] == 1
    # No failure seen: 0, so "failure newer than success" rules and panels always have a series.
    assert got[key("backup_cloudsync_last_failure_timestamp_seconds", **lab)] == 0

    # Jobs: both cloud-sync tasks and the scrub task, none overdue.
    for job in ("cloudsync-b2-daily", "cloudsync-storj-weekly", "scrub-storage"):
        assert got[key("backup_job_overdue", backup_job=job, vmid="")] == 0
    schedules = {
        dict(k[1])["backup_job"]: dict(k[1])["schedule"] for k in got if k[0] == "backup_job_info"
    }
    assert schedules == {
        "cloudsync-b2-daily": "30 1 * * *",
        "cloudsync-storj-weekly": "0 5 * * 3",
        "scrub-storage": "10 2 * * 2 (threshold 35d)",
    }

    # SMART only where the API still has it; the snapshot method per release.
    methods = [f["method"] for f in scenario.frames]
    sdb_success = key(
        "backup_smart_selftest_last_success_timestamp_seconds", device="/dev/sdb", test="short"
    )
    if release in ("24.10", "25.04"):
        assert "zfs.snapshot.query" in methods and "pool.snapshot.query" not in methods
        assert got[key("backup_smart_selftest_last_passed", device="/dev/sda", test="short")] == 1
        assert got[key("backup_smart_selftest_last_passed", device="/dev/sdb", test="short")] == 0
        if release == "25.04":
            assert got[sdb_success] == START - 34 * 3600  # the older passing test: 34 h ago
        else:  # 24.10 has no power_on_hours_ago: no time is known for a test
            assert sdb_success not in got
    else:
        assert "pool.snapshot.query" in methods and "zfs.snapshot.query" not in methods
        assert "smart.test.results" not in methods
        assert not [k for k in got if k[0].startswith("backup_smart_")]
        assert snapshot.smart is None

    if release == "24.10":
        # REST on the same host (no JSON-RPC API), the query options as extra.<opt>=<json>.
        paths = [f["path"] for f in scenario.frames]
        assert scenario.connections == 0 and paths[0] == "/api/v2.0/system/version"
        assert "/api/v2.0/pool/dataset" in paths and "/api/v2.0/zfs/snapshot" in paths
        (dataset_query,) = [f["query"] for f in scenario.frames if f["path"].endswith("/dataset")]
        assert dataset_query["extra.flat"] == "true"
        assert json.loads(dataset_query["extra.properties"]) == [
            "used",
            "available",
            "quota",
            "referenced",
            "creation",
        ]
    else:
        assert "auth.login_ex" in methods

    # Every call counted; the time zone came from system.general.config; no secrets leaked.
    assert poller.requests[""] == len(scenario.frames)
    assert "system.general.config" in methods
    assert snapshot.timezone == "Europe/Berlin"
    assert fake.api_key not in text
    assert "correct horse" not in text and "secret-application-key" not in text
    assert got[key("backup_truenas_info", version=snapshot.version)] == 1
    assert got[key("backup_source_up", kind="truenas")] == 1

    if PROMTOOL.exists():
        assert promtool(text) == (0, "", "")


async def test_configured_timezone_skips_the_lookup(
    fake: FakeTrueNAS, scenario: TrueNASScenario, clock: FakeClock
) -> None:
    source = make_source(fake, "    timezone: Europe/Berlin")
    snapshot = await good_poll(Poller(source, clock=clock))
    assert snapshot.timezone == "Europe/Berlin"
    assert "system.general.config" not in [f["method"] for f in scenario.frames]


async def test_dataset_filter(fake: FakeTrueNAS, clock: FakeClock) -> None:
    extra = "    datasets: {include: ['storage/.*'], exclude: ['storage/backups(/.*)?']}"
    snapshot = await good_poll(Poller(make_source(fake, extra), clock=clock))
    assert [d.name for d in snapshot.datasets] == [
        "storage/immich",
        "storage/nextcloud",
        "storage/ha-backup",
    ]


def test_system_datasets_are_skipped() -> None:
    def ds(name: str) -> dict[str, object]:
        return {"name": name, "used": {"parsed": 1}, "available": {"parsed": 2}}

    result = [ds(n) for n in ("tank", "tank/.system", "tank/ix-apps/x", "boot-pool/ROOT", "tank/a")]
    datasets, _ = parse_datasets(result, DatasetFilter())
    assert [d.name for d in datasets] == ["tank", "tank/a"]


# ------------------------------------------------------------------------------ cloud sync


async def test_cloudsync_that_did_not_run_is_overdue(
    fake: FakeTrueNAS, scenario: TrueNASScenario, clock: FakeClock
) -> None:
    extra = "    cloudsync_grace: {B2 daily: 8h}"
    poller = Poller(make_source(fake, extra), clock=clock)
    scenario.skip_cloudsync("B2 daily")  # the NAS is off at the next 01:30
    next_run = datetime(2026, 3, 11, 1, 30, tzinfo=BERLIN).timestamp()

    def b2_status() -> tuple[bool, float | None]:
        statuses = [evaluate(s, e, clock.time()) for s, e in poller.source.jobs(snapshot)]
        (b2,) = [st for st in statuses if st.spec.name == "cloudsync-b2-daily"]
        return b2.overdue, b2.finish_deadline

    clock.advance(next_run + 8 * 3600 - 60 - clock.time())  # one minute before the deadline
    snapshot = await good_poll(poller)
    assert b2_status() == (False, next_run + 8 * 3600)
    clock.advance(120)  # one minute after it
    snapshot = await good_poll(poller)
    assert b2_status() == (True, next_run + 8 * 3600)
    got = samples(collect(poller, clock))
    assert got[key("backup_job_overdue", backup_job="cloudsync-b2-daily", vmid="")] == 1
    assert got[key("backup_job_overdue", backup_job="cloudsync-storj-weekly", vmid="")] == 0


async def test_default_grace_is_the_schedule_interval(fake: FakeTrueNAS, clock: FakeClock) -> None:
    source = make_source(fake)
    snapshot = await good_poll(Poller(source, clock=clock))
    graces = {spec.name: spec.grace for spec, _ in source.jobs(snapshot)}
    assert graces == {
        "cloudsync-b2-daily": 86400,
        "cloudsync-storj-weekly": 7 * 86400,
        "scrub-storage": 86400,  # scrub_grace default 1d
    }


async def test_failure_is_reported_and_last_success_remembered(
    fake: FakeTrueNAS, scenario: TrueNASScenario, clock: FakeClock
) -> None:
    poller = Poller(make_source(fake), clock=clock)
    await good_poll(poller)
    b2 = scenario.task("B2 daily")
    assert b2.job is not None
    good_end = b2.job["time_finished"]
    scenario.fail_cloudsync("B2 daily")
    clock.advance(86400)  # through the next 01:30 run, which fails
    snapshot = await good_poll(poller)
    assert b2.job["state"] == "FAILED"
    got = samples(collect(poller, clock))
    lab = {"task": "B2 daily"}
    assert (
        got[key("backup_cloudsync_last_failure_timestamp_seconds", **lab)]
        == (b2.job["time_finished"])
    )
    # TrueNAS's `job` now only shows the failure; the success comes from the source's memory.
    assert got[key("backup_cloudsync_last_success_timestamp_seconds", **lab)] == good_end
    assert got[key("backup_job_failed", backup_job="cloudsync-b2-daily", vmid="")] == 1
    evidence = poller.source.evidence(snapshot, {"source": "nas", "cloudsync": "B2 daily"})
    assert evidence is not None and evidence.failed and evidence.last_success == good_end

    scenario.repair_cloudsync("B2 daily")
    scenario.run_cloudsync_now("B2 daily")
    await good_poll(poller)
    got = samples(collect(poller, clock))
    assert got[key("backup_cloudsync_running", **lab)] == 1
    assert got[key("backup_job_running", backup_job="cloudsync-b2-daily", vmid="")] == 1
    clock.advance(3 * 3600)
    await good_poll(poller)
    got = samples(collect(poller, clock))
    assert got[key("backup_cloudsync_running", **lab)] == 0
    assert (
        got[key("backup_cloudsync_last_success_timestamp_seconds", **lab)]
        == (b2.job["time_finished"])
    )


# ------------------------------------------------------------------------------ scrub


async def test_scrub_job_predicts_the_fakes_next_scrub(
    fake: FakeTrueNAS, scenario: TrueNASScenario, clock: FakeClock
) -> None:
    # The fake implements the middleware's threshold check on its own; the exporter's
    # threshold schedule must expect the scrub exactly when the fake starts it.
    source = make_source(fake)
    poller = Poller(source, clock=clock)
    snapshot = await good_poll(poller)
    ((spec, evidence),) = [(s, e) for s, e in source.jobs(snapshot) if s.name == "scrub-storage"]
    predicted = spec.schedule.next_after(datetime.fromtimestamp(clock.time(), UTC)).timestamp()
    # This morning's scrub started Tuesday 02:10; five Tuesdays on (across the switch to CEST).
    assert scenario.scan["start"] == datetime(2026, 3, 10, 2, 10, tzinfo=BERLIN).timestamp()
    assert predicted == datetime(2026, 4, 14, 2, 10, tzinfo=BERLIN).timestamp()
    assert not evaluate(spec, evidence, predicted - 1).overdue

    clock.advance(predicted - clock.time() - 3600)
    await good_poll(poller)
    assert scenario.last_scrub_start != predicted
    clock.advance(2 * 3600)
    snapshot = await good_poll(poller)
    assert scenario.last_scrub_start == predicted
    got = samples(collect(poller, clock))
    assert got[key("backup_zfs_scrub_running", pool="storage")] == 1
    assert got[key("backup_job_overdue", backup_job="scrub-storage", vmid="")] == 0


async def test_missed_scrub_is_overdue_after_window_plus_grace(
    fake: FakeTrueNAS, clock: FakeClock
) -> None:
    # The NAS is switched off after this poll: the last good snapshot stays and the scrub job
    # is evaluated at scrape time against its threshold schedule.
    poller = Poller(make_source(fake, "    scrub_grace: 12h"), clock=clock)
    await good_poll(poller)
    await fake.stop()
    due = datetime(2026, 4, 14, 2, 10, tzinfo=BERLIN).timestamp()  # five Tuesdays on
    job = key("backup_job_overdue", backup_job="scrub-storage", vmid="")

    clock.advance(due - 86400 - clock.time())  # Monday 2026-04-13, day 34
    assert (await poller.poll_once()).reason == "connection"
    got = samples(collect(poller, clock))
    assert got[job] == 0 and got[key("backup_source_up", kind="truenas")] == 0
    clock.advance(86400 + 12 * 3600 - 1)  # the Tuesday window plus grace, less a second
    assert samples(collect(poller, clock))[job] == 0
    clock.advance(2)
    got = samples(collect(poller, clock))
    assert got[job] == 1
    deadline = key(
        "backup_job_finish_deadline_timestamp_seconds", backup_job="scrub-storage", vmid=""
    )
    assert got[deadline] == due + 12 * 3600


async def test_from_26_the_threshold_runs_from_the_scrubs_end_and_a_skip_is_no_failure(
    clock: FakeClock,
) -> None:
    # truenas/middleware plugins/zpool/scrub_impl.py validate_pool (26.0+): the start is
    # skipped silently while the last finished scrub *ended* within threshold - 1 days.
    # This morning's scrub (Tuesday 02:10) becomes a 30-hour one: it ends Wednesday 08:10,
    # so day 34 after its end falls after the fifth Tuesday, and the sixth one is due.
    scenario = homelab(clock.time, release="26.0")
    start = datetime(2026, 3, 10, 2, 10, tzinfo=BERLIN).timestamp()
    assert scenario.scan["start"] == start
    scenario.scan.update(state="SCANNING", end=None)
    scenario.scrub_duration = 30 * 3600.0
    server = await start_fake_truenas(scenario)
    try:
        source = make_source(server)
        poller = Poller(source, clock=clock)
        clock.advance(start + 31 * 3600 - clock.time())
        snapshot = await good_poll(poller)
        ((spec, evidence),) = [
            (s, e) for s, e in source.jobs(snapshot) if s.name == "scrub-storage"
        ]
        assert evidence.last_success == start + 30 * 3600
        now = datetime.fromtimestamp(clock.time(), UTC)
        predicted = spec.schedule.next_after(now).timestamp()
        # Up to 25.10 (from the start) it would be the fifth Tuesday, 2026-04-14.
        assert predicted == datetime(2026, 4, 21, 2, 10, tzinfo=BERLIN).timestamp()

        job = key("backup_job_overdue", backup_job="scrub-storage", vmid="")
        failed = key("backup_job_failed", backup_job="scrub-storage", vmid="")
        fifth = datetime(2026, 4, 14, 3, 10, tzinfo=BERLIN).timestamp()
        clock.advance(fifth - clock.time())
        await good_poll(poller)
        assert scenario.last_scrub_start == start  # the fake skipped the fifth Tuesday
        got = samples(collect(poller, clock))
        assert (got[job], got[failed]) == (0, 0)  # a skipped start is not a failure

        clock.advance(predicted + 3600 - clock.time())
        await good_poll(poller)
        assert scenario.last_scrub_start == predicted  # the fake scrubs when we expect it
        got = samples(collect(poller, clock))
        assert got[key("backup_zfs_scrub_running", pool="storage")] == 1
        assert (got[job], got[failed]) == (0, 0)
    finally:
        await server.stop()


# ------------------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("text", "release", "snapshots"),
    [
        ("TrueNAS-25.04.2.6", (25, 4), "zfs.snapshot.query"),
        ("25.10.0", (25, 10), "pool.snapshot.query"),
        ("TrueNAS-SCALE-24.10.2.4", (24, 10), "zfs.snapshot.query"),
        ("TrueNAS-26.04.0-MASTER-20260301", (26, 4), "pool.snapshot.query"),
    ],
)
def test_detect_version(text: str, release: tuple[int, int], snapshots: str) -> None:
    profile = detect_version(text)
    assert (profile.release, profile.snapshot_method) == (release, snapshots)
    assert (profile.smart_method is not None) == (release <= (25, 4))


@pytest.mark.parametrize(
    "text", ["TrueNAS-SCALE-24.04.2", "TrueNAS-13.0-U6.1", "TrueNAS-27.0.0", "nonsense"]
)
def test_unsupported_version_is_a_clear_error(text: str) -> None:
    with pytest.raises(FetchError, match=r"unsupported TrueNAS version .*supported 24\.10–26"):
        detect_version(text)


async def test_unknown_version_through_the_poller(
    fake: FakeTrueNAS, scenario: TrueNASScenario, clock: FakeClock
) -> None:
    scenario.version = "TrueNAS-SCALE-23.10.2"
    state = await Poller(make_source(fake), clock=clock).poll_once()
    assert state.error is not None and state.reason == "config"
    assert "23.10.2" in state.error.message


async def test_wrong_key_is_auth(fake: FakeTrueNAS, clock: FakeClock, release: str) -> None:
    config = make_source(fake).config
    wrong = "1-" + "0" * 64
    source = TrueNASSource(dataclasses.replace(config, api_key=Secret(wrong)))
    state = await Poller(source, clock=clock).poll_once()
    assert state.error is not None and state.reason == "auth"
    assert wrong not in state.error.message and fake.api_key not in state.error.message
    if release == "24.10":
        assert "HTTP 401" in state.error.message


@pytest.mark.parametrize("release", ["24.10"])
async def test_rest_permission_and_missing_endpoint(
    fake: FakeTrueNAS, scenario: TrueNASScenario, clock: FakeClock
) -> None:
    poller = Poller(make_source(fake), clock=clock)
    scenario.denied_methods.add("cloudsync.query")
    state = await poller.poll_once()
    assert state.error is not None and state.reason == "permission"
    assert "/api/v2.0/cloudsync" in state.error.message
    scenario.denied_methods.clear()
    scenario.missing_methods.add("smart.test.results")
    state = await poller.poll_once()
    assert state.error is not None and state.reason == "parse"
    assert "/api/v2.0/smart/test/results" in state.error.message
    scenario.missing_methods.clear()
    scenario.results["pool.query"] = "not a list"
    assert (await poller.poll_once()).reason == "parse"
    del scenario.results["pool.query"]
    assert (await poller.poll_once()).up


async def test_hang_times_out_then_recovers(
    fake: FakeTrueNAS, scenario: TrueNASScenario, clock: FakeClock
) -> None:
    source = TrueNASSource(dataclasses.replace(make_source(fake).config, timeout=0.3))
    poller = Poller(source, clock=clock)
    scenario.hang()
    state = await poller.poll_once()
    assert state.reason == "timeout"
    scenario.release()
    state = await poller.poll_once()
    assert state.up


async def test_malformed_results_are_parse_errors(
    fake: FakeTrueNAS, scenario: TrueNASScenario, clock: FakeClock
) -> None:
    poller = Poller(make_source(fake), clock=clock)
    # A malformed dataset listing is its target's failure (dataset/<pool>), not the source's.
    scenario.results["pool.dataset.query"] = {"not": "a list"}
    state = await poller.poll_once()
    assert state.up
    assert {t.reason for t in state.snapshot.targets} == {"parse"}
    assert all("pool.dataset.query" in t.message for t in state.snapshot.targets)
    scenario.results["pool.dataset.query"] = [{"name": "storage", "used": {"parsed": "lots"}}]
    state = await poller.poll_once()
    assert {t.reason for t in state.snapshot.targets} == {"parse"}
    del scenario.results["pool.dataset.query"]
    scenario.results["cloudsync.query"] = [{"id": 1, "schedule": "daily"}]
    assert (await poller.poll_once()).reason == "parse"
    del scenario.results["cloudsync.query"]
    assert (await poller.poll_once()).up


async def test_hostile_dataset_name_renders_safely(
    fake: FakeTrueNAS, scenario: TrueNASScenario, clock: FakeClock
) -> None:
    hostile = 'storage/we"ird\\name\nwith ☃ ünïcödé'
    scenario.add_dataset(hostile, 3 * GIB)
    scenario.snapshots[hostile] = [clock.time() - 60]
    scenario.task("Storj weekly").description = 'Storj "weekly"\n☃'
    poller = Poller(make_source(fake), clock=clock)
    await good_poll(poller)
    text = collect(poller, clock)
    got = samples(text)
    assert got[key("backup_zfs_dataset_used_bytes", dataset=hostile)] == 3 * GIB
    assert got[key("backup_zfs_snapshots", dataset=hostile)] == 1
    assert key("backup_cloudsync_encrypted", task='Storj "weekly"\n☃') in got
    if PROMTOOL.exists():
        assert promtool(text) == (0, "", "")


# ------------------------------------------------------------------------------ plain ws://


def test_plain_ws_with_a_key_is_refused_at_config_validation() -> None:
    text = """
sources:
  nas: {kind: truenas, url: "ws://nas.lan", username: svc, api_key: "1-abc"}
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, kinds=KINDS)
    assert any(p.startswith("sources.nas.url:") and "revokes" in p for p in err.value.problems)


async def test_plain_ws_is_refused_before_connecting(clock: FakeClock) -> None:
    scenario = homelab(clock.time, history_days=1)
    fake = await start_fake_truenas(scenario, tls=False)
    try:
        config = TrueNASConfig(
            name="nas",
            kind="truenas",
            interval=600,
            timeout=60,
            url=fake.url,
            username=fake.username,
            api_key=Secret(fake.api_key),
        )
        with pytest.raises(FetchError) as err:
            await TrueNASSource(config).fetch(FetchContext(clock=clock))
    finally:
        await fake.stop()
    assert err.value.reason == "config" and "wss://" in err.value.message
    assert scenario.connections == 0 and scenario.frames == []
    assert not scenario.key_revoked


async def test_plain_http_is_refused_before_sending_the_key(clock: FakeClock) -> None:
    # A 24.10 fake over plain http: the key must never leave, neither to the WebSocket nor REST.
    scenario = homelab(clock.time, release="24.10", history_days=1)
    fake = await start_fake_truenas(scenario, tls=False)
    text = f"""
sources:
  nas: {{kind: truenas, url: "http://127.0.0.1:{fake.port}", api_key: "{fake.api_key}"}}
"""
    try:
        with pytest.raises(ConfigError) as err:
            parse_config(text, kinds=KINDS)
        assert any(p.startswith("sources.nas.url:") for p in err.value.problems)
        config = TrueNASConfig(
            name="nas",
            kind="truenas",
            interval=600,
            timeout=60,
            url=f"http://127.0.0.1:{fake.port}",
            api_key=Secret(fake.api_key),
        )
        with pytest.raises(FetchError) as refused:
            await TrueNASSource(config).fetch(FetchContext(clock=clock))
    finally:
        await fake.stop()
    assert refused.value.reason == "config" and "wss://" in refused.value.message
    assert scenario.frames == [] and scenario.connections == 0 and not scenario.key_revoked


def test_config_problems_are_reported_with_paths(tmp_path: Path) -> None:
    text = f"""
sources:
  nas:
    kind: truenas
    url: "wss://nas.lan"
    api_key: "1-abc"
    ca_file: {tmp_path / "missing.pem"}
    timezone: Mars/Olympus
    datasets: {{include: ["("], bogus: 1}}
    cloudsync_grace: {{B2 daily: soon}}
    scrub_grace: -1
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, kinds=KINDS)
    paths = {p.split(":")[0] for p in err.value.problems}
    assert paths == {
        "sources.nas.ca_file",
        "sources.nas.timezone",
        "sources.nas.datasets.include",
        "sources.nas.datasets.bogus",
        "sources.nas.cloudsync_grace.B2 daily",
        "sources.nas.scrub_grace",
    }


def test_config_defaults() -> None:
    text = """
sources:
  nas: {kind: truenas, url: "wss://nas.lan", api_key: "1-abc"}
"""
    cfg = parse_config(text, kinds=KINDS).sources["nas"]
    assert isinstance(cfg, TrueNASConfig)
    assert (cfg.interval, cfg.timeout, cfg.scrub_grace) == (600, 60, 86400)
    assert cfg.cron_timezone == "" and cfg.verify_tls and cfg.username == ""
    assert "1-abc" not in repr(cfg)
    assert timedelta(seconds=cfg.interval) == timedelta(minutes=10)
