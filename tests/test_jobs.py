"""The job model: deadlines, overdue windows, DST, and the strategy document's schedules."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from exporter.schedule.expressions import parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec, evaluate

BERLIN = ZoneInfo("Europe/Berlin")
UTC = ZoneInfo("UTC")
H = 3600.0


def at(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def spec(expr: str, grace: float, start_grace: float | None = None) -> JobSpec:
    return JobSpec(
        name="j", source="s", schedule=parse_schedule(expr, BERLIN), grace=grace,
        start_grace=start_grace,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("expr", "grace", "now", "expected_start", "finish_deadline"),
    [
        # PVE daily 21:00 (calendar-event syntax, as in /cluster/backup).
        ("21:00", 6 * H, at(2026, 2, 3, 22, 0), at(2026, 2, 3, 21, 0), at(2026, 2, 4, 3, 0)),
        # B2 cloud sync 01:30 + 8 h.
        ("30 1 * * *", 8 * H, at(2026, 2, 4, 9, 0), at(2026, 2, 4, 1, 30), at(2026, 2, 4, 9, 30)),
        # Storj Wednesday 05:00 + 12 h, seen on the following Monday.
        ("0 5 * * 3", 12 * H, at(2026, 2, 9, 12, 0), at(2026, 2, 4, 5, 0), at(2026, 2, 4, 17, 0)),
        # SMART long: day 1 of each month except Tuesdays, 02:30. 2026-09-01 is a Tuesday.
        (
            "Mon,Wed..Sun *-*-01 02:30",
            6 * H,
            at(2026, 9, 15, 0, 0),
            at(2026, 8, 1, 2, 30),
            at(2026, 8, 1, 8, 30),
        ),
    ],
)
def test_strategy_schedules(
    expr: str, grace: float, now: float, expected_start: float, finish_deadline: float
) -> None:
    st = evaluate(spec(expr, grace), Evidence(last_success=expected_start + 60), now)
    assert st.expected_start == expected_start
    assert st.finish_deadline == finish_deadline
    assert not st.overdue


def test_smart_long_skips_tuesday_first() -> None:
    s = parse_schedule("Mon,Wed..Sun *-*-01 02:30", BERLIN)
    nxt = s.next_after(datetime(2026, 8, 2, tzinfo=BERLIN))
    assert nxt == datetime(2026, 10, 1, 2, 30, tzinfo=BERLIN)


@pytest.mark.parametrize("hour_minute", [(1, 30), (2, 30), (21, 0)])
@pytest.mark.parametrize("syntax", ["cron", "calendar"])
@pytest.mark.parametrize("change_day", [(2026, 3, 29), (2026, 10, 25)])
def test_dst_changes_give_no_false_and_no_missed_overdue(
    hour_minute: tuple[int, int], syntax: str, change_day: tuple[int, int, int]
) -> None:
    """A job that runs every day at its time is never overdue; one that skips the change day is."""
    h, m = hour_minute
    expr = f"{m} {h} * * *" if syntax == "cron" else f"{h:02d}:{m:02d}"
    grace = 2 * H
    job = spec(expr, grace)
    sched = job.schedule
    begin = datetime(*change_day, tzinfo=BERLIN) - timedelta(days=2)
    runs = []
    t = sched.next_after(begin)
    while t < begin + timedelta(days=4):
        runs.append(t.timestamp())
        t = sched.next_after(t)
    assert len(runs) == 4, "one run per day, even on the DST change day"
    local_days = {datetime.fromtimestamp(r, BERLIN).date() for r in runs}
    assert len(local_days) == 4, "each run on its own local day"
    change = datetime(*change_day, tzinfo=BERLIN).timestamp()
    # Everyone runs on time, finishing 30 minutes after the start: never overdue.
    step = 600.0
    now = runs[0] + 31 * 60
    while now < runs[-1] + 20 * H:
        done = [r for r in runs if r + 30 * 60 <= now]
        st = evaluate(job, Evidence(last_success=done[-1] + 30 * 60), now)
        assert not st.overdue, datetime.fromtimestamp(now, BERLIN)
        now += step
    # The run on the change day never happens: overdue from its deadline until the next success.
    missed = next(r for r in runs if change <= r < change + 86400)
    prev = max(r for r in runs if r < missed)
    ev = Evidence(last_success=prev + 30 * 60)
    assert not evaluate(job, ev, missed + grace - 1).overdue
    assert evaluate(job, ev, missed + grace + 1).overdue
    after = missed + 86400 + 1
    assert evaluate(job, ev, after).overdue


def test_two_weeks_with_gaps_overdue_exactly_in_the_gap_windows() -> None:
    """Daily 21:00 + 6 h grace; runs fail on three days; overdue exactly while no success covers."""
    job = spec("21:00", 6 * H)
    start = datetime(2026, 3, 20, 12, 0, tzinfo=BERLIN)  # spans the March DST change
    days = [start.date() + timedelta(days=i) for i in range(14)]
    missing = {days[3], days[8], days[9]}
    successes = []
    for d in days:
        if d not in missing:
            run = datetime(d.year, d.month, d.day, 21, 0, tzinfo=BERLIN)
            successes.append(run.timestamp() + 45 * 60)  # each run takes 45 minutes
    # Windows in which the job must be overdue: from the missed run's deadline to the next success.
    windows = []
    for d in sorted(missing):
        run = datetime(d.year, d.month, d.day, 21, 0, tzinfo=BERLIN).timestamp()
        nxt = min(s for s in successes if s > run)
        windows.append((run + 6 * H, nxt))
    t = start.timestamp()
    end = t + 14 * 86400
    seen_overdue = 0
    while t < end:
        seen = [s for s in successes if s <= t]
        ev = Evidence(last_success=seen[-1] if seen else None)
        expected = any(a < t < b for a, b in windows)
        if seen:  # before the first success the job has no history: skip that prefix
            assert evaluate(job, ev, t).overdue == expected, datetime.fromtimestamp(t, BERLIN)
            seen_overdue += expected
        t += 300
    assert seen_overdue > 0


def test_start_deadline_only_for_evidence_that_tracks_starts() -> None:
    job = spec("21:00", 6 * H, start_grace=H)
    prev_ok = at(2026, 2, 2, 21, 40)
    late = at(2026, 2, 3, 22, 30)
    tracked = Evidence(last_success=prev_ok, last_start=at(2026, 2, 2, 21, 0), tracks_start=True)
    st = evaluate(job, tracked, late)
    assert st.missed_start
    assert st.overdue
    assert st.start_deadline == at(2026, 2, 3, 22, 0)
    started = Evidence(last_success=prev_ok, last_start=at(2026, 2, 3, 21, 0), tracks_start=True)
    assert not evaluate(job, started, late).overdue
    artifacts = Evidence(last_success=prev_ok)
    assert not evaluate(job, artifacts, late).overdue, "a newest-file time says nothing of starts"


def test_recovery_clears_overdue() -> None:
    job = spec("21:00", 6 * H)
    ev = Evidence(last_success=at(2026, 2, 1, 21, 30))
    assert evaluate(job, ev, at(2026, 2, 3, 4, 0)).overdue
    ev = Evidence(last_success=at(2026, 2, 3, 21, 30))
    assert not evaluate(job, ev, at(2026, 2, 3, 21, 31)).overdue


def test_one_shot_date_in_the_past_has_no_next_start() -> None:
    st = evaluate(spec("2015-10-21", 6 * H), Evidence(), at(2026, 2, 3, 12, 0))
    assert st.next_start is None
    assert st.expected_start is None
    assert not st.overdue
