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

Sample exposition::

    # HELP backup_job_overdue 1 when the job missed its start or finish deadline.
    # TYPE backup_job_overdue gauge
    backup_job_overdue{backup_job="vzdump-daily",source="pve1",vmid="100"} 0.0
    # HELP backup_job_finish_deadline_timestamp_seconds Expected start plus grace.
    # TYPE backup_job_finish_deadline_timestamp_seconds gauge
    backup_job_finish_deadline_timestamp_seconds{backup_job="daily",source="pve1",vmid=""} 1.7e9
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric

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


@dataclass(frozen=True)
class JobSpec:
    """A scheduled job: its schedule, deadlines and identifying labels."""

    name: str
    source: str
    schedule: Schedule
    grace: float
    start_grace: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


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


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def evaluate(spec: JobSpec, evidence: Evidence, now: float) -> JobStatus:
    """Compute deadlines and the overdue flag of ``spec`` at ``now``."""
    sched = spec.schedule
    at = datetime.fromtimestamp(now, UTC)
    expected = _ts(sched.latest_at_or_before(at))
    try:
        next_start: float | None = sched.next_after(at).timestamp()
    except NoNextStartError:  # a one-shot date in the past
        next_start = None
    success = evidence.last_success
    # "Past the deadline" is strict: at exactly start + grace the run is still on time.
    tick = timedelta(microseconds=1)
    due = _ts(sched.latest_at_or_before(datetime.fromtimestamp(now - spec.grace, UTC) - tick))
    overdue = due is not None and (success is None or success < due)
    missed_start = False
    start_deadline = None
    if spec.start_grace is not None and expected is not None:
        start_deadline = expected + spec.start_grace
        if evidence.tracks_start:
            due_start = _ts(
                sched.latest_at_or_before(
                    datetime.fromtimestamp(now - spec.start_grace, UTC) - tick
                )
            )
            started = evidence.last_start
            missed_start = (
                due_start is not None
                and (started is None or started < due_start)
                and (success is None or success < due_start)
            )
    return JobStatus(
        spec=spec,
        evidence=evidence,
        expected_start=expected,
        next_start=next_start,
        start_deadline=start_deadline,
        finish_deadline=None if expected is None else expected + spec.grace,
        overdue=overdue or missed_start,
        missed_start=missed_start,
    )


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


def render_jobs(statuses: Iterable[JobStatus]) -> Iterator[Metric]:
    """Render job statuses; every family carries ``backup_job``, ``source`` and ``vmid``."""
    labels = ["backup_job", "source", "vmid"]
    info = InfoMetricFamily(
        "backup_job", "Schedule of each job.", labels=[*labels, "schedule", "timezone"]
    )
    gauges = {
        key: GaugeMetricFamily(f"backup_job_{key}", doc, labels=labels) for key, doc in _GAUGES
    }
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
    yield info
    yield from gauges.values()
