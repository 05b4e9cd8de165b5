"""vzdump task attribution from task logs, WARNINGS as success, per-storage permissions.

Against the fake PVE over real HTTPS; the log lines are the ones pve-manager PVE/VZDump.pm
writes (see tests/fixtures/proxmox/README.md).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.core.clock import FakeClock
from exporter.core.config import parse_config
from exporter.core.poller import Poller, PollState
from exporter.schedule.jobs import evaluate
from exporter.sim.pve import FakeGuest, FakePVE, FakeStorage, PVEScenario, start_fake_pve
from exporter.sim.pve.scenario import FakeJob, FakeTask, command_line
from exporter.sources.proxmox.model import ProxmoxSnapshot
from exporter.sources.proxmox.source import LOG_READS_PER_POLL, MEMORY_KEY, SPEC, ProxmoxSource
from exporter.sources.proxmox.tasks import parse_command_line, parse_task_log
from tests.test_proxmox import exposition, key, samples

START = 1_780_000_000.0  # 2026-05-28 22:26:40 in Berlin, after that day's 21:00 runs
RUN = 1_779_994_800  # 2026-05-28 21:00:00 Europe/Berlin
GIB = 2**30
FIXTURES = Path(__file__).parent / "fixtures" / "proxmox"
README = Path(__file__).resolve().parents[1] / "README.md"


def two_jobs(clock: FakeClock) -> PVEScenario:
    """One node, four guests, two jobs at the same time: A (100, 101 → nas), B (102, 103 → pbs)."""
    scenario = PVEScenario(
        now=clock.time,
        guests=[
            FakeGuest(100, "infra100"),
            FakeGuest(101, "dns101", guest_type="lxc"),
            FakeGuest(102, "media102"),
            FakeGuest(103, "git103", guest_type="lxc"),
        ],
        storages=[
            FakeStorage("nas", total=500 * GIB, type="nfs"),
            FakeStorage("pbs", total=2048 * GIB, type="pbs"),
        ],
        jobs=[
            FakeJob("backup-a", schedule="21:00", storage="nas", vmid="100,101"),
            FakeJob("backup-b", schedule="21:00", storage="pbs", vmid="102,103"),
        ],
    )
    scenario.simulated_until = START
    return scenario


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def scenario(clock: FakeClock) -> PVEScenario:
    return two_jobs(clock)


@pytest.fixture
async def fake(scenario: PVEScenario) -> AsyncIterator[FakePVE]:
    server = await start_fake_pve(scenario)
    yield server
    await server.stop()


_OPENED: list[ProxmoxSource] = []


@pytest.fixture(autouse=True)
async def _close_sources() -> AsyncIterator[None]:
    yield
    while _OPENED:
        await _OPENED.pop().close()


def make_source(fake: FakePVE) -> ProxmoxSource:
    text = yaml.safe_dump(
        {
            "sources": {
                "pve1": {
                    "kind": "proxmox",
                    "url": fake.url,
                    "token_id": fake.token_id,
                    "token_secret": fake.token_secret,
                    "ca_file": fake.ca_file,
                    "timezone": "Europe/Berlin",
                    "timeout": "5s",
                }
            }
        }
    )
    source = SPEC.build(parse_config(text, kinds={"proxmox": SPEC}).sources["pve1"])
    assert isinstance(source, ProxmoxSource)
    _OPENED.append(source)
    return source


async def good_poll(poller: Poller) -> ProxmoxSnapshot:
    state: PollState = await poller.poll_once()
    assert state.error is None, state.error
    assert isinstance(state.snapshot, ProxmoxSnapshot)
    return state.snapshot


def states(source: ProxmoxSource, snapshot: ProxmoxSnapshot, now: float) -> dict[Any, str]:
    return {
        (spec.name, spec.labels["vmid"]): evaluate(spec, ev, now).state
        for spec, ev in source.jobs(snapshot)
    }


def log_reads(scenario: PVEScenario) -> int:
    return sum(1 for p in scenario.requests if p.endswith("/log"))


# ------------------------------------------------------------------------ parsing the log


def test_fixture_log_gives_each_guest_its_own_outcome() -> None:
    lines = (FIXTURES / "vzdump-multi-guest-errors.log").read_text().splitlines()
    log = parse_task_log(lines, running=False)
    assert log.vmids == {100, 101}
    assert not log.all
    assert log.storage == "truenas-backups"
    # VM 100 finished with one WARN line in its part; VM 101 failed.
    assert log.guests == ((100, "warning", 1), (101, "error", 0))
    assert log.task_warnings == 0


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (
            "vzdump --all 1 --exclude 101,102 --storage nas --mode snapshot --quiet 1",
            {"all": True, "vmids": set(), "exclude": {101, 102}, "storage": "nas"},
        ),
        (
            "vzdump 100 101 --node pve2 --storage 'my nas' --notes-template '{{guestname}}'",
            {"all": False, "vmids": {100, 101}, "node": "pve2", "storage": "my nas"},
        ),
        ("vzdump --pool prod --storage pbs", {"all": False, "pool": "prod", "storage": "pbs"}),
    ],
)
def test_command_line(cmdline: str, expected: dict[str, Any]) -> None:
    got = parse_command_line(cmdline)
    for name, value in expected.items():
        assert got[name] == value, name


def test_fake_command_line_is_parsed_back() -> None:
    job = FakeJob("j", "21:00", storage="nas", all=True, exclude="101", node="pve1")
    got = parse_command_line(command_line(job))
    assert (got["all"], got["exclude"], got["node"], got["storage"]) == (
        True,
        {101},
        "pve1",
        "nas",
    )


def test_guest_without_end_is_running_or_unknown() -> None:
    lines = ["INFO: starting new backup job: vzdump 100", "INFO: Starting Backup of VM 100 (qemu)"]
    assert parse_task_log(lines, running=True).guests == ((100, "running", 0),)
    assert parse_task_log(lines, running=False).guests == ((100, "unknown", 0),)
    # A guest can fail before its Starting line (exec_backup_task dies early).
    early = ["ERROR: Backup of VM 105 failed - unable to find VM '105'"]
    assert parse_task_log(early, running=False).guests == ((105, "error", 0),)


# -------------------------------------------------------------------------- attribution


async def test_two_jobs_each_failure_is_charged_to_its_job(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    scenario.failing = {101}
    scenario.run_at("backup-a", RUN)
    # vzdump's lock makes the second job wait: B starts after A ended, and succeeds.
    a_end = max(t.endtime or 0 for t in scenario.tasks)
    scenario.run_at("backup-b", a_end + 5)
    assert [t.status for t in scenario.tasks] == ["job errors", "OK"]
    assert all(t.id == "" for t in scenario.tasks)  # multi-guest: no vmid in the UPID
    source = make_source(fake)
    snapshot = await good_poll(Poller(source, clock=clock))
    got = states(source, snapshot, clock.time())
    # Only A's guest 101 failed: A's 100 finished, and B's success does not hide 101's failure.
    assert got == {
        ("backup-a", "100"): "ok",
        ("backup-a", "101"): "failed",
        ("backup-b", "102"): "ok",
        ("backup-b", "103"): "ok",
    }


async def test_job_failure_before_any_guest_fails_only_that_jobs_guests(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    scenario.run_at("backup-b", RUN)
    b_task = scenario.tasks[-1]
    # Job A could not take the lock: its task ends before any guest (VZDump.pm exec_backup).
    scenario.tasks.append(
        FakeTask(
            "pve1",
            RUN + 1,
            RUN + 2,
            "can't acquire lock '/var/run/vzdump.lck' - got timeout",
            "",
            0x4A001,
            log=[
                f"INFO: starting new backup job: {command_line(scenario.job('backup-a'))}",
                "ERROR: Backup job failed - can't acquire lock '/var/run/vzdump.lck' - got timeout",
                "TASK ERROR: can't acquire lock '/var/run/vzdump.lck' - got timeout",
            ],
        )
    )
    assert b_task.status == "OK"
    source = make_source(fake)
    snapshot = await good_poll(Poller(source, clock=clock))
    got = states(source, snapshot, clock.time())
    assert got[("backup-a", "100")] == "failed"
    assert got[("backup-a", "101")] == "failed"
    assert got[("backup-b", "102")] == "ok"
    assert got[("backup-b", "103")] == "ok"


async def test_manual_run_counts_only_for_the_guests_it_names(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    scenario.run_at("backup-a", RUN)
    scenario.run_at("backup-b", RUN + 600)
    manual = RUN + 3000
    scenario.tasks.append(
        FakeTask(
            "pve1",
            manual,
            manual + 40,
            "job errors",
            "",
            0x4B001,
            log=[
                "INFO: starting new backup job: vzdump 100 102 --storage nas --mode snapshot",
                "INFO: Starting Backup of VM 100 (qemu)",
                "INFO: Finished Backup of VM 100 (00:00:20)",
                "INFO: Starting Backup of VM 102 (qemu)",
                "ERROR: Backup of VM 102 failed - no space left on device",
                "INFO: Backup job finished with errors",
                "TASK ERROR: job errors",
            ],
        )
    )
    source = make_source(fake)
    snapshot = await good_poll(Poller(source, clock=clock))
    evidence = {(s.name, s.labels["vmid"]): ev for s, ev in source.jobs(snapshot)}
    # It names 100 and 102: their jobs see it; 101 and 103 keep their own job's run.
    assert evidence[("backup-a", "100")].last_start == manual
    assert evidence[("backup-b", "102")].last_start == manual
    assert evidence[("backup-b", "102")].failed  # no archive of 102 after the manual run
    assert evidence[("backup-a", "101")].last_start == RUN
    assert evidence[("backup-b", "103")].last_start == RUN + 600
    assert not evidence[("backup-b", "103")].failed


async def test_warnings_task_is_a_success_with_warnings(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    scenario.warning = {100}
    scenario.run_at("backup-a", RUN)
    scenario.run_at("backup-b", RUN + 600)
    assert scenario.tasks[0].status == "WARNINGS: 1"
    assert scenario.tasks[0].log[-1] == "TASK WARNINGS: 1"
    source = make_source(fake)
    snapshot = await good_poll(Poller(source, clock=clock))
    got = states(source, snapshot, clock.time())
    assert got[("backup-a", "100")] == "ok"
    assert got[("backup-a", "101")] == "ok"
    values = samples(exposition(source.render(snapshot)))
    assert values[key("backup_job_warnings", backup_job="backup-a", vmid="100")] == 1
    assert values[key("backup_job_warnings", backup_job="backup-a", vmid="101")] == 0


async def test_single_guest_warnings_status(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    scenario.job("backup-a").vmid = "100"
    scenario.warning = {100}
    scenario.run_at("backup-a", RUN)
    task = scenario.tasks[0]
    assert (task.id, task.status) == ("100", "WARNINGS: 1")
    source = make_source(fake)
    snapshot = await good_poll(Poller(source, clock=clock))
    assert states(source, snapshot, clock.time())[("backup-a", "100")] == "ok"
    values = samples(exposition(source.render(snapshot)))
    assert values[key("backup_job_warnings", backup_job="backup-a", vmid="100")] == 1
    assert log_reads(scenario) == 0  # a single-guest task needs no log


# -------------------------------------------------------------------- bounded log reading


async def test_finished_logs_are_read_once_and_remembered(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    scenario.run_at("backup-a", RUN)
    scenario.run_at("backup-b", RUN + 600)
    source = make_source(fake)
    poller = Poller(source, clock=clock)
    await good_poll(poller)
    assert log_reads(scenario) == 2
    assert set(poller.memory[MEMORY_KEY]) == {t.upid for t in scenario.tasks}
    first = states(source, await good_poll(poller), clock.time())
    assert log_reads(scenario) == 2  # not read again
    # After a restart the memory comes from the state database: still not read again.
    again = Poller(make_source(fake), clock=clock, memory=json.loads(json.dumps(poller.memory)))
    snapshot = await good_poll(again)
    assert log_reads(scenario) == 2
    assert states(again.source, snapshot, clock.time()) == first  # type: ignore[arg-type]


async def test_log_reads_per_poll_are_bounded(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    day = 86400
    for n in range(LOG_READS_PER_POLL + 4):
        scenario.run_at("backup-a", RUN - n * day)
    source = make_source(fake)
    poller = Poller(source, clock=clock)
    await good_poll(poller)
    assert log_reads(scenario) == LOG_READS_PER_POLL
    await good_poll(poller)
    assert log_reads(scenario) == LOG_READS_PER_POLL + 4
    await good_poll(poller)
    assert log_reads(scenario) == LOG_READS_PER_POLL + 4


async def test_running_task_log_is_read_until_it_ends(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    scenario.run_at("backup-b", RUN)
    scenario.start_backup("backup-a")
    source = make_source(fake)
    poller = Poller(source, clock=clock)
    snapshot = await good_poll(poller)
    evidence = {(s.name, s.labels["vmid"]): ev for s, ev in source.jobs(snapshot)}
    assert evidence[("backup-a", "100")].running
    assert evidence[("backup-a", "101")].running  # its turn is still to come
    assert not evidence[("backup-b", "102")].running
    reads = log_reads(scenario)
    await good_poll(poller)
    assert log_reads(scenario) == reads + 1  # the running one again, not the finished one
    clock.advance(600)
    scenario.finish_backups()
    snapshot = await good_poll(poller)
    got = states(source, snapshot, clock.time())
    assert got[("backup-a", "100")] == "ok"
    assert got[("backup-a", "101")] == "ok"


async def test_unreadable_task_logs_fall_back_to_the_node(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    scenario.run_at("backup-a", RUN)
    scenario.run_at("backup-b", RUN + 600)
    scenario.task_logs_forbidden = True
    source = make_source(fake)
    poller = Poller(source, clock=clock)
    with caplog.at_level(logging.WARNING):
        snapshot = await good_poll(poller)
        await good_poll(poller)
    assert all(t.log is None for t in snapshot.tasks)
    assert MEMORY_KEY in poller.memory
    assert poller.memory[MEMORY_KEY] == {}  # nothing remembered: retried next poll
    warned = [r for r in caplog.records if "cannot read vzdump task logs" in r.getMessage()]
    assert len(warned) == 1  # once, not every poll
    assert log_reads(scenario) == 2  # one refused request per poll, not one per task
    # The fallback: both tasks started at the jobs' schedule; every guest keeps a success.
    got = states(source, snapshot, clock.time())
    assert set(got.values()) == {"ok"}


async def test_without_logs_no_storage_is_blamed_on_a_guess(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    # B fails for 102 (nothing on pbs); A's later success would, charged to 102 by the
    # fallback, suggest 102 was written to pbs and hidden. Without logs nothing is claimed.
    scenario.failing = {102}
    scenario.run_at("backup-b", RUN)
    scenario.failing = set()
    scenario.run_at("backup-a", RUN + 200)
    scenario.task_logs_forbidden = True
    snapshot = await good_poll(Poller(make_source(fake), clock=clock))
    assert snapshot.hidden == ()
    scenario.task_logs_forbidden = False  # with the logs, it is 102's own failure
    source = make_source(fake)
    snapshot = await good_poll(Poller(source, clock=clock))
    assert snapshot.hidden == ()
    assert states(source, snapshot, clock.time())[("backup-b", "102")] == "failed"


# ------------------------------------------------------------------ per-storage permission


def target(values: dict[Any, float], sid: str) -> float:
    return values[key("backup_target_up", kind="proxmox", target=f"storage/{sid}")]


async def test_partially_visible_storage_is_a_permission_problem_of_that_storage(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    scenario.run_at("backup-a", RUN)
    scenario.run_at("backup-b", RUN + 600)
    scenario.hidden_storages = {"pbs"}  # the token has no Datastore.* on /storage/pbs
    source = make_source(fake)
    with caplog.at_level(logging.WARNING):
        snapshot = await good_poll(Poller(source, clock=clock))
    values = samples(exposition(source.render(snapshot)))
    assert target(values, "nas") == 1
    assert target(values, "pbs") == 0
    reasons = {
        dict(labels)["target"]: dict(labels)["reason"]
        for name, labels in values
        if name == "backup_target_error_info"
    }
    assert reasons == {"storage/pbs": "permission"}
    logged = [r.getMessage() for r in caplog.records if "reason=permission" in r.getMessage()]
    assert len(logged) == 1
    assert "Datastore.Allocate on /storage/pbs" in logged[0]
    assert "VM 102, 103" in logged[0]
    assert fake.token_secret not in logged[0]


async def test_hidden_guest_names_vm_backup_on_that_guest(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    scenario.run_at("backup-a", RUN)
    scenario.run_at("backup-b", RUN + 600)
    scenario.hidden_guests = {101}  # no VM.Backup on /vms/101
    source = make_source(fake)
    with caplog.at_level(logging.WARNING):
        snapshot = await good_poll(Poller(source, clock=clock))
    values = samples(exposition(source.render(snapshot)))
    assert target(values, "nas") == 0
    assert target(values, "pbs") == 1
    (hidden,) = snapshot.hidden
    assert (hidden.storage, hidden.vmids) == ("nas", (101,))
    assert "VM.Backup on /vms/101" in hidden.message
    assert any("VM.Backup on /vms/101" in r.getMessage() for r in caplog.records)


async def test_failed_run_without_archive_is_not_a_permission_problem(
    fake: FakePVE, scenario: PVEScenario, clock: FakeClock
) -> None:
    scenario.failing = {101}
    scenario.run_at("backup-a", RUN)
    scenario.run_at("backup-b", RUN + 600)
    source = make_source(fake)
    snapshot = await good_poll(Poller(source, clock=clock))
    assert snapshot.hidden == ()
    values = samples(exposition(source.render(snapshot)))
    assert target(values, "nas") == 1


# -------------------------------------------------------- the README's least-privilege recipe


def readme_acl(skip: str = "") -> dict[str, set[str]]:
    """Build the token's effective privileges from the README's pveum recipe."""
    text = README.read_text()
    block = text[text.index("pveum user add monitor@pve") :]
    block = block[: block.index("```")]
    roles: dict[str, set[str]] = {"PVEAuditor": {"Sys.Audit", "Datastore.Audit", "VM.Audit"}}
    user: dict[str, set[str]] = {}
    token: dict[str, set[str]] = {}
    for raw in block.splitlines():
        line = raw.split("#")[0].strip()
        if m := re.match(r'pveum role add (\S+) --privs "([^"]+)"', line):
            roles[m.group(1)] = set(m.group(2).split())
        elif (
            m := re.match(r"pveum acl modify (\S+) --(users|tokens) (\S+) --roles (\S+)", line)
        ) and (not skip or m.group(1) != skip):
            grants = user if m.group(2) == "users" else token
            grants.setdefault(m.group(1), set()).update(roles[m.group(4)])
    # Privilege separation: the token has what both the user and the token were granted.
    paths = set(user) | set(token)

    def effective(path: str, acl: dict[str, set[str]]) -> set[str]:
        parts = path.strip("/").split("/")
        return set().union(
            *(acl.get("/" + "/".join(parts[:d]), set()) for d in range(len(parts) + 1))
        )

    return {p: effective(p, user) & effective(p, token) for p in paths}


async def test_readme_recipe_sees_every_backup(clock: FakeClock) -> None:
    scenario = two_jobs(clock)
    scenario.storages[0].storage = "truenas-backups"  # the storage the recipe names
    scenario.job("backup-a").storage = "truenas-backups"
    scenario.run_at("backup-a", RUN)
    scenario.run_at("backup-b", RUN + 600)
    scenario.acl = readme_acl()
    fake = await start_fake_pve(scenario)
    try:
        source = make_source(fake)
        snapshot = await good_poll(Poller(source, clock=clock))
        values = samples(exposition(source.render(snapshot)))
        # The recipe grants truenas-backups: every backup there is visible ...
        assert {a.vmid for a in snapshot.archives if a.storage == "truenas-backups"} == {100, 101}
        assert target(values, "truenas-backups") == 1
        # ... but not pbs, which the recipe does not name: that storage alone is down.
        assert target(values, "pbs") == 0
        assert [h.storage for h in snapshot.hidden] == ["pbs"]
        # Add the recipe's lines for pbs too and nothing is hidden.
        acl = readme_acl()
        acl["/storage/pbs"] = set(acl["/storage/truenas-backups"])
        scenario.acl = acl
        snapshot = await good_poll(Poller(make_source(fake), clock=clock))
        assert snapshot.hidden == ()
        # Without the recipe's grant on the storage, PVE hides everything: the poll says why.
        scenario.acl = readme_acl(skip="/storage/truenas-backups")
        state = await Poller(make_source(fake), clock=clock).poll_once()
        assert state.error is not None
        assert state.error.reason == "permission"
        assert "backup listing of pbs, truenas-backups is empty" in state.error.message
    finally:
        await fake.stop()
