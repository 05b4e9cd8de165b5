"""Policy drift (issue #13 item 3): each drift kind against the fake TrueNAS and the fake PVE.

TrueNAS over WSS JSON-RPC (25.04, 25.10) and REST (24.10); PVE over HTTPS through proxmoxer.
The policies reach the sources the way the exporter wires them (``build_pollers``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from test_proxmox import Samples, config_text, exposition, samples

from exporter.core.app import build_pollers
from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import Config, ConfigError, parse_config
from exporter.core.poller import Poller
from exporter.policy.checks import format_bytes, format_retention, truenas_results
from exporter.policy.config import CloudSyncSchedulePolicy
from exporter.policy.model import PolicyResult
from exporter.policy.render import label_text, render_policy
from exporter.sim.homelab import start_homelab
from exporter.sim.pve import FakePVE, PVEScenario, start_fake_pve
from exporter.sim.pve import homelab as pve_homelab
from exporter.sim.truenas import GIB, FakeTrueNAS, TrueNASScenario, start_fake_truenas
from exporter.sim.truenas import homelab as truenas_homelab
from exporter.sim.truenas.scenario import FakeNfsShare
from exporter.sources.proxmox.config import SPEC as PVE_SPEC
from exporter.sources.proxmox.retention import parse_retention
from exporter.sources.truenas.config import SPEC as TRUENAS_SPEC
from exporter.sources.truenas.model import CloudSyncTask, TrueNASSnapshot

START = 1_780_000_000.0
KINDS = {"proxmox": PVE_SPEC, "truenas": TRUENAS_SPEC}
SHARE = "/mnt/storage/backups/proxmox"
PVE1 = "192.0.2.11"

TRUENAS_POLICY: dict[str, Any] = {
    "quota": [{"source": "nas", "dataset": "storage/backups/proxmox", "quota": "150GiB"}],
    "nfs_export": [{"source": "nas", "path": SHARE, "hosts": [PVE1]}],
    "encryption": [
        {"source": "nas", "task": "B2 daily"},
        {"source": "nas", "task": "Storj weekly"},
    ],
    "cloudsync_schedule": [
        {"source": "nas", "task": "B2 daily", "schedule": "30 1 * * *"},
        # Written differently from TrueNAS's "0 5 * * 3": the same starts.
        {"source": "nas", "task": "Storj weekly", "schedule": "00 05 * * wed"},
    ],
}


def key(metric: str, source: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return metric, frozenset({"source": source, **labels}.items())


def ok_key(policy: str, target: str, source: str = "nas") -> tuple[str, frozenset[Any]]:
    return key("backup_policy_ok", source, policy=policy, target=target)


def drifts(got: Samples) -> dict[tuple[str, str], tuple[str, str]]:
    out = {}
    for name, labels in got:
        if name == "backup_policy_drift_info":
            d = dict(labels)
            out[(d["policy"], d["target"])] = (d["expected"], d["actual"])
    return out


class Polled:
    """The sources of a config, built and polled as the exporter does, scraped together."""

    def __init__(self, cfg: Config, clock: FakeClock) -> None:
        self.pollers: list[Poller] = build_pollers(cfg, clock=clock)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(self.pollers, clock=clock))

    async def scrape(self) -> Samples:
        for poller in self.pollers:
            state = await poller.poll_once()
            assert state.error is None, state.error
        return samples(generate_latest(self.registry).decode())

    async def close(self) -> None:
        for poller in self.pollers:
            await poller.source.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


# ---------------------------------------------------------------------------------- TrueNAS


@pytest.fixture(params=["24.10", "25.04", "25.10"])
def nas_scenario(request: pytest.FixtureRequest, clock: FakeClock) -> TrueNASScenario:
    return truenas_homelab(clock.time, release=str(request.param))


@pytest.fixture
async def nas(nas_scenario: TrueNASScenario) -> AsyncIterator[FakeTrueNAS]:
    server = await start_fake_truenas(nas_scenario)
    yield server
    await server.stop()


def nas_config(fake: FakeTrueNAS, policy: dict[str, Any] | None = None) -> Config:
    doc: dict[str, Any] = {
        "timezone": "UTC",
        "sources": {
            "nas": {
                "kind": "truenas",
                "url": fake.url,
                "username": fake.username,
                "api_key": fake.api_key,
                "ca_file": fake.ca_file,
            }
        },
    }
    if policy is not None:
        doc["policy"] = policy
    return parse_config(yaml.safe_dump(doc), kinds=KINDS)


@pytest.fixture
async def nas_polled(nas: FakeTrueNAS, clock: FakeClock) -> AsyncIterator[Polled]:
    polled = Polled(nas_config(nas, TRUENAS_POLICY), clock)
    yield polled
    await polled.close()


def methods(scenario: TrueNASScenario) -> list[str]:
    return [str(f.get("method")) for f in scenario.frames]


async def test_truenas_policies_hold_on_the_reference_nas(
    nas_polled: Polled, nas_scenario: TrueNASScenario
) -> None:
    got = await nas_polled.scrape()
    for policy, target in [
        ("quota", "storage/backups/proxmox"),
        ("nfs_export", SHARE),
        ("encryption", "B2 daily"),
        ("encryption", "Storj weekly"),
        ("cloudsync_schedule", "B2 daily"),
        ("cloudsync_schedule", "Storj weekly"),
    ]:
        assert got[ok_key(policy, target)] == 1, (policy, target)
    assert drifts(got) == {}
    assert "sharing.nfs.query" in methods(nas_scenario)


async def test_without_an_nfs_policy_the_shares_are_not_read(
    nas: FakeTrueNAS, nas_scenario: TrueNASScenario, clock: FakeClock
) -> None:
    policy = {k: v for k, v in TRUENAS_POLICY.items() if k != "nfs_export"}
    polled = Polled(nas_config(nas, policy), clock)
    try:
        got = await polled.scrape()
    finally:
        await polled.close()
    assert "sharing.nfs.query" not in methods(nas_scenario)
    assert ok_key("nfs_export", SHARE) not in got
    assert got[ok_key("quota", "storage/backups/proxmox")] == 1
    # No policy at all: no policy series.
    bare = Polled(nas_config(nas), clock)
    try:
        got = await bare.scrape()
    finally:
        await bare.close()
    assert not [k for k in got if k[0].startswith("backup_policy_")]


async def test_nfs_share_opened_to_the_lan_drifts(
    nas_polled: Polled, nas_scenario: TrueNASScenario
) -> None:
    nas_scenario.nfs_shares[0].networks = ["192.0.2.0/24"]
    got = await nas_polled.scrape()
    assert got[ok_key("nfs_export", SHARE)] == 0
    assert drifts(got)[("nfs_export", SHARE)] == (PVE1, f"192.0.2.0/24,{PVE1}")


async def test_nfs_share_without_hosts_is_open_to_everyone(
    nas_polled: Polled, nas_scenario: TrueNASScenario
) -> None:
    # TrueNAS exports a share with neither hosts nor networks to '*' (exports.mako).
    nas_scenario.nfs_shares[0].hosts = []
    got = await nas_polled.scrape()
    assert drifts(got)[("nfs_export", SHARE)] == (PVE1, "*")
    # "*" as a host says the same (truenas/middleware tests/api2/test_300_nfs.py accepts it).
    nas_scenario.nfs_shares[0].hosts = ["*"]
    got = await nas_polled.scrape()
    assert drifts(got)[("nfs_export", SHARE)] == (PVE1, "*")
    # A second share of the same path that is open counts too.
    nas_scenario.nfs_shares[0].hosts = [PVE1]
    nas_scenario.nfs_shares.append(FakeNfsShare(2, SHARE + "/", comment="someone's test"))
    got = await nas_polled.scrape()
    assert drifts(got)[("nfs_export", SHARE)] == (PVE1, f"*,{PVE1}")
    # A disabled share is not exported: only the restricted one remains.
    nas_scenario.nfs_shares[1].enabled = False
    got = await nas_polled.scrape()
    assert got[ok_key("nfs_export", SHARE)] == 1


async def test_nfs_shares_refused_leave_the_policy_unknown(
    nas_polled: Polled, nas_scenario: TrueNASScenario, caplog: pytest.LogCaptureFixture
) -> None:
    # A key without SHARING_NFS_READ: the poll goes on, the share policy is unknown (not 1).
    nas_scenario.denied_methods.add("sharing.nfs.query")
    got = await nas_polled.scrape()
    await nas_polled.scrape()
    assert ok_key("nfs_export", SHARE) not in got
    assert got[ok_key("encryption", "B2 daily")] == 1
    assert got[key("backup_source_up", "nas", kind="truenas")] == 1
    refusals = [r for r in caplog.records if "cannot read NFS shares" in r.getMessage()]
    assert len(refusals) == 1  # logged once
    assert nas_scenario.api_key not in caplog.text


async def test_nfs_share_gone_drifts_as_missing(
    nas_polled: Polled, nas_scenario: TrueNASScenario
) -> None:
    nas_scenario.nfs_shares.clear()
    got = await nas_polled.scrape()
    assert drifts(got)[("nfs_export", SHARE)] == (PVE1, "missing")


async def test_quota_changed_drifts(nas_polled: Polled, nas_scenario: TrueNASScenario) -> None:
    nas_scenario.dataset("storage/backups/proxmox").quota = 200 * GIB
    got = await nas_polled.scrape()
    assert got[ok_key("quota", "storage/backups/proxmox")] == 0
    assert drifts(got)[("quota", "storage/backups/proxmox")] == ("150 GiB", "200 GiB")
    nas_scenario.dataset("storage/backups/proxmox").quota = 0
    got = await nas_polled.scrape()
    assert drifts(got)[("quota", "storage/backups/proxmox")] == ("150 GiB", "none")


async def test_quota_unknown_while_the_dataset_listing_fails(
    nas_polled: Polled, nas_scenario: TrueNASScenario
) -> None:
    await nas_polled.scrape()
    nas_scenario.denied_methods.add("pool.dataset.query")
    got = await nas_polled.scrape()
    # The listing target is down: the last-known quota is not checked, never reported as 1.
    assert ok_key("quota", "storage/backups/proxmox") not in got
    assert got[ok_key("encryption", "B2 daily")] == 1


async def test_encryption_off_drifts(nas_polled: Polled, nas_scenario: TrueNASScenario) -> None:
    nas_scenario.task("Storj weekly").encryption = False
    got = await nas_polled.scrape()
    assert got[ok_key("encryption", "Storj weekly")] == 0
    assert got[ok_key("encryption", "B2 daily")] == 1
    assert drifts(got)[("encryption", "Storj weekly")] == ("on", "off")
    text = generate_latest(nas_polled.registry).decode()
    assert "correct horse" not in text and "pepper" not in text  # the fake's secrets


async def test_cloudsync_schedule_moved_drifts(
    nas_polled: Polled, nas_scenario: TrueNASScenario
) -> None:
    nas_scenario.task("B2 daily").schedule["hour"] = "4"
    got = await nas_polled.scrape()
    assert got[ok_key("cloudsync_schedule", "B2 daily")] == 0
    assert drifts(got)[("cloudsync_schedule", "B2 daily")] == ("30 1 * * *", "30 4 * * *")
    # Moved to Sunday (TrueNAS's dow 7): not the documented Wednesday.
    nas_scenario.task("Storj weekly").schedule["dow"] = "7"
    got = await nas_polled.scrape()
    assert got[ok_key("cloudsync_schedule", "Storj weekly")] == 0
    nas_scenario.task("Storj weekly").schedule["dow"] = "3"
    got = await nas_polled.scrape()
    assert got[ok_key("cloudsync_schedule", "Storj weekly")] == 1


async def test_cloudsync_task_renamed_drifts_as_missing(
    nas_polled: Polled, nas_scenario: TrueNASScenario
) -> None:
    nas_scenario.task("B2 daily").description = "B2 nightly"
    got = await nas_polled.scrape()
    assert drifts(got)[("encryption", "B2 daily")] == ("on", "missing")
    assert drifts(got)[("cloudsync_schedule", "B2 daily")] == ("30 1 * * *", "missing")


# ---------------------------------------------------------------------------------- PVE


@pytest.fixture
def pve_scenario(clock: FakeClock) -> PVEScenario:
    return pve_homelab(clock.time)


@pytest.fixture
async def pve(pve_scenario: PVEScenario) -> AsyncIterator[FakePVE]:
    server = await start_fake_pve(pve_scenario)
    yield server
    await server.stop()


def pve_config(
    fake: FakePVE, prune: str = "keep-last=14", job: str = "backup-infra-daily"
) -> Config:
    doc = yaml.safe_load(config_text(fake))
    doc["policy"] = {"retention": [{"source": "pve1", "job": job, "prune_backups": prune}]}
    return parse_config(yaml.safe_dump(doc), kinds=KINDS)


async def retention(fake: FakePVE, clock: FakeClock, **kwargs: str) -> Samples:
    polled = Polled(pve_config(fake, **kwargs), clock)
    try:
        return await polled.scrape()
    finally:
        await polled.close()


async def test_pve_retention_holds(pve: FakePVE, clock: FakeClock) -> None:
    got = await retention(pve, clock)
    assert got[ok_key("retention", "backup-infra-daily", "pve1")] == 1
    assert drifts(got) == {}


async def test_pve_retention_changed_drifts(
    pve: FakePVE, pve_scenario: PVEScenario, clock: FakeClock
) -> None:
    pve_scenario.job("backup-infra-daily").prune_backups = {"keep-last": "3", "keep-weekly": "2"}
    got = await retention(pve, clock)
    assert got[ok_key("retention", "backup-infra-daily", "pve1")] == 0
    assert drifts(got)[("retention", "backup-infra-daily")] == (
        "keep-last=14",
        "keep-last=3,keep-weekly=2",
    )


async def test_pve_retention_falls_back_to_the_storage_then_keep_all(
    pve: FakePVE, pve_scenario: PVEScenario, clock: FakeClock
) -> None:
    # Without its own prune-backups the job keeps what its storage says (vzdump's order) ...
    pve_scenario.job("backup-infra-daily").prune_backups = None
    pve_scenario.storage("truenas-backups").prune_backups = "keep-last=14"
    got = await retention(pve, clock)
    assert got[ok_key("retention", "backup-infra-daily", "pve1")] == 1
    # ... and without either, vzdump's default keep-all=1.
    pve_scenario.storage("truenas-backups").prune_backups = None
    got = await retention(pve, clock)
    assert drifts(got)[("retention", "backup-infra-daily")] == ("keep-last=14", "keep-all=1")


async def test_pve_retention_of_a_missing_job(pve: FakePVE, clock: FakeClock) -> None:
    got = await retention(pve, clock, job="backup-gone")
    assert drifts(got)[("retention", "backup-gone")] == ("keep-last=14", "missing")


async def test_pve_retention_compares_as_pve_reads_it(pve: FakePVE, clock: FakeClock) -> None:
    # Zero counts are no option (parse_retention, as validate_prune_backups reads them).
    got = await retention(pve, clock, prune="keep-daily=0, keep-last=14")
    assert got[ok_key("retention", "backup-infra-daily", "pve1")] == 1


# ------------------------------------------------------------------------------ config, pure


def test_policy_config_errors_name_the_entry() -> None:
    base = {
        "sources": {
            "pve1": {
                "kind": "proxmox",
                "url": "https://pve:8006",
                "token_id": "a@pve!b",
                "token_secret": "s",
            }
        },
    }

    def problems(policy: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as info:
            parse_config(yaml.safe_dump({**base, "policy": policy}), kinds=KINDS)
        return str(info.value)

    assert "policy.retention[0].source: unknown source 'pve9'" in problems(
        {"retention": [{"source": "pve9", "job": "j", "prune_backups": "keep-last=1"}]}
    )
    assert "quota policies apply to truenas sources, not proxmox" in problems(
        {"quota": [{"source": "pve1", "dataset": "d", "quota": "1GiB"}]}
    )
    assert "policy.retention[0].prune_backups" in problems(
        {"retention": [{"source": "pve1", "job": "j", "prune_backups": "keep-last"}]}
    )
    assert "policy.nfs_export[0].hosts" in problems(
        {"nfs_export": [{"source": "pve1", "path": "/"}]}
    )
    assert "policy.cloudsync_schedule[0].schedule" in problems(
        {"cloudsync_schedule": [{"source": "pve1", "task": "t", "schedule": "daily"}]}
    )
    assert "a second retention policy" in problems(
        {
            "retention": [
                {"source": "pve1", "job": "j", "prune_backups": "keep-last=1"},
                {"source": "pve1", "job": "j", "prune_backups": "keep-last=2"},
            ]
        }
    )
    assert "policy.colour" in problems({"colour": []})


def test_render_skips_unknown_and_bounds_labels() -> None:
    long = "x" * 300
    text = exposition(
        render_policy(
            "nas",
            [
                PolicyResult("quota", "a", None, "150 GiB", ""),
                PolicyResult("nfs_export", "/s\n", False, long, 'say "hi"\x07'),
            ],
        )
    )
    got = samples(text)
    assert key("backup_policy_ok", "nas", policy="quota", target="a") not in got
    (drift,) = drifts(got).values()
    assert drift == ("x" * 99 + "…", 'say "hi"')
    assert label_text("/s\n") == "/s"


def test_formats() -> None:
    assert format_retention(parse_retention("keep-weekly=4,keep-last=3")) == (
        "keep-last=3,keep-weekly=4"
    )
    assert format_retention(parse_retention("keep-all=1,keep-last=3")) == "keep-all=1"
    assert format_retention(None) == "keep-all=1"
    assert format_bytes(150 * GIB) == "150 GiB"
    assert format_bytes(0) == "none"
    assert format_bytes(1536) == "1.50 KiB"


# ---------------------------------------------------------------------------------- the demo


@pytest.mark.parametrize("healthy", [False, True])
async def test_the_homelab_shows_one_drifted_policy(tmp_path: Path, healthy: bool) -> None:
    """The demo's homelab: the PVE backup export opened to the LAN; the healthy lab: none."""
    clock = FakeClock(START)
    lab = await start_homelab(tmp_path / "lab", clock=clock, healthy=healthy)
    try:
        pollers = [p for p in lab.pollers() if p.name in ("pve1", "truenas")]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(pollers, clock=clock))
        for poller in pollers:
            state = await poller.poll_once()
            assert state.error is None, state.error
        got = samples(generate_latest(registry).decode())
        for poller in pollers:
            await poller.source.close()
    finally:
        await lab.stop()
    verdicts = {
        (dict(k[1])["policy"], dict(k[1])["target"]): v
        for k, v in got.items()
        if k[0] == "backup_policy_ok"
    }
    # retention, quota, the share, both tasks' encryption and schedules
    assert len(verdicts) == 7
    expected_drift = {} if healthy else {("nfs_export", SHARE): (PVE1, f"192.0.2.0/24,{PVE1}")}
    assert drifts(got) == expected_drift
    assert verdicts[("nfs_export", SHARE)] == (1 if healthy else 0)
    assert sum(verdicts.values()) == 7 - (0 if healthy else 1)


def test_schedule_compares_by_starts_in_the_nas_zone() -> None:
    # TrueNAS's dow 7 is Sunday, as cron's 0 is: the same starts, no drift.
    task = CloudSyncTask(
        id=3,
        task="weekly",
        enabled=True,
        schedule="0 5 * * 7",
        provider="B2",
        bucket="b",
        direction="PUSH",
        transfer_mode="SYNC",
        encrypted=True,
    )
    snap = TrueNASSnapshot(
        version="25.04", fetched_at=START, timezone="Europe/Berlin", cloudsync=(task,)
    )

    def result(schedule: str) -> PolicyResult:
        rule = CloudSyncSchedulePolicy(source="nas", task="weekly", schedule=schedule)
        (out,) = truenas_results([rule], snap)
        return out

    assert result("0 5 * * 0").ok is True
    assert result("00 05 * * sun").ok is True
    assert result("0 5 * * 6").ok is False
    assert result("0 5 * * 6").actual == "0 5 * * 7"
