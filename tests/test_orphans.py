"""Orphans and drift of PVE (issue #12 item 5) against the fake PVE over HTTPS (proxmoxer).

Archives of a guest no enabled job covers, archives whose guest is gone, a job disabled too
long (remembered across a restart) and a run longer than its max_duration.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from test_proxmox import START, Samples, config_text, key, samples

from exporter.core.app import COLLECTOR, POLLERS, create_app
from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import Config, ConfigError, parse_config
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.sim.pve import FakeGuest, FakeJob, FakePVE, PVEScenario, homelab, start_fake_pve
from exporter.sources.proxmox.jobs import covered_guests
from exporter.sources.proxmox.model import BackupJob, Guest
from exporter.sources.proxmox.responses import parse_jobs
from exporter.sources.proxmox.source import SPEC, ProxmoxSource

DAY = 86400.0
KINDS = {"proxmox": SPEC}
NFS = "truenas-backups"


def config(fake: FakePVE, **extra: Any) -> Config:
    return parse_config(config_text(fake, **extra), kinds=KINDS)


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


class Lab:
    """One proxmox source polled through a poller and scraped through the collector."""

    def __init__(self, fake: FakePVE, clock: FakeClock, **extra: Any) -> None:
        cfg = config(fake, **extra)
        source = SPEC.build(cfg.sources["pve1"])
        assert isinstance(source, ProxmoxSource)
        self.source = source
        self.clock = clock
        self.poller = Poller(source, clock=clock)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector([self.poller], clock=clock))

    async def scrape(self) -> Samples:
        state = await self.poller.poll_once()
        assert state.error is None, state.error
        return samples(generate_latest(self.registry).decode())

    async def close(self) -> None:
        await self.source.close()


@pytest.fixture
async def lab(fake: FakePVE, clock: FakeClock) -> AsyncIterator[Lab]:
    made = Lab(fake, clock)
    yield made
    await made.close()


# ------------------------------------------------------------- PVE's rule of included guests


def test_covered_guests_follows_get_included_guests() -> None:
    # pve-manager PVE/VZDump.pm get_included_guests: pool, else the vmid list, else all minus
    # exclude; node restricts any of them.
    guests = (
        Guest(100, "a", "pve1", "qemu", pool="prod"),
        Guest(101, "b", "pve1", "lxc"),
        Guest(102, "c", "pve2", "qemu", pool="prod"),
        Guest(103, "t", "pve1", "qemu", template=True),
    )

    def ids(job: BackupJob, templates: bool = False) -> list[int]:
        return [g.vmid for g in covered_guests(job, guests, templates=templates)]

    base = BackupJob("j", "21:00", True, "nfs", "snapshot")
    assert ids(base) == []  # no selection at all: nothing
    assert ids(BackupJob(**{**base.__dict__, "all": True, "exclude": frozenset({101})})) == [
        100,
        102,
    ]
    # A pool wins over a vmid list, a vmid list over all (exclude is for all only).
    both = BackupJob(**{**base.__dict__, "pool": "prod", "vmids": frozenset({101})})
    assert ids(both) == [100, 102]
    listed = BackupJob(
        **{**base.__dict__, "all": True, "vmids": frozenset({101}), "exclude": frozenset({101})}
    )
    assert ids(listed) == [101]
    on_node = BackupJob(**{**base.__dict__, "all": True, "node": "pve1"})
    assert ids(on_node) == [100, 101]
    assert ids(on_node, templates=True) == [100, 101, 103]


INCLUDED = json.loads(
    (Path(__file__).parent / "fixtures" / "proxmox" / "vzdump_guest_included_test.json").read_text()
)


@pytest.mark.parametrize("case", INCLUDED["tests"], ids=lambda c: str(c["name"]))
def test_covered_guests_matches_pve_managers_test_cases(case: dict[str, Any]) -> None:
    """pve-manager's own get_included_guests cases, the job read as /cluster/backup sends it."""
    members = set(INCLUDED["pools"]["testpool"])
    guests = [
        Guest(int(vmid), "", g["node"], g["type"], pool="testpool" if int(vmid) in members else "")
        for vmid, g in INCLUDED["vmlist"].items()
    ]
    (job,) = parse_jobs([{"id": "t", "type": "vzdump", "schedule": "21:00", **case["param"]}])
    by_node: dict[str, list[int]] = {}
    for g in covered_guests(job, guests):
        by_node.setdefault(g.node, []).append(g.vmid)
    # vmids PVE lists under '' are not guests of the cluster: nothing to cover.
    expected = {node: sorted(v) for node, v in case["expected"].items() if node}
    assert by_node == expected


# ------------------------------------------------------------------------------- orphans


async def test_homelab_has_no_orphans(lab: Lab) -> None:
    got = await lab.scrape()
    assert got[key("backup_pve_orphan_guest_archives", storage=NFS, vmid="100")] == 0
    # Guest 101 has no archive: not an orphan, only not backed up.
    assert key("backup_pve_orphan_guest_archives", storage=NFS, vmid="101") not in got
    assert got[key("backup_pve_orphan_archives", storage=NFS)] == 0
    assert got[key("backup_pve_orphan_archives", storage="local")] == 0
    job = {"backup_job": "backup-infra-daily"}
    assert got[key("backup_pve_job_disabled_too_long", **job)] == 0
    assert got[key("backup_pve_job_disabled_since_timestamp_seconds", **job)] == 0


async def test_guest_removed_from_its_job_leaves_orphan_archives(
    lab: Lab, scenario: PVEScenario
) -> None:
    scenario.job("backup-infra-daily").vmid = "101"  # VM 100 taken out of its job
    got = await lab.scrape()
    assert got[key("backup_pve_orphan_guest_archives", storage=NFS, vmid="100")] == 14
    assert got[key("backup_pve_orphan_archives", storage=NFS)] == 0  # the guest exists

    # Covered again by an "all" job: no orphan. Excluded from it: orphan again.
    scenario.jobs.append(FakeJob("everything", "03:00", storage="local", all=True))
    got = await lab.scrape()
    assert got[key("backup_pve_orphan_guest_archives", storage=NFS, vmid="100")] == 0
    scenario.job("everything").exclude = "100"
    got = await lab.scrape()
    assert got[key("backup_pve_orphan_guest_archives", storage=NFS, vmid="100")] == 14


async def test_a_disabled_job_covers_nothing(lab: Lab, scenario: PVEScenario) -> None:
    scenario.job("backup-infra-daily").enabled = False
    got = await lab.scrape()
    assert got[key("backup_pve_orphan_guest_archives", storage=NFS, vmid="100")] == 14
    # PVE's own not-backed-up list still counts the disabled job (BackupInfo.pm ignores
    # enabled); the orphan metric is the one that says no enabled job covers the guest.
    assert got[key("backup_pve_guest_not_backed_up", vmid="100")] == 0


async def test_a_pool_job_covers_only_the_pools_guests(lab: Lab, scenario: PVEScenario) -> None:
    scenario.job("backup-infra-daily").pool = "prod"  # pool wins over the vmid list
    got = await lab.scrape()
    assert got[key("backup_pve_orphan_guest_archives", storage=NFS, vmid="100")] == 14
    scenario.guest(100).pool = "prod"
    got = await lab.scrape()
    assert got[key("backup_pve_orphan_guest_archives", storage=NFS, vmid="100")] == 0


async def test_archives_of_a_destroyed_guest(lab: Lab, scenario: PVEScenario) -> None:
    scenario.guests = [g for g in scenario.guests if g.vmid != 100]
    got = await lab.scrape()
    assert got[key("backup_pve_orphan_archives", storage=NFS)] == 14
    assert got[key("backup_pve_orphan_archives", storage="local")] == 0
    assert key("backup_pve_orphan_guest_archives", storage=NFS, vmid="100") not in got
    # A new guest with another vmid changes nothing; one taking vmid 100 owns them again.
    scenario.guests.append(FakeGuest(100, "infra100-new"))
    got = await lab.scrape()
    assert got[key("backup_pve_orphan_archives", storage=NFS)] == 0


# ------------------------------------------------------------------------- disabled jobs


async def test_disabled_too_long_after_seven_days_and_again_after_reenabling(
    lab: Lab, scenario: PVEScenario, clock: FakeClock
) -> None:
    job = {"backup_job": "backup-infra-daily"}
    scenario.job("backup-infra-daily").enabled = False
    disabled_at = clock.time()
    got = await lab.scrape()
    assert got[key("backup_pve_job_disabled_since_timestamp_seconds", **job)] == disabled_at
    assert got[key("backup_pve_job_disabled_too_long", **job)] == 0
    clock.advance(7 * DAY)  # exactly seven days: not longer than allowed yet
    got = await lab.scrape()
    assert got[key("backup_pve_job_disabled_too_long", **job)] == 0
    clock.advance(60)
    got = await lab.scrape()
    assert got[key("backup_pve_job_disabled_since_timestamp_seconds", **job)] == disabled_at
    assert got[key("backup_pve_job_disabled_too_long", **job)] == 1
    # Enabled again: forgotten; disabled later, a new period starts.
    scenario.job("backup-infra-daily").enabled = True
    got = await lab.scrape()
    assert got[key("backup_pve_job_disabled_too_long", **job)] == 0
    assert got[key("backup_pve_job_disabled_since_timestamp_seconds", **job)] == 0
    clock.advance(DAY)
    scenario.job("backup-infra-daily").enabled = False
    got = await lab.scrape()
    assert got[key("backup_pve_job_disabled_since_timestamp_seconds", **job)] == clock.time()
    assert got[key("backup_pve_job_disabled_too_long", **job)] == 0


async def test_disabled_max_age_is_configurable(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    made = Lab(fake, clock, disabled_job_max_age="1d")
    try:
        scenario.job("backup-infra-daily").enabled = False
        await made.scrape()
        clock.advance(DAY + 1)
        got = await made.scrape()
        assert got[key("backup_pve_job_disabled_too_long", backup_job="backup-infra-daily")] == 1
    finally:
        await made.close()
    with pytest.raises(ConfigError, match="disabled_job_max_age"):
        config(fake, disabled_job_max_age="soon")


async def test_disabled_since_survives_a_restart(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock, tmp_path: Path
) -> None:
    cfg = config(fake)
    scenario.job("backup-infra-daily").enabled = False
    disabled_at = clock.time()
    keeper = StateKeeper(tmp_path / "state.db")
    app = create_app(cfg, clock=clock, run_pollers=False, keeper=keeper)
    state = await app[POLLERS][0].poll_once()
    assert state.error is None
    await keeper.close()
    for poller in app[POLLERS]:
        await poller.source.close()

    clock.advance(8 * DAY)
    keeper2 = StateKeeper(tmp_path / "state.db")
    app2 = create_app(cfg, clock=clock, run_pollers=False, keeper=keeper2)
    poller = app2[POLLERS][0]
    try:
        state = await poller.poll_once()
        assert state.error is None
        got = samples(generate_latest(_registry(SnapshotCollector([poller], clock=clock))).decode())
        job = {"backup_job": "backup-infra-daily"}
        assert got[key("backup_pve_job_disabled_since_timestamp_seconds", **job)] == disabled_at
        assert got[key("backup_pve_job_disabled_too_long", **job)] == 1
    finally:
        await keeper2.close()
        await poller.source.close()


async def test_max_duration_is_served_after_a_restart_before_the_first_poll(
    fake: FakePVE, clock: FakeClock, tmp_path: Path
) -> None:
    cfg = config(fake, job_max_duration="1h")
    keeper = StateKeeper(tmp_path / "state.db")
    app = create_app(cfg, clock=clock, run_pollers=False, keeper=keeper)
    assert (await app[POLLERS][0].poll_once()).error is None
    before = samples(generate_latest(_registry(app[COLLECTOR])).decode())
    await keeper.close()
    await app[POLLERS][0].source.close()

    keeper2 = StateKeeper(tmp_path / "state.db")
    app2 = create_app(cfg, clock=clock, run_pollers=False, keeper=keeper2)
    try:
        after = samples(generate_latest(_registry(app2[COLLECTOR])).decode())
    finally:
        await keeper2.close()
        await app2[POLLERS][0].source.close()
    job = {"backup_job": "backup-infra-daily", "vmid": "100"}
    for name in ("backup_job_max_duration_seconds", "backup_job_over_max_duration"):
        assert after[key(name, **job)] == before[key(name, **job)], name
    assert after[key("backup_job_max_duration_seconds", **job)] == 3600


def _registry(collector: SnapshotCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


# ------------------------------------------------------------------------- max duration


async def test_run_longer_than_max_duration(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    made = Lab(fake, clock, job_max_duration="1h")
    job = {"backup_job": "backup-infra-daily", "vmid": "100"}
    try:
        got = await made.scrape()
        assert got[key("backup_job_max_duration_seconds", **job)] == 3600
        assert got[key("backup_job_over_max_duration", **job)] == 0  # runs take minutes
        scenario.start_backup("backup-infra-daily")
        clock.advance(30 * 60)
        got = await made.scrape()
        assert got[key("backup_job_running", **job)] == 1
        assert got[key("backup_job_over_max_duration", **job)] == 0
        clock.advance(31 * 60)  # 61 minutes into the run
        got = await made.scrape()
        assert got[key("backup_job_over_max_duration", **job)] == 1
        # It ends after 1 h 20 min: the last run took too long until a run is short again.
        clock.advance(19 * 60)
        scenario.finish_backups()
        got = await made.scrape()
        assert got[key("backup_job_running", **job)] == 0
        assert got[key("backup_job_last_duration_seconds", **job)] == 80 * 60
        assert got[key("backup_job_over_max_duration", **job)] == 1
        clock.advance(600)
        scenario.run_backup("backup-infra-daily")
        got = await made.scrape()
        assert got[key("backup_job_over_max_duration", **job)] == 0
    finally:
        await made.close()


async def test_without_max_duration_no_series(lab: Lab, scenario: PVEScenario) -> None:
    got = await lab.scrape()
    assert not [k for k in got if k[0] == "backup_job_over_max_duration"]
    assert not [k for k in got if k[0] == "backup_job_max_duration_seconds"]


def test_jobs_entry_takes_max_duration() -> None:
    text = yaml.safe_dump(
        {
            "sources": {"hc": {"kind": "files", "path": "/tmp", "glob": "*.tar"}},
            "jobs": {
                "nightly": {
                    "schedule": "0 3 * * *",
                    "grace": "2h",
                    "max_duration": "90m",
                    "evidence": {"source": "hc"},
                }
            },
        }
    )
    cfg = parse_config(text)
    assert cfg.jobs["nightly"].max_duration == 5400
    with pytest.raises(ConfigError, match="max_duration"):
        parse_config(text.replace("90m", "-1m"))
