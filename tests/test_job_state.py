"""Job states, first seen, restart from the state store, and backtest against live evaluation."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import SourceConfig
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.core.store import Run, StateStore
from exporter.schedule.backtest import backtest
from exporter.schedule.expressions import parse_schedule
from exporter.schedule.jobs import STATES, Evidence, JobSpec, evaluate, job_key
from exporter.sources.base import FetchContext, FetchError, Source

BERLIN = ZoneInfo("Europe/Berlin")
H = 3600.0
DAY = 86400.0


def at(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def daily(expr: str = "21:00", grace: float = 6 * H, **kw: object) -> JobSpec:
    return JobSpec(
        name="daily", source="pve1", schedule=parse_schedule(expr, BERLIN), grace=grace, **kw
    )  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the states


@pytest.mark.parametrize(
    ("evidence", "now", "known", "state"),
    [
        (Evidence(last_success=at(2026, 3, 2, 21, 30)), at(2026, 3, 3, 12, 0), True, "ok"),
        (Evidence(last_success=at(2026, 3, 1, 21, 30)), at(2026, 3, 3, 12, 0), True, "overdue"),
        (Evidence(last_success=at(2026, 3, 1, 21, 30)), at(2026, 3, 3, 12, 0), False, "unknown"),
        (Evidence(), at(2026, 3, 3, 12, 0), False, "unknown"),
        (
            Evidence(last_success=at(2026, 3, 2, 21, 30), failed=True),
            at(2026, 3, 3, 12, 0),
            True,
            "failed",
        ),
        (
            Evidence(
                last_success=at(2026, 3, 2, 21, 30), running=True, last_start=at(2026, 3, 3, 21, 0)
            ),
            at(2026, 3, 3, 21, 10),
            True,
            "running",
        ),
    ],
)
def test_exactly_one_state(evidence: Evidence, now: float, known: bool, state: str) -> None:
    st = evaluate(daily(), evidence, now, known=known)
    assert st.state == state
    if state == "unknown":
        assert not st.overdue  # unknown is never rendered as a missed deadline, nor as success


def test_late_between_start_and_finish_deadline() -> None:
    spec = daily(start_grace=1 * H)
    done = Evidence(
        last_success=at(2026, 3, 2, 21, 30), last_start=at(2026, 3, 2, 21, 0), tracks_start=True
    )
    assert evaluate(spec, done, at(2026, 3, 3, 21, 30)).state == "ok"
    late = evaluate(spec, done, at(2026, 3, 3, 22, 30))
    assert late.state == "overdue"  # tracked starts: a missed start is overdue, as before
    untracked = Evidence(last_success=at(2026, 3, 2, 21, 30))
    assert evaluate(spec, untracked, at(2026, 3, 3, 22, 30)).state == "late"
    assert not evaluate(spec, untracked, at(2026, 3, 3, 22, 30)).overdue
    assert evaluate(spec, untracked, at(2026, 3, 4, 3, 1)).state == "overdue"


def test_a_new_job_is_unknown_until_its_first_deadline_after_first_seen() -> None:
    spec = daily()
    seen = at(2026, 3, 3, 12, 0)  # days of missed runs before this do not count
    st = evaluate(spec, Evidence(), at(2026, 3, 3, 12, 5), first_seen=seen)
    assert (st.state, st.overdue) == ("unknown", False)
    assert st.first_deadline == at(2026, 3, 4, 3, 0)
    assert evaluate(spec, Evidence(), at(2026, 3, 4, 3, 0), first_seen=seen).state == "unknown"
    after = evaluate(spec, Evidence(), at(2026, 3, 4, 3, 1), first_seen=seen)
    assert (after.state, after.overdue) == ("overdue", True)


def test_a_schedule_moved_from_21_to_23_raises_nothing() -> None:
    ran = Evidence(last_success=at(2026, 3, 2, 21, 40))
    moved = daily("23:00")
    changed = at(2026, 3, 3, 22, 0)  # the config changed at 22:00, after tonight's 21:00 run failed
    for t in range(int(changed), int(at(2026, 3, 4, 4, 59)), 600):
        assert not evaluate(moved, ran, t, first_seen=changed).overdue, datetime.fromtimestamp(
            t, BERLIN
        )
    # Judged by today's config alone, it would have been overdue already.
    assert evaluate(moved, ran, at(2026, 3, 4, 4, 0)).overdue


# ------------------------------------------------------------------ a source with jobs


@dataclass(frozen=True, kw_only=True)
class JobsConfig(SourceConfig):
    pass


class JobsSource(Source[JobsConfig, tuple[tuple[JobSpec, Evidence], ...]]):
    """A source that discovers jobs whose evidence the test sets; it renders one gauge.

    Sample exposition::

        # HELP backup_test_archive_timestamp_seconds Newest archive.
        # TYPE backup_test_archive_timestamp_seconds gauge
        backup_test_archive_timestamp_seconds{source="pve1",vmid="100"} 1.7e9
    """

    kind = "jobs"

    def __init__(self, config: JobsConfig) -> None:
        super().__init__(config)
        self.jobs_now: list[tuple[JobSpec, Evidence]] = []
        self.down = False

    async def fetch(self, ctx: FetchContext) -> tuple[tuple[JobSpec, Evidence], ...]:
        if self.down:
            raise FetchError("connection", "refused")
        return tuple(self.jobs_now)

    def render(self, snapshot: tuple[tuple[JobSpec, Evidence], ...]) -> Iterator[Metric]:
        fam = GaugeMetricFamily(
            "backup_test_archive_timestamp_seconds", "Newest archive.", labels=["source", "vmid"]
        )
        for spec, ev in snapshot:
            if ev.last_success is not None:
                fam.add_metric([self.name, spec.labels.get("vmid", "")], ev.last_success)
        yield fam

    def jobs(
        self, snapshot: tuple[tuple[JobSpec, Evidence], ...]
    ) -> Iterator[tuple[JobSpec, Evidence]]:
        yield from snapshot


def guest_job(vmid: str) -> JobSpec:
    return JobSpec(
        name="backup-daily",
        source="pve1",
        schedule=parse_schedule("21:00", BERLIN),
        grace=6 * H,
        labels={"vmid": vmid},
    )


class Exporter:
    """The exporter's core (poller, collector, state keeper) around one JobsSource."""

    def __init__(self, path: Path, clock: FakeClock, source: JobsSource) -> None:
        self.keeper = StateKeeper(path)
        self.keeper.load()
        stored = self.keeper.results.get("pve1")
        self.poller = Poller(source, clock=clock, last_success=stored.taken_at if stored else None)
        self.collector = SnapshotCollector([self.poller], clock=clock, keeper=self.keeper)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = generate_latest(self.registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    async def stop(self) -> None:
        await self.keeper.close()


def source() -> JobsSource:
    return JobsSource(JobsConfig(name="pve1", kind="jobs", interval=300.0, timeout=10.0))


async def test_a_restart_with_the_backend_down_serves_every_last_known_series(
    tmp_path: Path,
) -> None:
    clock = FakeClock(at(2026, 3, 3, 12, 0))
    src = source()
    ok = Evidence(last_success=at(2026, 3, 2, 21, 30))
    src.jobs_now = [
        (guest_job("100"), ok),
        (guest_job("101"), Evidence(last_success=at(2026, 2, 20, 21, 30))),
    ]
    first = Exporter(tmp_path / "state.db", clock, src)
    await first.poller.poll_once()
    before = first.samples()
    await first.stop()
    assert (
        before[
            (
                "backup_job_overdue",
                (("backup_job", "backup-daily"), ("source", "pve1"), ("vmid", "101")),
            )
        ]
        == 1
    )

    clock.advance(60)
    down = source()
    down.down = True
    second = Exporter(tmp_path / "state.db", clock, down)
    after = second.samples()  # before any poll: from the store alone
    for key, value in before.items():
        name = key[0]
        if name.startswith("backup_source_") or name.startswith("backup_exporter_"):
            continue
        assert key in after, f"{key} vanished after the restart"
        if name in (
            "backup_job_overdue",
            "backup_job_state",
            "backup_test_archive_timestamp_seconds",
        ):
            assert after[key] == value, key
    src_labels = (("kind", "jobs"), ("source", "pve1"))
    assert after[("backup_source_up", src_labels)] == 0
    assert (
        after[
            ("backup_source_error_info", (*src_labels[:1], ("reason", "starting"), src_labels[1]))
        ]
        == 1
    )
    assert after[("backup_source_last_success_timestamp_seconds", src_labels)] == at(
        2026, 3, 3, 12, 0
    )
    # A failed poll keeps every job as it was (no RESOLVED for problems that still exist).
    await second.poller.poll_once()
    assert (
        second.samples()[
            (
                "backup_job_overdue",
                (("backup_job", "backup-daily"), ("source", "pve1"), ("vmid", "101")),
            )
        ]
        == 1
    )
    await second.stop()


async def test_a_guest_added_later_is_unknown_then_overdue_and_a_removed_one_goes(
    tmp_path: Path,
) -> None:
    clock = FakeClock(at(2026, 3, 3, 12, 0))
    src = source()
    src.jobs_now = [(guest_job("100"), Evidence(last_success=at(2026, 3, 2, 21, 30)))]
    exp = Exporter(tmp_path / "state.db", clock, src)
    await exp.poller.poll_once()  # the first poll of a new database: judged on all history
    clock.advance(DAY)
    src.jobs_now.append((guest_job("102"), Evidence()))  # picked up by an `all` job today
    src.jobs_now[0] = (guest_job("100"), Evidence(last_success=at(2026, 3, 3, 21, 30)))
    await exp.poller.poll_once()

    def state(vmid: str) -> str:
        found = [
            dict(labels)["state"]
            for (name, labels), v in exp.samples().items()
            if name == "backup_job_state" and v == 1 and dict(labels)["vmid"] == vmid
        ]
        assert len(found) <= 1
        return found[0] if found else "absent"

    assert state("102") == "unknown"
    clock.now = at(2026, 3, 5, 3, 0)  # its first finish deadline after first seen: still on time
    assert state("102") == "unknown"
    clock.now = at(2026, 3, 5, 3, 1)
    assert state("102") == "overdue"
    src.jobs_now = src.jobs_now[:1]  # the guest left the job: gone after the next good poll
    await exp.poller.poll_once()
    assert state("102") == "absent"
    await exp.stop()
    # First-seen times survive the restart.
    reopened = Exporter(tmp_path / "state.db", clock, source())
    key = next(k for k in reopened.keeper.first_seen if "\x1f102\x1f" in k)
    assert reopened.keeper.first_seen[key] == at(2026, 3, 4, 12, 0)
    await reopened.stop()


def test_every_state_is_exported_once_per_job() -> None:
    assert STATES == ("ok", "running", "late", "overdue", "failed", "unknown")


# ------------------------------------------------------------ backtest against live


async def test_backtest_over_a_recorded_month_matches_the_live_evaluation(tmp_path: Path) -> None:
    rng = random.Random(7)
    spec = guest_job("100")
    start = at(2026, 10, 1, 12, 0)
    runs: list[Run] = []
    missed = {3, 10, 24}  # three nights with no backup at all (the 4th, 11th and 25th)
    late = {7, 16}  # succeeded, but after the finish deadline (03:00)
    for idx in range(-1, 31):  # 21:00 local time every night, across the end of DST on the 25th
        night = datetime.combine(
            date(2026, 10, 1) + timedelta(days=idx), time(21, 0), tzinfo=BERLIN
        ).timestamp()
        if idx in missed:
            continue
        took = (6 * H + rng.uniform(60, H)) if idx in late else rng.uniform(10 * 60, 2 * H)
        runs.append(Run(job=job_key(spec), result="ok", started=night, finished=night + took))

    clock = FakeClock(start)
    src = source()
    exp = Exporter(tmp_path / "state.db", clock, src)
    live: list[tuple[float, float | None]] = []  # (fired, resolved) as scrapes saw them
    was = False
    step = 300.0
    end = at(2026, 11, 1, 0, 0)
    while clock.now <= end:
        seen = [r for r in runs if (r.finished or 0) <= clock.now]
        ev = Evidence(
            last_success=seen[-1].finished if seen else None,
            last_start=seen[-1].started if seen else None,
            tracks_start=True,
        )
        src.jobs_now = [(spec, ev)]
        if int(clock.now - start) % 900 == 0:
            await exp.poller.poll_once()  # polls every 15 min record the run history
        status = next(s for s in exp.collector.job_statuses() if s.spec.labels["vmid"] == "100")
        if status.overdue and not was:
            live.append((clock.now, None))
        if not status.overdue and was:
            live[-1] = (live[-1][0], clock.now)
        was = status.overdue
        clock.advance(step)
    await exp.stop()

    recorded = StateStore(tmp_path / "state.db").runs(job_key(spec))
    assert {r.finished for r in recorded} == {r.finished for r in runs}
    result = backtest(spec, recorded, start=start, end=end)
    assert len(result.incidents) == len(live) == 5
    for incident, (fired, resolved) in zip(result.incidents, live, strict=True):
        # The live exporter sees a change at the first scrape after it.
        assert incident.fired < fired <= incident.fired + step
        assert incident.resolved is not None and resolved is not None
        assert incident.resolved <= resolved < incident.resolved + 900  # after the next poll
    assert result.expected_runs == 30
    assert result.met_runs == 30 - len(missed) - len(late)
    longest = max(r.finished - r.started for r in runs[1:] if r.finished and r.started)  # type: ignore[operator]
    assert result.smallest_grace == pytest.approx(longest)
    # The command reads only the store and finds the job and its history by itself.
    from exporter.core.backtest import run_backtest

    results, text = run_backtest(
        tmp_path / "state.db", start=start, end=end, job="backup-daily", zone=BERLIN
    )
    assert [r.incidents for r in results] == [result.incidents]
    assert text.count("pve1/backup-daily/100") == 6  # five incidents and the summary line
    assert "2026-10-05 03:00 CEST" in text  # the missed night of the 4th, in local time


# -------------------------------------------------------------------- offline windows


async def test_a_failed_poll_inside_an_offline_window_is_offline_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from exporter.schedule.windows import OfflineWindow

    clock = FakeClock(at(2026, 3, 28, 23, 0))  # the night before the spring-forward change
    src = source()
    src.down = True
    window = OfflineWindow(parse_schedule("22:00", BERLIN), 10 * H)
    poller = Poller(src, clock=clock, offline=[window])
    collector = SnapshotCollector([poller], clock=clock)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    caplog.set_level("INFO")
    await poller.poll_once()
    assert poller.state.reason == "offline"
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    text = generate_latest(registry).decode()
    assert 'backup_source_expected_offline{kind="jobs",source="pve1"} 1.0' in text
    assert 'reason="offline"' in text
    # The duration is real time: across the spring-forward night 22:00 + 10 h is 09:00 CEST.
    clock.now = at(2026, 3, 29, 8, 59)
    assert poller.expected_offline()
    clock.now = at(2026, 3, 29, 9, 0)
    assert not poller.expected_offline()
    await poller.poll_once()
    assert poller.state.reason == "connection"
    assert [r for r in caplog.records if r.levelname == "WARNING"]
    assert (
        'backup_source_expected_offline{kind="jobs",source="pve1"} 0.0'
        in generate_latest(registry).decode()
    )


async def test_runs_seen_while_the_database_is_locked_are_written_later(tmp_path: Path) -> None:
    import sqlite3

    clock = FakeClock(at(2026, 3, 3, 12, 0))
    src = source()
    exp = Exporter(tmp_path / "state.db", clock, src)
    holder = sqlite3.connect(tmp_path / "state.db", isolation_level=None, timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")
    first, second = at(2026, 3, 2, 21, 30), at(2026, 3, 3, 21, 30)
    for done in (first, second):  # two runs, each seen only while the database is locked
        src.jobs_now = [(guest_job("100"), Evidence(last_success=done))]
        await exp.poller.poll_once()
        await exp.keeper.flush()
        clock.advance(DAY)
    assert exp.keeper.error is not None
    assert exp.keeper.error.reason == "locked"
    holder.execute("ROLLBACK")
    holder.close()
    await exp.poller.poll_once()
    await exp.keeper.flush()
    assert exp.keeper.error is None
    await exp.stop()
    store = StateStore(tmp_path / "state.db")
    assert {r.finished for r in store.runs()} == {first, second}
    assert any("\x1f100\x1f" in k for k in store.all_first_seen())
