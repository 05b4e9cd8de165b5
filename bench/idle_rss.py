"""Idle RSS and CPU with the reference homelab vs a bare prometheus_client server (the floor).

Run: ``.venv/bin/python bench/idle_rss.py [--minutes 5] [--runs 3]``.

A child process runs the reference homelab's fakes (``exporter.sim.homelab.start_homelab``:
PVE, TrueNAS, S3 (moto), Healthchecks, a files share) on 127.0.0.1. The exporter runs as its own
process, ``python -m exporter serve``, on the homelab's config **without its B2 source** (b2sdk's
simulator lives in the fakes' process; a separate exporter process can't reach it; b2sdk's own
import weight is printed apart). Both servers are scraped every ``--interval`` seconds (15, as
Prometheus would) for ``--minutes``; then VmRSS and the CPU seconds used over that window
(utime + stime from ``/proc/<pid>/stat``) are read. The floor is a bare prometheus_client
server (``bench/scrape_floor.py``, importing nothing but aiohttp and prometheus_client)
serving the exporter's exposition, parsed once, with ``generate_latest`` on every scrape.
Target (issue #15): RSS <= 1.3x the floor.

``main(argv)`` returns the rows for ``make bench``; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scrape_cache import start_floor
from scrape_latency import free_port, get, spawn, wait_until

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def serve_fakes(workdir: Path) -> None:
    """The child: start the homelab's fakes, write the config without B2, serve forever."""
    from exporter.core.clock import SystemClock  # noqa: PLC0415
    from exporter.sim.homelab import start_homelab  # noqa: PLC0415

    async def run() -> None:
        lab = await start_homelab(workdir, clock=SystemClock())
        doc = yaml.safe_load(lab.config_path.read_text())
        dropped = {name for name, src in doc["sources"].items() if src.get("kind") == "b2"}
        doc["sources"] = {n: s for n, s in doc["sources"].items() if n not in dropped}
        doc["jobs"] = {
            n: j
            for n, j in (doc.get("jobs") or {}).items()
            if j.get("evidence", {}).get("source") not in dropped
        }
        # The assets keep their other locations (an asset needs at least one).
        assets = {}
        for name, asset in (doc.get("assets") or {}).items():
            kept = [
                loc
                for loc in asset.get("locations", [])
                if loc.get("evidence", {}).get("source") not in dropped
            ]
            if kept:
                assets[name] = {**asset, "locations": kept}
        doc["assets"] = assets
        (workdir / "idle.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
        await asyncio.Event().wait()

    asyncio.run(run())


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def idle(port: int, pid: int, seconds: float, interval: float) -> tuple[int, float]:
    """Scrape every ``interval`` for ``seconds``; return (RSS KiB at the end, CPU seconds)."""
    cpu0 = cpu_seconds(pid)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        get(port, "/metrics")
        time.sleep(min(interval, max(0.0, end - time.monotonic())))
    return rss_kib(pid), cpu_seconds(pid) - cpu0


def one(workdir: Path, seconds: float, interval: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fakes = subprocess.Popen(
        [sys.executable, __file__, "--serve-fakes", str(workdir)], env=env, cwd=str(ROOT)
    )
    ours = floor = None
    try:
        config = workdir / "idle.yml"
        deadline = time.monotonic() + 120
        while not config.exists():
            if fakes.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the homelab fakes did not start")
            time.sleep(0.2)
        port = free_port()
        argv = [
            sys.executable, "-m", "exporter", "serve", "--config.file", str(config),
            "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error",
        ]  # fmt: skip
        ours = spawn("ours", argv, workdir / "ours.log", port, env)
        wait_until("every first poll", lambda: get(port, "/-/ready")[0] == 200, ours, 180)
        rss, cpu = idle(port, ours.proc.pid, seconds, interval)
        body = get(port, "/metrics")[1]
        (workdir / "exposition.txt").write_bytes(body)
        floor = start_floor(workdir / "exposition.txt", workdir)
        wait_until("the floor", lambda: get(floor.port, "/metrics")[0] == 200, floor, 60)
        floor_rss, floor_cpu = idle(floor.port, floor.proc.pid, seconds, interval)
    finally:
        for server in (ours, floor):
            if server is not None:
                server.stop()
        fakes.terminate()
        fakes.wait(timeout=30)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {
        "series": series,
        "ours_rss_mib": rss / 1024,
        "floor_rss_mib": floor_rss / 1024,
        "ours_cpu_s": cpu,
        "floor_cpu_s": floor_cpu,
    }


def b2sdk_weight() -> float:
    """MiB of RSS that importing b2sdk adds (what a B2 source costs at start)."""
    code = (
        "import re,pathlib\n"
        "def rss(): return int(re.search(r'VmRSS:\\s+(\\d+)',"
        " pathlib.Path('/proc/self/status').read_text()).group(1))\n"
        "a=rss()\nimport b2sdk.v3\nprint(rss()-a)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between scrapes")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--serve-fakes", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fakes:
        serve_fakes(args.serve_fakes)
        return []
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
            runs.append(one(Path(tmp), args.minutes * 60, args.interval))
    row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    row["rss_ratio"] = row["ours_rss_mib"] / row["floor_rss_mib"]
    row["b2sdk_import_mib"] = b2sdk_weight()
    row["minutes"] = args.minutes
    row["runs"] = args.runs
    print("| series | ours RSS MiB | floor RSS MiB | ratio | ours CPU s | floor CPU s | minutes |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {row['series']:.0f} | {row['ours_rss_mib']:.1f} | {row['floor_rss_mib']:.1f} | "
        f"{row['rss_ratio']:.2f}x | {row['ours_cpu_s']:.2f} | {row['floor_cpu_s']:.2f} | "
        f"{args.minutes:g} |"
    )
    print(f"(a B2 source adds b2sdk's import: +{row['b2sdk_import_mib']:.1f} MiB max RSS)")
    return [row]


if __name__ == "__main__":
    main()
