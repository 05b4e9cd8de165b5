"""``kind: healthchecks`` over real HTTP against the fake Healthchecks API on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import ConfigError, JobConfig, parse_config
from exporter.core.poller import Poller, PollState
from exporter.sim.healthchecks import (
    FakeCheck,
    FakeHealthchecks,
    FakeRun,
    HealthchecksScenario,
    homelab,
    start_fake_healthchecks,
)
from exporter.sources import build_source
from exporter.sources.base import FetchError
from exporter.sources.healthchecks.source import (
    HealthchecksSnapshot,
    HealthchecksSource,
    parse_checks,
    parse_pings,
)

PROMTOOL = Path("/usr/bin/promtool")
BERLIN = ZoneInfo("Europe/Berlin")
# Wednesday 2026-03-04 12:00 in Berlin: this morning both the B2 (01:30) and the Storj (05:00)
# runs of the reference homelab finished.
START = datetime(2026, 3, 4, 12, 0, tzinfo=BERLIN).timestamp()

Key = tuple[str, frozenset[tuple[str, str]]]


def key(name: str, **labels: str) -> Key:
    return name, frozenset({"source": "hc", **labels}.items())


def job(name: str, backup_job: str) -> Key:
    return key(name, backup_job=backup_job, vmid="")


def berlin(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()


def iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def scenario(clock: FakeClock) -> HealthchecksScenario:
    return homelab(clock.time)


@pytest.fixture
async def fake(scenario: HealthchecksScenario) -> AsyncIterator[FakeHealthchecks]:
    server = await start_fake_healthchecks(scenario)
    yield server
    await server.stop()


Factory = Callable[..., HealthchecksSource]


def yaml_text(url: str, api_key: str, extra: str = "") -> str:
    return f"""
timezone: Europe/Berlin
sources:
  hc:
    kind: healthchecks
    url: "{url}"
    api_key: "{api_key}"
{extra}
"""


@pytest.fixture
async def make(fake: FakeHealthchecks) -> AsyncIterator[Factory]:
    """Build sources from YAML (through the kind registry); close them at the end."""
    made: list[HealthchecksSource] = []

    def factory(
        *, api_key: str | None = None, extra: str = "", url: str | None = None
    ) -> HealthchecksSource:
        config = parse_config(yaml_text(url or fake.url, api_key or fake.readonly_key, extra))
        source = build_source(config.sources["hc"])
        assert isinstance(source, HealthchecksSource)
        made.append(source)
        return source

    yield factory
    for source in made:
        await source.close()


def collect(poller: Poller, clock: FakeClock, jobs: Mapping[str, JobConfig] | None = None) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector([poller], clock=clock, jobs=jobs))
    return generate_latest(registry).decode()


def values(text: str) -> dict[Key, float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def good_poll(poller: Poller) -> HealthchecksSnapshot:
    state: PollState = await poller.poll_once()
    assert state.error is None, state.error
    assert isinstance(state.snapshot, HealthchecksSnapshot)
    return state.snapshot


async def failed_poll(poller: Poller) -> FetchError:
    state = await poller.poll_once()
    assert not state.up
    assert state.error is not None
    return state.error


def promtool(text: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return proc.returncode, proc.stdout, proc.stderr


# ------------------------------------------------------------------------------ the homelab


async def test_homelab_checks_become_metrics_and_jobs(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    poller = Poller(make(), clock=clock)
    snapshot = await good_poll(poller)
    assert snapshot.readonly  # the read-only key sees no uuid
    got = values(collect(poller, clock))
    b2, storj = scenario.check("b2-daily"), scenario.check("storj-weekly")
    assert b2.run is not None
    assert storj.run is not None
    # This morning's runs, from the strategy's schedule and the fake's run durations.
    b2_done = berlin(2026, 3, 4, 1, 30) + b2.run.duration
    storj_done = berlin(2026, 3, 4, 5, 0) + storj.run.duration
    assert got[key("backup_healthchecks_check_up", check="b2-daily")] == 1
    assert got[key("backup_healthchecks_check_status", check="b2-daily", status="up")] == 1
    for state in ("new", "grace", "down", "paused"):
        assert got[key("backup_healthchecks_check_status", check="b2-daily", status=state)] == 0
    assert got[key("backup_healthchecks_last_ping_timestamp_seconds", check="b2-daily")] == b2_done
    assert got[key("backup_healthchecks_next_ping_timestamp_seconds", check="b2-daily")] == berlin(
        2026, 3, 5, 1, 30
    )
    assert got[key("backup_healthchecks_grace_seconds", check="b2-daily")] == 8 * 3600
    assert got[key("backup_healthchecks_grace_seconds", check="storj-weekly")] == 12 * 3600
    assert got[key("backup_healthchecks_started", check="b2-daily")] == 0
    assert (
        got[key("backup_healthchecks_last_duration_seconds", check="b2-daily")] == b2.run.duration
    )
    info = key(
        "backup_healthchecks_check_info",
        check="storj-weekly",
        schedule="0 5 * * 3",
        timezone="Europe/Berlin",
        kind="cron",
    )
    assert got[info] == 1
    assert got[job("backup_job_last_success_timestamp_seconds", "hc-b2-daily")] == b2_done
    assert got[job("backup_job_last_success_timestamp_seconds", "hc-storj-weekly")] == storj_done
    assert got[job("backup_job_overdue", "hc-b2-daily")] == 0
    assert got[job("backup_job_overdue", "hc-storj-weekly")] == 0
    assert got[job("backup_job_failed", "hc-b2-daily")] == 0
    # One request per poll, with the read-only key.
    assert poller.requests[""] == 1
    assert [r.key for r in scenario.requests] == ["ro"]
    assert scenario.requests[0].path == "/api/v3/checks/"


async def test_missed_run_is_overdue_exactly_after_the_grace(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    poller = Poller(make(), clock=clock)
    assert scenario.check("b2-daily").run is not None
    scenario.check("b2-daily").run.behaviour = "skip"  # type: ignore[union-attr]
    # Tomorrow's 01:30 run never pings; the 8 h grace ends at 09:30.
    clock.advance(berlin(2026, 3, 5, 9, 29) - clock.time())
    await good_poll(poller)
    got = values(collect(poller, clock))
    assert got[key("backup_healthchecks_check_status", check="b2-daily", status="grace")] == 1
    assert got[key("backup_healthchecks_check_up", check="b2-daily")] == 1
    assert got[job("backup_job_overdue", "hc-b2-daily")] == 0
    # In its grace time the check is late: not failed, not ok.
    assert got[job("backup_job_failed", "hc-b2-daily")] == 0
    assert got[key("backup_job_state", backup_job="hc-b2-daily", vmid="", state="late")] == 1
    assert got[key("backup_job_state", backup_job="hc-b2-daily", vmid="", state="ok")] == 0
    assert got[key("backup_job_state", backup_job="hc-b2-daily", vmid="", state="failed")] == 0
    clock.advance(120)
    # Overdue from the schedule alone, before the next poll...
    assert values(collect(poller, clock))[job("backup_job_overdue", "hc-b2-daily")] == 1
    # ...and Healthchecks agrees at the next poll.
    await good_poll(poller)
    got = values(collect(poller, clock))
    assert got[key("backup_healthchecks_check_status", check="b2-daily", status="down")] == 1
    assert got[key("backup_healthchecks_check_up", check="b2-daily")] == 0
    assert got[job("backup_job_overdue", "hc-b2-daily")] == 1
    assert got[job("backup_job_failed", "hc-b2-daily")] == 1
    assert got[key("backup_job_state", backup_job="hc-b2-daily", vmid="", state="late")] == 0
    assert key("backup_healthchecks_next_ping_timestamp_seconds", check="b2-daily") not in got
    assert got[job("backup_job_overdue", "hc-storj-weekly")] == 0


async def test_a_running_sync_is_started_then_finished(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    poller = Poller(make(), clock=clock)
    run = scenario.check("b2-daily").run
    assert run is not None
    clock.advance(berlin(2026, 3, 5, 1, 40) - clock.time())
    await good_poll(poller)
    got = values(collect(poller, clock))
    assert got[key("backup_healthchecks_started", check="b2-daily")] == 1
    assert got[job("backup_job_running", "hc-b2-daily")] == 1
    # Healthchecks' next_ping is the start while a run is in progress.
    assert got[key("backup_healthchecks_next_ping_timestamp_seconds", check="b2-daily")] == berlin(
        2026, 3, 5, 1, 30
    )
    clock.advance(berlin(2026, 3, 5, 2, 30) - clock.time())
    await good_poll(poller)
    got = values(collect(poller, clock))
    done = berlin(2026, 3, 5, 1, 30) + run.duration
    assert got[key("backup_healthchecks_started", check="b2-daily")] == 0
    assert got[job("backup_job_running", "hc-b2-daily")] == 0
    assert got[job("backup_job_last_success_timestamp_seconds", "hc-b2-daily")] == done


async def test_failure_ping_without_and_with_the_ping_log(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    run = scenario.check("b2-daily").run
    assert run is not None
    previous_success = berlin(2026, 3, 4, 1, 30) + run.duration
    scenario.ping("b2-daily", "start")
    started = clock.time()
    scenario.advance(600)
    scenario.ping("b2-daily", "fail")

    plain = Poller(make(), clock=clock)
    await good_poll(plain)
    got = values(collect(plain, clock))
    assert got[key("backup_healthchecks_check_status", check="b2-daily", status="down")] == 1
    assert got[key("backup_healthchecks_last_ping_timestamp_seconds", check="b2-daily")] == (
        clock.time()
    )
    # The list alone cannot tell a failure from a late run: down is no evidence of success.
    assert got[job("backup_job_failed", "hc-b2-daily")] == 1
    assert got[job("backup_job_overdue", "hc-b2-daily")] == 1
    assert job("backup_job_last_success_timestamp_seconds", "hc-b2-daily") not in got
    assert plain.requests[""] == 1

    # pings: true with the read-write key reads the ping log of the down check only.
    logged = Poller(make(api_key=fake.api_key, extra="    pings: true"), clock=clock)
    await good_poll(logged)
    got = values(collect(logged, clock))
    assert got[job("backup_job_last_success_timestamp_seconds", "hc-b2-daily")] == previous_success
    assert got[job("backup_job_last_start_timestamp_seconds", "hc-b2-daily")] == started
    assert got[job("backup_job_failed", "hc-b2-daily")] == 1
    # The last success covers yesterday's run: overdue only after today's 09:30 deadline.
    assert got[job("backup_job_overdue", "hc-b2-daily")] == 0
    assert logged.requests[""] == 2
    code = scenario.check("b2-daily").code
    assert scenario.requests[-1].path == f"/api/v3/checks/{code}/pings/"
    clock.advance(berlin(2026, 3, 5, 9, 31) - clock.time())
    assert values(collect(logged, clock))[job("backup_job_overdue", "hc-b2-daily")] == 1

    # With the read-only key there is no uuid: the option costs nothing and changes nothing.
    readonly = Poller(make(extra="    pings: true"), clock=clock)
    await good_poll(readonly)
    assert readonly.requests[""] == 1


async def test_ping_log_is_not_read_while_all_checks_are_up(
    fake: FakeHealthchecks, clock: FakeClock, make: Factory
) -> None:
    poller = Poller(make(api_key=fake.api_key, extra="    pings: true"), clock=clock)
    snapshot = await good_poll(poller)
    assert not snapshot.readonly
    assert poller.requests[""] == 1
    assert all(c.pings is None for c in snapshot.checks)


async def test_paused_check_is_no_job_and_has_no_up_value(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    scenario.pause("storj-weekly")
    poller = Poller(make(), clock=clock)
    await good_poll(poller)
    got = values(collect(poller, clock))
    assert got[key("backup_healthchecks_check_status", check="storj-weekly", status="paused")] == 1
    assert key("backup_healthchecks_check_up", check="storj-weekly") not in got
    assert job("backup_job_overdue", "hc-storj-weekly") not in got
    assert job("backup_job_overdue", "hc-b2-daily") in got


async def test_config_job_evidence_and_jobs_false(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    extra = """    jobs: false
jobs:
  offsite-b2:
    schedule: "30 1 * * *"
    grace: 8h
    evidence: {source: hc, check: "B2 daily sync"}
"""
    poller = Poller(make(extra=extra), clock=clock)
    await good_poll(poller)
    jobs = parse_config(yaml_text(fake.url, fake.readonly_key, extra)).jobs
    got = values(collect(poller, clock, jobs))
    run = scenario.check("b2-daily").run
    assert run is not None
    done = berlin(2026, 3, 4, 1, 30) + run.duration
    assert got[job("backup_job_last_success_timestamp_seconds", "offsite-b2")] == done
    assert got[job("backup_job_overdue", "offsite-b2")] == 0
    assert not [k for k in got if k[0].startswith("backup_job_") and "hc-" in str(k[1])]


async def test_tags_filter_the_list(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    poller = Poller(make(extra="    tags: [offsite, b2]"), clock=clock)
    snapshot = await good_poll(poller)
    assert [c.label for c in snapshot.checks] == ["b2-daily"]
    assert scenario.requests[-1].query == (("tag", "offsite"), ("tag", "b2"))


# ------------------------------------------------------------------------------ schedules


async def test_oncalendar_schedules_and_unsupported_ones(
    fake: FakeHealthchecks,
    scenario: HealthchecksScenario,
    clock: FakeClock,
    make: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="exporter.sources.healthchecks.source")
    scenario.checks += [
        FakeCheck(
            name="Office sync",
            slug="weekdays",
            schedule="Mon..Fri 09:00",
            tz="Europe/Berlin",
            grace=3600,
            run=FakeRun(duration=300),
        ),
        FakeCheck(
            name="Two calendars", slug="multi", schedule="Mon..Fri 09:00\nSat 10:00", grace=600
        ),
    ]
    scenario.simulated_until = clock.time() - 7 * 86400
    scenario.sync()
    poller = Poller(make(), clock=clock)
    await good_poll(poller)
    await good_poll(poller)
    got = values(collect(poller, clock))
    assert got[key("backup_healthchecks_schedule_supported", check="weekdays")] == 1
    assert got[key("backup_healthchecks_schedule_supported", check="multi")] == 0
    for check in ("weekdays", "multi"):
        infos = [
            k for k in got if k[0] == "backup_healthchecks_check_info" and ("check", check) in k[1]
        ]
        assert len(infos) == 1
        assert ("kind", "oncalendar") in infos[0][1]
    # Wednesday 12:00: the expected start is this morning's 09:00, which ran (the fake's
    # own OnCalendar engine pinged at 09:00 + 5 min).
    assert got[job("backup_job_expected_start_timestamp_seconds", "hc-weekdays")] == berlin(
        2026, 3, 4, 9, 0
    )
    assert got[job("backup_job_last_success_timestamp_seconds", "hc-weekdays")] == berlin(
        2026, 3, 4, 9, 5
    )
    assert got[job("backup_job_overdue", "hc-weekdays")] == 0
    assert job("backup_job_overdue", "hc-multi") not in got
    warnings = [r for r in caplog.records if "multi" in r.getMessage()]
    assert len(warnings) == 1  # once, not at every poll


# ------------------------------------------------------------------------------ shared fixtures


@pytest.mark.parametrize(
    ("filename", "readonly"),
    [("api_v3_checks_list.json", False), ("api_v3_checks_list_readonly.json", True)],
)
async def test_documented_check_lists(
    shared_fixtures: Path,
    fake: FakeHealthchecks,
    scenario: HealthchecksScenario,
    clock: FakeClock,
    make: Factory,
    filename: str,
    readonly: bool,
) -> None:
    document = json.loads((shared_fixtures / "healthchecks" / filename).read_text())
    scenario.document = document
    poller = Poller(make(api_key=fake.readonly_key if readonly else fake.api_key), clock=clock)
    snapshot = await good_poll(poller)
    assert snapshot.readonly == readonly
    got = values(collect(poller, clock))
    for check in document["checks"]:
        slug = check["slug"]
        assert got[key("backup_healthchecks_grace_seconds", check=slug)] == check["grace"]
        assert got[key("backup_healthchecks_last_ping_timestamp_seconds", check=slug)] == iso(
            check["last_ping"]
        )
        next_ping = key("backup_healthchecks_next_ping_timestamp_seconds", check=slug)
        if check["next_ping"] is None:
            assert next_ping not in got
        else:
            assert got[next_ping] == iso(check["next_ping"])
        assert got[key("backup_healthchecks_check_up", check=slug)] == float(
            check["status"] in ("up", "grace")
        )
        assert got[key("backup_healthchecks_check_status", check=slug, status=check["status"])] == 1
        assert got[key("backup_healthchecks_started", check=slug)] == float(check["started"])
        if "timeout" in check:
            assert got[key("backup_healthchecks_timeout_seconds", check=slug)] == check["timeout"]
            info = {"schedule": "", "timezone": "", "kind": "simple"}
            assert job("backup_job_overdue", f"hc-{slug}") not in got
        else:
            kind = "cron" if len(check["schedule"].split()) == 5 else "oncalendar"
            info = {"schedule": check["schedule"], "timezone": check["tz"], "kind": kind}
            # Down in the document: no evidence of a success, so overdue by 2026.
            assert check["status"] == "down"
            assert got[job("backup_job_overdue", f"hc-{slug}")] == 1
            assert got[job("backup_job_failed", f"hc-{slug}")] == 1
            schedule = {"schedule": check["schedule"], "timezone": check["tz"]}
            assert got[key("backup_job_info", backup_job=f"hc-{slug}", vmid="", **schedule)] == 1
        assert got[key("backup_healthchecks_check_info", check=slug, **info)] == 1


@pytest.mark.parametrize(
    ("filename", "readonly"),
    [("api_v3_checks_list.json", False), ("api_v3_checks_list_readonly.json", True)],
)
def test_fake_answers_have_the_documented_fields(
    shared_fixtures: Path, clock: FakeClock, filename: str, readonly: bool
) -> None:
    document = json.loads((shared_fixtures / "healthchecks" / filename).read_text())
    scenario = homelab(clock.time)
    scenario.checks.append(FakeCheck(name="Simple", slug="simple", timeout=3600))
    ours = scenario.list_checks(readonly=readonly, tags=[], slug=None)["checks"]
    # The docs omit what real responses add (SOURCES.md): subject, subject_fail, last_duration.
    added = {"subject", "subject_fail", "last_duration"}
    for theirs in document["checks"]:
        same_kind = next(c for c in ours if ("timeout" in c) == ("timeout" in theirs))
        assert set(theirs) <= set(same_kind)
        assert set(same_kind) - set(theirs) <= added
        for field in theirs:
            if theirs[field] is not None and same_kind[field] is not None:
                assert type(same_kind[field]) is type(theirs[field]), field


def test_documented_ping_log(shared_fixtures: Path) -> None:
    document = json.loads((shared_fixtures / "healthchecks" / "api_v3_pings.json").read_text())
    log = parse_pings(document)

    def newest(kind: str) -> float:
        return max(iso(p["date"]) for p in document["pings"] if p["type"] == kind)

    assert log.last_success == newest("success")
    assert log.last_start == newest("start")
    assert log.last_failure is None


# ------------------------------------------------------------------------------ failures


async def test_wrong_key_is_an_auth_error_without_the_key(
    fake: FakeHealthchecks, clock: FakeClock, make: Factory
) -> None:
    wrong = "W" * 32
    error = await failed_poll(Poller(make(api_key=wrong), clock=clock))
    assert error.reason == "auth"
    assert "wrong api key" in error.message
    assert wrong not in error.message


def test_key_of_the_wrong_length_is_a_config_error() -> None:
    secret = "short-key-pasted-wrong"
    with pytest.raises(ConfigError) as info:
        parse_config(f"sources:\n  hc: {{kind: healthchecks, api_key: '{secret}'}}\n")
    text = str(info.value)
    assert "sources.hc.api_key" in text
    assert "32 characters" in text
    assert secret not in text


async def test_rate_limit_and_server_error_are_http_errors(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    poller = Poller(make(), clock=clock)
    scenario.rate_limited = 1
    error = await failed_poll(poller)
    assert error.reason == "http"
    assert "rate limited" in error.message
    assert "retry after 60s" in error.message
    # No request before Retry-After ends: the poll is skipped, the state stays.
    served = len(scenario.requests)
    clock.advance(59)
    assert (await poller.poll_once()).error is error
    assert len(scenario.requests) == served
    clock.advance(1)
    scenario.errors.append(500)
    error = await failed_poll(poller)
    assert error.reason == "http"
    assert "HTTP 500" in error.message
    await good_poll(poller)  # recovers


async def test_hung_server_times_out_and_the_source_recovers(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    poller = Poller(make(extra="    timeout: 300ms"), clock=clock)
    scenario.hang()
    error = await failed_poll(poller)
    assert error.reason == "timeout"
    scenario.release()
    await good_poll(poller)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"checks": [', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"checks": "none"}', '"checks" list'),
        (b"[]", '"checks" list'),
        (b'{"checks": [{"name": "x", "status": "up", "grace": "soon"}]}', "checks[0].grace"),
        (
            b'{"checks": [{"name": "x", "status": "up", "grace": 60, "last_ping": "yesterday"}]}',
            "checks[0].last_ping",
        ),
        (b'{"checks": [{"name": "x", "status": 1, "grace": 60}]}', "checks[0].status"),
        (b'{"checks": [{"name": "x", "status": "up", "grace": 60, "started": "no"}]}', "started"),
    ],
)
async def test_malformed_answers_are_parse_errors(
    fake: FakeHealthchecks,
    scenario: HealthchecksScenario,
    clock: FakeClock,
    make: Factory,
    body: bytes,
    needle: str,
) -> None:
    scenario.raw_body = body
    error = await failed_poll(Poller(make(), clock=clock))
    assert error.reason == "parse"
    assert needle in error.message


async def test_redirect_is_not_followed_with_the_key(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    scenario.redirect_to = f"{fake.url}/elsewhere/api/v3/checks/"
    error = await failed_poll(Poller(make(), clock=clock))
    assert error.reason == "config"
    assert "redirects (HTTP 301)" in error.message
    assert len(scenario.requests) == 1


async def test_refused_connection(clock: FakeClock, make: Factory) -> None:
    closed = await start_fake_healthchecks(HealthchecksScenario(now=clock.time))
    url = closed.url
    await closed.stop()
    error = await failed_poll(Poller(make(url=url), clock=clock))
    assert error.reason == "connection"


async def test_self_hosted_https_with_ca_file(clock: FakeClock, make: Factory) -> None:
    scenario = homelab(clock.time)
    server = await start_fake_healthchecks(scenario, tls=True)
    try:
        trusted = Poller(make(url=server.url, extra=f"    ca_file: {server.ca_file}"), clock=clock)
        snapshot = await good_poll(trusted)
        assert {c.label for c in snapshot.checks} == {"b2-daily", "storj-weekly"}
        untrusted = Poller(make(url=server.url), clock=clock)
        error = await failed_poll(untrusted)
        assert error.reason == "tls"
    finally:
        await server.stop()


async def test_path_prefix_of_a_self_hosted_instance(
    fake: FakeHealthchecks, clock: FakeClock, make: Factory
) -> None:
    scenario = homelab(clock.time)
    scenario.path_prefix = "/hc"
    server = await start_fake_healthchecks(scenario)
    try:
        snapshot = await good_poll(Poller(make(url=f"{server.url}/hc/"), clock=clock))
        assert len(snapshot.checks) == 2
        assert scenario.requests[-1].path == "/hc/api/v3/checks/"
        # Without the prefix the API is not found: a config error, not a parse error.
        error = await failed_poll(Poller(make(url=server.url), clock=clock))
        assert error.reason == "config"
        assert "HTTP 404" in error.message
    finally:
        await server.stop()


# ------------------------------------------------------------------------------ hostile names


async def test_hostile_names_render_safely_and_promtool_is_happy(
    fake: FakeHealthchecks, scenario: HealthchecksScenario, clock: FakeClock, make: Factory
) -> None:
    hostile = 'evil"name\nwith\\backslash} {x="y"'
    scenario.checks += [
        FakeCheck(name=hostile),
        FakeCheck(name="Ünïcödé ✓ 备份"),
        FakeCheck(name=""),
        FakeCheck(name="dup one", slug="dup", timeout=600),
        FakeCheck(name="dup two", slug="dup", timeout=600),
        FakeCheck(name="already", slug="dup-2", timeout=600),
        FakeCheck(name="Late", slug="late", schedule="0 3 * * *", tz="Not/AZone", grace=60),
    ]
    poller = Poller(make(), clock=clock)
    await good_poll(poller)
    text = collect(poller, clock)
    got = values(text)
    labels = {dict(k[1])["check"] for k in got if k[0] == "backup_healthchecks_grace_seconds"}
    assert labels == {
        "b2-daily",
        "storj-weekly",
        hostile,
        "Ünïcödé ✓ 备份",
        "unnamed",
        "dup",
        "dup-2",
        "dup-2-2",
        "late",
    }
    # An unknown time zone makes the schedule unusable: no job, no crash.
    assert got[key("backup_healthchecks_schedule_supported", check="late")] == 0
    assert promtool(text) == (0, "", "")


def test_duplicate_labels_stay_unique() -> None:
    checks = parse_checks(
        {
            "checks": [
                {"name": n, "slug": s, "status": "new", "grace": 60, "timeout": 60}
                for n, s in [("a", "x"), ("b", "x"), ("c", "x-2"), ("d", "x")]
            ]
        }
    )
    labels = [c.label for c in checks]
    assert len(set(labels)) == len(labels)
    assert labels[0] == "x"


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://healthchecks.io", "http(s) URL"),
        ("healthchecks.io", "http(s) URL"),
        ("https://hc.example/?x=1", "query"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    key_text = "k" * 32
    with pytest.raises(ConfigError) as info:
        parse_config(f"sources:\n  hc: {{kind: healthchecks, url: '{url}', api_key: {key_text}}}\n")
    assert "sources.hc.url" in str(info.value)
    assert message in str(info.value)


def test_defaults_and_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "hc.key"
    key_file.write_text("r" * 32 + "\n")
    config = parse_config(
        "sources:\n  hc: {kind: healthchecks, api_key_file: hc.key}\n", base_dir=tmp_path
    )
    cfg = config.sources["hc"]
    assert (cfg.interval, cfg.timeout) == (300.0, 30.0)
    assert cfg.url == "https://healthchecks.io"  # type: ignore[attr-defined]
    assert cfg.jobs is True  # type: ignore[attr-defined]
    assert cfg.pings is False  # type: ignore[attr-defined]
    assert cfg.api_key.reveal() == "r" * 32  # type: ignore[attr-defined]
    assert "r" * 32 not in repr(cfg)


def test_tags_with_spaces_are_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            f"sources:\n  hc: {{kind: healthchecks, api_key: {'k' * 32}, tags: ['a b']}}\n"
        )
    assert "sources.hc.tags" in str(info.value)


async def test_close_is_idempotent(fake: FakeHealthchecks, clock: FakeClock, make: Factory) -> None:
    source = make()
    await good_poll(Poller(source, clock=clock))
    await source.close()
    await source.close()
    # A closed source opens a new session when polled again.
    await good_poll(Poller(source, clock=clock))
