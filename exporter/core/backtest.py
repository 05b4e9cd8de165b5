"""``backup-exporter backtest``: replay the stored run history through the job engine.

It reads only the state database: the jobs each source's evidence fed (with the schedule and
grace they had at the last poll) and the runs recorded for them. For every job it prints each
incident (the deadline, when the alert would have fired and when it resolved), then a summary
with the smallest grace that would have avoided every alarm on a run that did succeed, so an
operator can tune graces before trusting them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from exporter.core.state import judged_jobs
from exporter.core.store import StateStore
from exporter.schedule.backtest import Backtest, backtest
from exporter.schedule.jobs import job_key


def _when(ts: float | None, zone: ZoneInfo) -> str:
    if ts is None:
        return "open"
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M %Z")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def run_backtest(
    path: Path,
    *,
    start: float | None,
    end: float,
    job: str | None,
    zone: ZoneInfo,
) -> tuple[list[Backtest], str]:
    """Replay every stored job (or the one named ``job``) and return the results and report."""
    store = StateStore(path)
    try:
        specs = judged_jobs(store.results().values())
        if job is not None:
            specs = [s for s in specs if job in (s.name, job_key(s))]
        results = []
        for spec in specs:
            runs = store.runs(job_key(spec))
            first = min((r.started or r.finished or end for r in runs), default=end)
            results.append(
                backtest(spec, runs, start=start if start is not None else first, end=end)
            )
    finally:
        store.close()
    return results, report(results, zone)


def report(results: Iterable[Backtest], zone: ZoneInfo) -> str:
    """Render backtest results as two plain-text tables."""
    results = list(results)
    lines = ["incidents:"]
    header = f"  {'job':40} {'deadline':22} {'fired':22} {'resolved':22}"
    lines.append(header)
    count = 0
    for result in results:
        for incident in result.incidents:
            count += 1
            lines.append(
                f"  {job_key(result.spec):40} {_when(incident.deadline, zone):22} "
                f"{_when(incident.fired, zone):22} {_when(incident.resolved, zone):22}"
            )
    if not count:
        lines.append("  (none)")
    lines.append("")
    lines.append("jobs:")
    lines.append(
        f"  {'job':40} {'expected':>8} {'met':>5} {'grace':>8} {'smallest safe grace':>20}"
    )
    for result in results:
        lines.append(
            f"  {job_key(result.spec):40} {result.expected_runs:>8} {result.met_runs:>5} "
            f"{_duration(result.spec.grace):>8} {_duration(result.smallest_grace):>20}"
        )
    return "\n".join(lines) + "\n"
