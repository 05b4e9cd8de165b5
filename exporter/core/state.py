"""The exporter's memory: what it loads from the store at start and persists after each poll.

:class:`StateKeeper` sits beside the pollers. At start-up it reads the store once (the last good
result of every source, first-seen times, per-source memories) so the first scrape already
serves the last-known values. After each successful poll it persists what the kind produced:
the rendered families, the discovered jobs with their evidence, the evidence of the ``jobs:``
entries fed by that source, and the runs that evidence proves. The kinds never see the store.

Writes go to one worker thread that owns the SQLite connection; the event loop only queues them.
Scrapes read the in-memory copies and never wait on the disk. When the database is locked or
corrupt the keeper logs it once, reports ``backup_state_up 0`` with the reason, and keeps
serving from memory; it tries the database again on the next write.

Sample exposition::

    # HELP backup_state_up 1 if the state database is usable.
    # TYPE backup_state_up gauge
    backup_state_up 1.0
    # HELP backup_state_error_info Why the state database is unusable (present only then).
    # TYPE backup_state_error_info gauge
    backup_state_error_info{reason="corrupt"} 1.0
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.assets.records import Record
from exporter.core.store import Run, SourceResult, StateError, StateStore
from exporter.schedule.expressions import ScheduleError, parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec, JobStatus, first_seen_key, job_key
from exporter.schedule.sla import Tally

log = logging.getLogger(__name__)


# Runs kept in memory while the database is unusable (a few days of a large homelab).
MAX_UNSAVED_RUNS = 100_000


def default_state_path() -> Path:
    """``$STATE_DIRECTORY/state.db`` when systemd sets it, else ``./state.db``."""
    directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(directory) / "state.db" if directory else Path("state.db")


def encode_job(spec: JobSpec, evidence: Evidence) -> dict[str, Any]:
    """Turn a discovered job and its evidence into JSON-ready data."""
    return {
        "name": spec.name,
        "source": spec.source,
        "schedule": spec.schedule.expression,
        "timezone": str(spec.schedule.tz),
        "dst": spec.schedule.dst,
        "grace": spec.grace,
        "start_grace": spec.start_grace,
        "labels": dict(spec.labels),
        "max_duration": spec.max_duration,
        "evidence": asdict(evidence),
    }


def decode_job(data: Mapping[str, Any]) -> tuple[JobSpec, Evidence] | None:
    """Rebuild what :func:`encode_job` wrote; ``None`` when it no longer parses."""
    try:
        spec = JobSpec(
            name=str(data["name"]),
            source=str(data["source"]),
            schedule=parse_schedule(
                str(data["schedule"]), str(data["timezone"]), dst=data.get("dst", "cron")
            ),
            grace=float(data["grace"]),
            start_grace=None if data["start_grace"] is None else float(data["start_grace"]),
            labels={str(k): str(v) for k, v in data["labels"].items()},
            max_duration=None if data.get("max_duration") is None else float(data["max_duration"]),
        )
        return spec, Evidence(**data["evidence"])
    except (KeyError, TypeError, ValueError, ScheduleError):
        return None


def runs_of(status: JobStatus) -> Iterator[Run]:
    """Yield the runs a job's evidence proves (it holds the last run only; history builds up)."""
    ev = status.evidence
    key = job_key(status.spec)
    schedule = status.spec.schedule

    def scheduled(at: float) -> float | None:
        start = schedule.latest_at_or_before(datetime.fromtimestamp(at, UTC))
        return None if start is None else start.timestamp()

    if ev.last_success is not None:
        started = ev.last_start
        if started is not None and started > ev.last_success:
            started = None  # a newer run is in progress or failed; its start is not this one's
        if started is None and ev.last_duration is not None:
            started = ev.last_success - ev.last_duration
        yield Run(
            job=key,
            result="ok",
            scheduled_start=scheduled(started if started is not None else ev.last_success),
            started=started,
            finished=ev.last_success,
        )
    if (
        ev.failed
        and ev.last_start is not None
        and (ev.last_success is None or ev.last_start > ev.last_success)
    ):
        yield Run(
            job=key,
            result="failed",
            scheduled_start=scheduled(ev.last_start),
            started=ev.last_start,
        )


@dataclass(frozen=True)
class StoredResult:
    """A source's last good result as loaded at start: families, jobs and config evidence."""

    taken_at: float
    families: tuple[Metric, ...]
    jobs: tuple[tuple[JobSpec, Evidence], ...]
    config_evidence: Mapping[str, Evidence]


def judged_jobs(results: Iterable[SourceResult]) -> list[JobSpec]:
    """Return every job the stored results say was judged, once each (for backtest)."""
    specs: dict[str, JobSpec] = {}
    for result in results:
        payload = result.jobs if isinstance(result.jobs, dict) else {}
        for raw in payload.get("judged", []):
            decoded = decode_job(raw)
            if decoded is not None:
                specs[job_key(decoded[0])] = decoded[0]
    return [specs[k] for k in sorted(specs)]


def _stored(result: SourceResult) -> StoredResult:
    payload = result.jobs if isinstance(result.jobs, dict) else {}
    jobs = tuple(j for j in map(decode_job, payload.get("discovered", [])) if j is not None)
    config_evidence: dict[str, Evidence] = {}
    for name, ev in payload.get("config", {}).items():
        try:
            config_evidence[str(name)] = Evidence(**ev)
        except TypeError:
            continue
    return StoredResult(result.taken_at, result.families, jobs, config_evidence)


class StateKeeper:
    """Loads the store at start, then persists poll results from one worker thread.

    With ``path=None`` nothing is stored (``once``, and tests that don't need a memory).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.store: StateStore | None = None
        self.error: StateError | None = None
        self.results: dict[str, StoredResult] = {}
        self.first_seen: dict[str, float] = {}
        self.memories: dict[str, dict[str, Any]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        self._pending: list[Future[object]] = []
        self._loaded = False
        # Touched only in the store thread: what failed writes could not save yet.
        self._unsaved_runs: list[Run] = []
        self._unsaved_first_seen: dict[str, float] = {}
        # SLA: each job's successful finishes (sorted, from the run history) and its tally.
        self._sla_lock = threading.Lock()
        self._successes: dict[str, list[float]] = {}
        self._tallies: dict[str, Tally] = {}
        # Verification records, re-read in the store thread after each poll (and after a
        # record is posted): the newest time of each (activity, asset, result), and the last id.
        self.verifications: Mapping[tuple[str, str, str], float] = {}
        self._last_record_id = 0

    @property
    def enabled(self) -> bool:
        """Whether a database is configured at all."""
        return self.path is not None

    def load(self) -> None:
        """Open the store and read it into memory (blocking; at start-up; once)."""
        if self.path is None or self._loaded:
            return
        self._loaded = True
        self._executor.submit(self._load).result()

    def _load(self) -> None:
        assert self.path is not None
        try:
            self.store = StateStore(self.path)
            self.results = {name: _stored(r) for name, r in self.store.results().items()}
            self.first_seen = self.store.all_first_seen()
            self.memories = self.store.all_memories()
            self._add_successes(self.store.runs())
            self._read_records(self.store)
        except StateError as exc:
            self._failed(exc)
            return
        self.error = None

    def _failed(self, exc: StateError) -> None:
        if self.error is None or self.error.reason != exc.reason:
            log.error("state database unusable reason=%s: %s", exc.reason, exc.message)
        if self.store is not None:
            self.store.close()
        self.store = None
        self.error = exc

    def _with_store(self, work: Callable[[StateStore], object]) -> object:
        if self.path is None:
            return None
        if self.store is None:
            had = self.error
            try:
                self.store = StateStore(self.path)
            except StateError as exc:
                self._failed(exc)
                return None
            if had is not None:
                log.info("state database usable again: %s", self.path)
            self.error = None
        try:
            return work(self.store)
        except StateError as exc:
            self._failed(exc)
            return None

    def submit(self, work: Callable[[StateStore], object]) -> None:
        """Queue a write; it runs in the store thread, in order, never on the event loop."""
        if self.path is None:
            return
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._executor.submit(self._with_store, work))

    async def flush(self) -> None:
        """Wait until every queued write has run."""
        pending, self._pending = self._pending, []
        for future in pending:
            await asyncio.wrap_future(future)

    def first_seen_at(self, key: str, now: float) -> float:
        """Return the first-seen time of ``key``, recording ``now`` for a new one (no I/O)."""
        seen = self.first_seen.get(key)
        if seen is None:
            seen = self.first_seen[key] = now
            self.submit(lambda store: self._save_first_seen(store, {key: now}))
        return seen

    def _save_first_seen(self, store: StateStore, new: Mapping[str, float]) -> None:
        # Store thread only. What a failed write could not save waits for the next one.
        self._unsaved_first_seen.update(new)
        for at in set(self._unsaved_first_seen.values()):
            store.first_seen([k for k, v in self._unsaved_first_seen.items() if v == at], at)
        self._unsaved_first_seen.clear()

    def _save_runs(self, store: StateStore, runs: list[Run], now: float) -> None:
        # Store thread only: runs seen while the database was unusable are kept (bounded) and
        # written with the next successful write, never dropped silently.
        self._unsaved_runs.extend(runs)
        if len(self._unsaved_runs) > MAX_UNSAVED_RUNS:
            dropped = len(self._unsaved_runs) - MAX_UNSAVED_RUNS
            del self._unsaved_runs[:dropped]
            log.error("state database unusable too long: %d oldest unsaved runs dropped", dropped)
        if self._unsaved_runs:
            store.add_runs(self._unsaved_runs, now)
        self._unsaved_runs.clear()

    def record(
        self,
        source: str,
        *,
        taken_at: float,
        families: Iterable[Metric],
        discovered: Iterable[tuple[JobSpec, Evidence]],
        config_evidence: Mapping[str, Evidence],
        statuses: Iterable[JobStatus],
        memory: Mapping[str, Any] | None = None,
    ) -> None:
        """Persist one successful poll of ``source`` (queued; returns at once)."""
        fams = tuple(families)
        jobs = tuple(discovered)
        evidence = dict(config_evidence)
        self.results[source] = StoredResult(taken_at, fams, jobs, evidence)
        judged = tuple(statuses)
        payload = {
            "discovered": [encode_job(s, e) for s, e in jobs],
            "config": {name: asdict(ev) for name, ev in evidence.items()},
            # Every job this source's evidence feeds, config jobs included: what backtest replays.
            "judged": [encode_job(st.spec, st.evidence) for st in judged],
        }
        runs = [run for st in judged for run in runs_of(st)]
        self._add_successes(runs)
        # A snapshot of the kind's memory as it is now (the poller's dict keeps changing).
        mem = json.loads(json.dumps(dict(memory or {})))

        def write(store: StateStore) -> None:
            self._save_runs(store, runs, taken_at)
            self._save_first_seen(store, {})
            store.save_result(source, taken_at, fams, payload)
            store.replace_memory(source, mem)
            # Records written meanwhile (by the CLI, another process) show after this poll.
            self._read_records(store)

        self.submit(write)

    def _read_records(self, store: StateStore) -> None:
        # Store thread only: fold the records newer than the last one read into a new map.
        new = store.records(after_id=self._last_record_id)
        if not new:
            return
        latest = dict(self.verifications)
        for rec in new:
            key = (rec.activity, rec.asset, rec.result)
            latest[key] = max(latest.get(key, rec.at), rec.at)
        self._last_record_id = new[-1].id
        self.verifications = latest  # one assignment: a scrape sees the old map or the new

    async def add_record(self, record: Record, now: float) -> int | None:
        """Append a verification record in the store thread; its id, or None if unusable."""
        if self.path is None:
            return None

        def write(store: StateStore) -> int:
            rid = store.add_record(**asdict(record), now=now)
            self._read_records(store)
            return rid

        future = self._executor.submit(self._with_store, write)
        result = await asyncio.wrap_future(future)
        return result if isinstance(result, int) else None

    def _add_successes(self, runs: Iterable[Run]) -> None:
        with self._sla_lock:
            for run in runs:
                if run.result != "ok" or run.finished is None:
                    continue
                done = self._successes.setdefault(run.job, [])
                i = bisect.bisect_left(done, run.finished)
                if i == len(done) or done[i] != run.finished:
                    done.insert(i, run.finished)

    def sla(self, spec: JobSpec, first_seen: float | None, now: float) -> tuple[int, int]:
        """Return ``(runs expected, runs met)`` of ``spec`` (see :mod:`exporter.schedule.sla`).

        Counted up to the last poll of the job's source, from the run history: the same after a
        restart. Each call only counts the deadlines passed since the last one. Without a state
        database there is no first seen and no history: ``(0, 0)``.
        """
        if self.path is None:
            return 0, 0
        identity = first_seen_key(spec)
        # First seen 0 is a new database judging a job on all its history: its SLA counts from
        # the moment it was first seen by this database instead.
        anchor = first_seen or self.first_seen_at(f"sla\x1f{identity}", now)
        stored = self.results.get(spec.source)
        if stored is None:
            return 0, 0
        key = job_key(spec)
        with self._sla_lock:
            tally = self._tallies.get(key)
            if tally is None or tally.identity != identity or tally.anchor != anchor:
                tally = self._tallies[key] = Tally.start(spec, identity, anchor)
            tally.advance(spec, self._successes.get(key, ()), stored.taken_at)
            return tally.expected, tally.met

    def recent_runs(self, spec: JobSpec) -> list[tuple[float, bool]]:
        """Return ``(finish deadline, met)`` of the job's last counted runs (after :meth:`sla`)."""
        with self._sla_lock:
            tally = self._tallies.get(job_key(spec))
            return [] if tally is None else list(tally.recent)

    def render(self) -> Iterator[Metric]:
        """``backup_state_up`` and, while the database is unusable, its reason."""
        up = GaugeMetricFamily("backup_state_up", "1 if the state database is usable.")
        error = GaugeMetricFamily(
            "backup_state_error_info",
            "Why the state database is unusable (present only then).",
            labels=["reason"],
        )
        if self.path is not None:
            up.add_metric([], float(self.error is None))
            if self.error is not None:
                error.add_metric([self.error.reason], 1)
            yield up
            yield error

    async def close(self) -> None:
        """Finish queued writes and close the database."""
        await self.flush()

        def close() -> None:
            if self.store is not None:
                self.store.close()
                self.store = None

        await asyncio.wrap_future(self._executor.submit(close))
        self._executor.shutdown(wait=True)
