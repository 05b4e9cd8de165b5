"""Command line of ``backup-exporter``.

Commands: ``serve`` (default), ``check-config``, ``once``, ``config schema``, ``schedule``,
``backtest``, ``report``, ``record`` / ``records`` (verification records) and ``demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from exporter import __version__
from exporter.core.app import build_pollers, create_app
from exporter.core.clock import SystemClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import Config, ConfigError, config_schema, load_config
from exporter.core.state import StateKeeper, default_state_path
from exporter.web.config import WebConfigError
from exporter.web.security import Listener, WebSecurity

log = logging.getLogger("exporter")

DEFAULT_CONFIG = "/etc/backup-exporter/config.yml"
DEFAULT_LISTEN = ":9879"
EXIT_CONFIG = 2


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=… logger=… msg="…"`` lines, as Prometheus' own binaries log."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record as logfmt."""
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        line = f'ts={ts} level={record.levelname.lower()} logger={record.name} msg="{msg}"'
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", "\\n").replace('"', "'")
            line += f' exc="{exc}"'
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record as JSON."""
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(level: str, fmt: str) -> None:
    """Send logs to stderr in logfmt or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party clients log request URLs at debug level; keep them quiet.
    for noisy in ("urllib3", "botocore", "boto3", "b2sdk", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backup-exporter",
        description="Prometheus exporter that checks every backup happened, on time.",
    )
    parser.add_argument("--version", action="version", version=f"backup-exporter {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log.level", dest="log_level", default="info",
                        choices=["debug", "info", "warning", "error"])  # fmt: skip
    common.add_argument("--log.format", dest="log_format", default="logfmt",
                        choices=["logfmt", "json"])  # fmt: skip
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", parents=[common], help="run the exporter (default)")
    serve.add_argument("--config.file", dest="config_file", default=DEFAULT_CONFIG)
    serve.add_argument("--web.listen-address", dest="listen", default=DEFAULT_LISTEN,
                       help=f"host:port to listen on (default {DEFAULT_LISTEN})")  # fmt: skip
    _web_flags(serve)
    check = sub.add_parser("check-config", parents=[common], help="validate a config file")
    check.add_argument("file", nargs="?", help="the config file (or --config.file)")
    check.add_argument("--config.file", dest="config_file", default=None)
    check.add_argument("--web.config.file", dest="web_config_file", default=None,
                       help="also validate this web config file")  # fmt: skip
    once = sub.add_parser("once", parents=[common], help="poll every source once and print")
    once.add_argument("--config.file", dest="config_file", default=DEFAULT_CONFIG)
    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cfg_sub.add_parser("schema", help="print the JSON Schema (draft 2020-12) of the config file")
    sched = sub.add_parser("schedule", parents=[common], help="print the next start times")
    sched.add_argument("expression")
    sched.add_argument("--tz", default="UTC", help="IANA time zone (default UTC)")
    sched.add_argument("--after", help="ISO 8601 start instant (default now)")
    sched.add_argument("--count", type=int, default=5)
    back = sub.add_parser(
        "backtest", parents=[common], help="replay the stored run history at every deadline"
    )
    back.add_argument("--config.file", dest="config_file", default=DEFAULT_CONFIG)
    back.add_argument("--from", dest="since", help="ISO 8601 date or time (default: all history)")
    back.add_argument("--to", dest="until", help="ISO 8601 date or time (default: now)")
    back.add_argument("--job", help="one job: its name or source/name/vmid")
    _record_parsers(sub, common)
    demo = sub.add_parser("demo", parents=[common], help="run the simulated homelab ([demo] extra)")
    demo.add_argument("--workdir", default="demo-data", help="where state and configs go")
    demo.add_argument("--no-stack", action="store_true", help="no Prometheus/Alertmanager")
    demo.add_argument(
        "--speed", type=float, default=1.0, help="run simulated time N times faster (default 1)"
    )
    report = sub.add_parser(
        "report", parents=[common], help="render the living strategy report (Markdown or HTML)"
    )
    report.add_argument("--config.file", dest="config_file", default=DEFAULT_CONFIG)
    report.add_argument("--format", choices=("markdown", "html"), default="markdown")
    report.add_argument("--output", help="write to this file (default: standard output)")
    report.add_argument(
        "--url", help="a running exporter (its /api/status); default: the state database"
    )
    return parser


def _web_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="TLS and basic auth, in the Prometheus exporter-toolkit web config format; "
        "re-read on SIGHUP",
    )
    parser.add_argument(
        "--web.health-path",
        dest="health_paths",
        action="append",
        default=[],
        metavar="PATH",
        help="a path served without authentication, e.g. /-/healthy (repeatable; default none)",
    )


def _web_security(path: str | None, health_paths: Sequence[str]) -> WebSecurity | None:
    try:
        security = WebSecurity(path, health_paths=health_paths)
    except WebConfigError as exc:
        for item in exc.problems:
            print(f"{path}: {item}" if path else item, file=sys.stderr)
        return None
    return security


def _check_config(args: argparse.Namespace) -> int:
    path = args.config_file or args.file
    if path is None or (args.file and args.config_file and args.file != args.config_file):
        print("check-config: give the config file once (FILE or --config.file)", file=sys.stderr)
        return EXIT_CONFIG
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    if args.web_config_file is not None:
        security = _web_security(args.web_config_file, ())
        if security is None:
            return EXIT_CONFIG
        security.close()
        print(f"{args.web_config_file}: OK, {security.describe()}")
    print(f"{path}: OK, {len(config.sources)} sources, {len(config.jobs)} jobs")
    return 0


def _record_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    from exporter.assets.records import ACTIVITIES, DEPTHS, RESULTS  # noqa: PLC0415

    rec = sub.add_parser(
        "record", parents=[common], help="append a verification record (restore test, ...)"
    )
    rec.add_argument("activity", choices=ACTIVITIES)
    rec.add_argument("--asset", required=True, help="an asset of the assets: section")
    rec.add_argument("--result", required=True, choices=RESULTS)
    rec.add_argument("--note", default="", help="what was done (free text)")
    rec.add_argument("--at", help="ISO 8601 time it was done (default now; config timezone)")
    rec.add_argument("--depth", choices=DEPTHS, help="how deep it verified")
    rec.add_argument("--config.file", dest="config_file", default=DEFAULT_CONFIG)
    recs = sub.add_parser("records", parents=[common], help="list the verification records")
    recs.add_argument("--asset", help="only this asset's records")
    recs.add_argument("--config.file", dest="config_file", default=DEFAULT_CONFIG)


def _record(config: Config, args: argparse.Namespace) -> int:
    """Append one record straight to the store: one transaction, safe beside the exporter."""
    from exporter.assets.records import RecordError, make_record  # noqa: PLC0415
    from exporter.core.store import StateError, StateStore  # noqa: PLC0415

    zone = ZoneInfo(config.timezone)
    data = {"activity": args.activity, "asset": args.asset, "result": args.result}
    data.update({k: v for k in ("note", "at", "depth") if (v := getattr(args, k))})
    try:
        record = make_record(data, assets=config.assets, origin="cli", now=time.time(), zone=zone)
    except RecordError as exc:
        print(f"record: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if config.state_path is None and not os.environ.get("STATE_DIRECTORY"):
        # The default would be ./state.db here: a record the exporter would never see.
        print(
            "record: set state_path in the config (the exporter's state database), "
            "or STATE_DIRECTORY as the exporter's unit has it",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    path = state_path(config)
    try:
        store = StateStore(path)
        try:
            rid = store.add_record(**asdict(record), now=time.time())
        finally:
            store.close()
    except StateError as exc:
        print(f"{path}: {exc.message}", file=sys.stderr)
        return 1
    when = datetime.fromtimestamp(record.at, zone).isoformat(timespec="seconds")
    # Printed only once the transaction has committed: the record is durable from here on.
    print(f"recorded {rid}: {record.activity} {record.asset} {record.result} at {when}", flush=True)
    return 0


def _records(config: Config, args: argparse.Namespace) -> int:
    from exporter.core.store import StateError, StateStore  # noqa: PLC0415

    if args.asset is not None and args.asset not in config.assets:
        known = ", ".join(sorted(config.assets)) or "none"
        print(
            f"--asset: {args.asset!r} is not a configured asset (known: {known})", file=sys.stderr
        )
        return EXIT_CONFIG
    path = state_path(config)
    if not path.is_file():
        print(f"{path}: no state database yet, so no records", file=sys.stderr)
        return 0
    try:
        store = StateStore(path)
        try:
            rows = store.records(asset=args.asset)
        finally:
            store.close()
    except StateError as exc:
        print(f"{path}: {exc.message}", file=sys.stderr)
        return 1
    zone = ZoneInfo(config.timezone)
    print("id\tat\tactivity\tasset\tresult\tdepth\torigin\tnote")
    for r in rows:
        when = datetime.fromtimestamp(r.at, zone).isoformat(timespec="seconds")
        note = r.note.replace("\t", " ").replace("\n", " ")
        fields = (r.id, when, r.activity, r.asset, r.result, r.depth or "-", r.origin, note)
        print("\t".join(map(str, fields)))
    return 0


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return None


def _split_listen(address: str) -> tuple[str | None, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    return (host or None), int(port)


def state_path(config: Config) -> Path:
    """Return the state database of ``config``: ``state_path``, else the systemd/cwd default."""
    return config.state_path or default_state_path()


#: SIGTERM must end the process within 5 s (systemd's stop, a container runtime's grace):
#: cleanup gets this long, then a watchdog ends the process whatever is still running.
SHUTDOWN_GRACE = 3.0
#: In-flight requests get this long when the listener closes (aiohttp's default is 60 s).
REQUEST_GRACE = 1.0


def _force_exit(why: str, status: int) -> None:
    """Log, flush and end the process now: no thread, child or atexit hook can hold it."""
    log.warning("%s", why)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(status)


def _start_watchdog(grace: float) -> None:
    """End the process ``grace`` seconds from now unless it has exited by then."""

    def watch() -> None:
        time.sleep(grace)
        _force_exit(f"shutdown did not finish within {grace:g}s; exiting now", 1)

    threading.Thread(target=watch, name="shutdown-watchdog", daemon=True).start()


async def _serve(config: Config, listen: str, security: WebSecurity | None = None) -> None:
    """Serve until SIGTERM/SIGINT; the shutdown is bounded.

    The first signal cancels the pollers (a running scan child is killed, sockets closed),
    closes the listener (in-flight requests get ``REQUEST_GRACE``) and flushes the state
    store, all within ``SHUTDOWN_GRACE``; a watchdog ends the process (status 1) one second
    after that if it has not exited, e.g. because the interpreter's exit joins a worker
    thread stuck in a blocking call. A second signal ends it at once (status 1).
    SIGHUP re-reads the web config (``--web.config.file``); a broken file keeps the old one.
    """
    security = security or WebSecurity(None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            _force_exit(f"second {signame}: exiting at once", 1)
        log.info("shutting down")
        _start_watchdog(SHUTDOWN_GRACE + 1.0)
        stop.set()

    # Handlers first: a SIGTERM while the state loads or the port opens is a shutdown too.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    reloads: set[asyncio.Task[bool]] = set()

    def on_hangup() -> None:
        task = asyncio.create_task(listener.reload(), name="web-config-reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    app = create_app(
        config, keeper=StateKeeper(state_path(config)), middlewares=[security.middleware]
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=REQUEST_GRACE)
    await runner.setup()
    host, port = _split_listen(listen)
    listener = Listener(runner, security, host, port)
    await listener.start()
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    log.info("listening on %s with %d sources (%s)", listen, len(config.sources),
             security.describe())  # fmt: skip
    await stop.wait()
    try:
        async with asyncio.timeout(SHUTDOWN_GRACE):
            await runner.cleanup()
    except TimeoutError:
        _force_exit(f"cleanup did not finish within {SHUTDOWN_GRACE:g}s; exiting now", 1)
    listener.close()
    security.close()
    # Leaving here, the interpreter joins worker threads at exit; one stuck in a blocking
    # call that never returns (an SDK on a dead connection) is what the watchdog ends.


async def _once(config: Config) -> tuple[bytes, bool]:
    clock = SystemClock()
    pollers = build_pollers(config, clock=clock)
    try:
        await asyncio.gather(*(p.poll_once() for p in pollers))
    finally:
        for p in pollers:
            await p.source.close()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        SnapshotCollector(pollers, clock=clock, jobs=config.jobs, assets=config.assets)
    )
    return generate_latest(registry), all(p.state.up for p in pollers)


def _schedule(args: argparse.Namespace) -> int:
    from exporter.schedule.expressions import ScheduleError, upcoming  # noqa: PLC0415

    try:
        after = datetime.fromisoformat(args.after) if args.after else datetime.now(UTC)
    except ValueError:
        print(f"--after: not an ISO 8601 timestamp: {args.after!r}", file=sys.stderr)
        return EXIT_CONFIG
    if after.tzinfo is None:
        from zoneinfo import ZoneInfo  # noqa: PLC0415

        try:
            after = after.replace(tzinfo=ZoneInfo(args.tz))
        except (KeyError, ValueError):
            print(f"--tz: unknown time zone {args.tz!r}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        for line in upcoming(args.expression, tz=args.tz, after=after, count=args.count):
            print(line)
    except ScheduleError as exc:
        print(f"{args.expression!r}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _instant(text: str | None, zone: ZoneInfo, default: float | None) -> float | None:
    if text is None:
        return default
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=zone)).timestamp()


def _backtest(config: Config, args: argparse.Namespace) -> int:
    from exporter.core.backtest import run_backtest  # noqa: PLC0415
    from exporter.core.store import StateError  # noqa: PLC0415

    zone = ZoneInfo(config.timezone)
    try:
        since = _instant(args.since, zone, None)
        until = _instant(args.until, zone, datetime.now(UTC).timestamp())
    except ValueError as exc:
        print(f"--from/--to: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    assert until is not None
    path = state_path(config)
    if not path.is_file():
        print(f"{path}: no state database yet (run the exporter first)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        results, text = run_backtest(path, start=since, end=until, job=args.job, zone=zone)
    except StateError as exc:
        print(f"{path}: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    if args.job is not None and not results:
        print(f"--job: no job {args.job!r} in {path}", file=sys.stderr)
        return EXIT_CONFIG
    sys.stdout.write(text)
    return 0


def _report(config: Config, args: argparse.Namespace) -> int:
    from exporter.status import report  # noqa: PLC0415

    if args.url:
        try:
            doc = report.fetch_status(args.url)
        except (OSError, ValueError) as exc:
            print(f"--url: cannot read the status of {args.url}: {exc}", file=sys.stderr)
            return 1
        origin = f"the running exporter at {args.url}"
    else:
        path = state_path(config)
        if not path.is_file():
            print(f"{path}: no state database yet (run the exporter, or pass --url)",
                  file=sys.stderr)  # fmt: skip
            return EXIT_CONFIG
        doc = asyncio.run(report.status_from_store(config, path))
        origin = f"the state database {path}"
    text = report.write_report(doc, fmt=args.format, origin=origin)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from exporter.sim import demo  # noqa: PLC0415 - only with the optional [demo] extra
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing in ("", "exporter"):
            raise  # a bug of ours, not a missing extra
        print(
            "backup-exporter demo needs the demo extra: "
            f"pip install 'backup-exporter[demo]' (missing: {missing})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if not 1 <= args.speed <= 100_000:
        print("--speed: must be between 1 and 100000", file=sys.stderr)
        return EXIT_CONFIG
    return demo.main(Path(args.workdir), with_stack=not args.no_stack, speed=args.speed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")
    args = _parser().parse_args(argv)
    if args.command == "config":
        print(json.dumps(config_schema(), indent=2))
        return 0
    setup_logging(args.log_level, args.log_format)
    if args.command == "schedule":
        return _schedule(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "check-config":
        return _check_config(args)
    config = _load(args.config_file)
    if config is None:
        return EXIT_CONFIG
    if args.command == "backtest":
        return _backtest(config, args)
    if args.command == "report":
        return _report(config, args)
    if args.command == "record":
        return _record(config, args)
    if args.command == "records":
        return _records(config, args)
    if args.command == "once":
        text, ok = asyncio.run(_once(config))
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
        return 0 if ok else 1
    # A bad web config fails here, before anything starts (exit 2, like a bad config).
    security = _web_security(args.web_config_file, args.health_paths)
    if security is None:
        return EXIT_CONFIG
    asyncio.run(_serve(config, args.listen, security))
    return 0
