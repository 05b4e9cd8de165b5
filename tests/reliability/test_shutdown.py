"""Shutdown: SIGTERM while every kind is stuck mid-poll ends a real ``serve`` within 5 s.

One ``backup-exporter serve`` subprocess watches a source of each kind it can reach from a
subprocess: ``proxmox``, ``truenas`` and ``healthchecks`` (the fakes, told to hang), ``s3``
(a server that accepts and never answers), ``zfs`` and ``smartctl`` (a ``command_prefix``
that sleeps, one of them ignoring SIGTERM) and ``files`` (a hung mount). ``b2`` is not in
it: b2sdk always talks to Backblaze's own realm (no endpoint to point at 127.0.0.1), and the
in-process simulator cannot be handed to another process; its hang is in the fault matrix.

First every source polls once, healthy, so the state database has something to flush; then
everything hangs, the next polls start, and SIGTERM must end the process cleanly (status 0)
within 5 s with the first polls' results in the database. A second SIGTERM during the
shutdown exits at once (status 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from exporter.core.clock import SystemClock
from exporter.sim import homelab as lab_module
from exporter.sim.healthchecks import homelab as hc_homelab
from exporter.sim.healthchecks import start_fake_healthchecks
from exporter.sim.pve import homelab as pve_homelab
from exporter.sim.pve import start_fake_pve
from exporter.sim.truenas import homelab as truenas_homelab
from exporter.sim.truenas import start_fake_truenas
from reliability.rigs import HOOK, alive

HERE = Path(__file__).resolve().parent
KINDS = {"proxmox", "truenas", "healthchecks", "s3", "zfs", "smartctl", "files"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backends:
    """Every backend, healthy until :meth:`hang`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clock = SystemClock()
        self.held: list[asyncio.StreamWriter] = []

    async def start(self) -> dict[str, Any]:
        self.pve = await start_fake_pve(pve_homelab(self.clock.time, tz=lab_module.TZ))
        self.nas = await start_fake_truenas(truenas_homelab(self.clock.time, tz=lab_module.TZ))
        self.hc = await start_fake_healthchecks(hc_homelab(self.clock.time))
        self.s3 = await asyncio.start_server(self._black_hole, "127.0.0.1", 0)
        s3_port = self.s3.sockets[0].getsockname()[1]
        self.ha = self.tmp / "ha"
        lab_module._seed_files(self.ha, self.clock.time())
        self.control = self.tmp / "cmd.json"
        self.pids = self.tmp / "pids"
        self.pids.write_text("")
        self._command("ok")
        self.fifo = self.tmp / "mount.fifo"
        os.mkfifo(self.fifo)
        (self.tmp / "hooks").mkdir()
        (self.tmp / "hooks" / "sitecustomize.py").write_text(HOOK)
        self.files_ctl = self.tmp / "files.json"
        self._files("ok")
        prefix = [sys.executable, str(HERE / "faulty_cmd.py"), str(self.control), "--"]
        common = {"interval": "3s", "timeout": "2500ms"}
        return {
            "state_path": str(self.tmp / "state.db"),
            "sources": {
                "pve1": {"kind": "proxmox", "url": self.pve.url, "token_id": self.pve.token_id,
                         "token_secret": self.pve.token_secret, "ca_file": self.pve.ca_file,
                         **common},
                "nas": {"kind": "truenas", "url": self.nas.url, "username": self.nas.username,
                        "api_key": self.nas.api_key, "ca_file": self.nas.ca_file, **common},
                "hc": {"kind": "healthchecks", "url": self.hc.url,
                       "api_key": self.hc.scenario.readonly_key, **common},
                "storj": {"kind": "s3", "endpoint": f"http://127.0.0.1:{s3_port}",
                          "access_key_id": "a", "secret_access_key": "b", "retries": 0,
                          "buckets": {"b": {"prefixes": ["x/"], "interval": "1s"}}, **common},
                "pool": {"kind": "zfs", "json": "true", "command_prefix": prefix, **common},
                "smart": {"kind": "smartctl", "devices": ["/dev/nvme0"],
                          "command_prefix": prefix, "device_timeout": "2s", **common},
                "ha": {"kind": "files", "path": str(self.ha), "glob": "*.tar", **common},
            },
        }  # fmt: skip

    async def _black_hole(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held.append(writer)

    def _command(self, mode: str) -> None:
        self.control.write_text(json.dumps({"mode": mode, "pids": str(self.pids)}))

    def _files(self, mode: str) -> None:
        self.files_ctl.write_text(
            json.dumps({"mode": mode, "dir": str(self.ha), "fifo": str(self.fifo)})
        )

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.tmp / "hooks"),
                "RELIABILITY_FILES_CTL": str(self.files_ctl)}  # fmt: skip

    def hang(self, command: str = "ignore-term") -> None:
        self.pve.scenario.hang()
        self.nas.scenario.hang()
        self.hc.scenario.hang()
        self._command(command)
        self._files("hung-mount")

    async def stop(self) -> None:
        self.pve.scenario.release()
        self.nas.scenario.release()
        self.hc.scenario.release()
        fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        os.close(fd)
        for writer in self.held:
            writer.close()
        self.s3.close()
        await self.pve.stop()
        await self.nas.stop()
        await self.hc.stop()


async def serve(backends: Backends, doc: dict[str, Any]) -> tuple[asyncio.subprocess.Process, int]:
    config = backends.tmp / "config.yml"
    config.write_text(yaml.safe_dump(doc))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "serve", "--config.file", str(config),
        "--web.listen-address", f"127.0.0.1:{port}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=backends.env(), cwd=backends.tmp,
    )  # fmt: skip
    return proc, port


async def metrics(port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        return await resp.text()


async def wait_for(check: Any, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            if await check():
                return
        except (aiohttp.ClientError, OSError):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def up_sources(text: str) -> set[str]:
    return {
        line.split('source="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("backup_source_up{") and line.endswith(" 1.0")
    }


async def test_sigterm_mid_poll_of_every_kind_exits_cleanly_and_flushes(tmp_path: Path) -> None:
    backends = Backends(tmp_path)
    doc = await backends.start()
    names = set(doc["sources"]) - {"storj"}  # the black hole never answers, not even once
    assert {s["kind"] for s in doc["sources"].values()} == KINDS
    proc, port = await serve(backends, doc)
    try:
        await wait_for(lambda: _has(port, names), "every first poll")
        backends.hang()
        polled = len(backends.pve.scenario.requests)
        await wait_for(lambda: _stuck(backends, polled), "the next polls to hang", 20)
        elapsed, err = await terminate(proc, signals=1)
    finally:
        await reap(proc, backends)
    assert elapsed < 5, f"SIGTERM took {elapsed:.1f}s"
    assert proc.returncode == 0, err.decode()[-2000:]
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {row[0] for row in db.execute("SELECT source FROM source_result")}
    assert names <= stored, f"results not flushed: {names - stored}"
    assert not alive(backends.pids), "commands outlived the exporter"


async def test_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    backends = Backends(tmp_path)
    doc = await backends.start()
    backends.hang()
    proc, port = await serve(backends, doc)
    try:
        await wait_for(lambda: _answers(port), "the exporter to listen")
        await wait_for(lambda: _stuck(backends, 0), "the first polls to hang", 20)
        elapsed, err = await terminate(proc, signals=2)
    finally:
        await reap(proc, backends)
    assert elapsed < 1.0, f"the second SIGTERM took {elapsed:.1f}s"
    # Status 1 from the handler ("second SIGTERM: exiting at once"), or, when the event loop
    # had already ended and the interpreter was joining a stuck worker thread, the signal's
    # default action: either way at once.
    assert proc.returncode in (1, -signal.SIGTERM), err.decode()[-2000:]
    if proc.returncode == 1:
        assert "second SIGTERM: exiting at once" in err.decode()


async def terminate(proc: asyncio.subprocess.Process, *, signals: int) -> tuple[float, bytes]:
    """Send SIGTERM ``signals`` times (50 ms apart); the seconds from the last to the exit."""
    for n in range(signals):
        if n:
            await asyncio.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    return time.monotonic() - started, err


async def reap(proc: asyncio.subprocess.Process, backends: Backends) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    await backends.stop()


async def _has(port: int, names: set[str]) -> bool:
    return names <= up_sources(await metrics(port))


async def _answers(port: int) -> bool:
    await metrics(port)
    return True


async def _stuck(backends: Backends, polled: int) -> bool:
    """PVE has a held request and a hung command is running."""
    pids = backends.pids.read_text().split()
    return len(backends.pve.scenario.requests) > polled and len(pids) > 0
