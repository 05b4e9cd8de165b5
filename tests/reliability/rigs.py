"""One rig per source kind: the real client against a fake or peer, with faults to inject.

HTTP kinds (``proxmox``, ``truenas``, ``healthchecks``, ``s3``) talk to the project's fakes
(moto's server for S3) through :class:`faults.FaultProxy` at :data:`faults.FAKE_HOST`, with
TLS from a test CA. ``b2`` runs b2sdk against its own ``RawSimulator`` (there is no B2 HTTP
server to stand in front of): its faults are raised by the raw API as the exceptions b2sdk's
HTTP layer turns each HTTP condition into (b2sdk/_internal/b2http.py ``_translate_errors``
and b2sdk/_internal/exception.py ``interpret_b2_error``). The CLI kinds (``zfs``,
``smartctl``) run through ``command_prefix`` (:mod:`faulty_cmd`), and ``files`` scans a real
folder whose scan child an audit hook makes hang or fail with EACCES.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from b2sdk.v3 import B2Api, B2HttpApiConfig, InMemoryAccountInfo, RawSimulator
from b2sdk.v3.exception import (
    AccessDenied,
    B2ConnectionError,
    InvalidJsonResponse,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    UnknownHost,
)

from exporter.core.clock import FakeClock
from exporter.core.config import SourceConfig
from exporter.sim import homelab as lab
from exporter.sim.healthchecks import homelab as hc_homelab
from exporter.sim.healthchecks import start_fake_healthchecks
from exporter.sim.pve import homelab as pve_homelab
from exporter.sim.pve import start_fake_pve
from exporter.sim.truenas import homelab as truenas_homelab
from exporter.sim.truenas import start_fake_truenas
from exporter.sources import build_source
from exporter.sources.b2.source import B2Source
from exporter.sources.base import Source
from reliability.faults import HTTP_FAULTS, RETRY_AFTER, FaultProxy, TestCA

TIMEOUT = "2s"  # generous: CI machines are shared; a hang costs two of these
#: The expected reason of each HTTP fault; a rig overrides where its backend differs.
HTTP_REASONS: dict[str, str] = {
    "hang": "timeout",
    "http500": "http",
    "http503": "http",
    "http429": "http",
    "http429-date": "http",
    "truncated": "connection",
    "malformed": "parse",
    "wrong-shape": "parse",
    "tls-wrong-ca": "tls",
    "tls-expired": "tls",
    "http401": "auth",
    "http403": "permission",
    "refused": "connection",
    "dns": "connection",
    "trickle": "timeout",
}
CLI_FAULTS = ("hang", "garbage", "malformed", "wrong-shape", "ignore-term")
FILES_FAULTS = ("unreadable", "hung-mount")
ALL_FAULTS = tuple(dict.fromkeys((*HTTP_FAULTS, *CLI_FAULTS, *FILES_FAULTS)))
RETRY_FAULTS = frozenset({"http429", "http429-date", "http503"})

NA_CLI = "a command, not HTTP: no status, TLS or DNS (ssh's own failures are exit codes)"
NA_HTTP_ONLY = "not a command or a mount"


class Rig:
    """The fake behind one kind and the faults it can suffer."""

    kind = ""
    reasons: ClassVar[dict[str, str]] = {}
    na: ClassVar[dict[str, str]] = {}

    def __init__(self, tmp: Path, clock: FakeClock) -> None:
        self.tmp = tmp
        self.clock = clock

    async def start(self) -> dict[str, Any]:
        """Start the backend; return the source's YAML mapping."""
        raise NotImplementedError

    def build(self, cfg: SourceConfig) -> Source[Any, Any]:
        return build_source(cfg)

    async def inject(self, fault: str) -> None:
        raise NotImplementedError

    async def heal(self) -> None:
        await self.inject("ok")

    def hits(self) -> int:
        """Requests that reached the backend so far (for Retry-After)."""
        return 0

    async def stop(self) -> None:
        pass

    def leftovers(self) -> list[int]:
        """Pids of processes the kind left running."""
        return []


class ProxiedRig(Rig):
    """An HTTP kind behind :class:`FaultProxy` with a test CA."""

    reasons: ClassVar[dict[str, str]] = HTTP_REASONS
    na: ClassVar[dict[str, str]] = {
        f: NA_HTTP_ONLY for f in (*CLI_FAULTS, *FILES_FAULTS) if f not in HTTP_FAULTS
    }
    upstream_ssl: ssl.SSLContext | bool = False

    def make_proxy(self, upstream: str) -> FaultProxy:
        ca = TestCA(self.tmp / "ca", "homelab")
        other = TestCA(self.tmp / "other-ca", "stranger")
        self.ca_file = str(ca.cert_file)
        return FaultProxy(
            upstream,
            upstream_ssl=self.upstream_ssl,
            good=ca.issue("good"),
            wrong_ca=other.issue("wrong"),
            expired=ca.issue("expired", expired=True),
            now=self.clock.time,
        )

    async def inject(self, fault: str) -> None:
        self.resolver.failing = fault == "dns"
        await self.proxy.set("ok" if fault == "dns" else fault)

    def hits(self) -> int:
        return self.proxy.hits

    async def stop(self) -> None:
        await self.proxy.stop()


class ProxmoxRig(ProxiedRig):
    kind = "proxmox"

    async def start(self) -> dict[str, Any]:
        self.fake = await start_fake_pve(pve_homelab(self.clock.time, tz=lab.TZ))
        self.upstream_ssl = ssl.create_default_context(cafile=self.fake.ca_file)
        self.proxy = self.make_proxy(self.fake.url)
        await self.proxy.start()
        return {
            "kind": "proxmox",
            "url": self.proxy.url("https"),
            "token_id": self.fake.token_id,
            "token_secret": self.fake.token_secret,
            "ca_file": self.ca_file,
            "timeout": TIMEOUT,
        }

    async def stop(self) -> None:
        await super().stop()
        await self.fake.stop()


class TrueNASRig(ProxiedRig):
    kind = "truenas"
    reasons: ClassVar[dict[str, str]] = {
        **HTTP_REASONS,
        "http403": "auth",
        "truncated": "connection",
    }

    async def start(self) -> dict[str, Any]:
        self.fake = await start_fake_truenas(truenas_homelab(self.clock.time, tz=lab.TZ))
        assert self.fake.ca_file is not None
        self.upstream_ssl = ssl.create_default_context(cafile=self.fake.ca_file)
        self.proxy = self.make_proxy(self.fake.url.replace("wss://", "https://"))
        await self.proxy.start()
        return {
            "kind": "truenas",
            "url": self.proxy.url("wss"),
            "username": self.fake.username,
            "api_key": self.fake.api_key,
            "ca_file": self.ca_file,
            "timeout": TIMEOUT,
        }

    async def stop(self) -> None:
        await super().stop()
        await self.fake.stop()


class HealthchecksRig(ProxiedRig):
    kind = "healthchecks"
    # Healthchecks answers a bad or read-only key with 401/403 alike: both are the key.
    reasons: ClassVar[dict[str, str]] = {**HTTP_REASONS, "http403": "auth"}

    async def start(self) -> dict[str, Any]:
        self.fake = await start_fake_healthchecks(hc_homelab(self.clock.time))
        self.proxy = self.make_proxy(self.fake.url)
        await self.proxy.start()
        return {
            "kind": "healthchecks",
            "url": self.proxy.url("https"),
            "api_key": self.fake.readonly_key,
            "ca_file": self.ca_file,
            "timeout": TIMEOUT,
        }

    async def stop(self) -> None:
        await super().stop()
        await self.fake.stop()


class S3Rig(ProxiedRig):
    kind = "s3"
    # botocore turns a 200 whose XML does not parse (a cut or garbled body) into a 500 to
    # retry it (botocore/handlers.py _handle_200_error, _looks_like_special_case_error).
    reasons: ClassVar[dict[str, str]] = {**HTTP_REASONS, "truncated": "http", "malformed": "http"}

    async def start(self) -> dict[str, Any]:
        from moto.server import ThreadedMotoServer

        port = _free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.moto.start()
        lab._seed_s3(port)
        self.proxy = self.make_proxy(f"http://127.0.0.1:{port}")
        await self.proxy.start()
        return {
            "kind": "s3",
            "endpoint": self.proxy.url("https"),
            "access_key_id": lab.S3_ACCESS_KEY,
            "secret_access_key": lab.S3_SECRET_KEY,
            "ca_file": self.ca_file,
            "timeout": "3s",
            "interval": "5m",
            "retries": 1,
            "buckets": {lab.STORJ_BUCKET: {"prefixes": list(lab.PREFIXES[:2]), "interval": "1m"}},
        }

    async def stop(self) -> None:
        await super().stop()
        self.moto.stop()


class FaultyRaw:
    """b2sdk's ``RawSimulator`` whose every API call can fail as the HTTP layer would fail."""

    def __init__(self, inner: RawSimulator) -> None:
        self._inner = inner
        self.mode = "ok"
        self.hits = 0
        self.released = threading.Event()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.hits += 1
            mode = self.mode
            if mode in ("hang", "trickle"):
                self.released.wait(30)
                raise B2ConnectionError("connection reset")
            error = _B2_ERRORS.get(mode)
            if error is not None:
                raise error()
            result = attr(*args, **kwargs)
            if mode == "wrong-shape" and isinstance(result, dict):
                return {"surprise": 1}
            return result

        return call


_B2_ERRORS: dict[str, Callable[[], Exception]] = {
    # What b2sdk raises for each (b2sdk/_internal/exception.py interpret_b2_error and
    # b2sdk/_internal/b2http.py _translate_errors).
    "http500": lambda: ServiceError("500 internal_error injected"),
    "http503": lambda: ServiceError("503 service_unavailable injected"),
    "http429": lambda: TooManyRequests(retry_after_seconds=str(RETRY_AFTER)),
    "truncated": lambda: B2ConnectionError("Connection broken: IncompleteRead"),
    "malformed": lambda: InvalidJsonResponse(b'{"files": ['),
    "tls-wrong-ca": lambda: B2ConnectionError("[SSL: CERTIFICATE_VERIFY_FAILED] wrong CA"),
    "tls-expired": lambda: B2ConnectionError("[SSL: CERTIFICATE_VERIFY_FAILED] expired"),
    "http401": lambda: Unauthorized("bad_auth_token", "unauthorized"),
    "http403": AccessDenied,
    "refused": lambda: B2ConnectionError("[Errno 111] Connection refused"),
    "dns": UnknownHost,
}


class B2Rig(Rig):
    kind = "b2"
    reasons: ClassVar[dict[str, str]] = {**HTTP_REASONS, "wrong-shape": "parse"}
    na: ClassVar[dict[str, str]] = {
        "http429-date": "b2sdk keeps only delay-seconds (exception.py _parse_retry_after_seconds)",
        **{f: NA_HTTP_ONLY for f in (*CLI_FAULTS, *FILES_FAULTS) if f not in HTTP_FAULTS},
    }

    async def start(self) -> dict[str, Any]:
        sim, (key_id, key), _master = lab._seed_b2(self.clock.time())
        self.raw = FaultyRaw(sim)
        return {
            "kind": "b2",
            "key_id": key_id,
            "application_key": key,
            "timeout": TIMEOUT,
            "interval": "5m",
            "retries": 1,
            # Every poll lists (the daily list-call budget would space the listings out).
            "list_calls_per_day": 0,
            "buckets": {lab.B2_BUCKET: {"prefixes": list(lab.PREFIXES), "interval": "1m"}},
        }

    def build(self, cfg: SourceConfig) -> Source[Any, Any]:
        def api() -> B2Api:
            made = B2Api(
                InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=RawSimulator)
            )
            made.session.raw_api = self.raw
            return made

        return B2Source(cfg, api_factory=api, sleep=lambda _: None)  # type: ignore[arg-type]

    async def inject(self, fault: str) -> None:
        self.raw.released.set()
        self.raw.released = threading.Event()
        self.raw.mode = fault

    def hits(self) -> int:
        return self.raw.hits


class CommandRig(Rig):
    """A CLI kind through ``command_prefix``."""

    reasons: ClassVar[dict[str, str]] = {
        "hang": "timeout",
        "ignore-term": "timeout",
        "garbage": "connection",
        "malformed": "parse",
        "wrong-shape": "parse",
    }
    na: ClassVar[dict[str, str]] = {
        **{f: NA_CLI for f in HTTP_FAULTS if f != "hang"},
        **dict.fromkeys(FILES_FAULTS, NA_HTTP_ONLY),
    }

    def prefix(self) -> list[str]:
        self.control = self.tmp / f"{self.kind}-control.json"
        self.pids = self.tmp / f"{self.kind}-pids"
        self.pids.write_text("")
        self.control.write_text(json.dumps({"mode": "ok", "pids": str(self.pids)}))
        here = Path(__file__).resolve().parent
        return [sys.executable, str(here / "faulty_cmd.py"), str(self.control), "--"]

    async def inject(self, fault: str) -> None:
        self.control.write_text(json.dumps({"mode": fault, "pids": str(self.pids)}))

    def hits(self) -> int:
        return len(self.pids.read_text().split())

    def leftovers(self) -> list[int]:
        return alive(self.pids)


def alive(pids: Path) -> list[int]:
    """The pids listed in the file ``pids`` that are still running (not zombies)."""
    out = []
    for pid in {int(p) for p in pids.read_text().split()}:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


class ZfsRig(CommandRig):
    kind = "zfs"

    async def start(self) -> dict[str, Any]:
        return {"kind": "zfs", "json": "true", "command_prefix": self.prefix(),
                "timeout": "3s"}  # fmt: skip


class SmartctlRig(CommandRig):
    kind = "smartctl"
    # smartctl's exit status is a bit mask (smartctl.8 "RETURN VALUES"): bits 0-1 mean the
    # command or device open failed; junk with such a status is not a readable disk list.
    reasons: ClassVar[dict[str, str]] = {**CommandRig.reasons, "garbage": "parse"}

    async def start(self) -> dict[str, Any]:
        return {"kind": "smartctl", "command_prefix": self.prefix(), "devices": ["/dev/nvme0"],
                "timeout": "3s", "device_timeout": "2s"}  # fmt: skip


HOOK = """
import json, os, sys
_ctl = os.environ.get("RELIABILITY_FILES_CTL")
if _ctl:
    def _hook(event, args):
        if event != "os.scandir" or not args:
            return
        with open(_ctl) as f:
            c = json.load(f)
        if os.fspath(args[0]).rstrip("/") != c["dir"]:
            return
        if c["mode"] == "unreadable":
            raise PermissionError(13, "Permission denied", c["dir"])
        if c["mode"] == "hung-mount":
            open(c["fifo"]).close()  # blocks in open(2): no writer comes
    sys.addaudithook(_hook)
"""


class FilesRig(Rig):
    kind = "files"
    reasons: ClassVar[dict[str, str]] = {
        "hang": "timeout",
        "hung-mount": "timeout",
        "unreadable": "permission",
    }
    na: ClassVar[dict[str, str]] = {
        **{f: "a local directory: no HTTP, TLS or DNS" for f in HTTP_FAULTS if f != "hang"},
        **dict.fromkeys(CLI_FAULTS, "no command runs"),
    }

    def __init__(self, tmp: Path, clock: FakeClock, env: Callable[[str, str], None]) -> None:
        super().__init__(tmp, clock)
        self._env = env

    async def start(self) -> dict[str, Any]:
        self.dir = self.tmp / "ha-backup"
        lab._seed_files(self.dir, self.clock.time())
        self.fifo = self.tmp / "mount.fifo"
        os.mkfifo(self.fifo)
        hooks = self.tmp / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(HOOK)
        self.ctl = self.tmp / "files-ctl.json"
        self._env("PYTHONPATH", str(hooks))
        self._env("RELIABILITY_FILES_CTL", str(self.ctl))
        await self.inject("ok")
        return {"kind": "files", "path": str(self.dir), "glob": "*.tar", "timeout": "1s"}

    async def inject(self, fault: str) -> None:
        mode = "hung-mount" if fault == "hang" else fault
        self.ctl.write_text(json.dumps({"mode": mode, "dir": str(self.dir),
                                        "fifo": str(self.fifo)}))  # fmt: skip
        if mode == "ok":  # release any child still blocked (it is killed anyway)
            fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
            os.close(fd)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
