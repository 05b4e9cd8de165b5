"""SLA counters per job: a hand-computed month across a restart, and the backtest as oracle."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from conftest import MemoryConfig
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from test_alerts import require_tool, run

from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.core.store import Run
from exporter.schedule.backtest import backtest
from exporter.schedule.expressions import parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec
from exporter.schedule.sla import Tally
from exporter.sources.base import FetchContext, Source

DAY = 86400.0
HOUR = 3600.0
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
SPEC = JobSpec(
    name="nightly",
    source="mem",
    schedule=parse_schedule("0 2 * * *", "UTC"),
    grace=4 * HOUR,
    start_grace=None,
    labels={"vmid": "100"},
)


@dataclass(frozen=True)
class Snap:
    evidence: Evidence


class ScriptedSource(Source[MemoryConfig, Snap]):
    """A source whose one job shows what a poll at the clock's now would see of ``runs``.

    Sample exposition::

        (no families of its own: only its job's backup_job_* series)
    """

    kind = "memory"

    def __init__(self, clock: FakeClock, runs: list[Run]) -> None:
        super().__init__(MemoryConfig(name="mem", kind="memory", interval=60.0, timeout=5.0))
        self.clock = clock
        self.runs = runs

    async def fetch(self, ctx: FetchContext) -> Snap:
        now = self.clock.time()
        seen = [r for r in self.runs if (r.finished or r.started or 0.0) <= now]
        ok = [r.finished for r in seen if r.result == "ok" and r.finished is not None]
        starts = [r.started for r in seen if r.started is not None]
        last = max(seen, key=lambda r: r.finished or r.started or 0.0, default=None)
        return Snap(
            Evidence(
                last_success=max(ok, default=None),
                last_start=max(starts, default=None),
                failed=last is not None and last.result != "ok",
                tracks_start=True,
            )
        )

    def render(self, snapshot: Snap) -> Iterator[Metric]:
        return iter(())

    def jobs(self, snapshot: Snap) -> Iterator[tuple[JobSpec, Evidence]]:
        yield SPEC, snapshot.evidence


def november() -> list[Run]:
    """November 2026, daily at 02:00 UTC, grace 4 h: three runs miss their 06:00 deadline.

    Nov 7 never runs, Nov 14 fails, Nov 21 succeeds at 07:00 (an hour late); every other day
    starts at 02:00 and succeeds at 03:00. By hand: 30 expected, 27 met.
    """
    runs = []
    for day in range(30):
        start = NOV_1 + day * DAY + 2 * HOUR
        if day == 6:
            continue
        if day == 13:
            runs.append(Run(job="", result="failed", started=start, finished=start + HOUR))
        elif day == 20:
            runs.append(Run(job="", result="ok", started=start, finished=start + 5 * HOUR))
        else:
            runs.append(Run(job="", result="ok", started=start, finished=start + HOUR))
    return runs


def counters(collector: SnapshotCollector) -> tuple[float, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    found = {
        s.name: s.value
        for fam in text_string_to_metric_families(generate_latest(registry).decode())
        for s in fam.samples
        if s.labels.get("backup_job") == "nightly"
    }
    return found["backup_job_runs_expected_total"], found["backup_job_runs_met_total"]


def start(path: Path, clock: FakeClock, runs: list[Run]) -> tuple[StateKeeper, SnapshotCollector]:
    keeper = StateKeeper(path)
    keeper.load()
    stored = keeper.results.get("mem")
    poller = Poller(
        ScriptedSource(clock, runs),
        clock=clock,
        last_success=None if stored is None else stored.taken_at,
        memory=keeper.memories.setdefault("mem", {}),
    )
    return keeper, SnapshotCollector([poller], clock=clock, keeper=keeper)


async def poll_day(
    collector: SnapshotCollector, clock: FakeClock, seen: list[tuple[float, float]]
) -> None:
    """Poll at 03:30, 06:30 and 07:30 of the clock's day, scraping after each poll."""
    day = clock.time() - clock.time() % DAY
    for at in (3.5 * HOUR, 6.5 * HOUR, 7.5 * HOUR):
        clock.advance(day + at - clock.time())
        await collector.pollers[0].poll_once()
        seen.append(counters(collector))


async def test_a_hand_computed_month_with_three_missed_runs_across_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    clock = FakeClock(NOV_1)
    runs = november()
    keeper, collector = start(path, clock, runs)
    seen: list[tuple[float, float]] = []
    await collector.pollers[0].poll_once()  # first seen: Nov 1 00:00
    for _ in range(15):
        await poll_day(collector, clock, seen)
        clock.advance(DAY - clock.time() % DAY)
    # Nov 1..15 are due and polled after their deadline; Nov 7 and Nov 14 missed.
    assert counters(collector) == (15, 13)
    await keeper.close()

    clock.advance(12 * HOUR)  # the exporter is down until Nov 16 12:00
    keeper, collector = start(path, clock, runs)
    # Before the first poll after the restart: the same counters, from the stored history.
    assert counters(collector) == (15, 13)
    await collector.pollers[0].poll_once()  # Nov 16 12:00: Nov 16's run is seen, deadline past
    assert counters(collector) == (16, 14)
    clock.advance(DAY - clock.time() % DAY)
    for _ in range(14):
        await poll_day(collector, clock, seen)
        clock.advance(DAY - clock.time() % DAY)
    assert clock.time() == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert counters(collector) == (30, 27)
    # The status page's strip: the same runs, day by day, across the restart.
    (history,) = collector.job_history().values()
    missed = sorted(datetime.fromtimestamp(d, UTC).day for d, met in history if not met)
    assert len(history) == 30 and missed == [7, 14, 21]
    await keeper.close()
    # Counters: never going back, one more expected run per polled deadline.
    for (e1, m1), (e2, m2) in itertools.pairwise(seen):
        assert e1 <= e2 <= e1 + 1
        assert m1 <= m2 <= m1 + 1


async def test_a_down_source_stalls_the_counters_and_unproven_runs_count_as_missed(
    tmp_path: Path,
) -> None:
    clock = FakeClock(NOV_1)
    runs = november()
    keeper, collector = start(tmp_path / "state.db", clock, runs)
    await collector.pollers[0].poll_once()
    await poll_day(collector, clock, [])
    assert counters(collector) == (1, 1)
    # Three days without a successful poll: nothing is known of Nov 2-4, nothing is counted.
    clock.advance(3 * DAY)
    assert counters(collector) == (1, 1)
    # Back on Nov 4 07:30: Nov 2-4 are counted at once. The evidence holds the last run only,
    # so the history proves Nov 4's success but not Nov 2's or 3's: unknown is never success.
    await collector.pollers[0].poll_once()
    assert counters(collector) == (4, 2)
    await keeper.close()


def test_the_tally_agrees_with_the_backtest_replay_on_random_histories() -> None:
    rng = random.Random(12)
    for case in range(40):
        spec = JobSpec(
            name="j",
            source="s",
            schedule=parse_schedule(rng.choice(["0 2 * * *", "30 */6 * * *", "0 3 * * 1"]), "UTC"),
            grace=rng.choice([1, 3, 5]) * HOUR + 7.0,
        )
        anchor = NOV_1 + rng.uniform(0, DAY)
        end = anchor + rng.uniform(3, 40) * DAY
        runs = []
        t = anchor - DAY
        while t < end:
            t += rng.uniform(0.5, 30) * HOUR
            runs.append(Run(job="j", result=rng.choice(["ok", "ok", "failed"]), finished=t))
        successes = sorted(r.finished for r in runs if r.result == "ok" and r.finished)
        tally = Tally.start(spec, "id", anchor)
        # Advancing in random steps gives the same count as one replay of the whole range.
        step = anchor
        while step < end:
            step = min(end, step + rng.uniform(0, 3) * DAY)
            tally.advance(spec, successes, step)
        oracle = backtest(spec, runs, start=anchor, end=end)
        assert (tally.expected, tally.met) == (oracle.expected_runs, oracle.met_runs), case
        assert tally.expected > 0


def test_the_overview_dashboard_leads_with_the_backup_sla_row() -> None:
    data = json.loads((Path(__file__).parents[1] / "dashboards" / "overview.json").read_text())
    first = data["panels"][0]
    assert (first["type"], first["title"]) == ("row", "Backup SLA")
    sla = []
    for panel in data["panels"][1:]:
        if panel["type"] == "row":
            break
        sla.append(panel)
    exprs = {p["title"]: p["targets"][0]["expr"] for p in sla}
    assert set(exprs) == {
        "SLA per asset, 30 days",
        "SLA per asset, 7 days",
        "Runs met and missed per day",
    }
    assert "increase(backup_asset_runs_met_total" in exprs["SLA per asset, 30 days"]
    assert "[30d]" in exprs["SLA per asset, 30 days"]
    grid = next(p for p in sla if p["title"] == "Runs met and missed per day")
    assert grid["type"] == "state-timeline"
    assert grid["targets"][0]["interval"] == "1d"  # one cell per day
    assert "backup_job_runs_expected_total" in exprs["Runs met and missed per day"]


def _daily_steps(days: int, skip: int | None = None) -> str:
    """Hourly samples of a counter that steps +1 at 06:00 each day (but on day ``skip``)."""
    values, count = [], 0
    for day in range(days):
        for hour in range(24):
            if hour == 6 and day != skip:
                count += 1
            values.append(str(count))
    return " ".join(values)


def test_the_per_day_grid_shows_met_missed_and_nothing_due(tmp_path: Path) -> None:
    """Evaluate the grid's query with promtool: 1 met, 2 missed, 0 when no run was due."""
    promtool = require_tool("promtool")
    data = json.loads((Path(__file__).parents[1] / "dashboards" / "overview.json").read_text())
    (grid,) = [p for p in data["panels"] if p.get("title") == "Runs met and missed per day"]
    expr = grid["targets"][0]["expr"].replace("$source", ".*")
    daily = {"source": "pve1", "backup_job": "daily", "vmid": "100"}
    weekly = {"source": "nas", "backup_job": "weekly", "vmid": ""}

    def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
        body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{body}}}", "values": values}

    def sample(value: float, labels: dict[str, str]) -> dict[str, Any]:
        body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if v)  # "" is unset
        return {"labels": f"{{{body}}}", "value": value}

    test = {
        "rule_files": [],
        "evaluation_interval": "1h",
        "tests": [
            {
                "interval": "1h",
                "input_series": [
                    series("backup_job_runs_expected_total", daily, _daily_steps(5)),
                    series("backup_job_runs_met_total", daily, _daily_steps(5, skip=2)),
                    series("backup_job_runs_expected_total", weekly, "0x119"),
                    series("backup_job_runs_met_total", weekly, "0x119"),
                ],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": f"{day}d12h",
                        "exp_samples": [sample(want, daily), sample(0, weekly)],
                    }
                    for day, want in ((1, 1), (2, 2), (3, 1))
                ],
            }
        ],
    }
    path = tmp_path / "grid.test.yml"
    path.write_text(yaml.safe_dump(test))
    result = run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
