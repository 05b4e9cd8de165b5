"""``make bench``: every bench script, its peers installed, one table, ``bench/RESULTS.md``.

Run: ``.venv/bin/python bench/run.py [--runs 3] [--quick] [--only NAME ...]``

Peers are installed by the harness itself, never by ``make test``:

* ``moto`` (the S3 server) is in the project's ``[test]`` extra, so in ``.venv`` already;
* ``rclone``: the Debian package (``apt-get install rclone``) when ``rclone`` is not on PATH;
* prometheus-pve-exporter from PyPI into ``bench/.venv-peer`` (``bench/scrape_latency.py``
  creates that venv the first time).

Each script runs ``--runs`` times (at least 3) as its own process. A script that takes
``--rows FILE`` writes rows as JSON, a list of ``{"what", "ours", "reference", "ref_name",
"unit", "target"}``; the harness takes the median of each row over the runs and prints them
side by side with the ratio ``ours / reference``. Scripts without ``--rows`` (the older
``scrape_latency.py`` and ``truenas_snapshots.py``) have their last run's table copied into
RESULTS.md as printed (also ``scrape_cache.py`` and ``idle_rss.py``, which print their own
median tables over ``--runs``). A script listed in ``SCRIPTS`` but absent from the tree is
reported as missing and the harness goes on.

``--quick`` is passed on to scripts that accept it (shorter idle windows, fewer objects).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "RESULTS.md"
# Hand-written notes on the targets (what was missed, by how much, why), appended to RESULTS.md.
NOTES = BENCH / "targets.md"


@dataclass(frozen=True)
class Script:
    """One bench script and how to call it."""

    name: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # extra arguments with --quick
    rows: bool = True  # takes --rows FILE
    needs: tuple[str, ...] = ()  # peers: "rclone"
    runs_itself: bool = False  # repeats internally (--runs): run once, with --runs N


SCRIPTS = (
    # Bucket listing CPU and API cost (this work).
    Script("bucket_cost.py"),
    Script("s3_listing.py", needs=("rclone",), runs_itself=True),
    # The scrape-cache work's scripts (scrape latency at 1k/6k/12k series vs generate_latest
    # and prometheus-pve-exporter, scrape during a 200k-snapshot poll, idle RSS/CPU).
    Script("scrape_cache.py", rows=False, runs_itself=True, quick=("--scrapes", "100")),
    Script("idle_rss.py", rows=False, runs_itself=True, quick=("--minutes", "1")),
    # Present on main: scrape latency vs prometheus-pve-exporter, TrueNAS 200k-snapshot poll.
    Script("scrape_latency.py", rows=False, quick=("--scrapes", "50")),
    Script(
        "truenas_snapshots.py",
        rows=False,
        runs_itself=True,
        quick=("--modes", "paged", "--idle", "2"),
    ),
)


@dataclass
class Outcome:
    script: Script
    rows: list[dict[str, Any]] = field(default_factory=list)
    runs: int = 0
    text: str = ""
    error: str = ""
    seconds: float = 0.0


def ensure_rclone() -> str | None:
    """Return the rclone binary, installing Debian's package when it is missing."""
    found = shutil.which("rclone")
    if found is not None:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing the Debian package rclone", flush=True)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "rclone"]):
        if subprocess.run([*sudo, *cmd], env=env, check=False).returncode != 0:
            return None
    return shutil.which("rclone")


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{mem_kib / 2**20:.1f} GiB",
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def run_script(script: Script, runs: int, quick: bool) -> Outcome:
    out = Outcome(script)
    path = BENCH / script.name
    if not path.exists():
        out.error = "missing (not on this branch)"
        return out
    if "rclone" in script.needs and ensure_rclone() is None:
        out.error = "rclone could not be installed"
        return out
    started = time.monotonic()
    per_run: list[list[dict[str, Any]]] = []
    times = 1 if script.runs_itself else runs
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for i in range(times):
            cmd = [sys.executable, str(path), *script.args]
            if quick:
                cmd += script.quick
            if script.runs_itself:
                cmd += ["--runs", str(runs)]
            rows_file = Path(tmp) / f"rows-{i}.json"
            if script.rows:
                cmd += ["--rows", str(rows_file)]
            print(f"$ {' '.join(cmd[1:])}", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
            if proc.returncode != 0:
                out.error = f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"
                break
            out.text = proc.stdout
            out.runs += runs if script.runs_itself else 1
            if script.rows:
                per_run.append(json.loads(rows_file.read_text()))
    out.seconds = time.monotonic() - started
    if per_run:
        out.rows = median_rows(per_run)
        if script.runs_itself:  # one invocation, medians of its own --runs repeats
            for row in out.rows:
                row["n"] = runs
    return out


def median_rows(per_run: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each row's median ``ours``/``reference`` over the runs (rows matched by ``what``)."""
    merged: dict[str, dict[str, Any]] = {}
    values: dict[str, tuple[list[float], list[float]]] = {}
    for rows in per_run:
        for row in rows:
            key = row["what"]
            merged.setdefault(key, dict(row))
            ours, refs = values.setdefault(key, ([], []))
            ours.append(float(row["ours"]))
            if row.get("reference") is not None:
                refs.append(float(row["reference"]))
    for key, row in merged.items():
        ours, refs = values[key]
        row["ours"] = statistics.median(ours)
        row["reference"] = statistics.median(refs) if refs else None
        row["n"] = len(ours)
    return list(merged.values())


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| what | ours | reference | ratio | target | runs |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        for r in o.rows:
            ref = r.get("reference")
            ratio = f"{r['ours'] / ref:.2f}x" if ref else "n/a"
            unit = f" {r['unit']}" if r.get("unit") else ""
            ref_text = f"{fmt(ref)}{unit} ({r.get('ref_name', '')})" if ref is not None else "n/a"
            lines.append(
                f"| {r['what']} | {fmt(r['ours'])}{unit} | {ref_text} | {ratio}"
                f" | {r.get('target', '')} | {r['n']} |"
            )
    return lines


def render(
    outcomes: list[Outcome], *, runs: int, quick: bool, started: dt.datetime, loads: list[str]
) -> str:
    """RESULTS.md: machine, date, command, the summary table, each script's own output."""
    info = machine()
    command = "make bench" + (" (bench/run.py --quick)" if quick else "")
    doc = [
        "# Bench results",
        "",
        f"Written by `bench/run.py` ({command}). Medians of {runs} runs per script; the ratio",
        "is ours / reference (lower is better for times, CPU and memory).",
        "",
        f"* date: {started:%Y-%m-%d %H:%M} UTC",
        f"* machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, {info['os']},"
        f" Python {info['python']}",
        f"* load average (1/5/15 min) at the start and after each script: {'; '.join(loads)}"
        " (a shared machine: other work ran at the same time, so ratios count, not times)",
        f"* command: `.venv/bin/python bench/run.py --runs {runs}"
        + (" --quick`" if quick else "`"),
        "",
        "## Summary",
        "",
        *table(outcomes),
        "",
    ]
    for o in outcomes:
        doc += [f"## {o.script.name}", ""]
        if o.error:
            doc += [f"Not measured: {o.error}.", ""]
            continue
        doc += [f"{o.runs} runs, {o.seconds:.0f} s. Output of the last run:", "", "```"]
        doc += [o.text.rstrip(), "```", ""]
    if NOTES.exists():
        doc += [NOTES.read_text().rstrip(), ""]
    return "\n".join(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", help="script names (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = max(3, args.runs)
    chosen = [s for s in SCRIPTS if not args.only or s.name in args.only]
    started = dt.datetime.now(dt.UTC)
    loads = [load()]
    outcomes: list[Outcome] = []
    for script in chosen:
        outcomes.append(run_script(script, runs, args.quick))
        loads.append(load())
        # Written after every script, so an interrupted run keeps what it measured.
        text = render(outcomes, runs=runs, quick=args.quick, started=started, loads=loads)
        args.output.write_text(text)
    print("\n".join(table(outcomes)))
    for o in outcomes:
        if o.error:
            print(f"{o.script.name}: {o.error}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
