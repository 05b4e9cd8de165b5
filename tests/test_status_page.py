"""The status page as a person sees it: rendered by headless Chromium (Debian's package)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from exporter.core.app import create_app
from exporter.core.clock import FakeClock
from exporter.core.config import parse_config
from exporter.core.poller import Poller
from exporter.sources import build_source

NOW = 1_795_700_000.0  # 2026-11-26 13:33 UTC


class Rows(HTMLParser):
    """Collect table rows as (class, [cell texts])."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append((dict(attrs).get("class") or "", []))
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: `make test` installs the Debian package")
    return subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         f"--user-data-dir={user_data}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_status_page_puts_overdue_first_and_says_why_a_source_is_down(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    fresh, stale = tmp_path / "ha", tmp_path / "dumps"
    for folder, age in ((fresh, 3600), (stale, 3 * 86400)):
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
    server = await aiohttp_server(
        create_app(config, clock=clock, pollers=pollers, run_pollers=False)
    )
    url = f"http://127.0.0.1:{server.port}/"
    loop = asyncio.get_running_loop()
    # Chromium blocks; the server must keep answering on this loop meanwhile.
    dom = await loop.run_in_executor(
        None, lambda: chromium("--dump-dom", url, user_data=tmp_path / "c1")
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = Rows()
    rows.feed(dom.stdout)
    cells = [(cls, c) for cls, c in rows.rows if c]
    sources = {c[0]: (cls, c) for cls, c in cells if len(c) == 5}
    jobs = [(cls, c) for cls, c in cells if len(c) == 6]
    assert sources["ha"][0] == "ok"
    assert sources["nfs"][0] == "bad"
    assert sources["nfs"][1][2] == "down"
    assert sources["nfs"][1][4].startswith("config:")
    assert [c[0] for _, c in jobs] == ["db-dump", "ha-daily"], "overdue jobs come first"
    assert jobs[0][0] == "bad"
    assert jobs[0][1][2] == "overdue"
    assert jobs[1][1][2] == "ok"
    assert jobs[1][1][3] == "2026-11-26 13:33 CET", "times are shown in the configured zone"
    shot = tmp_path / "status.png"
    result = await loop.run_in_executor(
        None,
        lambda: chromium(
            "--window-size=1000,700", f"--screenshot={shot}", url, user_data=tmp_path / "c2"
        ),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 5000, "a rendered page, not a blank one"
