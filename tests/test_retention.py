"""Retention as PVE computes it: the prune selection, the replay of runs, protected archives.

The selection is checked against pve-storage's own test expectations
(``tests/fixtures/proxmox/prune_backups_test.json``, transcribed from
``src/test/prune_backups_test.pm``); the counts against a replay of PVE's pruning after every
run, which is what a real storage holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import Metric

from exporter.core.clock import FakeClock
from exporter.sim.pve import FakeGuest, FakeJob, FakeStorage, PVEScenario
from exporter.sources.proxmox.model import (
    Archive,
    BackupJob,
    BackupStorage,
    Guest,
    ProxmoxSnapshot,
    Retention,
)
from exporter.sources.proxmox.render import render_snapshot
from exporter.sources.proxmox.responses import parse_content, parse_jobs, parse_storage_config
from exporter.sources.proxmox.retention import (
    expected_archives,
    parse_retention,
    projected_bytes,
    prune_marks,
    retention_targets,
)
from exporter.vzdump import parse_volid

FIXTURE = Path(__file__).parent / "fixtures" / "proxmox" / "prune_backups_test.json"
CASES: dict[str, Any] = json.loads(FIXTURE.read_text())
DAY = 86400.0
HOUR = 3600.0
GFS = "keep-daily=7,keep-weekly=4,keep-monthly=3"


# ------------------------------------------------------ pve-storage's own test expectations


def marks_like_prune_backups(
    items: Sequence[dict[str, Any]], keep: dict[str, int], vmid: int | None, kind: str | None
) -> dict[str, str]:
    """Do what ``PVE::Storage::Plugin::prune_backups`` does with a listing, with our parts.

    Names are read by :func:`exporter.vzdump.parse_volid` (in UTC, as the upstream test runs
    with ``TZ=UTC``); standard names are grouped by type and vmid and their time comes from the
    name; others are ``renamed``; protected ones are marked before the selection.
    """
    retention = parse_retention(keep) or Retention(keep_all=True)
    groups: dict[tuple[str, int], list[tuple[str, float, bool]]] = {}
    out: dict[str, str] = {}
    for item in items:
        if vmid is not None and item.get("vmid") != vmid:
            continue
        name = parse_volid(item["volid"], "UTC")
        guest_type = name.guest_type if name is not None else _file_type(item["volid"])
        if kind is not None and kind != guest_type:
            continue
        if name is None:
            out[item["volid"]] = "protected" if item.get("protected") else "renamed"
            continue
        entry = (item["volid"], name.ctime, bool(item.get("protected")))
        groups.setdefault((guest_type, name.vmid), []).append(entry)
    for entries in groups.values():
        marks = prune_marks(
            [t for _, t, _ in entries], retention, "UTC", protected=[p for _, _, p in entries]
        )
        out.update({volid: m for (volid, _, _), m in zip(entries, marks, strict=True)})
    return dict(sorted(out.items()))


def _file_type(volid: str) -> str:
    # archive_info's type for a vzdump-<type>-... name that is not a standard one
    parts = volid.rsplit("/", maxsplit=1)[-1].split("-")
    return parts[1] if len(parts) > 2 and parts[1] in ("qemu", "lxc", "openvz") else "unknown"


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["description"] for c in CASES["cases"]])
def test_prune_selection_matches_pve_storage_expectations(case: dict[str, Any]) -> None:
    items = CASES["lists"][case["list"]]
    got = marks_like_prune_backups(items, case["keep"], case["vmid"], case["type"])
    assert got == case["expected"]


def test_fixture_is_the_whole_upstream_suite() -> None:
    # prune_backups_test.pm has 22 cases; the GFS ones that motivated the replay are among them.
    assert len(CASES["cases"]) == 22
    names = {c["description"] for c in CASES["cases"]}
    assert {"daily=weekly=monthly=1", "daily=weekly=1,weekboundary", "monthly=3, one ID"} <= names
    assert CASES["source"]["commit"] == "0c56bad8b2a7d69e5ce2c243651fe830d6caa936"


def test_selection_uses_the_nodes_local_time() -> None:
    # 23:30 and 00:30 UTC on two UTC days are one day in New York: keep-daily=2 keeps the
    # later one of them and the day before (PVE's id functions use localtime).
    base = datetime(2026, 3, 10, 23, 30, tzinfo=UTC).timestamp()
    times = [base - DAY, base, base + HOUR]
    daily2 = Retention(keep=(("daily", 2),))
    assert prune_marks(times, daily2, "UTC") == ["remove", "keep", "keep"]
    assert prune_marks(times, daily2, "America/New_York") == ["keep", "remove", "keep"]


# -------------------------------------------------------------------- a replay of real PVE


def pve_storage_after(runs: Iterable[float], setting: str, tz: str = "UTC") -> list[float]:
    """What a storage holds: every run adds its archive, then vzdump prunes the group."""
    retention = parse_retention(setting)
    assert retention is not None
    kept: list[float] = []
    for t in runs:
        kept.append(t)
        marks = prune_marks(kept, retention, tz)
        kept = [k for k, m in zip(kept, marks, strict=True) if m == "keep"]
    return kept


def daily_runs(first: datetime, days: int) -> list[float]:
    return [(first + timedelta(days=i)).timestamp() for i in range(days)]


def snapshot(
    at: float,
    archives: Iterable[Archive],
    *jobs: BackupJob,
    storages: Sequence[BackupStorage] = (),
    guests: Sequence[Guest] = (),
    tz: str = "UTC",
    not_backed_up: frozenset[int] = frozenset(),
) -> ProxmoxSnapshot:
    return ProxmoxSnapshot(
        time=at,
        timezone=tz,
        nodes=(("pve1", True),),
        guests=tuple(guests) or (Guest(100, "g100", "pve1", "qemu"),),
        storages=tuple(storages),
        archives=tuple(sorted(archives, key=lambda a: a.ctime)),
        jobs=jobs,
        not_backed_up=not_backed_up,
        tasks=(),
    )


def daily_job(setting: str | None = GFS, **kwargs: Any) -> BackupJob:
    base: dict[str, Any] = {
        "id": "daily",
        "schedule": "21:00",
        "enabled": True,
        "storage": "nas",
        "mode": "snapshot",
        "vmids": frozenset({100}),
        "retention": parse_retention(setting),
    }
    return BackupJob(**{**base, **kwargs})


def on_nas(times: Iterable[float], protected: Iterable[float] = ()) -> list[Archive]:
    shielded = set(protected)
    return [Archive("nas", 100, t, 10, protected=t in shielded) for t in times]


FIRST = datetime(2026, 1, 1, 21, 0, 2, tzinfo=UTC)  # the first run's archive, 2 s after 21:00


@pytest.mark.parametrize(("days", "count"), [(21, 9), (61, 12), (91, 13)])
def test_gfs_daily_job_expects_what_pve_keeps(days: int, count: int) -> None:
    # The numbers: keep-daily=7,keep-weekly=4,keep-monthly=3 on a daily job keeps 9,
    # 12 and 13 archives after 21, 61 and 91 days, never the 14 the options add up to.
    runs = daily_runs(FIRST, days)
    held = pve_storage_after(runs, GFS)
    assert len(held) == count
    at = runs[-1] + HOUR
    snap = snapshot(at, on_nas(held), daily_job())
    assert expected_archives(snap) == {("nas", 100): count}
    assert retention_targets(snap)[("nas", 100)] in (13, 14)  # the steady state
    # One archive gone (deleted by hand): still `count` expected, so the storage is one short.
    gone = replace(snap, archives=snap.archives[:-2] + snap.archives[-1:])
    assert len(gone.archives) == count - 1
    assert expected_archives(gone) == {("nas", 100): count}


@pytest.mark.parametrize(
    "setting",
    [GFS, "keep-last=3,keep-daily=7,keep-weekly=4", "keep-weekly=2,keep-monthly=2", "keep-daily=5"],
)
@pytest.mark.parametrize("offset", [0, 9, 23, 40])
@pytest.mark.parametrize("days", [10, 45, 130])
def test_expected_equals_a_healthy_storage_after_any_history(
    setting: str, offset: int, days: int
) -> None:
    # A healthy storage never looks short: replaying from the oldest surviving archive gives
    # what replaying from the job's very first run left (the pruned archives before the oldest
    # no longer take part), whatever the calendar position.
    runs = daily_runs(FIRST + timedelta(days=offset), days)
    held = pve_storage_after(runs, setting)
    snap = snapshot(runs[-1] + 2 * HOUR, on_nas(held), daily_job(setting))
    assert expected_archives(snap) == {("nas", 100): len(held)}
    # Single prune over all runs would differ here; the replay is what PVE does.
    assert len(held) <= (retention_targets(snap)[("nas", 100)] if days > 100 else len(runs))


def test_a_prune_over_all_runs_is_not_what_pve_keeps() -> None:
    # Pruning once over 61 runs from 2026-01-29 keeps 13, but PVE prunes after every run and
    # a removed archive never comes back: the storage holds 12, and 12 is expected.
    runs = daily_runs(datetime(2026, 1, 29, 21, 0, 2, tzinfo=UTC), 61)
    retention = parse_retention(GFS)
    assert retention is not None
    once = prune_marks(runs, retention).count("keep")
    held = pve_storage_after(runs, GFS)
    assert (once, len(held)) == (13, 12)
    snap = snapshot(runs[-1] + HOUR, on_nas(held), daily_job())
    assert expected_archives(snap) == {("nas", 100): 12}


def test_failed_runs_and_a_young_job() -> None:
    runs = daily_runs(FIRST, 5)
    job = daily_job("keep-last=14")
    healthy = snapshot(runs[-1] + HOUR, on_nas(runs), job)
    assert expected_archives(healthy) == {("nas", 100): 5}
    assert retention_targets(healthy) == {("nas", 100): 14}
    # The third run failed: 4 archives where 5 are expected.
    failed = replace(healthy, archives=tuple(on_nas(runs[:2] + runs[3:])))
    assert expected_archives(failed) == {("nas", 100): 5}


def test_protected_archives_never_count_toward_keep() -> None:
    # The issue: keep-last 14 on a job running for a month; 3 old archives were protected.
    # PVE keeps 14 unprotected beside them; with 11 there are 3 missing.
    runs = daily_runs(FIRST, 30)
    shielded = runs[:3]
    held = shielded + runs[-11:]
    job = daily_job("keep-last=14")
    snap = snapshot(runs[-1] + HOUR, on_nas(held, protected=shielded), job)
    assert expected_archives(snap) == {("nas", 100): 14}
    # A healthy storage of that history: 14 unprotected + 3 protected.
    healthy = replace(snap, archives=tuple(on_nas(shielded + runs[-14:], protected=shielded)))
    assert expected_archives(healthy) == {("nas", 100): 14}
    # A job only 14 runs old whose first 3 archives are protected: 11 unprotected are all.
    young = daily_runs(FIRST, 14)
    fresh = snapshot(young[-1] + HOUR, on_nas(young, protected=young[:3]), job)
    assert expected_archives(fresh) == {("nas", 100): 11}


def test_protected_archives_do_not_cover_a_period() -> None:
    # keep-daily=1: today's protected archive does not cover today; the older one of today
    # is kept (Plugin.pm marks protected before prune_mark_backup_group, which skips them).
    day = datetime(2026, 2, 3, tzinfo=UTC).timestamp()
    daily1 = Retention(keep=(("daily", 1),))
    marks = prune_marks([day + HOUR, day + 2 * HOUR], daily1, protected=[False, True])
    assert marks == ["keep", "protected"]


def test_keep_all_remove_0_and_the_storage_fallback() -> None:
    runs = daily_runs(FIRST, 20)
    archives = on_nas(runs)
    at = runs[-1] + HOUR
    # keep-all (or no option, or nothing set anywhere: vzdump's default keep-all=1): no
    # expectation at all.
    for job in (daily_job("keep-all=1"), daily_job("keep-last=0"), daily_job(None)):
        snap = snapshot(at, archives, job)
        assert expected_archives(snap) == retention_targets(snap) == {}
    # No job setting: the storage's property string applies.
    storage = BackupStorage("nas", "nfs", True, True, 1, 0, ("pve1",), True, parse_retention(GFS))
    snap = snapshot(at, on_nas(pve_storage_after(runs, GFS)), daily_job(None), storages=[storage])
    assert expected_archives(snap) == {("nas", 100): len(pve_storage_after(runs, GFS))}
    # remove=0: nothing is pruned, and vzdump refuses a backup once keep-last's limit is
    # reached ("There is a max backup limit of 7 enforced ..."): 7 expected, not 20.
    no_prune = snapshot(at, archives[:7], daily_job("keep-last=7", remove=False))
    assert expected_archives(no_prune) == {("nas", 100): 7}


def test_job_object_and_storage_property_string_read_alike() -> None:
    jobs = parse_jobs(
        [
            {
                "id": "a",
                "schedule": "21:00",
                "storage": "nas",
                "vmid": "100",
                "prune-backups": {"keep-daily": "7", "keep-weekly": "4", "keep-monthly": 3},
                "remove": 0,
            }
        ]
    )
    storages = parse_storage_config([{"storage": "nas", "prune-backups": GFS}])
    assert jobs[0].retention == storages["nas"] == parse_retention(GFS)
    assert jobs[0].remove is False
    assert parse_jobs([{"id": "b"}])[0].remove is True
    with pytest.raises(ValueError, match="bad prune-backups"):
        parse_retention("keep-daily")


def test_renamed_archives_are_not_pruned_nor_anchor() -> None:
    # A non-standard name (PVE marks it "renamed" and never prunes it) is listed with a vmid
    # but does not start the job's history.
    listing = [
        {"volid": "nas:backup/vzdump-qemu-100-keep-me.vma.zst", "vmid": 100, "ctime": 1000},
        {
            "volid": "nas:backup/vzdump-qemu-100-2026_01_01-21_00_02.vma.zst",
            "vmid": 100,
            "ctime": FIRST.timestamp(),
        },
    ]
    archives = parse_content(listing, "pve1", "nas", "UTC")
    assert [a.standard_name for a in archives] == [False, True]
    snap = snapshot(FIRST.timestamp() + HOUR, archives, daily_job("keep-last=14"))
    assert expected_archives(snap) == {("nas", 100): 1}


def test_the_fake_pve_prunes_like_pve() -> None:
    # The fake PVE (the homelab's) prunes with the storage's GFS setting after every run,
    # protected archives aside; the exporter expects exactly what it holds.
    clock = FakeClock(FIRST.timestamp() - HOUR)
    scenario = PVEScenario(
        now=clock.time,
        tz="UTC",
        guests=[FakeGuest(100, "infra100"), FakeGuest(900, "tpl", template=True)],
        storages=[FakeStorage("nas", total=2**40, prune_backups=GFS)],
        jobs=[FakeJob("daily", schedule="21:00", storage="nas", vmid="100")],
    )
    scenario.sync()
    clock.advance(91 * DAY)
    scenario.sync()
    held = scenario.archives_of("nas", 100)
    assert len(held) == 13
    archives = [Archive("nas", 100, float(a.ctime), a.size) for a in held]
    snap = snapshot(clock.time(), archives, daily_job(None), storages=[nas_storage(GFS)])
    assert expected_archives(snap) == {("nas", 100): 13}
    # PVE lists a template no job covers as not backed up; so does the fake.
    assert [g.vmid for g in scenario.not_backed_up()] == [900]


def nas_storage(setting: str) -> BackupStorage:
    return BackupStorage(
        "nas", "nfs", True, True, 2**40, 0, ("pve1",), True, parse_retention(setting)
    )


# ----------------------------------------------------------------------------- templates


def samples(families: Iterable[Metric]) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("vmid", "")): s.value
        for family in families
        for s in family.samples
        if s.name == "backup_pve_guest_not_backed_up"
    }


def test_templates_are_not_reported_unless_a_job_covers_them() -> None:
    guests = [
        Guest(100, "vm", "pve1", "qemu"),
        Guest(101, "stray", "pve1", "qemu"),
        Guest(900, "tpl-excluded", "pve1", "qemu", template=True),
        Guest(901, "tpl-covered", "pve1", "lxc", template=True),
    ]
    job = daily_job("keep-last=3", vmids=frozenset({100, 901}))
    # PVE's not-backed-up list includes the stray VM and the template no job covers.
    snap = snapshot(0.0, [], job, guests=guests, not_backed_up=frozenset({101, 900}))
    got = samples(render_snapshot("pve1", snap, grace=6 * HOUR))
    assert got == {
        ("backup_pve_guest_not_backed_up", "100"): 0,
        ("backup_pve_guest_not_backed_up", "101"): 1,
        ("backup_pve_guest_not_backed_up", "901"): 0,
    }


def test_projection_uses_the_steady_state() -> None:
    # A job that ran for a year holds 14 here (a December monthly archive survives); one that
    # started on 1 January holds 13 on the same day. The target is the former, the expected
    # count of the young job the latter.
    end = FIRST + timedelta(days=119)
    year = pve_storage_after(daily_runs(end - timedelta(days=365), 366), GFS)
    young = pve_storage_after(daily_runs(FIRST, 120), GFS)
    assert (len(year), len(young)) == (14, 13)
    snap = snapshot(end.timestamp() + HOUR, on_nas(young), daily_job())
    assert retention_targets(snap) == {("nas", 100): 14}
    assert expected_archives(snap) == {("nas", 100): 13}
    assert projected_bytes(snap) == {"nas": 14 * 10.0}


def test_a_very_long_history_replays_its_newest_runs() -> None:
    # An hourly job whose oldest archive (protected) is three years old: more runs than the
    # replay takes; it replays the newest ones, so the recent archives are what is expected.
    now = FIRST.timestamp() + 3 * 366 * DAY
    recent = [now - h * HOUR - 1800 for h in range(3, 0, -1)]
    job = daily_job("keep-last=3,keep-daily=2", schedule="hourly")
    snap = snapshot(now, on_nas([FIRST.timestamp(), *recent], protected=[FIRST.timestamp()]), job)
    # keep-last 3 (the 20:00 run is due and missing, so 18:30, 19:30 and its own) and the
    # two days before today, which keep-last already covers.
    assert expected_archives(snap) == {("nas", 100): 5}
    assert retention_targets(snap) == {("nas", 100): 5}
