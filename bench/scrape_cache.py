"""/metrics latency at 1k, 6k and 12k series: the cached exposition vs the generate_latest floor.

Run: ``.venv/bin/python bench/scrape_cache.py [--guests 30,220,440] [--scrapes 300] [--runs 3]``.

For each size, a fake PVE (``exporter.sim.pve``, HTTPS on 127.0.0.1) serves the homelab plus
``N`` guests backed up nightly by one ``all`` job keeping 14 archives (the issue's 300 guests
and 4,200 archives give ~6k series). Then, sequentially, one fresh HTTP connection per scrape:

* **ours**: ``python -m exporter serve`` with one ``kind: proxmox`` source, polling every 20 s
  (polls fall inside the series: the p99 includes the scrapes that follow a poll);
* **floor**: ``bench/scrape_floor.py``, a bare prometheus_client server (aiohttp +
  ``make_aiohttp_handler``, as the exporter used before the cache) whose collector returns
  the same families, parsed once from our exposition: ``generate_latest`` on every scrape.

Target (issue #15): ours p99 <= 1.0x the floor's. ``main(argv)`` returns one dict per size
(medians over ``--runs``) for ``make bench``; the table is printed as markdown.
The peer row (prometheus-pve-exporter with a 100 ms backend) is ``bench/scrape_latency.py
--latency 0.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scrape_latency import Server, free_port, get, spawn, start_ours, wait_until

from exporter.sim.pve import FakePVE, homelab, start_fake_pve
from exporter.sim.pve.scenario import FakeGuest, FakeJob, daily_starts


def scaled(guests: int) -> Any:
    """The homelab plus ``guests`` guests, each with 14 nightly archives."""
    sc = homelab(time.time)
    for i in range(guests):
        sc.guests.append(FakeGuest(1000 + i, f"guest{i}", guest_type="qemu" if i % 3 else "lxc"))
    job = FakeJob(
        "backup-all", schedule="02:00", storage="truenas-backups", all=True, exclude="100,101",
        prune_backups={"keep-last": "14"},
    )  # fmt: skip
    sc.jobs.append(job)
    sc.storage("truenas-backups").total = 1 << 60
    now = time.time()
    for t in list(daily_starts(job.schedule, sc.tz, now - 16 * 86400, now))[-14:]:
        sc._run(job, int(t), finished=True)
    return sc


class FakeThread:
    """Fake PVE APIs served by an event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def start(self, scenario: Any) -> FakePVE:
        fut = asyncio.run_coroutine_threadsafe(start_fake_pve(scenario), self.loop)
        return fut.result(timeout=120)  # type: ignore[no-any-return]

    def stop(self, fake: FakePVE) -> None:
        asyncio.run_coroutine_threadsafe(fake.stop(), self.loop).result(timeout=30)


def start_floor(exposition: Path, workdir: Path) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        str(Path(__file__).with_name("scrape_floor.py")),
        str(exposition),
        str(port),
    ]
    return spawn("floor", argv, workdir / "floor.log", port, dict(os.environ))


def timed(port: int, count: int) -> list[float]:
    for _ in range(3):
        get(port, "/metrics")
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        status, _body = get(port, "/metrics")
        out.append((time.perf_counter() - t0) * 1000)
        assert status == 200
    return sorted(out)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]


def series(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def one(fakes: FakeThread, guests: int, scrapes: int, workdir: Path) -> dict[str, Any]:
    fake = fakes.start(scaled(guests))
    ours = start_ours(fake, workdir)
    floor: Server | None = None
    try:
        wait_until(
            "the first poll",
            lambda: (
                b"backup_pve_guest" in get(ours.port, "/metrics")[1]
                and b'reason="starting"' not in get(ours.port, "/metrics")[1]
            ),
            ours,
            300,
        )
        mine = timed(ours.port, scrapes)
        body = get(ours.port, "/metrics")[1]
        text = workdir / "exposition.txt"
        text.write_bytes(body)
        floor = start_floor(text, workdir)
        wait_until("the floor server", lambda: get(floor.port, "/metrics")[0] == 200, floor, 60)
        bare = timed(floor.port, scrapes)
    finally:
        ours.stop()
        if floor is not None:
            floor.stop()
        fakes.stop(fake)
    return {
        "guests": guests,
        "series": series(body),
        "ours_p50_ms": statistics.median(mine),
        "ours_p99_ms": pct(mine, 0.99),
        "floor_p50_ms": statistics.median(bare),
        "floor_p99_ms": pct(bare, 0.99),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--guests", default="30,220,440", help="guest counts, comma-separated (~1k, 6k, 12k series)"
    )
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    fakes = FakeThread()
    rows = []
    print(
        "| guests | series | ours p50 ms | ours p99 ms | floor p50 ms | floor p99 ms | p99 ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for guests in (int(g) for g in args.guests.split(",")):
        runs = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
                runs.append(one(fakes, guests, args.scrapes, Path(tmp)))
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        row["p99_ratio"] = row["ours_p99_ms"] / row["floor_p99_ms"]
        row["runs"] = args.runs
        rows.append(row)
        print(
            f"| {guests} | {row['series']:.0f} | {row['ours_p50_ms']:.1f} | "
            f"{row['ours_p99_ms']:.1f} | {row['floor_p50_ms']:.1f} | {row['floor_p99_ms']:.1f} | "
            f"{row['p99_ratio']:.2f}x |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
