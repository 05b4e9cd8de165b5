"""``backup-exporter demo`` as a newcomer runs it: the page within 60 s, the problems firing.

The demo is started as `make demo` starts it (a subprocess on its fixed 127.0.0.1 ports, with
the real Prometheus and Alertmanager), and stopped with Ctrl-C's SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from exporter.sim.demo import ALERTMANAGER_PORT, EXPORTER_PORT, PROMETHEUS_PORT, WEBHOOK_PORT

PAGE_WITHIN = 60.0  # the promise, from a warm package cache
ALERTS_WITHIN = 150.0
# The reference homelab's problems, as alerts: the stalled Storj sync, guest 101, the drifted
# NFS export, an asset without an offsite copy within its RPO, the never-done restore tests.
PROBLEMS = {
    "BackupJobOverdue",
    "BackupPveGuestNotBackedUp",
    "BackupPolicyDrift",
    "BackupAssetNoOffsiteCopy",
    "BackupRestoreTestOverdue",
}


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


def firing() -> set[str]:
    text = get(f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/alerts")
    if text is None:
        return set()
    alerts = json.loads(text)["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def test_make_demo_shows_the_page_in_60s_and_its_prometheus_fires_the_problems(
    tmp_path: Path,
) -> None:
    for port in (EXPORTER_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT, WEBHOOK_PORT):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"port {port} is taken: the demo listens on it")
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--workdir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        page = None
        while time.monotonic() - started < PAGE_WITHIN:
            page = get(f"http://127.0.0.1:{EXPORTER_PORT}/")
            if page and "assets need attention" in page:
                break
            assert proc.poll() is None, "the demo exited early"
            time.sleep(0.5)  # polling a condition on a running process
        assert page and "assets need attention" in page, "no verdict on the page within 60 s"
        seen: set[str] = set()
        while time.monotonic() - started < ALERTS_WITHIN and not seen >= PROBLEMS:
            seen = firing()
            time.sleep(1)  # polling a condition on a running process
        assert seen >= PROBLEMS, f"firing: {sorted(seen)}; missing {sorted(PROBLEMS - seen)}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Verdict:" in out, out[-3000:]
    assert "prometheus    http://127.0.0.1:" in out
