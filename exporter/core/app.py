"""The aiohttp application: ``/metrics``, the status page ``/``, ``/-/healthy``, ``/-/ready``.

And ``POST /api/records`` (verification records, see :mod:`exporter.assets.api`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from exporter import __version__
from exporter.assets.api import RecordsApi, add_records_api
from exporter.core.clock import Clock, SystemClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import Config, SourceConfig
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.schedule.jobs import JobStatus
from exporter.sources import build_source
from exporter.sources.base import Source

log = logging.getLogger(__name__)

POLLERS = web.AppKey("pollers", list[Poller])
COLLECTOR = web.AppKey("collector", SnapshotCollector)
CLOCK = web.AppKey("clock", Clock)
ZONE = web.AppKey("zone", ZoneInfo)


KEEPER = web.AppKey("keeper", StateKeeper)


def build_pollers(
    config: Config,
    *,
    clock: Clock,
    keeper: StateKeeper | None = None,
    factory: Callable[[SourceConfig], Source[Any, Any]] = build_source,
) -> list[Poller]:
    """Create one poller per configured source, with its memory from the loaded state."""
    results = keeper.results if keeper is not None else {}
    memories = keeper.memories if keeper is not None else {}
    return [
        Poller(
            factory(cfg),
            clock=clock,
            last_success=results[cfg.name].taken_at if cfg.name in results else None,
            memory=memories.setdefault(cfg.name, {}) if keeper is not None else None,
            offline=cfg.offline_windows(config.timezone),
        )
        for cfg in config.sources.values()
    ]


def create_app(
    config: Config,
    *,
    clock: Clock | None = None,
    pollers: Sequence[Poller] | None = None,
    run_pollers: bool = True,
    keeper: StateKeeper | None = None,
) -> web.Application:
    """Build the web application; pollers start with it and stop on cleanup.

    ``keeper`` is the exporter's memory; it is loaded here (blocking, before serving), so
    the first scrape already serves the last-known state.
    """
    clock = clock or SystemClock()
    keeper = keeper or StateKeeper(None)
    keeper.load()
    if pollers is None:
        pollers = build_pollers(config, clock=clock, keeper=keeper)
    pollers = list(pollers)
    collector = SnapshotCollector(
        pollers,
        clock=clock,
        jobs=config.jobs,
        keeper=keeper,
        asset_names=config.assets,
        verification=config.verification,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    app = web.Application()
    app[POLLERS] = pollers
    app[COLLECTOR] = collector
    app[CLOCK] = clock
    app[KEEPER] = keeper
    app[ZONE] = ZoneInfo(config.timezone)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    app.router.add_get("/", _index)
    app.router.add_get("/-/healthy", _healthy)
    app.router.add_get("/-/ready", _ready)
    zone = ZoneInfo(config.timezone)
    add_records_api(app, RecordsApi(config.records_api, tuple(config.assets), keeper, clock, zone))
    if run_pollers:
        app.cleanup_ctx.append(_run_pollers)
    app.on_cleanup.append(_close_keeper)
    return app


async def _close_keeper(app: web.Application) -> None:
    await app[KEEPER].close()


async def _run_pollers(app: web.Application) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(p.run(), name=f"poll-{p.name}") for p in app[POLLERS]]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for poller in app[POLLERS]:
        try:
            await poller.source.close()
        except Exception:
            log.exception("source=%s close failed", poller.name)


async def _healthy(_request: web.Request) -> web.Response:
    return web.Response(text="OK\n")


async def _ready(request: web.Request) -> web.Response:
    waiting = [p.name for p in request.app[POLLERS] if not p.state.polled]
    if waiting:
        return web.Response(status=503, text=f"waiting for first poll: {', '.join(waiting)}\n")
    return web.Response(text="OK\n")


def _fmt_time(ts: float | None, zone: ZoneInfo) -> str:
    if not ts:
        return "never"
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M %Z")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>backup_exporter</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:left}}
.ok{{background:#e6f4ea}} .bad{{background:#fce8e6}} .warn{{background:#fef7e0}}
.unknown{{background:#e8eaed}}
</style></head><body>
<h1>backup_exporter</h1>
<p>Version {version}. Metrics: <a href="/metrics">/metrics</a>.
Health: <a href="/-/healthy">/-/healthy</a>, <a href="/-/ready">/-/ready</a>.</p>
<h2>Sources</h2>
<table><tr><th>source</th><th>kind</th><th>status</th><th>last success</th><th>detail</th></tr>
{sources}</table>
<h2>Jobs</h2>
<table><tr><th>job</th><th>source</th><th>status</th><th>last success</th>
<th>finish deadline</th><th>next start</th></tr>
{jobs}</table>
</body></html>
"""


def _source_row(p: Poller, zone: ZoneInfo) -> str:
    st = p.state
    if not st.polled:
        cls, status, detail = "unknown", "starting", "not polled since the exporter started"
    elif st.up:
        cls, status, detail = "ok", "up", ""
    else:
        cls, status = "bad", "down"
        detail = f"{st.error.reason}: {st.error.message}" if st.error else ""
    cells = (p.name, p.source.kind, status, _fmt_time(st.last_success, zone), detail)
    return f'<tr class="{cls}">' + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


# Unknown is its own colour, never the green of success.
_STATE_CLASS = {
    "ok": "ok",
    "running": "warn",
    "late": "warn",
    "overdue": "bad",
    "failed": "bad",
    "unknown": "unknown",
}
_STATE_ORDER = {"overdue": 0, "failed": 1, "unknown": 2, "late": 3, "running": 4, "ok": 5}


def _job_row(st: JobStatus, zone: ZoneInfo) -> str:
    spec = st.spec
    name = spec.name + (f" (vmid {spec.labels['vmid']})" if spec.labels.get("vmid") else "")
    cls = _STATE_CLASS[st.state]
    status = st.state
    cells = (
        name,
        spec.source,
        status,
        _fmt_time(st.evidence.last_success, zone),
        _fmt_time(st.finish_deadline, zone),
        _fmt_time(st.next_start, zone),
    )
    return f'<tr class="{cls}">' + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


async def _index(request: web.Request) -> web.Response:
    statuses = request.app[COLLECTOR].job_statuses()
    zone = request.app[ZONE]
    # Overdue, failed and unknown jobs first: the page answers "what needs me now?".
    statuses.sort(key=lambda s: (_STATE_ORDER[s.state], s.spec.name))
    body = _PAGE.format(
        version=html.escape(__version__),
        sources="\n".join(_source_row(p, zone) for p in request.app[POLLERS]),
        jobs="\n".join(_job_row(s, zone) for s in statuses),
    )
    return web.Response(text=body, content_type="text/html")
