"""``backup-exporter report``: the living strategy document, on the simulated homelab."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from exporter.core.app import create_app, status_document
from exporter.core.cli import main
from exporter.core.clock import FakeClock
from exporter.core.state import StateKeeper
from exporter.sim.homelab import Homelab, start_homelab
from exporter.status import report
from exporter.status.page import format_bytes

NOW = 1_795_700_000.0  # 2026-11-26 13:33 UTC, a Thursday


@pytest_asyncio.fixture
async def polled(tmp_path: Path) -> AsyncIterator[tuple[Homelab, Path, FakeClock]]:
    clock = FakeClock(start=NOW)
    lab = await start_homelab(tmp_path / "lab", clock=clock)
    state = tmp_path / "lab" / "state.db"
    keeper = StateKeeper(state)
    pollers = lab.pollers(keeper)
    app = create_app(lab.config, clock=clock, pollers=pollers, keeper=keeper, run_pollers=False)
    try:
        await asyncio.gather(*(p.poll_once() for p in pollers))
        await keeper.flush()
        yield lab, state, clock
    finally:
        await keeper.close()
        for poller in pollers:
            await poller.source.close()
        await lab.stop()
        del app


async def test_report_from_the_store_fills_the_strategy_blanks(
    polled: tuple[Homelab, Path, FakeClock],
) -> None:
    lab, state, clock = polled
    doc = await report.status_from_store(lab.config, state, clock=clock)
    text = report.render_markdown(doc, origin="the state database")
    # Measured sizes: the newest archive of guest 100, as the exporter measured it.
    size = next(s for s in doc["sizes"] if s["vmid"] == "100")
    assert size["newest_archive_bytes"] > 0
    assert f"| 100 | {report.md(size['name'])} |" in text
    assert format_bytes(size["newest_archive_bytes"]) in text
    # The reference storage cannot hold 14 × the newest archive: the report says so.
    over = [s for s in doc["storage"] if s["over"]]
    assert over, doc["storage"]
    assert "| **yes** |" in text
    # Every schedule with its grace and next three runs in local time.
    vzdump = next(j for j in doc["jobs"] if j["source"] == "pve1" and j["vmid"] == "100")
    runs = [r["local"] for r in vzdump["next_runs"]]
    assert len(runs) == 3
    assert all(r.endswith("21:00 CET") for r in runs), runs
    assert ", ".join(runs) in text
    # Open problems in priority order: the first line is the verdict's first action.
    numbered = re.findall(r"^(\d+)\. (.*)$", text, flags=re.M)
    assert numbered and numbered[0][0] == "1"
    assert report.md(doc["verdict"]["first_action"]) == numbered[0][1]
    assert "no backup job covers it" in text and "dns101" in text
    # The strategy's blanks: restore tests never done, and one policy drifted.
    line = next(x for x in text.splitlines() if x.startswith("| immich | restore-test |"))
    assert "| never |" in line and "**overdue**" in line, line
    drift = next(x for x in text.splitlines() if x.startswith("| nfs\\_export |"))
    assert "**drifted**" in drift and "192.0.2.0/24" in drift, drift
    # Layers and assets, with copies and offsite copies: the stale Storj copy among them.
    assert "| immich | high | 2 d | attention |" in text
    assert "storj copy" in text


async def test_report_cli_writes_markdown_and_html_and_says_when_there_is_no_state(
    polled: tuple[Homelab, Path, FakeClock], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab, _state, _clock = polled
    out = tmp_path / "report.html"
    code = await asyncio.to_thread(
        main,
        ["report", "--config.file", str(lab.config_path), "--format", "html", "--output", str(out)],
    )
    assert code == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page
    assert "<script" not in page
    empty = tmp_path / "empty.yml"
    empty.write_text(f"state_path: {tmp_path / 'none.db'}\n")
    assert await asyncio.to_thread(main, ["report", "--config.file", str(empty)]) == 2
    assert "no state database yet" in capsys.readouterr().err


async def test_report_from_a_running_exporter_equals_its_api(
    polled: tuple[Homelab, Path, FakeClock], aiohttp_server: Any
) -> None:
    lab, state, clock = polled
    keeper = StateKeeper(state)
    app = create_app(lab.config, clock=clock, keeper=keeper, run_pollers=False)
    server = await aiohttp_server(app)
    fetched = await asyncio.to_thread(report.fetch_status, f"http://127.0.0.1:{server.port}")
    assert fetched == status_document(app)
    with pytest.raises(ValueError, match="must be http"):
        report.fetch_status("file:///etc/passwd")


def test_markdown_cells_escape_hostile_names() -> None:
    assert report.md("a|b <script>\n*x*") == r"a\|b \<script\> \*x\*"
