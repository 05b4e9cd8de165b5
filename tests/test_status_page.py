"""The status page as a person sees it: rendered by headless Chromium (Debian's package).

Chromium is driven over the DevTools protocol (tests/browser.py), so the tests read what the
browser laid out: computed colours, the page width on a phone, the text a hostile name shows
as. Screenshots at 1280×800 and 390 px go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import jsonschema
from browser import ARTIFACTS, chromium_page

from exporter.assets.model import AssetStatus, LocationStatus, VerificationStatus
from exporter.core.app import COLLECTOR, create_app
from exporter.core.clock import FakeClock
from exporter.core.config import parse_config
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.sim.homelab import start_homelab
from exporter.sources import build_source

NOW = 1_795_700_000.0  # 2026-11-26 13:33 UTC
DAY = 86400.0
SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "status.schema.json").read_text())


def loc(name: str, layer: str, source: str, age: float | None, *, rpo: float, known: bool = True,
        reason: str = "") -> LocationStatus:  # fmt: skip
    newest = None if age is None or not known else NOW - age
    fresh = known and newest is not None and newest > NOW - rpo
    return LocationStatus(name, layer, source, source, known, newest, fresh, reason)


def assets() -> list[AssetStatus]:
    rpo = 2 * DAY
    immich = (
        loc("snapshot-truenas", "snapshot", "truenas", 3600, rpo=rpo),
        loc("local-nas-copy", "local", "nas-copy", 5 * 3600, rpo=rpo),
        loc("offsite-b2", "offsite", "b2", DAY, rpo=rpo),
        loc("offsite-storj", "offsite", "storj", 9 * DAY, rpo=rpo, reason="9 d old (rpo 2 d)"),
    )
    hostile = (
        loc("snapshot-<script>", "snapshot", "<script>alert(1)</script>", None, rpo=rpo,
            known=False, reason="source <script> down"),
    )  # fmt: skip
    return [
        AssetStatus("immich", "high", rpo, "attention", "storj copy 9 d old (rpo 2 d)",
                    3, 1, 3, True, immich),
        AssetStatus("<img src=x onerror=alert(1)>", "normal", rpo, "unknown",
                    "source <script> down", 0, 0, 0, False, hostile),
    ]  # fmt: skip


def verifications() -> list[VerificationStatus]:
    return [
        VerificationStatus("immich", "restore-test", 90 * DAY, None, None, True),
        VerificationStatus("immich", "dr-drill", 365 * DAY, NOW - 30 * DAY, None, False),
    ]


async def lab(tmp_path: Path, aiohttp_server: Any) -> tuple[str, Any]:
    fresh, stale = tmp_path / "ha", tmp_path / "dumps"
    for folder, age in ((fresh, 3600), (stale, 3 * DAY)):
        folder.mkdir()
        (folder / "backup.tar").write_bytes(b"x")
        os.utime(folder / "backup.tar", (NOW - age, NOW - age))
    config = parse_config(
        f"""
timezone: Europe/Berlin
sources:
  ha: {{kind: files, path: {fresh}}}
  dumps: {{kind: files, path: {stale}}}
  nfs: {{kind: files, path: {tmp_path / "unmounted"}}}
jobs:
  ha-daily: {{schedule: "0 19 * * *", grace: 2h, evidence: {{source: ha}}}}
  db-dump: {{schedule: "30 0 * * *", grace: 1h, evidence: {{source: dumps}}}}
"""
    )
    clock = FakeClock(start=NOW)
    pollers = [Poller(build_source(c), clock=clock) for c in config.sources.values()]
    await asyncio.gather(*(p.poll_once() for p in pollers))
    app = create_app(config, clock=clock, pollers=pollers, run_pollers=False)
    collector = app[COLLECTOR]
    # The asset engine and the records are tested on their own; here the page is.
    collector.asset_statuses = assets  # type: ignore[method-assign]
    collector.verification_statuses = verifications  # type: ignore[method-assign]
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}", server


async def test_api_status_matches_its_schema_and_orders_by_urgency(
    tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    _base, server = await lab(tmp_path, aiohttp_server)
    client = await aiohttp_client(server)
    resp = await client.get("/api/status")
    assert resp.status == 200
    doc = await resp.json()
    jsonschema.validate(doc, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert doc["schema_version"] == 1
    assert [j["name"] for j in doc["jobs"]] == ["db-dump", "ha-daily"]
    assert doc["jobs"][0]["state"] == "overdue"
    assert next(s["name"] for s in doc["sources"]) == "nfs", "down sources first"
    assert doc["verdict"]["ok"] is False
    assert doc["verdict"]["assets_needing_attention"] == 2
    # Unknown sorts before attention: it is never a success.
    assert [a["state"] for a in doc["assets"]] == ["unknown", "attention"]
    cells = {c["name"]: c["cell"] for a in doc["assets"] for c in a["locations"]}
    assert cells["offsite-storj"] == "stale" and cells["offsite-b2"] == "fresh"
    assert cells["snapshot-<script>"] == "unknown"
    kinds = [p["kind"] for p in doc["problems"]]
    assert kinds.index("job") < kinds.index("verification")
    never = next(v for v in doc["verification"] if v["activity"] == "restore-test")
    assert never["last_pass"] is None and never["overdue"] is True
    job = doc["jobs"][1]
    assert len(job["next_runs"]) == 3
    assert job["next_runs"][0]["local"] == "2026-11-26 19:00 CET"
    assert len(job["history"]) == 30


async def test_page_in_chromium_verdict_colours_hostile_names_and_phone_width(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    base, _ = await lab(tmp_path, aiohttp_server)
    async with chromium_page(tmp_path / "chromium") as page:
        await page.viewport(1280, 800)
        await page.goto(base + "/")
        verdict = await page.evaluate("document.querySelector('#verdict').innerText")
        assert verdict.startswith("2 of 2 assets need attention.")
        assert "Do first: job db-dump on dumps overdue" in verdict
        jobs = await page.evaluate(
            "[...document.querySelectorAll('#jobs tr[data-job]')]"
            ".map(r => [r.dataset.job, r.dataset.state])"
        )
        assert jobs[0] == ["dumps/db-dump/", "overdue"], "the overdue job is listed first"

        def colour(selector: str) -> str:
            return (
                f"(() => {{ const s = getComputedStyle(document.querySelector({selector!r}));"
                " return s.backgroundColor + ' ' + s.backgroundImage; })()"
            )

        fresh = await page.evaluate(colour("[data-location='offsite-b2']"))
        stale = await page.evaluate(colour("[data-location='offsite-storj']"))
        unknown = await page.evaluate(colour("[data-cell='unknown']"))
        assert fresh.startswith("rgb(230, 244, 234)"), fresh
        assert stale.startswith("rgb(252, 232, 230)"), "the stale Storj copy is marked red"
        assert unknown != fresh and "gradient" in unknown, "Unknown is its own colour, not green"
        never = await page.evaluate(
            "getComputedStyle(document.querySelector("
            "'#verification tr[data-activity=\"restore-test\"] .never')).color"
        )
        assert never == "rgb(179, 38, 30)", "a never-done restore test past its interval is red"
        # Hostile names are text: no script element was created, the name reads as typed.
        assert await page.evaluate("document.querySelectorAll('script, img').length") == 0
        text = await page.evaluate("document.body.innerText")
        assert "<img src=x onerror=alert(1)>" in text
        assert "<script>alert(1)</script>" in text
        wide = await page.screenshot(ARTIFACTS / "status-1280x800.png", full_page=False)
        await page.viewport(390, 844, mobile=True)
        await page.goto(base + "/")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px phone"
        phone = await page.screenshot(ARTIFACTS / "status-390.png")
    assert wide.stat().st_size > 20_000 and phone.stat().st_size > 20_000


async def test_the_demo_homelab_page_says_what_to_do_first(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    """The simulated homelab as `make demo` runs it: its real problems are on the page."""
    clock = FakeClock(start=time.time())
    homelab = await start_homelab(tmp_path / "lab", clock=clock)
    keeper = StateKeeper(tmp_path / "state.db")
    pollers = homelab.pollers(keeper)
    app = create_app(homelab.config, clock=clock, pollers=pollers, keeper=keeper, run_pollers=False)
    try:
        await asyncio.gather(*(p.poll_once() for p in pollers))
        # TrueNAS stops answering (its key revoked): the locations it proves are unknown.
        homelab.truenas_scenario.revoke_key()
        await next(p for p in pollers if p.name == "truenas").poll_once()
        server = await aiohttp_server(app)
        async with chromium_page(tmp_path / "chromium") as page:
            await page.viewport(1280, 800)
            await page.goto(f"http://127.0.0.1:{server.port}/")
            verdict = await page.evaluate("document.querySelector('#verdict').innerText")
            assert "assets need attention" in verdict
            first = await page.evaluate("document.querySelector('#jobs tr[data-job]').dataset.job")
            assert first == "truenas/cloudsync-storj-weekly/", "the overdue job comes first"
            storj = await page.evaluate(
                "[...document.querySelectorAll('[data-location=\"offsite-storj\"]')]"
                ".map(e => [e.dataset.cell, getComputedStyle(e).backgroundColor])"
            )
            assert storj and all(cell == "stale" for cell, _ in storj), storj
            assert all(bg == "rgb(252, 232, 230)" for _, bg in storj), "stale Storj is red"
            unknown = await page.evaluate(
                "[...document.querySelectorAll('[data-cell=\"unknown\"]')]"
                ".map(e => getComputedStyle(e).backgroundColor + ' ' +"
                " getComputedStyle(e).backgroundImage)"
            )
            fresh = await page.evaluate(
                "getComputedStyle(document.querySelector('[data-cell=\"fresh\"]')).backgroundColor"
            )
            assert unknown, "TrueNAS down leaves its snapshot locations unknown"
            assert all(not u.startswith(fresh) and "gradient" in u for u in unknown), unknown
            text = await page.evaluate("document.body.innerText")
            assert "retention over quota" in text
            assert "policy nfs_export drifted" in text
            assert "restore-test of immich overdue: never done" in text
            await page.screenshot(ARTIFACTS / "demo-1280x800.png", full_page=False)
    finally:
        for poller in pollers:
            await poller.source.close()
        await homelab.stop()  # the app's cleanup closes the keeper
