"""Scrape latency, upstream requests and memory: this exporter vs prometheus-pve-exporter.

Run: ``.venv/bin/python bench/scrape_latency.py`` (about 1.5 min on 2 slow cores, plus ~10 s
the first time to create the peer's venv). ``--help`` lists the knobs.

Both exporters read the same simulated homelab (``exporter.sim.pve.homelab``: node
``pve1``, VM 100 backed up nightly, CT 101 uncovered) from an in-process fake PVE API over
HTTPS on 127.0.0.1. Each exporter gets its own instance of the fake, so each fake's request
log (``scenario.requests``) counts exactly one exporter's upstream calls. Nothing but
127.0.0.1 is contacted (and PyPI, by pip, when the peer's venv is created).

* **ours**: ``python -m exporter serve`` as its own process with one ``kind: proxmox`` source
  (``ca_file`` = the fake's certificate). It polls PVE in the background; ``/metrics`` only
  renders the last snapshot.
* **peer**: prometheus-pve-exporter (gunicorn, in its own venv ``bench/.venv-peer``), scraped
  at ``/pve?target=127.0.0.1:<port>&module=default&cluster=1&node=1``. It builds a new API
  client, so a new TLS connection, and calls PVE on every scrape.

Measured, sequentially, one fresh HTTP connection per scrape: latency p50/p95/max of N
scrapes, upstream PVE requests per scrape, samples per scrape, and the memory of each server
process tree afterwards (VmRSS summed over the gunicorn master and workers; PSS too, which
does not double-count the pages forked workers share). Then the fakes answer every request
after ``--latency`` seconds ("slow backend"): the peer's scrape time grows with its number of
API calls, ours is measured while one of our background polls is in flight against the slow
fake, to show a scrape never waits for PVE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.sim.pve import FakePVE, homelab, start_fake_pve

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / "bench" / ".venv-peer"
PEER_PACKAGE = "prometheus-pve-exporter"
# Our poll interval: short enough that the slow-backend row catches a poll in flight within
# seconds, long enough that none falls into the ~1 s window of the normal row.
OUR_INTERVAL = 20
MAX_SCRAPES = 2000
MAX_SLOW_SCRAPES = 20


# ------------------------------------------------------------------ the fakes, in a thread


class Fakes:
    """Two fake PVE APIs (one per exporter) served by an event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.ours: FakePVE
        self.peer: FakePVE

    def start(self) -> None:
        self.thread.start()
        self.ours = self._call(start_fake_pve(homelab(time.time)))
        self.peer = self._call(start_fake_pve(homelab(time.time)))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def set_latency(self, seconds: float) -> None:
        # A float assignment is atomic; the fake's middleware reads it per request.
        self.ours.scenario.latency = seconds
        self.peer.scenario.latency = seconds

    def stop(self) -> None:
        for fake in (getattr(self, "ours", None), getattr(self, "peer", None)):
            if fake is not None:
                with contextlib.suppress(Exception):
                    self._call(fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


# ------------------------------------------------------------------ processes and memory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """Return the pids whose parent is ``pid`` (read from /proc, no external tools)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may contain spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def tree(pid: int) -> list[int]:
    pids = [pid]
    for child in children(pid):
        pids.extend(tree(child))
    return pids


def memory_kib(pid: int) -> tuple[int, int, int]:
    """Return (summed VmRSS, summed PSS, process count) in KiB over ``pid`` and descendants."""
    rss = pss = count = 0
    for p in tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        count += 1
        rss += next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
        pss += next(int(x.split()[1]) for x in rollup.splitlines() if x.startswith("Pss:"))
    return rss, pss, count


@dataclass
class Server:
    """A server subprocess and where it logs."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the process (the gunicorn master stops its workers), SIGKILL if stuck."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def spawn(name: str, argv: list[str], log: Path, port: int, env: dict[str, str]) -> Server:
    handle = log.open("wb")
    try:
        proc = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT)
        )
    finally:
        handle.close()
    return Server(name, proc, port, log)


def wait_until(what: str, check: Callable[[], bool], server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited while waiting for {what}:\n{server.tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{server.name}: timed out waiting for {what}:\n{server.tail()}")


def get(port: int, path: str, timeout: float = 120.0) -> tuple[int, bytes]:
    """One GET over a fresh connection, as a scrape with keep-alive off does."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ the two exporters


def start_ours(fake: FakePVE, workdir: Path) -> Server:
    port = free_port()
    config = workdir / "ours.yml"
    config.write_text(
        "timezone: Europe/Berlin\n"
        "sources:\n"
        "  pve1:\n"
        "    kind: proxmox\n"
        f"    url: {fake.url}\n"
        f'    token_id: "{fake.token_id}"\n'
        f'    token_secret: "{fake.token_secret}"\n'
        f"    ca_file: {fake.ca_file}\n"
        f"    interval: {OUR_INTERVAL}s\n"
        "    timeout: 15s\n"
        "    jitter: 1s\n"
    )
    argv = [
        sys.executable,
        "-m",
        "exporter",
        "serve",
        "--config.file",
        str(config),
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--log.level",
        "warning",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return spawn("ours", argv, workdir / "ours.log", port, env)


def ensure_peer(venv: Path) -> Path | None:
    """Return the peer's executable, creating its venv with pip on first use."""
    exe = venv / "bin" / "pve_exporter"
    if exe.exists():
        return exe
    print(f"creating {venv} and installing {PEER_PACKAGE} with pip ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", PEER_PACKAGE],
            check=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        print(
            f"!! could not install {PEER_PACKAGE} into {venv} ({exc}); measuring ours only.",
            file=sys.stderr,
        )
        return None
    return exe if exe.exists() else None


def peer_version(venv: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "show", PEER_PACKAGE],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return next(
        (x.split(":", 1)[1].strip() for x in out.splitlines() if x.startswith("Version:")), "?"
    )


def start_peer(exe: Path, fake: FakePVE, workdir: Path) -> Server:
    port = free_port()
    user, token_name = fake.token_id.split("!", 1)
    config = workdir / "pve.yml"
    config.write_text(
        "default:\n"
        f"  user: {user}\n"
        f"  token_name: {token_name}\n"
        f"  token_value: {fake.token_secret}\n"
        # A CA bundle path: proxmoxer hands it to requests as verify=, so TLS is verified.
        f"  verify_ssl: {fake.ca_file}\n"
    )
    argv = [
        str(exe),
        "--config.file",
        str(config),
        "--web.listen-address",
        f"127.0.0.1:{port}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PVE_", "PYTHON"))}
    return spawn("peer", argv, workdir / "peer.log", port, env)


# ------------------------------------------------------------------ measuring


@dataclass
class Run:
    """The latencies of a series of scrapes and what they cost upstream."""

    latencies: list[float] = field(default_factory=list)  # seconds
    upstream: int = 0  # PVE requests served during the series
    samples: int = 0  # sample lines in the last response

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def per_scrape(self) -> float:
        return self.upstream / len(self.latencies)


def scrape_series(server: Server, path: str, fake: FakePVE, count: int, marker: bytes) -> Run:
    run = Run()
    before = len(fake.scenario.requests)
    body = b""
    for _ in range(count):
        t0 = time.perf_counter()
        status, body = get(server.port, path)
        run.latencies.append(time.perf_counter() - t0)
        if status != 200 or marker not in body:
            raise RuntimeError(f"{server.name}: HTTP {status}: {body[:300]!r}\n{server.tail()}")
    run.upstream = len(fake.scenario.requests) - before
    run.samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return run


def peer_series(peer: Server | None, path: str, fake: FakePVE, count: int) -> Run | None:
    """Scrape the peer; if it fails, say so and let the run finish with ours alone."""
    if peer is None:
        return None
    try:
        return scrape_series(peer, path, fake, count, b"pve_up")
    except (RuntimeError, OSError, http.client.HTTPException) as exc:
        print(f"!! the peer failed, reporting ours only: {exc}", file=sys.stderr)
        return None


@contextlib.contextmanager
def servers(*items: Server | None) -> Iterator[None]:
    try:
        yield
    finally:
        for s in items:
            if s is not None:
                s.stop()


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(ours: float | None, peer: float | None) -> str:
    if ours is None or peer is None or ours <= 0:
        return "-"
    r = peer / ours
    return f"{r:,.0f}x" if r >= 10 else f"{r:.1f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes per exporter (200)")
    parser.add_argument(
        "--slow-scrapes", type=int, default=5, help="peer scrapes against the slow backend (5)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.5, help="seconds per PVE request when slow (0.5)"
    )
    parser.add_argument("--peer-venv", type=Path, default=PEER_VENV)
    parser.add_argument("--no-peer", action="store_true", help="measure ours only")
    args = parser.parse_args()
    n = max(5, min(args.scrapes, MAX_SCRAPES))
    slow_n = max(1, min(args.slow_scrapes, MAX_SLOW_SCRAPES))
    latency = max(0.05, min(args.latency, 2.0))

    exe = None if args.no_peer else ensure_peer(args.peer_venv)
    fakes = Fakes()
    fakes.start()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="scrape-bench-") as tmp:
        workdir = Path(tmp)
        ours = start_ours(fakes.ours, workdir)
        peer = start_peer(exe, fakes.peer, workdir) if exe is not None else None
        peer_path = f"/pve?target=127.0.0.1:{fakes.peer.port}&module=default&cluster=1&node=1"
        try:
            with servers(ours, peer):
                wait_until("/-/ready", lambda: get(ours.port, "/-/ready")[0] == 200, ours, 60)
                # Ready means the first poll is done: its requests are one full poll.
                poll_size = len(fakes.ours.scenario.requests)
                if peer is not None:
                    wait_until("/", lambda: get(peer.port, "/")[0] == 200, peer, 60)
                # Warm up: first requests import lazily and fill caches on both sides.
                for _ in range(3):
                    get(ours.port, "/metrics")
                    if peer is not None:
                        get(peer.port, peer_path)

                print(f"normal backend: {n} sequential scrapes each ...", flush=True)
                ours_run = scrape_series(ours, "/metrics", fakes.ours, n, b"backup_pve_")
                peer_run = peer_series(peer, peer_path, fakes.peer, n)

                print(f"slow backend ({latency} s per PVE request) ...", flush=True)
                fakes.set_latency(latency)
                # Wait for our next background poll to start, then scrape while it runs.
                polled = len(fakes.ours.scenario.requests)
                wait_until(
                    "a background poll",
                    lambda: len(fakes.ours.scenario.requests) > polled,
                    ours,
                    OUR_INTERVAL + 10,
                )
                poll_started = time.monotonic()
                ours_slow = scrape_series(ours, "/metrics", fakes.ours, n, b"backup_pve_")
                during = time.monotonic() - poll_started
                in_flight = len(fakes.ours.scenario.requests) - polled
                peer_slow = peer_series(peer, peer_path, fakes.peer, slow_n) if peer_run else None
                fakes.set_latency(0.0)
                ours_mem = memory_kib(ours.proc.pid)
                peer_mem = memory_kib(peer.proc.pid) if peer is not None and peer_run else None
        finally:
            fakes.stop()

    elapsed = time.monotonic() - started
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    print()
    print(
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}"
        + (f", {PEER_PACKAGE} {peer_version(args.peer_venv)}" if peer is not None else "")
    )
    peer_note = f", {slow_n} of the peer" if peer_run is not None else ""
    print(
        f"{n} scrapes each; slow backend: {latency} s per PVE request, "
        f"{n} scrapes of ours{peer_note}"
    )
    print()

    def row(
        label: str, o: float | None, p: float | None, digits: int = 1, cmp: bool = True
    ) -> None:
        r = ratio(o, p) if cmp else "-"
        print(f"{label:<34}{fmt(o, digits):>10}{fmt(p, digits):>10}{r:>12}")

    pr, ps = peer_run, peer_slow
    print(f"{'':<34}{'ours':>10}{'peer':>10}{'peer/ours':>12}")
    row("scrape p50 (ms)", ours_run.p50, pr.p50 if pr else None)
    row("scrape p95 (ms)", ours_run.pct(0.95), pr.pct(0.95) if pr else None)
    row("scrape max (ms)", max(ours_run.latencies) * 1000, max(pr.latencies) * 1000 if pr else None)
    row("PVE requests per scrape", ours_run.per_scrape, pr.per_scrape if pr else None, cmp=False)
    row("samples per scrape", ours_run.samples, pr.samples if pr else None, 0, cmp=False)
    row("RSS (MiB)", ours_mem[0] / 1024, peer_mem[0] / 1024 if peer_mem else None)
    row("PSS (MiB)", ours_mem[1] / 1024, peer_mem[1] / 1024 if peer_mem else None)
    row("processes", ours_mem[2], peer_mem[2] if peer_mem else None, 0, cmp=False)
    row("slow backend p50 (ms)", ours_slow.p50, ps.p50 if ps else None)
    row("slow backend max (ms)", max(ours_slow.latencies) * 1000,
        max(ps.latencies) * 1000 if ps else None)  # fmt: skip
    row("slow PVE requests per scrape", ours_slow.per_scrape, ps.per_scrape if ps else None,
        2, cmp=False)  # fmt: skip
    print()
    print(
        f"ours: one background poll = {poll_size} PVE requests every {OUR_INTERVAL} s here "
        "(5 min by default), whatever the scrape rate."
    )
    print(
        f"ours, slow row: the {n} scrapes ran {during:.2f} s from the moment our background "
        f"poll's first request reached the slow fake; "
        + (
            f"the poll was still running at their end ({in_flight} of its {poll_size} "
            "requests had arrived), so no scrape waited for PVE."
            if in_flight < poll_size
            else f"all {poll_size} of its requests arrived meanwhile."
        )
    )
    print(f"total run time {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
