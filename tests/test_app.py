from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient
from conftest import memory_source
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.app import create_app
from exporter.core.clock import FakeClock
from exporter.core.config import Config
from exporter.core.poller import Poller
from exporter.sources.base import FetchError

ClientFactory = Callable[[Any], Awaitable[TestClient[Any, Any]]]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_health_and_readiness(aiohttp_client: ClientFactory) -> None:
    clock = FakeClock(start=1_800_000_000)
    good, bad = memory_source("good", value=5), memory_source("bad")
    bad.error = FetchError("auth", "token rejected")
    pollers = [Poller(good, clock=clock), Poller(bad, clock=clock)]
    client = await aiohttp_client(
        create_app(Config(), clock=clock, pollers=pollers, run_pollers=False)
    )
    assert (await client.get("/-/healthy")).status == 200
    resp = await client.get("/-/ready")
    assert resp.status == 503
    assert "good" in await resp.text()
    for p in pollers:
        await p.poll_once()
    assert (await client.get("/-/ready")).status == 200
    resp = await client.get("/metrics")
    assert resp.status == 200
    got = samples(await resp.text())
    g = (("kind", "memory"), ("source", "good"))
    b = (("kind", "memory"), ("source", "bad"))
    assert got[("backup_source_up", g)] == 1
    assert got[("backup_source_up", b)] == 0
    assert got[("backup_source_last_success_timestamp_seconds", g)] == 1_800_000_000
    assert got[("backup_source_last_success_timestamp_seconds", b)] == 0
    assert got[("backup_source_error_info", (*b[:1], ("reason", "auth"), b[1]))] == 1
    assert not any(k[0] == "backup_source_error_info" and ("source", "good") in k[1] for k in got)
    assert got[("backup_test_value", (("source", "good"),))] == 5
    assert got[("backup_source_api_requests_total", (("class", ""), *g))] == 1
    assert ("backup_exporter_build_info", (("version", __import__("exporter").__version__),)) in got


async def test_openmetrics_is_negotiated(aiohttp_client: ClientFactory) -> None:
    poller = Poller(memory_source(), clock=FakeClock())
    await poller.poll_once()
    client = await aiohttp_client(create_app(Config(), pollers=[poller], run_pollers=False))
    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).rstrip().endswith("# EOF")
    plain = await client.get("/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain")


async def test_scrape_answers_while_a_poll_hangs(aiohttp_client: ClientFactory) -> None:
    src = memory_source("slow", value=3, timeout=3600)
    poller = Poller(src, clock=FakeClock())
    await poller.poll_once()
    src.hang.clear()
    client = await aiohttp_client(create_app(Config(), pollers=[poller], run_pollers=False))
    await client.get("/metrics")  # warm the connection
    hung = asyncio.create_task(poller.poll_once())
    while src.active == 0:
        await asyncio.sleep(0)
    started = time.perf_counter()
    resp = await asyncio.wait_for(client.get("/metrics"), timeout=0.05)
    elapsed = time.perf_counter() - started
    text = await resp.text()
    assert elapsed < 0.05
    assert 'backup_test_value{source="slow"} 3.0' in text, "last snapshot served during the hang"
    src.hang.set()
    await hung


async def test_landing_page_escapes_hostile_names(aiohttp_client: ClientFactory) -> None:
    src = memory_source('<script>alert("x")</script>')
    src.error = FetchError("parse", "bad <b>html</b>")
    poller = Poller(src, clock=FakeClock())
    await poller.poll_once()
    client = await aiohttp_client(create_app(Config(), pollers=[poller], run_pollers=False))
    page = await (await client.get("/")).text()
    assert '<a href="/metrics">' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "bad &lt;b&gt;html&lt;/b&gt;" in page
    metrics = await (await client.get("/metrics")).text()
    assert 'source="<script>alert(\\"x\\")</script>"' in metrics


async def test_pollers_start_with_app_and_stop_on_cleanup(aiohttp_client: ClientFactory) -> None:
    src = memory_source()
    poller = Poller(src, clock=FakeClock())
    client = await aiohttp_client(create_app(Config(), pollers=[poller]))
    await asyncio.wait_for(poller.polled.wait(), timeout=5)
    assert (await client.get("/-/ready")).status == 200
    assert [t for t in asyncio.all_tasks() if t.get_name() == "poll-mem"]
    await client.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "poll-mem"]


async def test_a_broken_renderer_drops_only_its_own_source(
    aiohttp_client: ClientFactory, caplog: Any
) -> None:
    good, bad = memory_source("good", value=2), memory_source("bad", value=3)

    def half_then_crash(snapshot: Any) -> Any:
        yield from type(bad).render(bad, snapshot)
        raise RuntimeError("renderer bug")

    bad.render = half_then_crash  # type: ignore[method-assign]
    pollers = [Poller(good, clock=FakeClock()), Poller(bad, clock=FakeClock())]
    for p in pollers:
        await p.poll_once()
    client = await aiohttp_client(create_app(Config(), pollers=pollers, run_pollers=False))
    text = await (await client.get("/metrics")).text()
    assert 'backup_test_value{source="good"} 2.0' in text
    assert 'source="bad"} 3.0' not in text, "no half-rendered source"
    assert "Cached: sources are polled in the background" in text
    assert any("render failed" in r.getMessage() for r in caplog.records)
