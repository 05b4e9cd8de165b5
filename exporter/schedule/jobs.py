"""Schedule-aware job status: when a backup should have started and finished, and did it.

One mechanism serves every job, wherever it comes from: the ``jobs:`` map of the config
(evidence looked up in a source's snapshot) or the systems themselves (PVE backup jobs ×
guests, TrueNAS cloud-sync tasks, scrub tasks), which a source yields from
:meth:`~exporter.sources.base.Source.jobs`.

Deadlines, for the expected start ``E`` (the latest scheduled start ``<= now``):

* start deadline ``E + start_grace`` and finish deadline ``E + grace``;
* ``backup_job_overdue`` is 1 when the latest run whose finish deadline has passed has no
  success at or after its scheduled start, or, for evidence that records starts, when the
  latest run whose start deadline has passed was never started. This is the issue's rule
  ("no success since the expected start and now past the finish deadline"), extended so
  that a missed run stays overdue until a success arrives instead of resolving at the next
  scheduled start and firing again after its grace (no alert flapping while backups are broken).

First seen. A job is judged only from the moment the exporter first saw it (with this schedule
and grace, see :func:`first_seen_key`): scheduled starts before ``first_seen`` do not count, so
a new job, a guest newly picked up by an ``all`` job or a moved schedule is not overdue the
moment it appears.

State. ``backup_job_state{state}`` is a state set with exactly one of :data:`STATES` at 1:

* ``unknown``: the job's source was never polled successfully, or nothing at all was seen of
  the job and no run since first seen is due yet. Unknown is never success, and
  ``backup_job_overdue`` is 0 while it lasts; ``BackupJobUnknown`` fires once it lasts past
  ``backup_job_first_deadline_timestamp_seconds`` (the first finish deadline after first seen);
* ``failed``: the last run failed (and no run is in progress);
* ``overdue``: ``backup_job_overdue`` is 1;
* ``late``: past the start deadline without a start or a success since the expected start,
  not yet past the finish deadline; or the evidence says so (``Evidence.late``: a
  Healthchecks check in its grace time);
* ``running``: a run is in progress;
* ``ok``: otherwise.

Sample exposition::

    # HELP backup_job_overdue 1 when the job missed its start or finish deadline.
    # TYPE backup_job_overdue gauge
    backup_job_overdue{backup_job="vzdump-daily",source="pve1",vmid="100"} 0.0
    # HELP backup_job_finish_deadline_timestamp_seconds Expected start plus grace.
    # TYPE backup_job_finish_deadline_timestamp_seconds gauge
    backup_job_finish_deadline_timestamp_seconds{backup_job="daily",source="pve1",vmid=""} 1.7e9
    # HELP backup_job_state The job's state (exactly one state is 1).
    # TYPE backup_job_state gauge
    backup_job_state{backup_job="daily",source="pve1",state="ok",vmid=""} 1.0
    backup_job_state{backup_job="daily",source="pve1",state="unknown",vmid=""} 0.0
    # HELP backup_job_runs_expected_total Runs the schedule expected since the job was first seen.
    # TYPE backup_job_runs_expected_total counter
    backup_job_runs_expected_total{backup_job="daily",source="pve1",vmid=""} 30.0
    # HELP backup_job_runs_met_total Expected runs that succeeded by their finish deadline.
    # TYPE backup_job_runs_met_total counter
    backup_job_runs_met_total{backup_job="daily",source="pve1",vmid=""} 27.0

SLA. ``runs_expected`` counts the scheduled starts at or after first seen whose finish deadline
has passed (and been looked at by a poll, see :mod:`exporter.schedule.sla`); ``runs_met`` those
of them with a success between the start and its finish deadline (before the next start). Both
come from the durable run history, so they survive a restart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from exporter.schedule.base import LOOKBACK
from exporter.schedule.expressions import NoNextStartError, Schedule


@dataclass(frozen=True)
class Evidence:
    """What a source saw of a job's runs (Unix seconds)."""

    last_success: float | None = None
    last_start: float | None = None
    last_duration: float | None = None
    failed: bool = False
    running: bool = False
    # Task logs and pings record starts; a newest-file or newest-object time does not.
    tracks_start: bool = False
    # The system itself says the expected run is late but still within its grace (a
    # Healthchecks check in ``grace``): the job is ``late``, neither failed nor ok.
    late: bool = False


@dataclass(frozen=True)
class JobSpec:
    """A scheduled job: its schedule, deadlines and identifying labels."""

    name: str
    source: str
    schedule: Schedule
    grace: float
    start_grace: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # Longest acceptable run (seconds); None: no limit (Veeam's "maximum job duration").
    max_duration: float | None = None


JobState = Literal["ok", "running", "late", "overdue", "failed", "unknown"]
STATES: tuple[JobState, ...] = get_args(JobState)


def first_seen_key(spec: JobSpec) -> str:
    """Identify a job *with its schedule and grace*: changing either starts a new first seen."""
    vmid = spec.labels.get("vmid", "")
    start_grace = "" if spec.start_grace is None else f"{spec.start_grace:g}"
    return (
        f"job\x1f{spec.source}\x1f{spec.name}\x1f{vmid}\x1f{spec.schedule.expression}"
        f"\x1f{spec.schedule.tz}\x1f{spec.grace:g}\x1f{start_grace}"
    )


def job_key(spec: JobSpec) -> str:
    """Identify a job by its labels only (its run history survives a schedule change)."""
    return f"{spec.source}/{spec.name}/{spec.labels.get('vmid', '')}"


@dataclass(frozen=True)
class JobStatus:
    """The computed state of one job at one instant."""

    spec: JobSpec
    evidence: Evidence
    expected_start: float | None
    next_start: float | None
    start_deadline: float | None
    finish_deadline: float | None
    overdue: bool
    missed_start: bool
    state: JobState = "ok"
    over_max_duration: bool = False  # the running or last run took longer than max_duration
    first_seen: float | None = None
    first_deadline: float | None = None
    runs_expected: int = 0
    runs_met: int = 0

    def next_change(self, now: float) -> float:
        """Return the earliest instant after ``now`` at which :func:`evaluate` may answer otherwise.

        With the same evidence, first seen and ``known``, the status is a function of three
        instants only: the expected start (the latest start ``<= now``: it moves at the next
        start), the latest start whose finish deadline passed (it moves once ``now`` passes
        ``s + grace`` for the first start ``s >= now - grace``), and the same for the start
        deadline. A start older than :data:`~exporter.schedule.base.LOOKBACK` is forgotten,
        which is a change too. The earliest of those is returned (``math.inf`` if none comes):
        evaluating at any instant before it gives this status again, so the exposition cache
        keeps it. Schedules count whole seconds (``Schedule`` truncates), as ``evaluate`` does.
        """
        spec = self.spec
        sched = spec.schedule
        instants = [_first_start_at_or_after(sched, now, after=True)]
        graces = [g for g in (spec.grace, spec.start_grace) if g is not None]
        for grace in graces:
            start = _first_start_at_or_after(sched, now - grace)
            instants.append(None if start is None else start + grace)
        for grace in (0.0, *graces):
            at = datetime.fromtimestamp(now - grace, UTC) - timedelta(microseconds=1)
            latest = _ts(sched.latest_at_or_before(at))
            if latest is not None:
                instants.append(latest + grace + LOOKBACK.total_seconds())
        return min((t for t in instants if t is not None), default=math.inf)


def _first_start_at_or_after(schedule: Schedule, t: float, *, after: bool = False) -> float | None:
    """Return the first start at or after ``t`` (strictly after with ``after``), or None."""
    at = datetime.fromtimestamp(t, UTC)
    try:
        return schedule.next_after(at if after else at - timedelta(microseconds=1)).timestamp()
    except NoNextStartError:
        return None


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _seen(evidence: Evidence) -> bool:
    return (
        evidence.last_success is not None
        or evidence.last_start is not None
        or evidence.failed
        or evidence.running
    )


def evaluate(
    spec: JobSpec,
    evidence: Evidence,
    now: float,
    *,
    first_seen: float | None = None,
    known: bool = True,
) -> JobStatus:
    """Compute deadlines, the overdue flag and the state of ``spec`` at ``now``.

    ``first_seen`` (Unix seconds) drops scheduled starts before it; ``known`` is False while the
    job's source has never been polled successfully (the state is then ``unknown``).
    """
    sched = spec.schedule
    at = datetime.fromtimestamp(now, UTC)
    expected = _ts(sched.latest_at_or_before(at))
    try:
        next_start: float | None = sched.next_after(at).timestamp()
    except NoNextStartError:  # a one-shot date in the past
        next_start = None
    first_deadline = None
    if first_seen is not None:
        try:
            first_start = sched.next_after(
                datetime.fromtimestamp(first_seen, UTC) - timedelta(microseconds=1)
            )
            first_deadline = first_start.timestamp() + spec.grace
        except NoNextStartError:
            first_deadline = None

    def counts(start: float | None) -> float | None:
        # Scheduled starts before the job was first seen are not judged.
        if start is None or (first_seen is not None and start < first_seen):
            return None
        return start

    success = evidence.last_success
    # "Past the deadline" is strict: at exactly start + grace the run is still on time.
    tick = timedelta(microseconds=1)
    due = counts(
        _ts(sched.latest_at_or_before(datetime.fromtimestamp(now - spec.grace, UTC) - tick))
    )
    overdue = known and due is not None and (success is None or success < due)
    missed_start = False
    start_deadline = None
    late = False
    if spec.start_grace is not None and expected is not None:
        start_deadline = expected + spec.start_grace
        due_start = counts(
            _ts(
                sched.latest_at_or_before(
                    datetime.fromtimestamp(now - spec.start_grace, UTC) - tick
                )
            )
        )
        started = evidence.last_start if evidence.tracks_start else None
        not_started = (
            due_start is not None
            and (started is None or started < due_start)
            and (success is None or success < due_start)
        )
        missed_start = known and evidence.tracks_start and not_started
        late = known and not_started
    overdue = overdue or missed_start
    late = late or (known and evidence.late)
    state: JobState
    if not known:
        state = "unknown"
    elif evidence.failed and not evidence.running:
        state = "failed"
    elif overdue:
        state = "overdue"
    elif late:
        state = "late"
    elif evidence.running:
        state = "running"
    elif _seen(evidence) or due is not None:
        state = "ok"
    else:
        state = "unknown"
    return JobStatus(
        spec=spec,
        evidence=evidence,
        expected_start=expected,
        next_start=next_start,
        start_deadline=start_deadline,
        finish_deadline=None if expected is None else expected + spec.grace,
        overdue=overdue,
        missed_start=missed_start,
        state=state,
        over_max_duration=known and exceeds_max_duration(spec, evidence, now),
        first_seen=first_seen,
        first_deadline=first_deadline,
    )


def exceeds_max_duration(spec: JobSpec, evidence: Evidence, now: float) -> bool:
    """Tell whether the run in progress, else the last finished run, exceeds ``max_duration``.

    A run in progress counts from its start (evidence that records starts); a finished run
    by its duration, until the next run finishes within the limit.
    """
    limit = spec.max_duration
    if limit is None:
        return False
    if evidence.running and evidence.tracks_start and evidence.last_start is not None:
        return now - evidence.last_start > limit
    return evidence.last_duration is not None and evidence.last_duration > limit


_GAUGES: tuple[tuple[str, str], ...] = (
    ("expected_start_timestamp_seconds", "Latest scheduled start at or before now."),
    ("next_start_timestamp_seconds", "Next scheduled start."),
    ("start_deadline_timestamp_seconds", "Expected start plus start grace."),
    ("finish_deadline_timestamp_seconds", "Expected start plus grace."),
    ("last_start_timestamp_seconds", "Start of the last run seen."),
    ("last_success_timestamp_seconds", "End of the last successful run (or newest evidence)."),
    ("last_duration_seconds", "Duration of the last finished run."),
    ("running", "1 while a run is in progress."),
    ("failed", "1 when the last run failed."),
    ("overdue", "1 when the job missed its start or finish deadline."),
    ("start_missed", "1 when the latest run past its start deadline never started."),
    ("first_seen_timestamp_seconds", "When the exporter first saw the job with this schedule."),
    ("first_deadline_timestamp_seconds", "The first finish deadline after first seen."),
    ("max_duration_seconds", "The job's max_duration (absent without one)."),
    (
        "over_max_duration",
        "1 when the running or the last run took longer than max_duration (absent without one).",
    ),
)


def _values(st: JobStatus) -> Iterator[tuple[str, float | None]]:
    ev = st.evidence
    yield "expected_start_timestamp_seconds", st.expected_start
    yield "next_start_timestamp_seconds", st.next_start
    yield "start_deadline_timestamp_seconds", st.start_deadline
    yield "finish_deadline_timestamp_seconds", st.finish_deadline
    yield "last_start_timestamp_seconds", ev.last_start
    yield "last_success_timestamp_seconds", ev.last_success
    yield "last_duration_seconds", ev.last_duration
    yield "running", float(ev.running)
    yield "failed", float(ev.failed)
    yield "overdue", float(st.overdue)
    yield "start_missed", float(st.missed_start)
    yield "first_seen_timestamp_seconds", st.first_seen
    yield "first_deadline_timestamp_seconds", st.first_deadline
    limited = st.spec.max_duration is not None
    yield "max_duration_seconds", st.spec.max_duration
    yield "over_max_duration", float(st.over_max_duration) if limited else None


def render_jobs(statuses: Iterable[JobStatus]) -> Iterator[Metric]:
    """Render job statuses; every family carries ``backup_job``, ``source`` and ``vmid``."""
    labels = ["backup_job", "source", "vmid"]
    info = InfoMetricFamily(
        "backup_job", "Schedule of each job.", labels=[*labels, "schedule", "timezone"]
    )
    gauges = {
        key: GaugeMetricFamily(f"backup_job_{key}", doc, labels=labels) for key, doc in _GAUGES
    }
    state = GaugeMetricFamily(
        "backup_job_state", "The job's state (exactly one state is 1).", labels=[*labels, "state"]
    )
    expected = CounterMetricFamily(
        "backup_job_runs_expected",
        "Runs the schedule expected since the job was first seen (finish deadline passed).",
        labels=labels,
    )
    met = CounterMetricFamily(
        "backup_job_runs_met",
        "Expected runs that succeeded by their finish deadline.",
        labels=labels,
    )
    for st in statuses:
        spec = st.spec
        values = [spec.name, spec.source, spec.labels.get("vmid", "")]
        info.add_metric(
            values,
            {"schedule": spec.schedule.expression, "timezone": str(spec.schedule.tz)},
        )
        for key, value in _values(st):
            if value is not None:
                gauges[key].add_metric(values, value)
        for name in STATES:
            state.add_metric([*values, name], float(st.state == name))
        expected.add_metric(values, st.runs_expected)
        met.add_metric(values, st.runs_met)
    yield info
    yield from gauges.values()
    yield state
    yield expected
    yield met
