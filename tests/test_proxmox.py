"""The proxmox source: proxmoxer against the fake PVE API over real HTTPS."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.clock import FakeClock
from exporter.core.config import ConfigError, Secret, parse_config
from exporter.core.poller import Poller, PollState
from exporter.schedule.jobs import evaluate, render_jobs
from exporter.sim.pve import FakeGuest, FakePVE, FakeStorage, PVEScenario, homelab, start_fake_pve
from exporter.sources import _MODULES
from exporter.sources.proxmox.config import ProxmoxConfig
from exporter.sources.proxmox.jobs import covered_guests
from exporter.sources.proxmox.model import (
    Archive,
    BackupJob,
    BackupStorage,
    Guest,
    ProxmoxSnapshot,
    Retention,
    VzdumpTask,
)
from exporter.sources.proxmox.retention import (
    expected_archives,
    parse_retention,
    retention_targets,
)
from exporter.sources.proxmox.source import SPEC, ProxmoxSource
from exporter.sources.proxmox.tasks import guest_evidence, normalize_status

BERLIN = ZoneInfo("Europe/Berlin")
START = 1_780_000_000.0  # 2026-05-28 22:26:40 in Berlin, after that day's 21:00 run
GIB = 2**30
PROMTOOL = Path("/usr/bin/promtool")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------------------------- helpers


def config_text(fake: FakePVE, **extra: Any) -> str:
    source = {
        "kind": "proxmox",
        "url": fake.url,
        "token_id": fake.token_id,
        "token_secret": fake.token_secret,
        "ca_file": fake.ca_file,
        "timezone": "Europe/Berlin",
        "interval": "5m",
        "timeout": "5s",
        **extra,
    }
    return yaml.safe_dump({"sources": {"pve1": source}})


_OPENED: list[ProxmoxSource] = []


def make_source(fake: FakePVE, **extra: Any) -> ProxmoxSource:
    config = parse_config(config_text(fake, **extra), kinds={"proxmox": SPEC})
    source = SPEC.build(config.sources["pve1"])
    assert isinstance(source, ProxmoxSource)
    _OPENED.append(source)
    return source


@pytest.fixture(autouse=True)
async def _close_sources() -> AsyncIterator[None]:
    yield
    while _OPENED:
        await _OPENED.pop().close()


def exposition(families: Iterable[Metric]) -> str:
    fams = list(families)

    class Collector:
        def collect(self) -> list[Metric]:
            return fams

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def key(metric: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return metric, frozenset({"source": "pve1", **labels}.items())


def names(values: Samples) -> set[str]:
    return {name for name, _ in values}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def scenario(clock: FakeClock) -> PVEScenario:
    return homelab(clock.time)


@pytest.fixture
async def fake(scenario: PVEScenario) -> AsyncIterator[FakePVE]:
    server = await start_fake_pve(scenario)
    yield server
    await server.stop()


async def poll(source: ProxmoxSource, clock: FakeClock) -> tuple[Poller, PollState]:
    poller = Poller(source, clock=clock)
    state = await poller.poll_once()
    return poller, state


async def good_poll(source: ProxmoxSource, clock: FakeClock) -> ProxmoxSnapshot:
    _, state = await poll(source, clock)
    assert state.error is None, state.error
    assert isinstance(state.snapshot, ProxmoxSnapshot)
    return state.snapshot


# ------------------------------------------------------------------------ metrics and shapes


async def test_metrics_have_the_scenarios_values(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    source = make_source(fake)
    poller, state = await poll(source, clock)
    assert state.error is None
    got = samples(exposition(source.render(state.snapshot)))

    # Every HTTP call was counted: compare with what the fake served.
    assert poller.requests[""] == len(scenario.requests)

    for g in scenario.guests:
        labels = {"vmid": str(g.vmid), "name": g.name, "node": g.node, "guest_type": g.guest_type}
        assert got[key("backup_pve_guest_info", **labels)] == 1
    not_covered = {g.vmid for g in scenario.not_backed_up()}
    assert not_covered == {101}
    for g in scenario.guests:
        value = got[key("backup_pve_guest_not_backed_up", vmid=str(g.vmid))]
        assert value == (1 if g.vmid in not_covered else 0)

    pairs = {(a.storage, a.vmid) for a in scenario.archives}
    assert pairs == {("truenas-backups", 100)}
    for storage, vmid in pairs:
        archives = scenario.archives_of(storage, vmid)
        newest = archives[-1]
        lab = {"storage": storage, "vmid": str(vmid)}
        assert got[key("backup_pve_archive_last_timestamp_seconds", **lab)] == newest.ctime
        assert got[key("backup_pve_archive_last_size_bytes", **lab)] == newest.size
        assert got[key("backup_pve_archives", **lab)] == len(archives) == 14
        assert got[key("backup_pve_archive_size_bytes", **lab)] == sum(a.size for a in archives)
        assert got[key("backup_pve_archives_protected", **lab)] == 0
    # One series per guest and storage, never one per archive.
    archive_series = [k for k in got if k[0] == "backup_pve_archives"]
    assert len(archive_series) == len(pairs)
    assert "backup_pve_archive_last_verified" not in names(got)  # no PBS here

    for s in scenario.storages:
        lab = {"storage": s.storage}
        assert got[key("backup_pve_storage_size_bytes", **lab)] == s.total
        assert got[key("backup_pve_storage_used_bytes", **lab)] == scenario.used(s)
        assert got[key("backup_pve_storage_active", **lab)] == 1

    (job,) = scenario.jobs
    info = {
        "backup_job": job.id,
        "schedule": job.schedule,
        "storage": job.storage,
        "mode": job.mode,
        "enabled": "1",
    }
    assert got[key("backup_pve_job_info", **info)] == 1
    assert job.prune_backups is not None
    keep_last = int(job.prune_backups["keep-last"])
    assert got[key("backup_pve_job_retention", backup_job=job.id, keep="last")] == keep_last
    assert [k for k in got if k[0] == "backup_pve_job_retention"] == [
        key("backup_pve_job_retention", backup_job=job.id, keep="last")
    ]

    ends = [t.endtime for t in scenario.tasks if t.status == "OK" and t.endtime is not None]
    assert got[key("backup_pve_vzdump_last_success_timestamp_seconds", node="pve1")] == max(ends)
    assert got[key("backup_pve_vzdump_last_failure_timestamp_seconds", node="pve1")] == 0

    # Retention: keep-last 14 of archives the size of the newest overflows the 150 GiB quota.
    nas = scenario.storage("truenas-backups")
    newest = scenario.archives_of("truenas-backups", 100)[-1]
    lab = {"storage": "truenas-backups", "vmid": "100"}
    assert got[key("backup_pve_retention_target_archives", **lab)] == keep_last
    # 14 daily runs happened; today's 21:00 run is still inside its 6 h grace, but its archive
    # is there, so it counts: the steady state does not dip to 13 every evening.
    assert datetime.fromtimestamp(START, BERLIN).hour == 22
    assert got[key("backup_pve_retention_expected_archives", **lab)] == keep_last
    projected = got[key("backup_pve_retention_projected_bytes", storage="truenas-backups")]
    assert projected == keep_last * newest.size
    assert projected > nas.total == got[key("backup_pve_storage_size_bytes", storage=nas.storage)]
    # "local" keeps everything (keep-all) and no job writes there: no expectation.
    assert key("backup_pve_retention_projected_bytes", storage="local") not in got

    assert not [k for k in got if {"job", "instance", "type"} & {n for n, _ in k[1]}]
    assert all(("source", "pve1") in k[1] for k in got)


async def test_promtool_accepts_the_exposition(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    # Hostile label values must be escaped, not break the exposition.
    scenario.guests.append(FakeGuest(105, 'we"ird\\name\nwith ☃ ünïcödé', guest_type="lxc"))
    scenario.run_backup("backup-infra-daily")
    source = make_source(fake)
    snapshot = await good_poll(source, clock)
    statuses = [evaluate(s, e, clock.time()) for s, e in source.jobs(snapshot)]
    text = exposition([*source.render(snapshot), *render_jobs(statuses)])
    got = samples(text)
    info = [k for k in got if k[0] == "backup_pve_guest_info" and ("vmid", "105") in k[1]]
    assert dict(info[0][1])["name"] == 'we"ird\\name\nwith ☃ ünïcödé'
    result = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


async def test_pbs_verification_and_combined_retention(clock: FakeClock) -> None:
    scenario = homelab(clock.time, pbs=True)
    fake = await start_fake_pve(scenario)
    try:
        source = make_source(fake)
        snapshot = await good_poll(source, clock)
    finally:
        await fake.stop()
    got = samples(exposition(source.render(snapshot)))
    lab = {"storage": "pbs-offsite", "vmid": "100"}
    archives = scenario.archives_of("pbs-offsite", 100)
    assert archives[-1].verification == "ok"
    assert archives[0].verification == "failed"
    assert got[key("backup_pve_archive_last_verified", **lab)] == 1
    assert got[key("backup_pve_archives", **lab)] == len(archives) == 7
    # keep-daily 7 + keep-weekly 4: the sum is the documented upper bound of the target...
    assert got[key("backup_pve_retention_target_archives", **lab)] == 7 + 4
    # ...but the job has only run 7 times (22:30 daily, all past their grace at 22:26): it
    # cannot have left more archives than that yet.
    runs = berlin_starts(22, 30, since=archives[0].ctime - 3600, until=START - 6 * 3600)
    assert len(runs) == 7
    assert got[key("backup_pve_retention_expected_archives", **lab)] == min(7 + 4, len(runs))
    # The projection is the steady state: the full target.
    assert got[key("backup_pve_retention_projected_bytes", storage="pbs-offsite")] == (
        11 * archives[-1].size
    )
    assert got[key("backup_pve_job_retention", backup_job="backup-infra-pbs", keep="daily")] == 7
    assert got[key("backup_pve_job_retention", backup_job="backup-infra-pbs", keep="weekly")] == 4

    # Tasks do not name their job: each job gets the tasks that started on its schedule.
    evidence = {spec.name: ev for spec, ev in source.jobs(snapshot)}
    pbs_start = datetime.fromtimestamp(evidence["backup-infra-pbs"].last_start or 0, BERLIN)
    nfs_start = datetime.fromtimestamp(evidence["backup-infra-daily"].last_start or 0, BERLIN)
    assert (pbs_start.hour, pbs_start.minute) == (22, 30)
    assert (nfs_start.hour, nfs_start.minute) == (21, 0)
    assert evidence["backup-infra-pbs"].last_success == archives[-1].ctime


async def test_shared_storage_is_listed_once(clock: FakeClock) -> None:
    scenario = homelab(clock.time)
    scenario.nodes.append("pve2")
    scenario.nodes.append("pve3")
    scenario.offline_nodes.add("pve3")
    scenario.guests.append(FakeGuest(200, "media200", node="pve2"))
    fake = await start_fake_pve(scenario)
    try:
        source = make_source(fake)
        snapshot = await good_poll(source, clock)
    finally:
        await fake.stop()
    content = [p for p in scenario.requests if p.endswith("/content")]
    assert content.count("/api2/json/nodes/pve1/storage/truenas-backups/content") == 1
    assert not [p for p in content if "truenas-backups" in p and "/pve2/" in p]
    # A local (unshared) storage is a different disk on every online node.
    assert sorted(p for p in content if "/local/" in p) == [
        "/api2/json/nodes/pve1/storage/local/content",
        "/api2/json/nodes/pve2/storage/local/content",
    ]
    assert not [p for p in scenario.requests if "/pve3/" in p]
    got = samples(exposition(source.render(snapshot)))
    assert got[key("backup_pve_storage_size_bytes", storage="truenas-backups")] == 150 * GIB
    local = scenario.storage("local")
    assert got[key("backup_pve_storage_size_bytes", storage="local")] == 2 * local.total
    assert got[key("backup_pve_archives", storage="truenas-backups", vmid="100")] == 14
    nodes = {dict(k[1])["node"] for k in got if k[0].startswith("backup_pve_vzdump_last_")}
    assert nodes == {"pve1", "pve2"}


async def test_inactive_storage_is_not_listed(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    scenario.storage("truenas-backups").active = False  # TrueNAS powered off
    source = make_source(fake)
    snapshot = await good_poll(source, clock)
    got = samples(exposition(source.render(snapshot)))
    assert got[key("backup_pve_storage_active", storage="truenas-backups")] == 0
    assert got[key("backup_pve_storage_size_bytes", storage="truenas-backups")] == 0
    assert not [p for p in scenario.requests if "truenas-backups/content" in p]
    # Successful tasks but nothing listable is not the permission trap.
    assert "backup_pve_archives" not in names(got)


# -------------------------------------------------------------------------------- failures


async def test_permission_trap(fake: FakePVE, scenario: PVEScenario, clock: FakeClock) -> None:
    scenario.privileged = False
    source = make_source(fake)
    _, state = await poll(source, clock)
    assert state.error is not None
    assert state.error.reason == "permission"
    message = state.error.message
    assert "Datastore.Allocate on /storage/truenas-backups" in message
    assert "Datastore.AllocateSpace on /storage/truenas-backups" in message
    assert "VM.Backup on /vms" in message
    assert "no backups" not in message.lower()
    assert fake.token_secret not in message
    # No snapshot, so no archive series claiming zero backups.
    assert state.snapshot is None


async def test_no_backups_yet_is_not_a_permission_problem(clock: FakeClock) -> None:
    scenario = homelab(clock.time, days=0)
    scenario.privileged = False
    fake = await start_fake_pve(scenario)
    try:
        snapshot = await good_poll(make_source(fake), clock)
    finally:
        await fake.stop()
    assert snapshot.archives == ()
    assert snapshot.tasks == ()


async def test_wrong_secret_is_auth(fake: FakePVE, clock: FakeClock) -> None:
    source = make_source(fake, token_secret="not-the-secret")
    _, state = await poll(source, clock)
    assert state.error is not None
    assert state.error.reason == "auth"
    assert "not-the-secret" not in state.error.message
    assert "401" in state.error.message


async def test_stopped_fake_is_connection(fake: FakePVE, clock: FakeClock) -> None:
    source = make_source(fake)
    await good_poll(source, clock)  # a reused keep-alive connection must not hide the stop
    await fake.stop()
    _, state = await poll(source, clock)
    assert state.error is not None
    assert state.error.reason == "connection"
    assert f"127.0.0.1:{fake.port}" in state.error.message
    await fake.restart()
    await good_poll(source, clock)


async def test_hang_is_the_pollers_timeout(fake: FakePVE, clock: FakeClock) -> None:
    source = make_source(fake, timeout="500ms")
    fake.scenario.hang()
    try:
        _, state = await poll(source, clock)
    finally:
        fake.scenario.release()
    assert state.error is not None
    assert state.error.reason == "timeout"


async def test_http_500_is_http(fake: FakePVE, clock: FakeClock) -> None:
    fake.scenario.fail_status = 500
    _, state = await poll(make_source(fake), clock)
    assert state.error is not None
    assert state.error.reason == "http"
    assert state.error.message == "GET /nodes: HTTP 500 Internal Server Error"


async def test_malformed_response_is_parse(fake: FakePVE, clock: FakeClock) -> None:
    fake.scenario.malformed = True
    _, state = await poll(make_source(fake), clock)
    assert state.error is not None
    assert state.error.reason == "parse"
    assert "expected a list" in state.error.message


async def test_untrusted_certificate_is_tls(fake: FakePVE, clock: FakeClock) -> None:
    source = make_source(fake, ca_file=None)  # verify against the system CAs
    assert source.config.verify is True
    _, state = await poll(source, clock)
    assert state.error is not None
    assert state.error.reason == "tls"


async def test_hostile_node_name_is_parse(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    scenario.nodes.append("../../access")
    _, state = await poll(make_source(fake), clock)
    assert state.error is not None
    assert state.error.reason == "parse"
    assert "'node'" in state.error.message


# ------------------------------------------------------------------------------------ jobs


async def test_jobs_go_overdue_when_backups_break_and_recover(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    source = make_source(fake)

    async def status() -> tuple[bool, bool, float | None]:
        snapshot = await good_poll(source, clock)
        found = [(s, e) for s, e in source.jobs(snapshot) if s.labels == {"vmid": "100"}]
        assert len(found) == 1
        spec, ev = found[0]
        assert spec.name == "backup-infra-daily"
        assert spec.schedule.expression == "21:00"
        assert str(spec.schedule.tz) == "Europe/Berlin"
        assert (spec.grace, spec.start_grace) == (6 * 3600, 3600)
        st = evaluate(spec, ev, clock.time())
        return st.overdue, ev.failed, ev.last_start

    assert await status() == (False, False, last_21h(clock.time()))

    scenario.break_backups()
    # The next 21:00 run failed, but the finish deadline (21:00 + 6 h) has not passed yet.
    clock.advance(until_berlin(clock.time(), hour=21, minute=30))
    assert await status() == (False, True, last_21h(clock.time()))
    # Past 21:00 + grace with no new archive: overdue.
    clock.advance(6 * 3600)
    overdue, failed, _ = await status()
    assert (overdue, failed) == (True, True)
    # The next day's run fails too: still overdue, no flapping at the new start.
    clock.advance(until_berlin(clock.time(), hour=21, minute=5))
    assert (await status())[:2] == (True, True)

    scenario.repair()
    scenario.run_backup("backup-infra-daily")
    assert (await status())[:2] == (False, False)
    # And the following scheduled run succeeds on its own.
    clock.advance(until_berlin(clock.time(), hour=21, minute=10) + 86400)
    assert (await status())[:2] == (False, False)


async def test_a_run_in_progress_is_running(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    source = make_source(fake)
    scenario.start_backup("backup-infra-daily")
    snapshot = await good_poll(source, clock)
    ((_, ev),) = source.jobs(snapshot)
    assert ev.running
    assert ev.last_start == int(clock.time())
    clock.advance(600)
    scenario.finish_backups()
    snapshot = await good_poll(source, clock)
    ((_, ev),) = source.jobs(snapshot)
    assert not ev.running
    assert ev.last_duration == 600
    assert ev.last_success is not None
    assert ev.last_success > START


async def test_evidence_selector(fake: FakePVE, scenario: PVEScenario, clock: FakeClock) -> None:
    source = make_source(fake)
    snapshot = await good_poll(source, clock)
    newest = scenario.archives_of("truenas-backups", 100)[-1].ctime
    ev = source.evidence(snapshot, {"source": "pve1", "vmid": "100"})
    assert ev is not None
    assert ev.last_success == newest
    on_local = source.evidence(snapshot, {"source": "pve1", "vmid": "100", "storage": "local"})
    assert on_local is not None
    assert on_local.last_success is None
    assert source.evidence(snapshot, {"source": "pve1", "vmid": "999"}) is None


async def test_a_young_guest_expects_only_the_runs_so_far(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    # web102 joins the keep-last 14 daily job now; VM 100 has been in it for 14 days.
    scenario.guests.append(FakeGuest(102, "web102"))
    scenario.job("backup-infra-daily").vmid = "100,102"
    source = make_source(fake)
    await good_poll(source, clock)  # the fake simulates runs lazily, from its last request on
    young = {"storage": "truenas-backups", "vmid": "102"}
    old = {"storage": "truenas-backups", "vmid": "100"}
    grace = 6 * 3600

    async def values() -> tuple[float, float, float, float]:
        got = samples(exposition(source.render(await good_poll(source, clock))))
        return (
            got[key("backup_pve_archives", **young)],
            got[key("backup_pve_retention_expected_archives", **young)],
            got[key("backup_pve_retention_target_archives", **young)],
            got[key("backup_pve_retention_expected_archives", **old)],
        )

    def due_runs() -> int:
        # The 21:00 runs from the one that wrote web102's oldest archive (its dump starts a
        # few minutes into the run) to the last one whose 6 h grace has passed.
        oldest = scenario.archives_of("truenas-backups", 102)[0].ctime
        return len(berlin_starts(21, 0, since=oldest - 3600, until=clock.time() - grace))

    # Four nightly runs later, at 04:00, past the last run's grace: its first archive is more
    # than 3 days old.
    clock.advance(until_berlin(clock.time(), hour=4, minute=0) + 4 * 86400)
    archives, expected, target, old_expected = await values()
    first = scenario.archives_of("truenas-backups", 102)[0].ctime
    assert clock.time() - first > 3 * 86400
    assert due_runs() == 4
    assert (archives, expected, target) == (4, due_runs(), 14)
    assert not archives < expected  # BackupPveArchivesBelowRetention's condition
    assert old_expected == 14  # VM 100's oldest archive is 14 runs old
    # The projection still uses the full keep-last 14 of both guests.
    got = samples(exposition(source.render(await good_poll(source, clock))))
    newest = [scenario.archives_of("truenas-backups", v)[-1].size for v in (100, 102)]
    projected = got[key("backup_pve_retention_projected_bytes", storage="truenas-backups")]
    assert projected == 14 * newest[0] + 14 * newest[1]

    # The next run fails. Inside its grace it is not expected yet...
    scenario.break_backups()
    clock.advance(until_berlin(clock.time(), hour=21, minute=30))
    assert await values() == (4, 4, 14, 14)
    # ...past 21:00 + 6 h it is: one archive short. VM 100 still holds its 14 (a failure
    # prunes nothing), which is what keep-last 14 keeps: job overdue, not retention.
    clock.advance(until_berlin(clock.time(), hour=3, minute=1))
    archives, expected, _, old_expected = await values()
    assert (archives, expected) == (4, due_runs()) == (4, 5)
    assert archives < expected
    assert old_expected == 14
    # After the repair the next run succeeds, and the gap in the middle still shows.
    scenario.repair()
    clock.advance(until_berlin(clock.time(), hour=21, minute=30))
    archives, expected, _, _ = await values()
    assert (archives, expected) == (5, 6)  # the new run counts: its archive is there


def berlin_starts(hour: int, minute: int, *, since: float, until: float) -> list[float]:
    """The daily ``hour:minute`` Berlin wall-clock instants in ``[since, until]``."""
    day = datetime.fromtimestamp(since, BERLIN).date()
    out = []
    while True:
        at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN).timestamp()
        if at > until:
            return out
        if at >= since:
            out.append(at)
        day += timedelta(days=1)


def last_21h(ts: float) -> float:
    local = datetime.fromtimestamp(ts, BERLIN)
    day = local.date() if local.hour >= 21 else local.date() - timedelta(days=1)
    return datetime(day.year, day.month, day.day, 21, tzinfo=BERLIN).timestamp()


def until_berlin(ts: float, *, hour: int, minute: int) -> float:
    """Seconds from ``ts`` to the next ``hour:minute`` Berlin wall-clock time."""
    local = datetime.fromtimestamp(ts, BERLIN)
    target = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= local:
        day = local.date() + timedelta(days=1)
        target = datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN)
    return target.timestamp() - ts


# ------------------------------------------------------------------------- pure functions


def guest(vmid: int, node: str = "pve1", pool: str = "", template: bool = False) -> Guest:
    return Guest(vmid, f"g{vmid}", node, "qemu", pool=pool, template=template)


GUESTS = (
    guest(100),
    guest(101, pool="prod"),
    guest(102, node="pve2", pool="prod"),
    guest(103, node="pve2"),
    guest(900, template=True),
    guest(901, pool="prod", template=True),
)


def job(**kwargs: Any) -> BackupJob:
    base: dict[str, Any] = {
        "id": "j",
        "schedule": "21:00",
        "enabled": True,
        "storage": "nas",
        "mode": "snapshot",
    }
    return BackupJob(**{**base, **kwargs})


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ({"all": True}, [100, 101, 102, 103]),
        ({"all": True, "exclude": frozenset({101, 103})}, [100, 102]),
        ({"all": True, "node": "pve2"}, [102, 103]),
        ({"all": True, "node": "pve2", "exclude": frozenset({102})}, [103]),
        ({"vmids": frozenset({100, 103, 900, 4242})}, [100, 103]),
        ({"vmids": frozenset({100, 103}), "node": "pve1"}, [100]),
        ({"pool": "prod"}, [101, 102]),
        ({"pool": "prod", "node": "pve1"}, [101]),
        ({"pool": "nothing"}, []),
        ({}, []),
    ],
)
def test_coverage(selection: dict[str, Any], expected: list[int]) -> None:
    assert [g.vmid for g in covered_guests(job(**selection), GUESTS)] == expected


def test_parse_retention() -> None:
    as_object = parse_retention({"keep-last": "3", "keep-daily": "7", "keep-weekly": 4})
    as_string = parse_retention("keep-last=3,keep-daily=7,keep-weekly=4")
    assert as_object == as_string == Retention(keep=(("last", 3), ("daily", 7), ("weekly", 4)))
    assert as_object is not None
    assert as_object.expected == 14
    only_last = parse_retention({"keep-last": "14"})
    assert only_last is not None
    assert only_last.expected == 14
    keep_all = parse_retention("keep-all=1")
    assert keep_all is not None
    assert keep_all.keep_all
    assert keep_all.expected is None
    nothing_set = parse_retention({"keep-last": "0"})
    assert nothing_set is not None
    assert nothing_set.expected is None  # no keep option: PVE keeps everything
    assert parse_retention(None) is None
    assert parse_retention("") is None
    for bad in ("keep-last", "keep-last=x", {"keep-daily": "-1"}, 14):
        with pytest.raises(ValueError, match="prune-backups"):
            parse_retention(bad)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("OK", "ok"),
        ("WARNINGS: 2", "warning"),
        ("unexpected status", "unknown"),
        ("", "unknown"),
        ("job errors", "error"),
        ("command 'vma create' failed: exit code 1", "error"),
        ("RUNNING", "running"),
    ],
)
def test_normalize_status(raw: str, normalized: str) -> None:
    assert normalize_status(raw) == normalized


def test_multi_guest_task_failure_needs_a_missing_archive() -> None:
    task = VzdumpTask("pve1", 1000.0, 1500.0, "error", None)
    snapshot = ProxmoxSnapshot(
        time=2000.0,
        timezone="UTC",
        nodes=(("pve1", True),),
        guests=(guest(100), guest(101)),
        storages=(),
        archives=(Archive("nas", 100, 1010.0, 5), Archive("nas", 101, 10.0, 5)),
        jobs=(),
        not_backed_up=frozenset(),
        tasks=(task,),
    )
    ok = guest_evidence(snapshot, guest(100), storage="nas")
    bad = guest_evidence(snapshot, guest(101), storage="nas")
    assert (ok.failed, ok.last_success, ok.last_start, ok.last_duration) == (
        False,
        1010.0,
        1000.0,
        500.0,
    )
    assert (bad.failed, bad.last_success) == (True, 10.0)
    # A guest on another node is not covered by that task.
    other = guest_evidence(snapshot, guest(102, node="pve2"))
    assert (other.last_start, other.failed) == (None, False)


# --------------------------------------------------------------------------------- config


def test_registered_kind() -> None:
    assert "exporter.sources.proxmox" in _MODULES
    assert (SPEC.default_interval, SPEC.default_timeout) == (300.0, 30.0)


def base_source(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "proxmox",
        "url": "https://127.0.0.1:8006",
        "token_id": "monitor@pve!exporter",
        "token_secret": "s3cr3t-value",
        **extra,
    }


def load(source: dict[str, Any]) -> ProxmoxConfig:
    config = parse_config(yaml.safe_dump({"sources": {"pve1": source}}), kinds={"proxmox": SPEC})
    cfg = config.sources["pve1"]
    assert isinstance(cfg, ProxmoxConfig)
    return cfg


def problems(source: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(source)
    return info.value.problems


def test_config_defaults_and_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "pve-token"
    secret.write_text("from-a-file\n")
    source = base_source(url="https://pve1.lan", token_secret_file=str(secret))
    del source["token_secret"]
    cfg = load(source)
    assert (cfg.host, cfg.port, cfg.verify) == ("pve1.lan", 8006, True)
    assert (cfg.interval, cfg.timeout, cfg.tasks_limit) == (300.0, 30.0, 200)
    assert (cfg.job_grace, cfg.job_start_grace) == (6 * 3600, 3600)
    assert cfg.token_secret.reveal() == "from-a-file"
    assert "from-a-file" not in repr(cfg)
    # The loader fills an empty zone from the top-level timezone (default UTC).
    assert (cfg.timezone, cfg.zone) == ("UTC", "UTC")
    assert (replace(cfg, timezone="").zone) == "UTC"
    top = parse_config(
        yaml.safe_dump({"timezone": "Europe/Berlin", "sources": {"pve1": base_source()}}),
        kinds={"proxmox": SPEC},
    )
    inherited = top.sources["pve1"]
    assert isinstance(inherited, ProxmoxConfig)
    assert inherited.timezone == "Europe/Berlin"


def test_config_options(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    cfg = load(
        base_source(
            url="https://[::1]:18006/",
            ca_file=str(ca),
            timezone="Europe/Berlin",
            tasks_limit=50,
            job_grace="3h",
            job_start_grace="30m",
        )
    )
    assert (cfg.host, cfg.port, cfg.verify) == ("[::1]", 18006, str(ca))
    assert (cfg.timezone, cfg.tasks_limit, cfg.job_grace, cfg.job_start_grace) == (
        "Europe/Berlin",
        50,
        3 * 3600,
        1800,
    )
    assert load(base_source(verify_tls=False)).verify is False


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"url": "http://127.0.0.1:8006"}, "sources.pve1.url: must be https://host[:port]"),
        ({"url": "https://127.0.0.1:8006/api2/json"}, "sources.pve1.url: must be https"),
        ({"url": "127.0.0.1:8006"}, "sources.pve1.url: must be https"),
        ({"url": "https://127.0.0.1:99999"}, "sources.pve1.url: invalid port"),
        ({"token_id": "monitor@pve"}, "sources.pve1.token_id: must look like user@realm!"),
        ({"token_id": "monitor!exporter"}, "sources.pve1.token_id: must look like"),
        ({"verify_tls": False, "ca_file": "/ca.pem"}, "sources.pve1.ca_file: cannot be used"),
        ({"ca_file": "/nonexistent/ca.pem"}, "sources.pve1.ca_file: /nonexistent/ca.pem is not"),
        ({"timezone": "Mars/Olympus"}, "sources.pve1.timezone: unknown time zone"),
        ({"job_grace": "1h", "job_start_grace": "2h"}, "sources.pve1.job_start_grace: must not"),
        ({"tasks_limit": 0}, "sources.pve1.tasks_limit: must be >= 1"),
        ({"verify": True}, "sources.pve1.verify: unknown key"),
    ],
)
def test_config_problems(extra: dict[str, Any], expected: str) -> None:
    found = problems(base_source(**extra))
    assert any(p.startswith(expected) for p in found), found
    assert not [p for p in found if "s3cr3t-value" in p]


def test_missing_secret_is_reported() -> None:
    source = base_source()
    del source["token_secret"]
    assert any(p.startswith("sources.pve1.token_secret: missing") for p in problems(source))


def test_storage_config_retention_applies_without_job_prune() -> None:
    # /storage's property string is used when the job has no prune-backups of its own.
    nas_guest = guest(100)
    snapshot = ProxmoxSnapshot(
        time=0.0,
        timezone="UTC",
        nodes=(("pve1", True),),
        guests=(nas_guest,),
        storages=(),
        archives=(),
        jobs=(job(vmids=frozenset({100})),),
        not_backed_up=frozenset(),
        tasks=(),
    )
    storage = BackupStorage(
        storage="nas",
        type="nfs",
        shared=True,
        active=True,
        total=1,
        used=0,
        nodes=("pve1",),
        listed=True,
        retention=parse_retention("keep-daily=7,keep-weekly=4"),
    )
    assert retention_targets(replace(snapshot, storages=(storage,))) == {("nas", 100): 11}
    # No archive yet: nothing expected (the job-overdue alert covers a guest never backed up).
    assert expected_archives(replace(snapshot, storages=(storage,))) == {("nas", 100): 0}
    assert expected_archives(snapshot) == retention_targets(snapshot) == {}
    disabled = replace(
        snapshot, storages=(storage,), jobs=(job(vmids=frozenset({100}), enabled=False),)
    )
    assert expected_archives(disabled) == retention_targets(disabled) == {}


DAY0 = datetime(2026, 5, 1, tzinfo=UTC).timestamp()  # a midnight, UTC
HOUR = 3600.0


def retention_snapshot(
    at: float, ctimes: Iterable[float], *jobs: BackupJob, timezone: str = "UTC"
) -> ProxmoxSnapshot:
    return ProxmoxSnapshot(
        time=at,
        timezone=timezone,
        nodes=(("pve1", True),),
        guests=(guest(100),),
        storages=(),
        archives=tuple(Archive("nas", 100, t, 5) for t in sorted(ctimes)),
        jobs=jobs,
        not_backed_up=frozenset(),
        tasks=(),
    )


def keep_last(n: int) -> Retention:
    return Retention(keep=(("last", n),))


def test_expected_counts_from_the_run_that_wrote_the_oldest_archive() -> None:
    daily = job(vmids=frozenset({100}), retention=keep_last(14))
    next_day_4h = DAY0 + 28 * HOUR
    # Several guests in one run: this guest's dump began 2 h after the 21:00 start. That run
    # wrote it, so it counts.
    late_dump = retention_snapshot(next_day_4h, [DAY0 + 23 * HOUR], daily)
    assert expected_archives(late_dump) == {("nas", 100): 1}
    # A manual backup at 14:00 and the 21:00 run: PVE's pruning keeps the manual one too
    # (it is a candidate like any other), so both are expected; the target stays 14.
    manual = retention_snapshot(next_day_4h, [DAY0 + 14 * HOUR, DAY0 + 21 * HOUR + 2], daily)
    assert expected_archives(manual) == {("nas", 100): 2}
    assert retention_targets(manual) == {("nas", 100): 14}
    # Before the 21:00 run's grace ended and without its archive, only the manual one is.
    waiting = retention_snapshot(DAY0 + 22 * HOUR, [DAY0 + 14 * HOUR], daily)
    assert expected_archives(waiting) == {("nas", 100): 1}
    # A shorter job_grace makes the run due earlier: its archive is missing.
    assert expected_archives(waiting, grace=HOUR) == {("nas", 100): 2}


def test_expected_for_hourly_and_combined_jobs() -> None:
    # Hourly: the grace is capped at the 1 h period (as for the job's own deadlines), so the
    # failed 12:00 run is due at 13:00, not at 18:00.
    hourly = job(schedule="hourly", vmids=frozenset({100}), retention=keep_last(24))
    ctimes = [DAY0 + 10 * HOUR + 5, DAY0 + 11 * HOUR + 5]
    snap = retention_snapshot(DAY0 + 13.5 * HOUR, ctimes, hourly)
    assert expected_archives(snap) == {("nas", 100): 3}
    # Two jobs write the guest to one storage: each run prunes the whole group with its own
    # job's retention (vzdump prunes the guest's archives on the storage, whoever wrote them).
    night = job(id="night", schedule="03:00", vmids=frozenset({100}), retention=keep_last(7))
    evening = job(id="evening", schedule="21:00", vmids=frozenset({100}), retention=keep_last(2))
    archives = [DAY0 + 21 * HOUR + 2, DAY0 + 27 * HOUR + 2]
    both = retention_snapshot(DAY0 + 34 * HOUR, archives, night, evening)
    assert expected_archives(both) == {("nas", 100): 2}
    # In the steady state the evening run leaves 2, and the night run adds a third.
    assert retention_targets(both) == {("nas", 100): 3}
    later = [DAY0 + d * 24 * HOUR + h * HOUR + 2 for d in range(10) for h in (3, 21)]
    at_noon = retention_snapshot(DAY0 + 10 * 24 * HOUR + 12 * HOUR, later, night, evening)
    assert expected_archives(at_noon) == {("nas", 100): 3}
    at_22h = replace(at_noon, time=at_noon.time + 10 * HOUR)
    assert expected_archives(at_22h, grace=HOUR) == retention_targets(at_22h) == {("nas", 100): 2}


def test_expected_needs_a_readable_schedule_but_the_target_does_not() -> None:
    # jobs() skips (and logs) a job whose schedule cannot be read; the expectation does too,
    # while the storage projection keeps the job's keep-last.
    unreadable = job(schedule="every full moon", vmids=frozenset({100}), retention=keep_last(14))
    snap = retention_snapshot(DAY0 + 5 * 24 * HOUR, [DAY0 + 21 * HOUR + 2], unreadable)
    assert expected_archives(snap) == {}
    assert retention_targets(snap) == {("nas", 100): 14}
    keep_all = job(vmids=frozenset({100}), retention=Retention(keep_all=True))
    assert expected_archives(replace(snap, jobs=(keep_all,))) == {}


def test_fake_storage_defaults_are_shared_nfs() -> None:
    # A guard for the scenario assumptions the tests above rely on.
    s = FakeStorage("x", total=1)
    assert (s.type, s.shared, s.content) == ("nfs", True, "backup")
    assert datetime.fromtimestamp(START, UTC).isoformat() == "2026-05-28T20:26:40+00:00"


def test_unreadable_job_schedule_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    cfg = ProxmoxConfig(
        name="pve1",
        kind="proxmox",
        interval=300.0,
        timeout=30.0,
        url="https://127.0.0.1:8006",
        host="127.0.0.1",
        port=8006,
        token_id="monitor@pve!exporter",
        token_secret=Secret("x"),
        verify=True,
        timezone="Europe/Berlin",
    )
    source = ProxmoxSource(cfg)
    snapshot = ProxmoxSnapshot(
        time=START,
        timezone="Europe/Berlin",
        nodes=(("pve1", True),),
        guests=(guest(100),),
        storages=(),
        archives=(),
        jobs=(
            job(id="bad", schedule="every full moon", vmids=frozenset({100})),
            job(id="legacy", schedule="", vmids=frozenset({100})),
            job(id="good", schedule="sat 02:30", vmids=frozenset({100})),
        ),
        not_backed_up=frozenset(),
        tasks=(),
    )
    for _ in range(2):
        found = [(spec.name, dict(spec.labels)) for spec, _ in source.jobs(snapshot)]
        assert found == [("good", {"vmid": "100"})]
    warnings = [r for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(warnings) == 2  # once per job, not once per scrape
