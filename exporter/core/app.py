"""The aiohttp application: ``/metrics``, the status page ``/``, ``/-/healthy``, ``/-/ready``.

And ``POST /api/records`` (verification records, see :mod:`exporter.assets.api`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from exporter import __version__
from exporter.assets.api import RecordsApi, add_records_api
from exporter.core.clock import Clock, SystemClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import Config, SourceConfig
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.sources import build_source
from exporter.sources.base import Source
from exporter.status.document import StatusInputs, build_status
from exporter.status.page import render_page

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
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> list[Poller]:
    """Create one poller per configured source, with its memory from the loaded state.

    ``sleep`` replaces ``asyncio.sleep`` between polls (the demo's accelerated time).
    """
    results = keeper.results if keeper is not None else {}
    memories = keeper.memories if keeper is not None else {}
    return [
        Poller(
            with_policies(factory(cfg), config),
            clock=clock,
            last_success=results[cfg.name].taken_at if cfg.name in results else None,
            memory=memories.setdefault(cfg.name, {}) if keeper is not None else None,
            offline=cfg.offline_windows(config.timezone),
            sleep=sleep or asyncio.sleep,
        )
        for cfg in config.sources.values()
    ]


def with_policies(source: Source[Any, Any], config: Config) -> Source[Any, Any]:
    """Hand ``source`` the ``policy:`` rules checked on its polls."""
    source.policies = config.policy.for_source(source.name)
    return source


def create_app(
    config: Config,
    *,
    clock: Clock | None = None,
    pollers: Sequence[Poller] | None = None,
    run_pollers: bool = True,
    keeper: StateKeeper | None = None,
    middlewares: Iterable[Middleware] = (),
) -> web.Application:
    """Build the web application; pollers start with it and stop on cleanup.

    ``keeper`` is the exporter's memory; it is loaded here (blocking, before serving), so
    the first scrape already serves the last-known state. ``middlewares`` wrap every route
    (the web config's TLS client checks and basic auth, exporter/web/security.py).
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
        assets=config.assets,
        verification=config.verification,
    )
    app = web.Application(middlewares=middlewares)
    app[POLLERS] = pollers
    app[COLLECTOR] = collector
    app[CLOCK] = clock
    app[KEEPER] = keeper
    app[ZONE] = ZoneInfo(config.timezone)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/", _index)
    app.router.add_get("/api/status", _api_status)
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


async def _metrics(request: web.Request) -> web.Response:
    """Serve the cached exposition, negotiated as prometheus_client's aiohttp handler does.

    The bytes (per content type, gzip or not) are made once per change of the exposition
    (exporter/core/exposition.py); ``?name[]=`` filters, serialized per request.
    """
    accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
    encoding = ",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, []))
    exposition = request.app[COLLECTOR].exposition
    names = request.query.getall("name[]", [])
    body = (
        exposition.filtered(names, accept, encoding) if names else exposition.body(accept, encoding)
    )
    headers = {hdrs.CONTENT_TYPE: body.content_type}
    if body.gzipped:
        headers[hdrs.CONTENT_ENCODING] = "gzip"
    return web.Response(body=body.data, headers=headers)


async def _healthy(_request: web.Request) -> web.Response:
    return web.Response(text="OK\n")


async def _ready(request: web.Request) -> web.Response:
    waiting = [p.name for p in request.app[POLLERS] if not p.state.polled]
    if waiting:
        return web.Response(status=503, text=f"waiting for first poll: {', '.join(waiting)}\n")
    return web.Response(text="OK\n")


def status_document(app: web.Application) -> dict[str, Any]:
    """Build the status document from memory (no I/O): what ``/`` and ``/api/status`` show."""
    collector = app[COLLECTOR]
    pollers: list[Poller] = app[POLLERS]
    return build_status(
        StatusInputs(
            now=app[CLOCK].time(),
            zone=app[ZONE],
            version=__version__,
            pollers=pollers,
            jobs=collector.job_statuses(),
            assets=collector.asset_statuses(),
            verifications=collector.verification_statuses(),
            families=list(collector.collect()),
            history=collector.job_history(),
        )
    )


async def _index(request: web.Request) -> web.Response:
    body = render_page(status_document(request.app))
    return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _api_status(request: web.Request) -> web.Response:
    return web.json_response(status_document(request.app), headers={"Cache-Control": "no-store"})
