"""/metrics latency while a TrueNAS with 200k snapshots is polled, and the exporter's peak RSS.

Run: ``.venv/bin/python bench/truenas_snapshots.py`` (about 3 min on 2 slow cores).
``--help`` lists the knobs. It is a script, not a test: CI never runs it.

Three processes, all on 127.0.0.1:

* **fake**: ``exporter.sim.truenas`` (TrueNAS 25.10 over wss, ``pool.snapshot.query``), run by
  this script as its own process, with ``--snapshots`` snapshots spread over the homelab's six
  datasets. It answers ``query-options`` ``order_by``/``offset``/``limit`` as the middleware's
  ``filter_list`` does. Its entry list is built once (a real NAS re-lists on every call).
* **exporter**: ``python -m exporter serve`` with one ``kind: truenas`` source (``interval:
  1h``, so exactly one poll, at start-up). Mode ``paged`` is the code as it ships (pages of
  ``SNAPSHOT_PAGE`` snapshots, each decoded and folded in a worker thread). Mode ``single``
  is the former behaviour, reproduced by the ``SINGLE`` wrapper before ``main()``: one call
  answered with every snapshot in one message, decoded and folded on the event loop.
* **scraper**: a thread of this script, ``GET /metrics`` back to back on a fresh connection
  each (10 ms apart), from the moment the exporter listens. Scrapes that start before the
  exposition shows ``backup_source_up{...} 1`` are "during the poll"; then ``--idle`` seconds
  more are "idle".

Peak RSS is the exporter's ``VmHWM`` (``/proc/<pid>/status``) after the poll. Each mode runs
``--runs`` times with a fresh exporter; the table shows the medians, and ``--json`` writes
every run.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = ("paged", "single")
SLOW = 0.050  # the bound for /metrics p99
SINGLE = """
import sys
import exporter.sources.truenas.client as c
import exporter.sources.truenas.source as s
from exporter.sources.truenas.parse import fold_snapshots

c.OFFLOAD_DECODE_BYTES = 10**12  # every answer decoded on the event loop


async def one_reply(client, method, datasets, *, page=0):  # the former read: one call
    raw = await client.call(
        method, [], {"select": ["name", "dataset", "properties"],
                     "extra": {"properties": ["creation"]}},
    )
    return fold_snapshots(raw, datasets)  # folded on the event loop


s.read_snapshots = one_reply
from exporter.core.cli import main

sys.exit(main(sys.argv[1:]))
"""


# ---------------------------------------------------------------------------------- fake


def serve_fake(snapshots: int, info: Path) -> None:
    """Run the fake TrueNAS until SIGTERM; write its URL, key and certificate to ``info``."""
    from exporter.sim.truenas import homelab, start_fake_truenas  # noqa: PLC0415

    scenario = homelab(time.time, release="25.10")
    scenario.sync()
    scenario.snapshot_keep = 10**9  # a daily snapshot event must not prune the 200k
    scenario.snapshots.clear()
    names = [ds.name for ds in scenario.datasets]
    start = time.time() - 86400 * 365
    for i in range(snapshots):
        scenario.snapshots.setdefault(names[i % len(names)], []).append(start + 60.0 * i)
    cache: dict[tuple[str, ...] | None, list[dict[str, Any]]] = {}
    build = scenario.snapshot_entries

    def entries(properties: list[str] | None) -> list[dict[str, Any]]:
        key = None if properties is None else tuple(properties)
        if key not in cache:  # sorted by name: the fake's order_by sort is then O(n)
            cache[key] = sorted(build(properties), key=lambda e: str(e["name"]))
        return cache[key]

    scenario.snapshot_entries = entries  # type: ignore[method-assign]
    entries(["creation"])  # built before the exporter starts

    async def run() -> None:
        fake = await start_fake_truenas(scenario)
        where = {
            "url": fake.url,
            "ca_file": fake.ca_file,
            "api_key": fake.api_key,
            "username": fake.username,
        }
        tmp = info.with_suffix(".tmp")
        await asyncio.to_thread(tmp.write_text, json.dumps(where))
        tmp.rename(info)  # atomic: the bench never reads half a file
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await fake.stop()

    asyncio.run(run())


# ------------------------------------------------------------------------------ scraping


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> tuple[float, str] | None:
    """One GET /metrics on a fresh connection: (seconds, body), None when refused."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    except OSError:
        return None
    finally:
        conn.close()
    return time.perf_counter() - started, body


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_run(mode: str, fake: dict[str, Any], workdir: Path, idle: float) -> dict[str, Any]:
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(
        f"state_path: {workdir / f'state-{mode}-{time.time_ns()}.db'}\n"
        "sources:\n"
        "  nas:\n"
        "    kind: truenas\n"
        f"    url: {fake['url']}\n"
        f"    username: {fake['username']}\n"
        f'    api_key: "{fake["api_key"]}"\n'
        f"    ca_file: {fake['ca_file']}\n"
        "    interval: 1h\n"
        "    timeout: 10m\n"
    )
    args = ["--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}"]
    command = [sys.executable, "-m", "exporter", *args]
    if mode == "single":
        command = [sys.executable, "-c", SINGLE, *args]
    proc = subprocess.Popen(command, cwd=workdir, stderr=subprocess.DEVNULL)
    during: list[float] = []
    after: list[float] = []
    poll_started = poll_ended = 0.0
    try:
        deadline = time.monotonic() + 60
        while scrape(port) is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the exporter never listened")
            time.sleep(0.01)
        poll_started = time.monotonic()
        up = 'backup_source_up{kind="truenas",source="nas"} 1.0'
        deadline = time.monotonic() + 600
        while True:
            got = scrape(port)
            if got is None:
                raise RuntimeError("the exporter stopped answering")
            if up in got[1]:
                poll_ended = time.monotonic()
                break
            during.append(got[0])
            if time.monotonic() > deadline:
                raise RuntimeError("the poll did not finish in 600 s")
            time.sleep(0.01)
        body = got[1]
        idle_until = time.monotonic() + idle
        while time.monotonic() < idle_until:
            got = scrape(port)
            if got is not None:
                after.append(got[0])
            time.sleep(0.01)
        rss = vm_hwm(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    count = sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("backup_zfs_snapshots{")
    )
    return {
        "mode": mode,
        "poll_seconds": poll_ended - poll_started,
        "during": {
            "n": len(during),
            "over_50ms": sum(1 for t in during if t > SLOW),
            "p50": statistics.median(during) if during else 0.0,
            "p99": pct(during, 0.99) if during else 0.0,
            "max": max(during, default=0.0),
        },
        "idle": {
            "n": len(after),
            "over_50ms": sum(1 for t in after if t > SLOW),
            "p50": statistics.median(after) if after else 0.0,
            "p99": pct(after, 0.99) if after else 0.0,
            "max": max(after, default=0.0),
        },
        "peak_rss_bytes": rss,
        "snapshots_counted": count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--snapshots", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds scraped after the poll")
    parser.add_argument("--modes", default=",".join(MODES), help="paged,single")
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
    parser.add_argument("--serve-fake", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake is not None:
        serve_fake(args.snapshots, args.serve_fake)
        return 0
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes) or not 1 <= args.runs <= 9:
        parser.error("--modes takes paged and/or single; --runs 1..9")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        info = workdir / "fake.json"
        fake_proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-fake",
                str(info),
                "--snapshots",
                str(args.snapshots),
            ]
        )
        try:
            deadline = time.monotonic() + 300
            while not info.exists() or not info.read_text():
                if time.monotonic() > deadline or fake_proc.poll() is not None:
                    raise RuntimeError("the fake TrueNAS did not start")
                time.sleep(0.1)
            fake = json.loads(info.read_text())
            runs = []
            for mode in modes:
                for i in range(args.runs):
                    result = one_run(mode, fake, workdir, args.idle)
                    runs.append(result)
                    print(
                        f"{mode} run {i + 1}: poll {result['poll_seconds']:.1f}s, during p99 "
                        f"{result['during']['p99'] * 1000:.1f} ms (n={result['during']['n']}), "
                        f"idle p99 {result['idle']['p99'] * 1000:.1f} ms, peak RSS "
                        f"{result['peak_rss_bytes'] / 2**20:.0f} MiB, "
                        f"{result['snapshots_counted']:.0f} snapshots",
                        flush=True,
                    )
        finally:
            fake_proc.send_signal(signal.SIGTERM)
            fake_proc.wait(timeout=30)
    print()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {args.snapshots} snapshots, "
          f"medians of {args.runs} runs")  # fmt: skip
    print("| mode | poll s | /metrics during poll p50 / p99 / max ms | > 50 ms | "
          "idle p50 / p99 / max ms | > 50 ms | peak RSS MiB | snapshots |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for mode in modes:
        rows = [r for r in runs if r["mode"] == mode]

        def med(get: Any, rows: list[dict[str, Any]] = rows) -> float:
            return float(statistics.median(get(r) for r in rows))

        ms = [
            med(lambda r, w=w, k=k: r[w][k]) * 1000
            for w in ("during", "idle")
            for k in ("p50", "p99", "max")
        ]
        print(
            f"| {mode} | {med(lambda r: r['poll_seconds']):.1f} "
            f"| {ms[0]:.1f} / {ms[1]:.1f} / {ms[2]:.1f} "
            f"| {med(lambda r: r['during']['over_50ms']):.0f} "
            f"of {med(lambda r: r['during']['n']):.0f} "
            f"| {ms[3]:.1f} / {ms[4]:.1f} / {ms[5]:.1f} "
            f"| {med(lambda r: r['idle']['over_50ms']):.0f} "
            f"of {med(lambda r: r['idle']['n']):.0f} "
            f"| {med(lambda r: r['peak_rss_bytes']) / 2**20:.0f} "
            f"| {med(lambda r: r['snapshots_counted']):.0f} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
