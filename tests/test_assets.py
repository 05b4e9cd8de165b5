"""The asset engine: the reference assets judged over the simulated homelab, and the pure rules.

The homelab runs its real fakes over their real protocols (PVE and TrueNAS fakes, b2sdk's
simulator, moto's S3 server for Storj, a folder of Home Assistant backups) with an injected
clock. moto stamps objects with the real time, so "Storj a week stale" is the fake clock set
8 days and an hour ahead of it: everything the other fakes seed follows the fake clock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.assets import render as render_module
from exporter.assets.config import AssetConfig, LocationConfig
from exporter.assets.engine import (
    DEFAULT_RESTORE_TEST_INTERVAL,
    Observation,
    age_text,
    judge,
    judge_asset,
    next_change,
)
from exporter.assets.model import AssetStatus, VerificationStatus
from exporter.assets.observe import bucket_verifications, observe_job, observe_source
from exporter.assets.render import render_assets
from exporter.buckets.engine import bucket_evidence
from exporter.buckets.model import BucketsSnapshot, BucketState, PrefixStats, RestoreResult
from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.poller import Poller, PollState
from exporter.schedule.expressions import parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec, JobStatus
from exporter.sim.homelab import Homelab, _daily, start_homelab
from exporter.sources.base import FetchError
from exporter.sources.targets import TargetStatus

DAY = 86400.0
WEEK_AND_A_DAY = 8 * DAY + 3600.0
NOT_POLLED = {"smart", "healthchecks"}  # feed no asset


@dataclass
class Lab:
    lab: Homelab
    clock: FakeClock
    pollers: list[Poller]
    collector: SnapshotCollector

    async def poll(self, *names: str) -> None:
        for poller in self.pollers:
            if (poller.name in names) if names else poller.name not in NOT_POLLED:
                await poller.poll_once()

    def statuses(self) -> dict[str, AssetStatus]:
        return {s.name: s for s in self.collector.asset_statuses()}


@pytest_asyncio.fixture
async def make_lab(tmp_path: Path) -> AsyncIterator[Any]:
    labs: list[Lab] = []

    async def make(ahead: float = 0.0) -> Lab:
        clock = FakeClock(time.time() + ahead)
        lab = await start_homelab(tmp_path / f"lab{len(labs)}", clock=clock, healthy=True)
        pollers = lab.pollers()
        collector = SnapshotCollector(
            pollers, clock=clock, jobs=lab.config.jobs, assets=lab.config.assets
        )
        made = Lab(lab, clock, pollers, collector)
        labs.append(made)
        return made

    yield make
    for made in labs:
        for poller in made.pollers:
            await poller.source.close()
        await made.lab.stop()


def summary(statuses: dict[str, AssetStatus]) -> dict[str, tuple[str, int, int, str]]:
    return {n: (s.state, s.copies, s.offsite_copies, s.reason) for n, s in statuses.items()}


async def test_everything_fresh(make_lab: Any) -> None:
    lab = await make_lab()
    await lab.poll()
    assert summary(lab.statuses()) == {
        "infra100": ("protected", 3, 1, ""),
        "immich": ("protected", 3, 2, ""),
        "nextcloud": ("protected", 3, 2, ""),
        "home-assistant": ("protected", 3, 1, ""),
        # Manual exports, one offsite copy: the strategy's known gap stays visible.
        "truenas-config": ("attention", 1, 1, "1 copy within rpo (3 needed)"),
    }
    immich = lab.statuses()["immich"]
    assert immich.compliant and immich.media == 3
    assert [(loc.name, loc.medium) for loc in immich.locations] == [
        ("snapshot-truenas", "truenas"),
        ("offsite-b2", "b2"),
        ("offsite-storj", "storj"),
    ]
    # The PVE archives and HA backups sit on the NAS: with its snapshots, one medium.
    assert lab.statuses()["infra100"].media == 2
    assert lab.statuses()["home-assistant"].media == 2
    check_the_sla_roll_up_sums_the_jobs_feeding_the_locations(lab)
    check_next_change_is_exact(lab)  # moves the clock: last


async def test_storj_a_week_stale(make_lab: Any) -> None:
    lab = await make_lab(ahead=WEEK_AND_A_DAY)
    await lab.poll()
    assert summary(lab.statuses()) == {
        "infra100": ("attention", 2, 0, "storj copy 8d old (rpo 8d)"),
        "immich": ("attention", 2, 1, "storj copy 8d old (rpo 2d)"),
        "nextcloud": ("attention", 2, 1, "storj copy 8d old (rpo 2d)"),
        "home-assistant": ("protected", 3, 1, ""),
        "truenas-config": ("attention", 1, 1, "1 copy within rpo (3 needed)"),
    }
    assert not lab.statuses()["immich"].compliant
    check_the_exposition_says_what_the_engine_judged(lab)


def b2_night(lab: Lab, night: int, prefix_index: int) -> float:
    """When the seeding uploaded the newest object of ``prefix_index`` in ``night`` (0 oldest)."""
    start = _daily(1, 30, now=lab.clock.time() - 2 * 3600, days=14)[night]
    return start + 600 * (prefix_index + 1) + 60 * 2


async def test_b2_failing_three_nights(make_lab: Any) -> None:
    lab = await make_lab()
    # The syncs of the last three nights failed: nothing they would have uploaded is there.
    assert lab.lab.b2_delete_since(b2_night(lab, 11, 0) - 600) == 3 * 4 * 3
    await lab.poll()
    now = lab.clock.time()
    immich_newest = b2_night(lab, 10, 0)
    nextcloud_newest = b2_night(lab, 10, 1)
    ha_newest = b2_night(lab, 10, 3)
    statuses = lab.statuses()
    assert summary(statuses) == {
        "infra100": ("protected", 3, 1, ""),
        "immich": ("attention", 2, 1, f"b2 copy {age_text(now - immich_newest)} old (rpo 2d)"),
        "nextcloud": (
            "attention",
            2,
            1,
            f"b2 copy {age_text(now - nextcloud_newest)} old (rpo 2d)",
        ),
        "home-assistant": (
            "attention",
            2,
            0,
            f"b2 copy {age_text(now - ha_newest)} old (rpo 2d)",
        ),
        "truenas-config": ("attention", 1, 1, "1 copy within rpo (3 needed)"),
    }
    assert age_text(now - immich_newest) in ("3d", "4d")
    b2 = next(loc for loc in statuses["immich"].locations if loc.name == "offsite-b2")
    assert (b2.known, b2.fresh, b2.newest) == (True, False, immich_newest)


async def test_only_local_snapshots_left(make_lab: Any) -> None:
    lab = await make_lab(ahead=WEEK_AND_A_DAY)
    assert lab.lab.b2_delete_since(0) == 14 * 4 * 3
    await lab.poll()
    assert summary(lab.statuses()) == {
        "infra100": ("attention", 2, 0, "storj copy 8d old (rpo 8d)"),
        "immich": ("unprotected", 1, 0, "only snapshots within rpo 2d"),
        "nextcloud": ("unprotected", 1, 0, "only snapshots within rpo 2d"),
        "home-assistant": ("attention", 2, 0, "no b2 copy"),
        "truenas-config": ("unprotected", 0, 0, "no copy within rpo 8d"),
    }


async def test_a_source_down_is_unknown_never_success(make_lab: Any) -> None:
    lab = await make_lab()
    await lab.poll()
    await lab.lab.truenas.stop()
    await lab.poll("truenas")
    assert not lab.collector._by_name["truenas"].state.up
    statuses = lab.statuses()
    assert summary(statuses) == {
        "infra100": ("unknown", 2, 1, "source truenas down"),
        "immich": ("unknown", 2, 2, "source truenas down"),
        "nextcloud": ("unknown", 2, 2, "source truenas down"),
        "home-assistant": ("unknown", 2, 1, "source truenas down"),
        "truenas-config": ("attention", 1, 1, "1 copy within rpo (3 needed)"),
    }
    samples = exposition(lab.collector)
    # No compliant series while unknown, no newest copy for the unknown location.
    assert ("backup_asset_compliant", (("asset", "immich"),)) not in samples
    assert samples[("backup_asset_compliant", (("asset", "truenas-config"),))] == 0
    newest = "backup_asset_newest_copy_timestamp_seconds"
    assert (newest, (("asset", "immich"), ("location", "snapshot-truenas"))) not in samples
    assert (newest, (("asset", "immich"), ("location", "offsite-b2"))) in samples


def exposition(
    collector: SnapshotCollector,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("backup_asset"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def check_the_exposition_says_what_the_engine_judged(lab: Lab) -> None:
    statuses = lab.statuses()
    samples = exposition(lab.collector)
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for st in statuses.values():
        a = (("asset", st.name),)
        expected[("backup_asset_info", (*a, ("criticality", st.criticality)))] = 1
        expected[("backup_asset_rpo_seconds", a)] = st.rpo
        expected[("backup_asset_copies", a)] = st.copies
        expected[("backup_asset_offsite_copies", a)] = st.offsite_copies
        expected[("backup_asset_compliant", a)] = float(st.compliant)
        for loc in st.locations:
            key = (*a, ("location", loc.name))
            expected[("backup_asset_newest_copy_timestamp_seconds", key)] = loc.newest or 0.0
        for state in ("protected", "attention", "unprotected", "unknown"):
            expected[("backup_asset_state", (*a, ("state", state)))] = float(st.state == state)
        if st.reason:
            expected[("backup_asset_reason_info", (*a, ("reason", st.reason)))] = 1
        expected[("backup_asset_last_known_timestamp_seconds", a)] = lab.clock.time()
        expected[("backup_asset_runs_expected_total", a)] = st.runs_expected
        expected[("backup_asset_runs_met_total", a)] = st.runs_met
        expected[("backup_asset_sla_target_ratio", a)] = 0.95
    assert samples == expected
    assert (
        samples[
            (
                "backup_asset_reason_info",
                (("asset", "immich"), ("reason", "storj copy 8d old (rpo 2d)")),
            )
        ]
        == 1
    )


def check_next_change_is_exact(lab: Lab) -> None:
    def judged() -> dict[str, AssetStatus]:
        return {n: replace(s, last_known=None) for n, s in lab.statuses().items()}

    before = judged()
    change = lab.collector.asset_next_change
    assert change is not None and change > lab.clock.time()
    lab.clock.now = change - 0.001
    assert judged() == before
    lab.clock.now = change
    assert judged() != before


def check_the_sla_roll_up_sums_the_jobs_feeding_the_locations(lab: Lab) -> None:
    jobs = lab.collector.job_statuses()
    fed = {
        (j.spec.name, j.spec.source, j.spec.labels.get("vmid", "")): replace(
            j, runs_expected=10, runs_met=9
        )
        for j in jobs
    }
    statuses = {s.name: s for s in lab.collector.asset_statuses(list(fed.values()))}
    # infra100: the PVE job of guest 100, and Storj's sync named in the location's jobs.
    assert (statuses["infra100"].runs_expected, statuses["infra100"].runs_met) == (20, 18)
    # home-assistant: ha-daily (same evidence as its local location) and the B2 sync.
    assert (statuses["home-assistant"].runs_expected, statuses["home-assistant"].runs_met) == (
        20,
        18,
    )
    # immich: the B2 and Storj syncs.
    assert statuses["immich"].runs_expected == 20


# ---------------------------------------------------------------- the pure rules


def asset(*layers: tuple[str, str], rpo: float = 2 * DAY) -> AssetConfig:
    return AssetConfig(
        name="a",
        rpo=rpo,
        locations=tuple(
            LocationConfig(
                layer=layer,  # type: ignore[arg-type]
                evidence={"source": source},
                medium=source,
                name=f"{layer}-{source}",
            )
            for layer, source in layers
        ),
    )


THREE = asset(("snapshot", "nas"), ("local", "usb"), ("offsite", "b2"))
T = 1_800_000_000.0


def restored(
    at: float = T, interval: float = DEFAULT_RESTORE_TEST_INTERVAL
) -> list[VerificationStatus]:
    return [
        VerificationStatus(
            asset="a",
            activity="restore-test",
            interval=interval,
            last_pass=at,
            last_fail=None,
            overdue=False,
        )
    ]


def fresh(newest: float = T) -> Observation:
    return Observation(known=True, newest=newest)


def test_rules_in_order() -> None:
    now = T + 3600
    ok = [fresh(), fresh(), fresh()]
    assert judge_asset(THREE, ok, restored(), now).state == "protected"
    down = Observation(known=False, why="source b2 down")
    # Compliance on known evidence alone is proven; the unknown location keeps it from success.
    four = asset(("snapshot", "nas"), ("local", "usb"), ("offsite", "b2"), ("offsite", "storj"))
    st = judge_asset(four, [*ok, down], restored(), now)
    assert (st.state, st.reason, st.compliant) == ("attention", "source b2 down", True)
    # Not compliant on known evidence, and the unknown one could make it so: unknown.
    st = judge_asset(THREE, [fresh(), fresh(), down], restored(), now)
    assert (st.state, st.reason, st.copies) == ("unknown", "source b2 down", 2)
    # No backup known, a backup location unknown: unknown, not unprotected.
    st = judge_asset(THREE, [fresh(), Observation(known=True), down], restored(), now)
    assert (st.state, st.reason) == ("unknown", "source b2 down")
    # Nothing unknown, only the snapshot fresh: unprotected.
    st = judge_asset(THREE, [fresh(), Observation(known=True), Observation(known=True)], [], now)
    assert (st.state, st.reason) == ("unprotected", "only snapshots within rpo 2d")
    old = fresh(T - 9 * DAY)
    st = judge_asset(THREE, [old, old, old], [], now)
    assert (st.state, st.reason, st.copies) == ("unprotected", "no copy within rpo 2d", 0)
    # A backup exists but 3-2-1 fails: attention with the stale location's age.
    st = judge_asset(THREE, [fresh(), fresh(), old], restored(), now)
    assert (st.state, st.reason) == ("attention", "b2 copy 9d old (rpo 2d)")
    # A failing run with a fresh copy: still attention.
    failing = Observation(known=True, newest=T, failed=True, why="last run failed")
    st = judge_asset(THREE, [fresh(), fresh(), failing], restored(), now)
    assert (st.state, st.reason) == ("attention", "b2: last run failed")
    # Two media needed: three copies on one medium are not enough.
    one = asset(("snapshot", "nas"), ("local", "nas"), ("offsite", "nas"))
    st = judge_asset(one, ok, restored(), now)
    assert (st.state, st.reason, st.media) == ("attention", "1 medium within rpo (2 needed)", 1)


def test_restore_tests_decide_between_protected_and_attention() -> None:
    ok = [fresh(), fresh(), fresh()]
    now = T + 3600
    assert judge_asset(THREE, ok, [], now).reason == "restore never tested"
    failed = [replace(restored()[0], last_fail=T + 1)]
    assert judge_asset(THREE, ok, failed, now).reason == "restore test failed"
    due = restored(T - 92 * DAY)
    assert judge_asset(THREE, ok, due, now).reason == "restore test overdue (every 92d)"
    other = [replace(restored()[0], activity="dr-drill")]
    assert judge_asset(THREE, ok, other, now).reason == "restore never tested"


def test_next_change_is_the_exact_instant_a_copy_leaves_the_rpo() -> None:
    assets = {"a": THREE}
    obs = {"a": [fresh(T), fresh(T + 100), fresh(T + 200)]}
    checks = {"a": restored(T, interval=100 * DAY)}
    now = T + DAY
    change = next_change(assets, obs, checks, now)
    assert change == T + 2 * DAY
    assert judge(assets, obs, checks, change - 0.001)[0].state == "protected"
    at = judge(assets, obs, checks, change)[0]
    assert (at.state, at.copies, at.reason) == ("attention", 2, "nas copy 2d old (rpo 2d)")


def test_next_change_is_the_exact_instant_a_restore_test_expires() -> None:
    assets = {"a": THREE}
    obs = {"a": [fresh(T), fresh(T), fresh(T)]}
    checks = {"a": restored(T - 10 * DAY, interval=10 * DAY + 3600)}
    change = next_change(assets, obs, checks, T)
    assert change == T + 3600
    assert judge(assets, obs, checks, change - 0.001)[0].state == "protected"
    assert judge(assets, obs, checks, change)[0].reason == "restore test overdue (every 241h)"


def test_next_change_follows_the_age_shown_in_a_reason() -> None:
    assets = {"a": THREE}
    obs = {"a": [fresh(T), fresh(T), fresh(T - 9 * DAY - 5)]}
    checks = {"a": restored(T)}
    now = T + 10
    change = next_change(assets, obs, checks, now)
    assert change == T - 5 + DAY  # 9d old until the copy is 10 days old, then 10d
    assert judge(assets, obs, checks, change - 0.001)[0].reason == "b2 copy 9d old (rpo 2d)"
    assert judge(assets, obs, checks, change)[0].reason == "b2 copy 10d old (rpo 2d)"
    # Nothing known: nothing changes without new evidence.
    assert next_change(assets, {"a": [Observation(known=False)] * 3}, {}, now) is None


def test_age_text_rounds_down_in_the_largest_unit() -> None:
    assert [age_text(s) for s in (0, 59, 60, 3599, 3600, 86399, 86400, 9.5 * DAY)] == [
        "0m",
        "0m",
        "1m",
        "59m",
        "1h",
        "23h",
        "1d",
        "9d",
    ]


def test_the_render_docstring_shows_every_family() -> None:
    statuses = judge(
        {"immich": replace(THREE, name="immich")},
        {"immich": [fresh(), fresh(), fresh(T - 9 * DAY)]},
        {},
        T,
    )
    doc = render_module.__doc__ or ""
    for family in render_assets(statuses):
        suffix = "_total" if family.type == "counter" else ""
        assert f"# TYPE {family.name}{suffix} {family.type}" in doc, family.name


def test_unknown_at_first_judgment_counts_from_then() -> None:
    clock = FakeClock(T)
    collector = SnapshotCollector([], clock=clock, assets={"a": THREE})
    first = collector.asset_statuses()[0]
    assert (first.state, first.last_known) == ("unknown", T)
    clock.advance(3 * DAY)
    assert collector.asset_statuses()[0].last_known == T
    assert first.reason == "no source nas"


@pytest.mark.parametrize("layer", ["primary", "snapshot"])
def test_live_data_and_snapshots_alone_are_no_backup(layer: str) -> None:
    a = asset((layer, "nas"), ("snapshot", "nas2"), ("primary", "nas3"))
    st = judge_asset(a, [fresh(), fresh(), fresh()], restored(), T)
    assert st.state == "unprotected"


# ---------------------------------------------------------------- observations


@dataclass
class FakePoller:
    name: str
    state: PollState
    source: Any


def bucket_snapshot(*, up: bool) -> BucketsSnapshot:
    stats = PrefixStats("immich/", 3, 300, newest=T - 60, oldest=T - DAY, listed_at=T)
    failed = FetchError("timeout", "listing timed out")
    return BucketsSnapshot(
        buckets=(BucketState("homelab-b2", 6.0, (stats,), restore=None),),
        targets=(
            TargetStatus("bucket/homelab-b2", up=True)
            if up
            else TargetStatus.failed("bucket/homelab-b2", failed),
        ),
    )


B2_LOC = LocationConfig(
    layer="offsite",
    evidence={"source": "b2", "bucket": "homelab-b2", "prefix": "immich/"},
    medium="b2",
    name="offsite-b2",
)


def b2_poller(*, up: bool = True, target_up: bool = True, polled: bool = True) -> FakePoller:
    snapshot = bucket_snapshot(up=target_up) if polled else None
    state = PollState(snapshot=snapshot, up=up, polled=polled)
    return FakePoller("b2", state, SimpleNamespace(evidence=bucket_evidence))


def test_a_location_is_known_only_while_its_source_and_target_answer() -> None:
    assert observe_source(B2_LOC, b2_poller()) == Observation(known=True, newest=T - 60)
    assert observe_source(B2_LOC, b2_poller(up=False)) == Observation(
        known=False, why="source b2 down"
    )
    # The bucket failed alone: its last listing is kept, but it is not evidence of now.
    assert observe_source(B2_LOC, b2_poller(target_up=False)) == Observation(
        known=False, why="b2 bucket homelab-b2 down"
    )
    assert observe_source(B2_LOC, b2_poller(polled=False)).why == "source b2 not read yet"
    other = replace(B2_LOC, evidence={**B2_LOC.evidence, "prefix": "photos/"})
    assert observe_source(other, b2_poller()) == Observation(
        known=False, why="b2 has no bucket=homelab-b2 prefix=photos/"
    )


def job_status(state: str, last_success: float | None) -> JobStatus:
    spec = JobSpec(
        name="cloudsync-b2-daily",
        source="truenas",
        schedule=parse_schedule("30 1 * * *", "Europe/Berlin"),
        grace=8 * 3600,
    )
    return JobStatus(
        spec=spec,
        evidence=Evidence(last_success=last_success),
        expected_start=None,
        next_start=None,
        start_deadline=None,
        finish_deadline=None,
        overdue=state == "overdue",
        missed_start=False,
        state=state,  # type: ignore[arg-type]
    )


def test_a_job_location_follows_its_job() -> None:
    loc = LocationConfig(
        layer="offsite",
        evidence={"job": "cloudsync-b2-daily", "source": "truenas"},
        medium="truenas",
        name="offsite-truenas",
    )
    assert observe_job(loc, [job_status("ok", T)], {}) == Observation(known=True, newest=T)
    assert observe_job(loc, [job_status("failed", T)], {}) == Observation(
        known=True, newest=T, failed=True, why="job failed"
    )
    assert observe_job(loc, [job_status("unknown", None)], {}) == Observation(
        known=False, why="job cloudsync-b2-daily unknown"
    )
    assert observe_job(loc, [], {}).why == "no job cloudsync-b2-daily"


def test_a_bucket_restore_check_is_a_sample_restore_test_of_the_assets_it_covers() -> None:
    ok = RestoreResult(
        checked_at=T, success=True, result="ok", verified="sha1", duration=1, bytes=9
    )
    snapshot = bucket_snapshot(up=True)
    snapshot = replace(
        snapshot, buckets=(replace(snapshot.buckets[0], restore=ok, restore_last_success=T),)
    )
    poller = FakePoller("b2", PollState(snapshot=snapshot, up=True, polled=True), None)
    covered = AssetConfig(name="immich", rpo=DAY, locations=(B2_LOC,))
    local_only = AssetConfig(
        name="ha", rpo=DAY, locations=(replace(B2_LOC, layer="local", name="local-b2"),)
    )
    found = bucket_verifications({"immich": covered, "ha": local_only}, [poller])
    assert found == {
        "immich": [
            VerificationStatus(
                asset="immich",
                activity="restore-test",
                interval=DEFAULT_RESTORE_TEST_INTERVAL,
                last_pass=T,
                last_fail=None,
                overdue=False,
                depth="sample",
            )
        ]
    }
