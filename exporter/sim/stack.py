"""Run the real Prometheus and Alertmanager (Debian packages) on 127.0.0.1.

Used by ``make demo`` and the end-to-end tests. The Alertmanager gets the shipped routes and
inhibition rules with every receiver pointed at a local webhook, so nothing outside this
machine is ever contacted (the shipped config's ntfy, e-mail and Healthchecks URLs are
placeholders).
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import subprocess
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
ALERTS_DIR = ROOT / "alerts"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager.yml"
SCRAPE_JOB = "backup-exporter"


class StackError(RuntimeError):
    """A daemon is missing or did not become ready."""


def binary(name: str) -> str:
    """Return the path of a Debian binary, or raise with how to install it."""
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} not found: install the Debian packages (make debs)")
    return found


def local_alertmanager_config(
    webhook_url: str | None, source: Path = ALERTMANAGER_CONFIG
) -> dict[str, Any]:
    """Return the shipped config with every receiver replaced by ``webhook_url`` (or none).

    Routes and inhibit rules stay as they are; ``send_resolved`` is on so resolves arrive.
    """
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    local = copy.deepcopy(config)
    local.pop("global", None)  # SMTP settings only matter to e-mail integrations
    receivers = []
    for receiver in local["receivers"]:
        stripped: dict[str, Any] = {"name": receiver["name"]}
        if webhook_url is not None:
            stripped["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
        receivers.append(stripped)
    local["receivers"] = receivers
    return local


def fast_rules(
    target: Path, *, for_seconds: int = 0, keep: Collection[str] = ("BackupExporterAbsent",)
) -> list[Path]:
    """Copy the alert rules into ``target`` with every ``for:`` set to ``for_seconds``.

    The promtool unit tests cover the ``for`` durations; a live test wants alerts at once.
    Alerts named in ``keep`` keep their ``for``: ``BackupExporterAbsent`` is true in the
    seconds before Prometheus' first scrape, which its real ``for`` exists to ride out.
    """
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for path in sorted(ALERTS_DIR.glob("*.rules.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "for" in rule and rule.get("alert") not in keep:
                    rule["for"] = f"{for_seconds}s"
        dest = target / path.name
        dest.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(dest)
    return out


def prometheus_config(
    *,
    exporter: str,
    alertmanager: str | None,
    rule_files: Iterable[Path],
    interval: str = "15s",
) -> dict[str, Any]:
    """Return a Prometheus config scraping ``exporter`` as job ``backup-exporter``."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": SCRAPE_JOB,
                "scrape_interval": interval,
                "scrape_timeout": "5s" if interval not in ("1s", "2s") else "1s",
                "static_configs": [{"targets": [exporter]}],
            }
        ],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


@dataclass
class Daemon:
    """A started binary, its address and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    async def wait_ready(self, path: str, *, within: float = 30.0) -> None:
        """Poll ``url + path`` until it answers 200; fail with the log tail if it dies."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with aiohttp.ClientSession() as http:
            while True:
                if self.process.poll() is not None:
                    raise StackError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
                try:
                    async with http.get(self.url + path) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline:
                    raise StackError(f"{self.name} not ready after {within:g}s")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        """Terminate the daemon and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _start(
    name: str, exe: str, workdir: Path, *, port: int, config: dict[str, Any], args: list[str]
) -> Daemon:
    """Write ``config``, start ``exe`` on 127.0.0.1:``port`` and wait for ``/-/ready``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / f"{name}.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [binary(exe), f"--config.file={config_file}", f"--web.listen-address=127.0.0.1:{port}"]
    return await start_daemon(name, [*argv, *args], port=port, log=workdir / f"{name}.log")


async def start_daemon(name: str, argv: list[str], *, port: int, log: Path) -> Daemon:
    """Run ``argv`` (listening on 127.0.0.1:``port``), logging to ``log``; wait for /-/ready."""
    with log.open("wb") as out:
        # Popen returns at once; the daemon runs until Daemon.stop().
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    daemon = Daemon(name=name, process=process, url=f"http://127.0.0.1:{port}", log=log)
    try:
        await daemon.wait_ready("/-/ready")
    except BaseException:
        daemon.stop()
        raise
    return daemon


async def start_webhook(
    on_payload: Callable[[dict[str, Any]], None], *, port: int
) -> web.AppRunner:
    """Serve ``POST /hook`` on 127.0.0.1:``port``, handing each Alertmanager payload over.

    The caller cleans the returned runner up.
    """

    async def hook(request: web.Request) -> web.Response:
        on_payload(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def start_prometheus(
    workdir: Path, *, port: int, config: dict[str, Any], extra_args: Iterable[str] = ()
) -> Daemon:
    """Start Prometheus on 127.0.0.1:``port`` with ``config``; wait until it is ready."""
    args = [f"--storage.tsdb.path={workdir / 'data'}", *extra_args]
    return await _start("prometheus", "prometheus", workdir, port=port, config=config, args=args)


async def start_alertmanager(
    workdir: Path, *, port: int, config: dict[str, Any], extra_args: Iterable[str] = ()
) -> Daemon:
    """Start Alertmanager on 127.0.0.1:``port``; wait until it is ready.

    Clustering is off unless ``extra_args`` set ``--cluster.listen-address`` (and its peers).
    """
    extra = list(extra_args)
    args = [f"--storage.path={workdir / 'am-data'}", *extra]
    if not any(a.startswith("--cluster.listen-address=") for a in extra):
        # An empty value disables clustering, which would otherwise bind 0.0.0.0:9094.
        args.append("--cluster.listen-address=")
    return await _start(
        "alertmanager", "prometheus-alertmanager", workdir, port=port, config=config, args=args
    )
