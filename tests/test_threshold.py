"""Threshold schedules (TrueNAS scrub tasks): "every 35 days on Tuesdays at 02:10"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from exporter.schedule.expressions import parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec, evaluate
from exporter.schedule.threshold import ThresholdSchedule

BERLIN = ZoneInfo("Europe/Berlin")
DAY = 86400.0
TUESDAYS = "10 2 * * 2"  # TrueNAS scrub task: minute 10, hour 2, dow 2 (Tuesday)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def scrub_job(last_start: datetime | None, *, grace: float = DAY) -> JobSpec:
    schedule = ThresholdSchedule(
        parse_schedule(TUESDAYS, BERLIN), threshold_days=35, last_run=last_start
    )
    return JobSpec(name="scrub-storage", source="nas", schedule=schedule, grace=grace)


def test_calendar_facts_the_cases_rely_on() -> None:
    # 2026-03-01 is a Sunday, so day 36 after it (2026-04-06) is a Monday.
    assert at(2026, 3, 1).weekday() == 6
    assert at(2026, 3, 1) + timedelta(days=36) == at(2026, 4, 6)
    assert at(2026, 4, 6).weekday() == 0


def test_not_overdue_on_day_36_a_monday_overdue_after_the_tuesday_window_plus_grace() -> None:
    last_scrub = at(2026, 3, 1, 3, 0)  # a scrub started by hand on a Sunday
    spec = scrub_job(last_scrub)
    evidence = Evidence(last_success=(last_scrub + timedelta(hours=3)).timestamp())
    # Eligible from day 34 (Sat 2026-04-04 03:00); the first allowed instant after that is
    # Tuesday 2026-04-07 02:10 (CEST), not a weekly deadline and not day 35 itself.
    tuesday = at(2026, 4, 7, 2, 10).timestamp()

    monday_noon = evaluate(spec, evidence, at(2026, 4, 6, 12, 0).timestamp())
    assert not monday_noon.overdue
    assert monday_noon.expected_start is None
    assert monday_noon.next_start == tuesday

    in_window = evaluate(spec, evidence, at(2026, 4, 7, 12, 0).timestamp())
    assert not in_window.overdue
    assert in_window.expected_start == tuesday
    assert in_window.finish_deadline == tuesday + DAY

    just_before = evaluate(spec, evidence, tuesday + DAY - 1)
    assert not just_before.overdue
    after_grace = evaluate(spec, evidence, tuesday + DAY + 1)
    assert after_grace.overdue

    # The scrub ran that Tuesday: the schedule rebuilt from it expects the next one 5 weeks on.
    ran = at(2026, 4, 7, 2, 10, 3)
    done = Evidence(last_success=(ran + timedelta(hours=3)).timestamp())
    later = evaluate(scrub_job(ran), done, tuesday + DAY + 1)
    assert not later.overdue
    assert later.next_start == at(2026, 5, 12, 2, 10).timestamp()


def test_threshold_minus_one_day_keeps_a_five_week_rhythm() -> None:
    # TrueNAS skips a firing only while less than threshold-1 days passed, so a scrub that
    # started a few seconds after Tuesday 02:10 is due again exactly 35 days later.
    started = at(2026, 3, 10, 2, 10, 7)
    schedule = scrub_job(started).schedule
    assert schedule.next_after(started) == at(2026, 4, 14, 2, 10)
    assert schedule.latest_at_or_before(at(2026, 4, 13, 23, 0)) is None
    assert schedule.latest_at_or_before(at(2026, 4, 30)) == at(2026, 4, 28, 2, 10)


def test_missed_window_retries_every_allowed_instant_and_stays_overdue() -> None:
    started = at(2026, 3, 10, 2, 10)
    spec = scrub_job(started)
    evidence = Evidence(last_success=(started + timedelta(hours=3)).timestamp())
    starts = list(islice(spec.schedule.iter_after(at(2026, 4, 1)), 3))
    assert starts == [at(2026, 4, 14, 2, 10), at(2026, 4, 21, 2, 10), at(2026, 4, 28, 2, 10)]
    status = evaluate(spec, evidence, at(2026, 4, 29).timestamp())
    assert status.overdue
    assert status.expected_start == at(2026, 4, 28, 2, 10).timestamp()


def test_never_scrubbed_every_allowed_instant_is_due() -> None:
    spec = scrub_job(None)
    tuesday = at(2026, 4, 7, 2, 10).timestamp()
    status = evaluate(spec, Evidence(), tuesday + 3600)
    assert status.expected_start == tuesday
    assert status.finish_deadline == tuesday + DAY
    # Earlier Tuesdays were due as well (TrueNAS scrubs a never-scrubbed pool at once).
    assert status.overdue
    assert spec.schedule.next_after(datetime.fromtimestamp(tuesday, UTC)) == at(2026, 4, 14, 2, 10)


def test_expression_is_stable_and_zone_is_the_crons() -> None:
    a = scrub_job(at(2026, 3, 1)).schedule
    b = scrub_job(at(2026, 4, 7)).schedule
    assert a.expression == b.expression == "10 2 * * 2 (threshold 35d)"
    assert a.tz == BERLIN


def test_negative_threshold_is_rejected() -> None:
    with pytest.raises(ValueError, match="threshold_days"):
        ThresholdSchedule(parse_schedule(TUESDAYS, BERLIN), threshold_days=-1, last_run=None)
