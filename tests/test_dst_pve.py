"""PVE's own schedule evaluation (``dst="pve"``): proxmox-time's cases and its DST rule.

Sources:

* proxmox-time's test suite (github.com/proxmox/proxmox-rs, ``proxmox-time/src/test.rs``,
  ``test_compute_next_event``, commit 0c9f3fea121a2faa72b8cd3f4d2171613320cdef): the UTC cases
  below are its cases, same expressions, same ``last`` and same expected instants;
* its DST behaviour is not covered by that suite; it follows from ``compute_next_event``
  (``proxmox-time/src/calendar_event.rs``) renormalising every edit through glibc ``mktime``
  (``tm_editor.rs``, ``posix.rs`` ``timelocal``). The Europe/Berlin cases are derived by hand
  from that algorithm (each step is written next to the case), and
  :func:`test_dst_rule_matches_glibc` runs the same search with the platform's real glibc
  ``mktime`` (in a subprocess with ``TZ`` set) across zones with odd transitions and compares.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from exporter.core.state import decode_job, encode_job
from exporter.schedule.expressions import (
    PveCalendarSchedule,
    Schedule,
    ScheduleError,
    parse_schedule,
)
from exporter.schedule.jobs import Evidence, JobSpec
from exporter.sources.proxmox.jobs import job_schedule

BERLIN = ZoneInfo("Europe/Berlin")
MIN, HOUR, DAY = 60, 3600, 86400
THURSDAY_00_00 = 0  # 1970-01-01 was a Thursday
THURSDAY_15_00 = 15 * HOUR
JUL_31_2020 = 1596153600  # Friday
DEC_31_2020 = 1609372800  # Thursday


def pve(expression: str, tz: str | ZoneInfo = "UTC") -> Schedule:
    return parse_schedule(expression, tz, dst="pve")


def next_ts(schedule: Schedule, last: int) -> int:
    return int(schedule.next_after(datetime.fromtimestamp(last, UTC)).timestamp())


# (expression, last, expected next), from proxmox-time's test_compute_next_event.
PROXMOX_TIME_CASES = [
    ("0", THURSDAY_00_00, THURSDAY_00_00 + HOUR),
    ("*", THURSDAY_00_00, THURSDAY_00_00 + MIN),
    ("*:0", THURSDAY_00_00, THURSDAY_00_00 + HOUR),
    ("*:*", THURSDAY_00_00, THURSDAY_00_00 + MIN),
    ("*:*:*", THURSDAY_00_00, THURSDAY_00_00 + 1),
    ("*:3:5", THURSDAY_00_00, THURSDAY_00_00 + 3 * MIN + 5),
    ("mon *:*", THURSDAY_00_00, THURSDAY_00_00 + 4 * DAY),
    ("mon 2:*", THURSDAY_00_00, THURSDAY_00_00 + 4 * DAY + 2 * HOUR),
    ("mon 2:50", THURSDAY_00_00, THURSDAY_00_00 + 4 * DAY + 2 * HOUR + 50 * MIN),
    ("tue", THURSDAY_00_00, THURSDAY_00_00 + 5 * DAY),
    ("wed", THURSDAY_00_00, THURSDAY_00_00 + 6 * DAY),
    ("thu", THURSDAY_00_00, THURSDAY_00_00 + 7 * DAY),
    ("fri", THURSDAY_00_00, THURSDAY_00_00 + 1 * DAY),
    ("sat", THURSDAY_00_00, THURSDAY_00_00 + 2 * DAY),
    ("sun", THURSDAY_00_00, THURSDAY_00_00 + 3 * DAY),
    ("4..10/2:0", THURSDAY_00_00, THURSDAY_00_00 + 4 * HOUR),
    ("4..10/2:0", THURSDAY_00_00 + 5 * HOUR, THURSDAY_00_00 + 6 * HOUR),
    ("4..10/2:0", THURSDAY_00_00 + 11 * HOUR, THURSDAY_00_00 + 1 * DAY + 4 * HOUR),
    ("5,10:4,8", THURSDAY_00_00, THURSDAY_00_00 + 5 * HOUR + 4 * MIN),
    ("10,5:8,4", THURSDAY_00_00, THURSDAY_00_00 + 5 * HOUR + 4 * MIN),
    ("6,4..10:23,5/5", THURSDAY_00_00, THURSDAY_00_00 + 4 * HOUR + 5 * MIN),
    ("4..10,6:5/5,23", THURSDAY_00_00, THURSDAY_00_00 + 4 * HOUR + 5 * MIN),
    ("sat", JUL_31_2020, JUL_31_2020 + 1 * DAY),
    ("sun", JUL_31_2020, JUL_31_2020 + 2 * DAY),
    ("mon", JUL_31_2020, JUL_31_2020 + 3 * DAY),
    ("tue", JUL_31_2020, JUL_31_2020 + 4 * DAY),
    ("wed", JUL_31_2020, JUL_31_2020 + 5 * DAY),
    ("thu", JUL_31_2020, JUL_31_2020 + 6 * DAY),
    ("fri", JUL_31_2020, JUL_31_2020 + 7 * DAY),
    ("fri", DEC_31_2020, DEC_31_2020 + 1 * DAY),
    ("sat", DEC_31_2020, DEC_31_2020 + 2 * DAY),
    ("sun", DEC_31_2020, DEC_31_2020 + 3 * DAY),
    ("mon", DEC_31_2020, DEC_31_2020 + 4 * DAY),
    ("tue", DEC_31_2020, DEC_31_2020 + 5 * DAY),
    ("wed", DEC_31_2020, DEC_31_2020 + 6 * DAY),
    ("thu", DEC_31_2020, DEC_31_2020 + 7 * DAY),
    ("daily", THURSDAY_00_00, THURSDAY_00_00 + DAY),
    ("daily", THURSDAY_00_00 + 1, THURSDAY_00_00 + DAY),
    ("2020-07-31", 0, JUL_31_2020),
    ("02-28", 0, (31 + 27) * DAY),
    ("02-29", 0, 2 * 365 * DAY + (31 + 28) * DAY),
    ("1965/5-01-01", -1, THURSDAY_00_00),
    ("2020-7..9-2/2", JUL_31_2020, JUL_31_2020 + 2 * DAY),
    ("2020,2021-12-31", JUL_31_2020, DEC_31_2020),
    ("minutely", THURSDAY_00_00, THURSDAY_00_00 + MIN),
    ("hourly", THURSDAY_00_00, THURSDAY_00_00 + HOUR),
    ("weekly", THURSDAY_00_00, THURSDAY_00_00 + 4 * DAY),
    ("monthly", 0, 31 * DAY),
    ("quarterly", 0, (31 + 28 + 31) * DAY),
    ("semiannually", 0, (31 + 28 + 31 + 30 + 31 + 30) * DAY),
    ("semi-annually", 0, (31 + 28 + 31 + 30 + 31 + 30) * DAY),
    ("yearly", 0, 365 * DAY),
    ("annually", 0, 365 * DAY),
]


@pytest.mark.parametrize(("expression", "last", "expected"), PROXMOX_TIME_CASES)
def test_proxmox_time_cases(expression: str, last: int, expected: int) -> None:
    # proxmox-time runs them as "<expression> UTC"; the zone given here must not matter.
    schedule = pve(f"{expression} UTC", BERLIN)
    assert isinstance(schedule, PveCalendarSchedule)
    assert next_ts(schedule, last) == expected


@pytest.mark.parametrize(
    ("expression", "step", "count"),
    [("5/2:0", 2 * HOUR, 4), ("*:*", MIN, 99), ("*:0", HOUR, 99)],
)
def test_proxmox_time_chains(expression: str, step: int, count: int) -> None:
    # test.rs chains "5/2:0" (05:00, 07:00, ...), "*:*" and "*:0" from Thursday 00:00.
    schedule = pve(f"{expression} UTC")
    first = 5 * HOUR if expression == "5/2:0" else step
    last = THURSDAY_00_00
    for i in range(count):
        last = next_ts(schedule, last)
        assert last == first + i * step


def test_proxmox_time_daily_one_am_chain() -> None:
    schedule = pve("1:0 UTC")
    last = THURSDAY_15_00
    for i in range(1, 100):
        last = next_ts(schedule, last)
        assert last == i * DAY + HOUR


@pytest.mark.parametrize("expression", ["2021-02-29", "02-30"])
def test_proxmox_time_never(expression: str) -> None:
    schedule = pve(f"{expression} UTC")
    assert list(schedule.iter_after(datetime.fromtimestamp(0, UTC))) == []
    assert schedule.latest_at_or_before(datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_repeat_past_the_field_maximum() -> None:
    # DateTimeValue::find_next has no upper bound for "N/S": after :50, "10/20" offers 70,
    # set_min_sec(70) renormalises to :10 of the next hour, and :00 is skipped; the cron-rule
    # engine bounds the repetition at 59 and runs at :00.
    last = int(datetime(2026, 6, 1, 9, 50, tzinfo=UTC).timestamp())
    assert next_ts(pve("*:0,10/20 UTC"), last) == last + 20 * MIN
    assert next_ts(parse_schedule("*:0,10/20 UTC", "UTC"), last) == last + 10 * MIN


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def starts(schedule: Schedule, after: datetime, count: int) -> list[str]:
    return [utc_iso(s.timestamp()) for s in islice(schedule.iter_after(after), count)]


def test_spring_forward_wall_clock_start_is_skipped() -> None:
    # Europe/Berlin 2026-03-29: 02:00 CET -> 03:00 CEST. From Saturday's run: ... add_days(1)
    # -> Sunday 00:00; hour 0 is not 2 -> set_time(2, 0, 0) -> mktime("02:00", in the gap)
    # -> 03:00 CEST; hour 3 is not 2 and there is no later hour -> add_days(1): Monday 02:30.
    after = datetime(2026, 3, 28, 1, 30, 5, tzinfo=UTC)  # Saturday's 02:30 CET run started
    assert starts(pve("02:30", BERLIN), after, 2) == [
        "2026-03-30T00:30:00Z",
        "2026-03-31T00:30:00Z",
    ]
    # The cron rule (config jobs) runs it at the first minute after the gap instead.
    assert starts(parse_schedule("02:30", BERLIN), after, 1) == ["2026-03-29T01:00:00Z"]


def test_spring_forward_interval_schedule() -> None:
    # From 01:30 CET: set_min_sec(31) -> no later minute -> set_time(2, 0, 0) -> 03:00 CEST.
    after = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET
    expected = ["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"]
    assert starts(pve("*/30", BERLIN), after, 3) == expected
    assert starts(parse_schedule("*/30", BERLIN), after, 3) == expected  # same in cron


def test_fall_back_wall_clock_start_runs_once_at_first_occurrence() -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET. Sunday 00:00 CEST (offset +2 remembered) ->
    # set_time(2, 0, 0) -> "02:00" is ambiguous, the remembered offset picks CEST -> 02:30 CEST.
    # From that run: 02:31 -> set_time(3, 0, 0) -> 03:00 CET -> next day. Once, like cron.
    after = datetime(2026, 10, 24, 0, 30, 5, tzinfo=UTC)
    expected = ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    assert starts(pve("02:30", BERLIN), after, 2) == expected
    assert starts(parse_schedule("02:30", BERLIN), after, 2) == expected


def test_fall_back_interval_schedule_skips_the_repeated_hour() -> None:
    # From 02:30 CEST: set_min_sec(31) -> no later minute -> set_time(3, 0, 0): 03:00 exists
    # once, 03:00 CET (02:00 UTC). The second 02:00-03:00 (01:00, 01:30 UTC) never runs.
    after = datetime(2026, 10, 24, 23, 45, tzinfo=UTC)
    assert starts(pve("*/30", BERLIN), after, 4) == [
        "2026-10-25T00:00:00Z",
        "2026-10-25T00:30:00Z",
        "2026-10-25T02:00:00Z",
        "2026-10-25T02:30:00Z",
    ]
    # Cron runs every 30 minutes of real time through both occurrences.
    assert starts(parse_schedule("*/30", BERLIN), after, 4) == [
        "2026-10-25T00:00:00Z",
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:00:00Z",
        "2026-10-25T01:30:00Z",
    ]


def test_latest_follows_the_schedulers_chain_of_runs() -> None:
    # Inside the repeated hour, the latest start is 02:30 CEST (00:30 UTC), not "02:30 CET":
    # the scheduler's runs go 00:30 UTC -> 02:00 UTC.
    schedule = pve("*/30", BERLIN)
    at = datetime(2026, 10, 25, 1, 45, tzinfo=UTC)
    latest = schedule.latest_at_or_before(at)
    assert latest is not None
    assert utc_iso(latest.timestamp()) == "2026-10-25T00:30:00Z"
    assert utc_iso(schedule.next_after(at).timestamp()) == "2026-10-25T02:00:00Z"
    # On the spring day, the latest 02:30 start is Saturday's.
    daily = pve("02:30", BERLIN)
    latest = daily.latest_at_or_before(datetime(2026, 3, 29, 12, tzinfo=UTC))
    assert latest is not None
    assert utc_iso(latest.timestamp()) == "2026-03-28T01:30:00Z"


@pytest.mark.parametrize(
    "expression", ["02:30", "*/30", "sun 01..03:0/20", "2,3:15", "daily", "mon..fri 21:00"]
)
def test_latest_is_exact_with_respect_to_next(expression: str) -> None:
    schedule = pve(expression, BERLIN)
    for month, day in [(3, 28), (3, 29), (10, 24), (10, 25)]:
        base = datetime(2026, month, day, tzinfo=UTC)
        for minutes in range(0, 36 * 60, 37):
            at = base + timedelta(minutes=minutes)
            found = schedule.latest_at_or_before(at)
            assert found is not None
            latest = found.astimezone(UTC)  # aware arithmetic in a DST zone is wall-clock
            assert latest <= at
            # Compare instants: PEP 495 makes a repeated-hour time never == another zone's.
            before = schedule.next_after(latest - timedelta(seconds=1))
            assert before.timestamp() == latest.timestamp()
            assert schedule.next_after(latest).timestamp() > at.timestamp()


def test_pve_rule_rejects_cron_syntax_and_unknown_rules() -> None:
    with pytest.raises(ScheduleError, match="5 parts"):
        pve("30 2 * * *")
    with pytest.raises(ScheduleError, match="unknown DST rule"):
        parse_schedule("02:30", "UTC", dst="systemd")  # type: ignore[arg-type]


# ---- the DST rule against the real glibc

GLIBC_ORACLE = r"""
import json, os, sys, time
from datetime import UTC, datetime
from exporter.schedule import calendar_events
from exporter.schedule.expressions import parse_schedule

class GlibcClock(calendar_events._TmClock):
    def __init__(self, tz, instant):
        super().__init__(tz, instant)
        # glibc remembers the offset of its last conversion; start from the one at `instant`.
        time.mktime(time.localtime(instant))

    def mktime(self, wall):
        fields = (wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second, 0, 0, -1)
        return int(time.mktime(fields))

calendar_events._TmClock = GlibcClock
cases = json.loads(sys.argv[1])
out = []
for zone, expression, after, count in cases:
    os.environ["TZ"] = zone
    time.tzset()
    schedule = parse_schedule(expression, zone, dst="pve")
    found, last = [], after
    for _ in range(count):
        nxt = schedule._compute_next(last)
        if nxt is None:
            break
        found.append(nxt)
        last = nxt
    out.append(found)
print(json.dumps(out))
"""


def _transitions(zone: str, year: int) -> Iterator[int]:
    tz = ZoneInfo(zone)
    t = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    offset = datetime.fromtimestamp(t, tz).utcoffset()
    while t < end:
        t += HOUR // 4
        now = datetime.fromtimestamp(t, tz).utcoffset()
        if now != offset:
            yield t
            offset = now


def test_dst_rule_matches_glibc() -> None:
    # PVE runs on Debian (glibc); this is the oracle the rule is taken from.
    assert platform.libc_ver()[0] == "glibc", "the DST oracle needs glibc's mktime"
    zones = [
        ("Europe/Berlin", 2026),
        ("America/New_York", 2026),
        ("Australia/Lord_Howe", 2026),  # 30-minute DST
        ("America/Santiago", 2026),  # transitions at midnight
        ("Europe/Dublin", 2026),  # negative DST in tzdata: winter is the "DST" period
        ("Europe/Moscow", 2011),  # a gap that is not DST
        ("Europe/Moscow", 2014),  # an overlap that is not DST
    ]
    expressions = ["02:30", "*/30", "2:00", "1:30", "0:15", "*:15", "0..3:0/20", "daily", "*:*"]
    cases: list[tuple[str, str, int, int]] = []
    for zone, year in zones:
        for transition in _transitions(zone, year):
            for expression in expressions:
                count = 300 if expression == "*:*" else 12
                for back in (3 * HOUR, 25 * HOUR, HOUR // 2):
                    cases.append((zone, expression, transition - back, count))
    assert len(cases) > 300
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    result = subprocess.run(
        [sys.executable, "-c", GLIBC_ORACLE, json.dumps(cases)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    expected = json.loads(result.stdout)
    for (zone, expression, after, count), glibc in zip(cases, expected, strict=True):
        schedule = parse_schedule(expression, zone, dst="pve")
        assert isinstance(schedule, PveCalendarSchedule)
        ours, last = [], after
        for _ in range(count):
            nxt = schedule._compute_next(last)
            if nxt is None:
                break
            ours.append(nxt)
            last = nxt
        assert ours == glibc, (zone, expression, utc_iso(after))


def test_the_rule_survives_a_restart() -> None:
    # The state store re-parses a persisted job's schedule: it must keep PVE's rule.
    spec = JobSpec(
        name="backup-x",
        source="pve1",
        schedule=job_schedule("02:30", "Europe/Berlin"),
        grace=3600.0,
        labels={"vmid": "100"},
    )
    assert spec.schedule.dst == "pve"
    decoded = decode_job(json.loads(json.dumps(encode_job(spec, Evidence()))))
    assert decoded is not None
    assert decoded[0].schedule.dst == "pve"
    after = datetime(2026, 3, 28, 1, 30, 5, tzinfo=UTC)
    assert starts(decoded[0].schedule, after, 1) == ["2026-03-30T00:30:00Z"]
    old = encode_job(spec, Evidence())
    del old["dst"]  # written before the rule was stored: the cron rule, as it was
    decoded = decode_job(old)
    assert decoded is not None and decoded[0].schedule.dst == "cron"
