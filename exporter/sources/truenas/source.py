"""``kind: truenas``: storage, scrub and cloud-sync tasks from the TrueNAS JSON-RPC 2.0 API.

It reads datasets, snapshots, pools, scrub tasks, cloud-sync tasks and (up to 25.04) SMART
results over the WebSocket API at ``wss://HOST/api/current`` (TrueNAS 25.04+). When that
handshake answers 404 (TrueNAS 24.10 has no JSON-RPC API), it reads the same methods through
REST ``https://HOST/api/v2.0`` with ``Authorization: Bearer`` (docs/backends.md §2.7; the bodies are
the JSON-RPC results, so the same parsers apply); never over plain http.

One poll opens one connection, logs in with an API key and makes these read-only calls
(each counted in ``backup_source_api_requests_total``; over REST one GET each):

* ``auth.login_ex`` (API_KEY_PLAIN, with ``username``; falls back to ``auth.login_with_api_key``;
  none over REST, where each request carries the key);
* ``system.version`` -> the API profile: snapshots from ``zfs.snapshot.query`` up to 25.04,
  ``pool.snapshot.query`` from 25.10; SMART from ``smart.test.results`` up to 25.04 only
  (25.10 removed SMART from the API: use a ``kind: smartctl`` source over ssh instead);
  versions outside 24.10-26.x are refused with a clear error;
* ``system.general.config`` (only when ``timezone`` is empty) -> the NAS time zone, in which
  TrueNAS evaluates cloud-sync and scrub cron schedules;
* ``pool.query`` -> pool state and the last scan (only its times, state and error count: the
  byte counters ``bytes_to_process``/``bytes_processed`` are swapped by py-libzfs,
  docs/backends.md §2.4);
* ``pool.dataset.query`` (flat, properties used/available/quota/referenced/creation), system
  datasets (``.system``, ``ix-applications``, ``ix-apps``, ``.ix-virt``, the boot pool) skipped;
  a pool's root dataset ``creation`` counts as a scrub for the threshold, as in TrueNAS;
* the snapshot query with ``select`` and ``extra.properties: [creation]``, folded per dataset
  into count/newest/oldest while reading (the snapshot keeps O(datasets), never the list);
* ``pool.scrub.query`` and ``cloudsync.query`` -> the jobs TrueNAS schedules itself: each
  enabled cloud-sync task (its cron in the NAS time zone; grace = the per-task override, else
  the interval between two runs) and each enabled scrub task, whose due time follows the
  threshold rule of :mod:`exporter.schedule.threshold` from the last completed scrub's start.

A cloud-sync task's ``job`` holds only its *last* run, so the source remembers, per task id,
the newest success and failure it has seen across polls, in its durable memory
(:attr:`FetchContext.memory`, kept across restarts). The same holds for a pool's last
completed scrub, which a later resilver or canceled scrub would hide, and for the time of
each SMART self-test, pinned when first seen (:mod:`exporter.storage.selftest_pins`).

The answers are parsed by :mod:`.parse` into :mod:`.model` and rendered by :mod:`.render`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import Metric
from yarl import URL

from exporter.core.config import (
    TLSConfig,
    zone_or_none,
)
from exporter.core.tls import ClientSSL
from exporter.policy.checks import truenas_results
from exporter.policy.render import render_policy
from exporter.schedule.expressions import Schedule, ScheduleError, parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec
from exporter.schedule.threshold import ThresholdSchedule
from exporter.sources.base import FetchContext, FetchError, Source
from exporter.sources.targets import (
    API_DOWN_REASONS,
    TargetStatus,
    dataset_target,
    render_targets,
    within,
)
from exporter.sources.truenas import KIND
from exporter.sources.truenas.client import (
    PLAIN_WS_REFUSAL,
    ApiClient,
    NoJsonRpcError,
    TrueNASClient,
    TrueNASRestClient,
    api_url,
)
from exporter.sources.truenas.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.sources.truenas.config import TrueNASConfig
from exporter.sources.truenas.model import CloudSyncTask, NfsShare, PoolScrub, TrueNASSnapshot
from exporter.sources.truenas.parse import (
    SnapshotFold,
    detect_version,
    parse_cloudsync,
    parse_datasets,
    parse_nfs_shares,
    parse_pools,
    parse_scrub_tasks,
    parse_smart_results,
    parsing,
)
from exporter.sources.truenas.render import render_snapshot
from exporter.storage.evidence import storage_evidence
from exporter.storage.models import DatasetFilter, DatasetInfo, SmartDevice
from exporter.storage.selftest_pins import SelfTestPins

log = logging.getLogger(__name__)


_DATASET_PROPERTIES = ["used", "available", "quota", "referenced", "creation"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# Memory keys (JSON-safe): {pool: [start, end]} of each pool's last completed scrub, and
# {task id: [newest success, newest failure]} (Unix seconds or null) of each cloud-sync task.
_SCRUBS = "scrubs"
_CLOUDSYNC = "cloudsync"


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def remembered_scrubs(memory: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Each pool's last completed scrub (start, end) from the memory; junk is skipped."""
    raw = memory.get(_SCRUBS)
    out: dict[str, tuple[float, float]] = {}
    for pool, pair in raw.items() if isinstance(raw, dict) else ():
        if isinstance(pair, list) and len(pair) == 2:
            start, end = _number(pair[0]), _number(pair[1])
            if start is not None and end is not None:
                out[str(pool)] = (start, end)
    return out


def remembered_cloudsync(memory: dict[str, Any]) -> dict[int, tuple[float | None, float | None]]:
    """Each cloud-sync task's newest success and failure from the memory; junk is skipped."""
    raw = memory.get(_CLOUDSYNC)
    out: dict[int, tuple[float | None, float | None]] = {}
    for task_id, pair in raw.items() if isinstance(raw, dict) else ():
        if isinstance(pair, list) and len(pair) == 2 and str(task_id).lstrip("-").isdigit():
            out[int(task_id)] = (_number(pair[0]), _number(pair[1]))
    return out


def _schedule_interval(schedule: Schedule, at: datetime) -> float:
    """Seconds between the run at or before ``at`` and the one after it."""
    first = schedule.latest_at_or_before(at) or schedule.next_after(at)
    return (schedule.next_after(first) - first).total_seconds()


# --------------------------------------------------------------------------- snapshots

#: Snapshots per page of the snapshot query. A page of 2 500 entries with ``select`` and
#: only the ``creation`` property is ~0.5 MiB of JSON; it is decoded off the event loop
#: (:meth:`TrueNASClient.call`) and folded at once, so 200k snapshots never sit in memory.
#: Larger pages hold the GIL longer in one ``json.loads`` (10 000: /metrics p99 54 ms during
#: a 200k poll, see bench/truenas_snapshots.md; 2 500: 15 ms).
SNAPSHOT_PAGE = 2_500

#: A runaway guard: a server that ignored ``offset`` would otherwise be paged forever.
MAX_SNAPSHOT_PAGES = 10_000


async def read_snapshots(
    client: ApiClient, method: str, datasets: list[DatasetInfo], *, page: int = 0
) -> list[DatasetInfo]:
    """Read ``method`` (``zfs.snapshot.query``/``pool.snapshot.query``) page by page, folding.

    The paging rule is the middleware's ``filter_list`` (truenas/middleware,
    src/middlewared/middlewared/utils/filter_list.py, ``filter_list``): filters, then
    ``order_by``, then ``offset`` (``rv[offset:]``), then ``limit`` (``rv[:limit]``); an
    ``offset``/``limit`` of 0 means none. ``zfs.snapshot.query`` (plugins/zfs_/snapshot.py,
    ``ZFSSnapshotService.query``) lists every snapshot through libzfs and hands it to
    ``filter_list``, so ``order_by: ["name"]`` makes the pages a stable partition of one
    sorted list. A page shorter than ``limit`` is the last one; a server that ignores
    ``limit`` (answers everything at once) is read in that single page. Snapshots created or
    destroyed between two pages can shift the order by that many entries: a count may be off
    by the snapshots taken during the poll, never by a page. ``page`` 0 is ``SNAPSHOT_PAGE``.
    """
    page = page or SNAPSHOT_PAGE
    fold = SnapshotFold(datasets)
    loop = asyncio.get_running_loop()
    offset = 0
    for _ in range(MAX_SNAPSHOT_PAGES):
        raw = await client.call(
            method,
            [],
            {
                "select": ["name", "dataset", "properties"],
                "order_by": ["name"],
                "offset": offset,
                "limit": page,
                "extra": {"properties": ["creation"]},
            },
        )
        with parsing(method):
            # Folding 10 000 entries takes ~10 ms of Python: in a worker thread too, like
            # the decoding, so the event loop (and /metrics) never waits behind a page.
            got = await loop.run_in_executor(None, fold.add, raw)
        del raw  # a page can be large: drop it before the next call
        if got != page:  # short: the last page; longer: a server that ignored `limit`
            break
        offset += got
    else:
        raise FetchError("parse", f"{method} returned more than {MAX_SNAPSHOT_PAGES} full pages")
    return fold.result()


# ------------------------------------------------------------------------------ source


class TrueNASSource(Source[TrueNASConfig, TrueNASSnapshot]):
    """Polls TrueNAS over JSON-RPC; renders through :mod:`exporter.sources.truenas.render`."""

    kind = KIND

    def __init__(self, config: TrueNASConfig) -> None:
        super().__init__(config)
        self.filter = DatasetFilter(config.include, config.exclude)
        # The last dataset listing (and pool creation times), kept while the listing fails.
        self._last_datasets: tuple[list[DatasetInfo], dict[str, float]] = ([], {})
        self._ssl = ClientSSL(TLSConfig(verify=config.verify_tls, ca_file=config.ca_file))
        self._nfs_refused = ""  # the reason sharing.nfs.query was last refused (logged once)

    async def fetch(self, ctx: FetchContext) -> TrueNASSnapshot:
        """Log in, read everything, fold it into a snapshot and update the memories."""
        cfg = self.config
        try:
            url = api_url(cfg.url)
        except ValueError as exc:
            raise FetchError("config", str(exc)) from None
        if url.scheme == "ws":
            raise FetchError("config", PLAIN_WS_REFUSAL)  # before connecting at all
        client = await self._open(url, ctx)
        try:
            await client.login_api_key(cfg.api_key.reveal(), username=cfg.username)
            profile = detect_version(await client.call("system.version"))
            tz = cfg.cron_timezone or await self._system_timezone(client)
            now = ctx.clock.time()

            raw = await client.call(
                "pool.query", [], {"select": ["name", "status", "healthy", "scan"]}
            )
            with parsing("pool.query"):
                pools, scrubs = parse_pools(raw, remembered_scrubs(ctx.memory))

            # The dataset listing is a target (dataset/<pool>): the snapshot query over many
            # snapshots is what gets slow. It runs under its own target_timeout; when it fails
            # while the API answers, the last-known datasets stay and the rest is read.
            listing: FetchError | None = None
            try:
                datasets, created = await within(
                    ctx,
                    self._datasets(client, profile.snapshot_method),
                    cfg.dataset_timeout,
                    "dataset listing",
                )
            except FetchError as exc:
                if exc.reason in API_DOWN_REASONS:
                    raise
                listing = exc
                datasets, created = self._last_datasets
            else:
                self._last_datasets = (datasets, created)
            if listing is not None and not pools:
                raise listing  # no pool to report it on: the poll fails
            scrubs = [
                dataclasses.replace(
                    s, created=created.get(s.pool), anchor_on_end=profile.release >= (26, 0)
                )
                for s in scrubs
            ]

            smart: list[SmartDevice] | None = None
            if profile.smart_method is not None:
                raw = await client.call(profile.smart_method, [], {})
                pins = SelfTestPins(ctx.memory, now)
                with parsing(profile.smart_method):
                    smart = parse_smart_results(raw, now, pins)
                pins.forget_stale()

            raw = await client.call("pool.scrub.query", [], {})
            with parsing("pool.scrub.query"):
                scrub_tasks = parse_scrub_tasks(raw)

            raw = await client.call("cloudsync.query", [], {})
            with parsing("cloudsync.query"):
                cloudsync = parse_cloudsync(raw, remembered_cloudsync(ctx.memory))

            # Only when a policy checks who may mount a share (the policy: section).
            nfs: list[NfsShare] | None = None
            if any(rule.kind == "nfs_export" for rule in self.policies):
                nfs = await self._nfs_shares(client)
        finally:
            await client.close()

        # What a task's single `job` field and a pool's last scan forget; only what TrueNAS
        # still lists is kept, so the memory stays bounded.
        ctx.memory[_CLOUDSYNC] = {
            str(task.id): [task.last_success, task.last_failure] for task in cloudsync
        }
        ctx.memory[_SCRUBS] = {
            scrub.pool: [scrub.completed_start, scrub.completed_end]
            for scrub in scrubs
            if scrub.completed_start is not None and scrub.completed_end is not None
        }
        targets = tuple(
            TargetStatus(dataset_target(p.name), up=True)
            if listing is None
            else TargetStatus.failed(dataset_target(p.name), listing)
            for p in pools
        )
        return TrueNASSnapshot(
            targets=targets,
            version=profile.version,
            fetched_at=now,
            timezone=tz,
            datasets=tuple(datasets),
            pools=tuple(pools),
            scrubs=tuple(scrubs),
            smart=None if smart is None else tuple(smart),
            cloudsync=tuple(cloudsync),
            scrub_tasks=tuple(scrub_tasks),
            nfs_shares=None if nfs is None else tuple(nfs),
        )

    async def _nfs_shares(self, client: ApiClient) -> list[NfsShare] | None:
        """Read the NFS shares; ``None`` (the policy unknown) when the key may not read them.

        A key without ``SHARING_NFS_READ`` must not take the whole source down for one
        policy: the rest of the poll goes on, the refusal is logged once per reason.
        """
        try:
            raw = await client.call("sharing.nfs.query", [], {})
        except FetchError as exc:
            if exc.reason in API_DOWN_REASONS:
                raise
            if self._nfs_refused != exc.reason:
                log.warning(
                    "source=%s cannot read NFS shares (%s), nfs_export policies are unknown: %s",
                    self.name,
                    exc.reason,
                    exc.message,
                )
            self._nfs_refused = exc.reason
            return None
        self._nfs_refused = ""
        with parsing("sharing.nfs.query"):
            return parse_nfs_shares(raw)

    async def _datasets(
        self, client: ApiClient, snapshot_method: str
    ) -> tuple[list[DatasetInfo], dict[str, float]]:
        """Read the datasets and fold their snapshots in (the dataset listing target)."""
        raw = await client.call(
            "pool.dataset.query",
            [],
            {
                "extra": {
                    "flat": True,
                    "retrieve_children": False,
                    "properties": _DATASET_PROPERTIES,
                    "retrieve_user_props": False,
                }
            },
        )
        with parsing("pool.dataset.query"):
            datasets, created = parse_datasets(raw, self.filter)
        # Paged, decoded and folded off the event loop (see read_snapshots).
        return await read_snapshots(client, snapshot_method, datasets), created

    async def _open(self, url: URL, ctx: FetchContext) -> ApiClient:
        """Connect over JSON-RPC; on a 404 handshake (TrueNAS 24.10) use REST on the same host."""

        def count(_method: str) -> None:
            ctx.count_request()

        ws = TrueNASClient(url, ssl_context=self._ssl.get(), on_call=count)
        try:
            await ws.connect()
        except NoJsonRpcError:
            log.debug("source=%s no JSON-RPC API at %s; using REST", self.name, url.path)
        else:
            return ws
        # wss:// was checked above, so this is https:// and the key is never sent in clear.
        rest = TrueNASRestClient(url, ssl_context=self._ssl.get(), on_call=count)
        await rest.connect()
        return rest

    async def _system_timezone(self, client: ApiClient) -> str:
        general = await client.call("system.general.config")
        tz = general.get("timezone") if isinstance(general, dict) else None
        if not isinstance(tz, str) or not tz:
            raise FetchError("parse", "system.general.config has no timezone")
        if zone_or_none(tz) is None:
            raise FetchError(
                "parse", f"TrueNAS time zone {tz[:60]!r} is unknown here (set timezone:)"
            )
        return tz

    def render(self, snapshot: TrueNASSnapshot) -> Iterator[Metric]:
        """Render storage (shared families), cloud-sync tasks and the release."""
        yield from render_snapshot(self.name, snapshot)
        yield from render_targets(self.name, self.kind, snapshot.targets)
        if self.policies:
            yield from render_policy(self.name, truenas_results(self.policies, snapshot))

    # ---- jobs

    def _grace(self, task: CloudSyncTask, schedule: Schedule, at: datetime) -> float:
        overrides = self.config.cloudsync_grace
        for key in (task.task, str(task.id), f"id-{task.id}"):
            if key in overrides:
                return overrides[key]
        return _schedule_interval(schedule, at)

    def jobs(self, snapshot: TrueNASSnapshot) -> Iterator[tuple[JobSpec, Evidence]]:
        """Yield each enabled cloud-sync task and each enabled scrub task as a job."""
        at = datetime.fromtimestamp(snapshot.fetched_at, UTC)
        names: set[str] = set()
        for task in snapshot.cloudsync:
            if not task.enabled:
                continue
            try:
                schedule = parse_schedule(task.schedule, snapshot.timezone)
            except ScheduleError as exc:
                log.warning("source=%s cloud-sync task %r skipped: %s", self.name, task.task, exc)
                continue
            name = f"cloudsync-{_slug(task.task) or f'id-{task.id}'}"
            if name in names:
                name = f"{name}-{task.id}"
            names.add(name)
            spec = JobSpec(
                name=name,
                source=self.name,
                schedule=schedule,
                grace=self._grace(task, schedule, at),
            )
            yield spec, task.evidence()
        history = {s.pool: s for s in snapshot.scrubs}
        pools = {p.name: p for p in snapshot.pools}
        for scrub in snapshot.scrub_tasks:
            if not scrub.enabled:
                continue
            try:
                cron = parse_schedule(scrub.schedule, snapshot.timezone)
            except ScheduleError as exc:
                log.warning("source=%s scrub of %r skipped: %s", self.name, scrub.pool, exc)
                continue
            past = history.get(scrub.pool, PoolScrub(pool=scrub.pool))
            pool = pools.get(scrub.pool)
            schedule = ThresholdSchedule(
                cron, threshold_days=scrub.threshold_days, last_run=past.threshold_anchor
            )
            duration = None
            if past.completed_start is not None and past.completed_end is not None:
                duration = past.completed_end - past.completed_start
            evidence = Evidence(
                last_success=past.completed_end,
                last_start=None if pool is None else pool.scrub_last_start,
                last_duration=duration,
                failed=past.canceled or (pool is not None and pool.scrub_errors > 0),
                running=pool is not None and pool.scrub_running,
                tracks_start=False,
            )
            spec = JobSpec(
                name=f"scrub-{scrub.pool}",
                source=self.name,
                schedule=schedule,
                grace=self.config.scrub_grace,
            )
            yield spec, evidence

    def evidence(self, snapshot: TrueNASSnapshot, selector: Mapping[str, str]) -> Evidence | None:
        """Resolve ``cloudsync`` (a task's description or id), ``pool``, ``dataset`` or ``test``."""
        if "cloudsync" in selector:
            wanted = selector["cloudsync"]
            for task in snapshot.cloudsync:
                if wanted in (task.task, str(task.id), f"id-{task.id}"):
                    return task.evidence()
            return None
        return storage_evidence(
            selector,
            datasets=snapshot.datasets,
            pools=snapshot.pools,
            devices=snapshot.smart or (),
        )
