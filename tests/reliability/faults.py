"""Fault injection for the reliability suite: a faulty TLS proxy, a stub resolver, certificates.

:class:`FaultProxy` stands between a kind's real client and the project's fake (or moto's
server) on 127.0.0.1. Healthy, it forwards every request (and WebSocket) untouched; in a fault
mode it answers the way a broken homelab does: hangs, 5xx, 429 with ``Retry-After``, a
truncated or malformed body, valid JSON of the wrong shape, 401/403, a slowloris trickle, a
certificate from the wrong CA or an expired one, or no listener at all (connection refused).
Changing the mode drops every open connection, so a client's keep-alive pool cannot hide it.

:class:`StubResolver` answers ``socket.getaddrinfo`` for one fake host name (never a real
lookup): 127.0.0.1 while healthy, ``EAI_NONAME`` while the DNS fault is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FAKE_HOST = "backend.homelab.test"  # resolved only by StubResolver

HTTP_FAULTS = (
    "hang",
    "http500",
    "http503",
    "http429",
    "http429-date",
    "truncated",
    "malformed",
    "wrong-shape",
    "tls-wrong-ca",
    "tls-expired",
    "http401",
    "http403",
    "refused",
    "dns",
    "trickle",
)
RETRY_AFTER = 120  # seconds, what the faulty server asks for


# ----------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Issued:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


class TestCA:
    """A throw-away certificate authority that issues server certificates for the proxy."""

    __test__ = False

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file = folder / f"{name}-ca.pem"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, label: str, *, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (
            (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
            if expired
            else (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2))
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FAKE_HOST)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName(FAKE_HOST),
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file = self.folder / f"{label}.pem"
        key_file = self.folder / f"{label}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Issued(cert_file, key_file)


# ----------------------------------------------------------------------------- DNS


class StubResolver:
    """``socket.getaddrinfo`` for :data:`FAKE_HOST` only; every other name is passed through."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self._real = real
        self.failing = False
        self.lookups = 0

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name == FAKE_HOST:
            self.lookups += 1
            if self.failing:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return self._real("127.0.0.1", port, *args, **kwargs)
        return self._real(host, port, *args, **kwargs)


# ----------------------------------------------------------------------------- the proxy


WRONG_SHAPE_JSON = json.dumps({"data": {"surprise": [1, 2, 3]}, "checks": "not-a-list"})
WRONG_SHAPE_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Surprise><Unexpected>1</Unexpected><Contents>not-an-entry</Contents></Surprise>"
)


class FaultProxy:
    """A reverse proxy on 127.0.0.1 (TLS optional) whose answers a test breaks on purpose."""

    def __init__(
        self,
        upstream: str,
        *,
        upstream_ssl: ssl.SSLContext | bool = False,
        good: Issued | None = None,
        wrong_ca: Issued | None = None,
        expired: Issued | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.now = now
        self.upstream = upstream.rstrip("/")
        self.upstream_ssl = upstream_ssl
        self.mode = "ok"
        self.hits = 0  # requests received (any mode)
        self._contexts: dict[str, ssl.SSLContext] = {}
        if good is not None:
            self._contexts["ok"] = good.server_context()
            if wrong_ca is not None:
                self._contexts["tls-wrong-ca"] = wrong_ca.server_context()
            if expired is not None:
                self._contexts["tls-expired"] = expired.server_context()
        self._front: ssl.SSLContext | None = None
        if good is not None:
            self._front = good.server_context()
            self._front.sni_callback = self._pick_cert
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._released = asyncio.Event()
        self._transports: set[asyncio.BaseTransport] = set()
        self.port = 0

    @property
    def tls(self) -> bool:
        return self._front is not None

    def url(self, scheme: str | None = None) -> str:
        scheme = scheme or ("https" if self.tls else "http")
        return f"{scheme}://{FAKE_HOST}:{self.port}"

    def _pick_cert(self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: Any) -> None:
        chosen = self._contexts.get(self.mode, self._contexts.get("ok"))
        if chosen is not None:
            sock.context = chosen

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        await self._listen()

    async def _listen(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=0.2, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self._front,
                           reuse_address=True)  # fmt: skip
        await site.start()
        self._runner = runner
        if not self.port:
            self.port = int(runner.addresses[0][1])

    async def _unlisten(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            self._abort_all()
            await runner.cleanup()

    def _abort_all(self) -> None:
        runner = self._runner
        server = runner.server if runner is not None else None
        for handler in list(server.connections if server is not None else ()):
            if handler.transport is not None:
                handler.transport.abort()
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def set(self, mode: str) -> None:
        """Switch to ``mode`` (``ok`` heals); open connections are dropped either way."""
        old, self.mode = self.mode, mode
        self._released.set()
        self._released = asyncio.Event()
        if mode == "refused":
            await self._unlisten()
        elif old == "refused":
            await self._listen()
        else:
            self._abort_all()

    async def stop(self) -> None:
        self._released.set()
        await self._unlisten()
        if self._session is not None:
            await self._session.close()

    # -- answering

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        mode = self.mode
        if request.transport is not None:
            self._transports.add(request.transport)
        if mode == "hang":
            await self._released.wait()
            raise ConnectionResetError("released")
        if mode.startswith("http") and mode[4:7].isdigit():
            status = int(mode[4:7])
            headers = {}
            if status in (429, 503):
                if mode.endswith("-date"):
                    # An HTTP-date, against the answer's own Date header (real time).
                    now = datetime.datetime.now(datetime.UTC)
                    at = now + datetime.timedelta(seconds=RETRY_AFTER)
                    headers["Date"] = now.strftime("%a, %d %b %Y %H:%M:%S GMT")
                    headers["Retry-After"] = at.strftime("%a, %d %b %Y %H:%M:%S GMT")
                else:
                    headers["Retry-After"] = str(RETRY_AFTER)
            body = json.dumps({"error": f"injected {status}"})
            return web.Response(status=status, text=body, headers=headers,
                                content_type="application/json")  # fmt: skip
        if mode == "trickle":
            return await self._trickle(request)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, mode)
        return await self._forward(request, mode)

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        """A slowloris answer: a status line and then one header byte every 50 ms, forever."""
        transport = request.transport
        assert transport is not None
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        released = self._released
        while not released.is_set() and not transport.is_closing():
            transport.write(b"X")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), 0.05)
        transport.abort()
        raise ConnectionResetError("trickle ended")

    async def _forward(self, request: web.Request, mode: str) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.path_qs,
            headers=headers,
            data=body,
            ssl=self.upstream_ssl,
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            status = upstream.status
        xml = "xml" in out_headers.get("Content-Type", "") or data.lstrip().startswith(b"<?xml")
        if mode == "wrong-shape" and status == 200:
            data = (WRONG_SHAPE_XML if xml else WRONG_SHAPE_JSON).encode()
        elif mode == "malformed" and status == 200:
            data = b'{"data": [{"volid": "local:backup/vzdump-qemu-100' if not xml else b"<Li"
        if mode == "truncated" and status == 200 and len(data) > 1:
            # The whole length announced, half of the body sent, then the connection cut.
            transport = request.transport
            assert transport is not None
            head = [f"HTTP/1.1 {status} OK"]
            head += [f"{k}: {v}" for k, v in out_headers.items() if k.lower() != "content-length"]
            head.append(f"Content-Length: {len(data)}")
            transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + data[: len(data) // 2])
            await asyncio.sleep(0.05)
            transport.abort()
            raise ConnectionResetError("truncated")
        out_headers.pop("Content-Length", None)
        return web.Response(status=status, body=data, headers=out_headers)

    async def _websocket(self, request: web.Request, mode: str) -> web.StreamResponse:
        """Relay a WebSocket (TrueNAS JSON-RPC); the faults act on each answer."""
        assert self._session is not None
        client = web.WebSocketResponse(max_msg_size=0)
        await client.prepare(request)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "user-agent", "origin")
        }
        async with self._session.ws_connect(
            self.upstream + request.rel_url.path_qs, ssl=self.upstream_ssl, headers=headers,
            max_msg_size=0,
        ) as upstream:  # fmt: skip
            pump = asyncio.create_task(self._pump(upstream, client, mode))
            try:
                async for msg in client:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    if mode == "truncated":
                        # The connection dies mid-conversation.
                        if request.transport is not None:
                            request.transport.abort()
                        break
                    if mode in ("wrong-shape", "malformed"):
                        call = json.loads(msg.data)
                        if mode == "malformed":
                            await client.send_str(f'{{"jsonrpc": "2.0", "id": {call["id"]}, "res')
                        else:
                            await client.send_str(json.dumps(
                                {"jsonrpc": "2.0", "id": call["id"], "result": {"surprise": 1}}
                            ))  # fmt: skip
                        continue
                    await upstream.send_str(msg.data)
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
        return client

    @staticmethod
    async def _pump(
        upstream: aiohttp.ClientWebSocketResponse, client: web.WebSocketResponse, mode: str
    ) -> None:
        async for msg in upstream:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await client.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await client.send_bytes(msg.data)
        await client.close()


_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "accept-encoding",
        "upgrade",
        "proxy-connection",
        "te",
        "trailer",
    }
)
