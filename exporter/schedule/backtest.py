"""Backtest: replay a job's recorded runs through the job engine at every deadline.

Pure computation over a run history (no store, no clock). For one job it walks the instants at
which :func:`~exporter.schedule.jobs.evaluate` can change its verdict (every finish deadline,
every start deadline, every recorded finish) and evaluates the job there with the evidence known
at that instant, exactly as the live exporter would have. Each stretch of ``overdue`` is an
:class:`Incident`.

It also answers "how long a grace would have avoided every alarm on a run that did succeed":
for each scheduled start whose run succeeded before the next start, the time from the start to
that success; the smallest safe grace is the largest of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from exporter.core.store import Run
from exporter.schedule.jobs import Evidence, JobSpec, evaluate

_TICK = 1e-3  # evaluate just after an instant: "past the deadline" is strict


@dataclass(frozen=True)
class Incident:
    """One stretch during which the job was overdue."""

    deadline: float  # the finish (or start) deadline that was missed
    fired: float
    resolved: float | None  # None: still open at the end of the replay


@dataclass(frozen=True)
class Backtest:
    """The replay of one job over ``[start, end]``."""

    spec: JobSpec
    incidents: tuple[Incident, ...]
    expected_runs: int
    met_runs: int
    smallest_grace: float | None  # None: no run succeeded in the range


def _evidence_at(runs: Sequence[Run], t: float) -> Evidence:
    """Return what a live poll at ``t`` would have shown (``runs`` sorted by their end)."""
    last_success: float | None = None
    last_start: float | None = None
    duration: float | None = None
    failed = False
    for run in runs:
        end = run.finished if run.finished is not None else run.started
        if end is None or end > t:
            continue
        if run.started is not None and (last_start is None or run.started >= last_start):
            last_start = run.started
        ok = run.result == "ok" and run.finished is not None
        if ok:
            last_success = run.finished
            duration = None if run.started is None else end - run.started
        failed = not ok  # the run that ended last decides
    return Evidence(
        last_success=last_success,
        last_start=last_start,
        last_duration=duration,
        failed=failed,
        tracks_start=any(r.started is not None for r in runs),
    )


def _starts(spec: JobSpec, start: float, end: float) -> Iterator[float]:
    t = datetime.fromtimestamp(start, UTC) - timedelta(microseconds=1)
    for when in spec.schedule.iter_after(t):
        ts = when.timestamp()
        if ts > end:
            return
        yield ts


def backtest(spec: JobSpec, runs: Iterable[Run], *, start: float, end: float) -> Backtest:
    """Replay ``runs`` of ``spec`` over ``[start, end]`` (Unix seconds)."""
    history = sorted(runs, key=lambda r: r.finished or r.started or 0.0)
    starts = list(_starts(spec, start, end))
    instants = {start}
    for s in starts:
        instants.add(s + spec.grace)
        if spec.start_grace is not None:
            instants.add(s + spec.start_grace)
    for run in history:
        for at in (run.finished, run.started):
            if at is not None and start <= at <= end:
                instants.add(at)
    incidents: list[Incident] = []
    open_since: tuple[float, float] | None = None
    for t in sorted(i for i in instants if i <= end):
        at = t + _TICK
        status = evaluate(spec, _evidence_at(history, at), at, first_seen=start)
        if status.overdue and open_since is None:
            open_since = (_missed_deadline(spec, at), t)
        elif not status.overdue and open_since is not None:
            incidents.append(Incident(open_since[0], open_since[1], t))
            open_since = None
    if open_since is not None:
        incidents.append(Incident(open_since[0], open_since[1], None))
    met, needs = 0, []
    expected = 0
    for i, s in enumerate(starts):
        if s + spec.grace > end:
            break  # not due yet at the end of the replay
        expected += 1
        nxt = starts[i + 1] if i + 1 < len(starts) else float("inf")
        success = next(
            (
                r.finished
                for r in history
                if r.result == "ok" and r.finished is not None and s <= r.finished < nxt
            ),
            None,
        )
        if success is None:
            continue
        needs.append(success - s)
        if success <= s + spec.grace:
            met += 1
    return Backtest(
        spec=spec,
        incidents=tuple(incidents),
        expected_runs=expected,
        met_runs=met,
        smallest_grace=max(needs) if needs else None,
    )


def _missed_deadline(spec: JobSpec, at: float) -> float:
    """Return the finish deadline of the latest run due at ``at`` (what the alert is about)."""
    due = spec.schedule.latest_at_or_before(
        datetime.fromtimestamp(at - spec.grace, UTC) - timedelta(microseconds=1)
    )
    if due is not None:
        return due.timestamp() + spec.grace
    return at  # pragma: no cover - overdue implies a due run
