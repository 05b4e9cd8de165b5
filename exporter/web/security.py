"""The web config at work: the request middleware and the listener that SIGHUP re-arms.

What a request goes through, in order (exporter-toolkit ``web/handler.go`` ``ServeHTTP``
keeps the same order for the parts it has):

1. a health path (``--web.health-path``, exact match) is served at once: no rate limit, no
   credentials, no client certificate (TLS itself still applies to its connection);
2. ``rate_limit``, when set, is one bucket for all clients: 429 when empty;
3. a required client certificate when health paths are exempt (the handshake then only asks
   for one, see :mod:`exporter.web.tls`), and ``client_allowed_sans``: 403 otherwise;
4. ``basic_auth_users``, when set: a client whose failed-attempt bucket is empty gets 429 and
   a ``Retry-After``, without a password check; missing or wrong credentials get 401 with
   ``WWW-Authenticate: Basic`` and no detail; a wrong one is logged (user name escaped, never
   the password) and counted against the client's address;
5. the configured ``http_server_config.headers`` are set on every response, errors included.

:meth:`WebSecurity.reload` re-reads the file (on SIGHUP); a broken file keeps the old config
and logs why. :class:`Listener` binds the port once and serves it through aiohttp sites on
duplicates of the listening socket; a reload replaces the site, so every connection accepted
after it uses the new TLS context, and the port never stops listening in between. Users,
headers and limits apply from the next request, on open connections too.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from aiohttp import web

from exporter.core.clock import Clock, SystemClock
from exporter.web.auth import BasicAuthChecker, FailureLimiter, TokenBucket
from exporter.web.config import WebConfig, WebConfigError, load_web_config
from exporter.web.tls import server_context

log = logging.getLogger("exporter.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _escaped(text: str, limit: int = 64) -> str:
    """Quote a client-supplied string for a log line: no newlines, no control characters."""
    return json.dumps(text[:limit] + ("…" if len(text) > limit else ""), ensure_ascii=True)


def _sans(peercert: object) -> set[str]:
    """Return the DNS, IP, e-mail and URI names of a certificate from ``getpeercert()``."""
    if not isinstance(peercert, dict):
        return set()
    kinds = ("DNS", "IP Address", "email", "URI")
    names = peercert.get("subjectAltName", ())
    return {value.rstrip("\n") for kind, value in names if kind in kinds}


class WebSecurity:
    """The current web config, its TLS context and the authentication state."""

    def __init__(
        self,
        path: str | Path | None,
        *,
        health_paths: Iterable[str] = (),
        clock: Clock | None = None,
        failures: FailureLimiter | None = None,
    ) -> None:
        """Read ``path`` (None: no web config); raise :class:`WebConfigError` if invalid."""
        self.path = Path(path) if path is not None else None
        self.health_paths = frozenset(health_paths)
        for item in self.health_paths:
            if not item.startswith("/"):
                raise WebConfigError([f"--web.health-path {item!r}: must start with /"])
        self.clock = clock or SystemClock()
        self.failures = failures or FailureLimiter(self.clock)
        self.checker = BasicAuthChecker()
        self.config, self.context = self._read()
        self.limit = self._bucket(self.config)

    def _read(self) -> tuple[WebConfig, ssl.SSLContext | None]:
        if self.path is None:
            return WebConfig(), None
        config = load_web_config(self.path)
        context = None
        if config.tls is not None:
            context = server_context(config.tls, exempt_paths=bool(self.health_paths))
        return config, context

    def _bucket(self, config: WebConfig) -> TokenBucket | None:
        limit = config.rate_limit
        if limit.interval <= 0:
            return None
        return TokenBucket(self.clock, interval=limit.interval, burst=limit.burst)

    def describe(self) -> str:
        """Return one line for the log: what is enabled."""
        parts = ["TLS" if self.context is not None else "no TLS"]
        if self.config.tls is not None and self.config.tls.verifies_clients:
            parts.append(f"client certificates {self.config.tls.client_auth_type}")
        parts.append(f"basic auth for {len(self.config.users)} users" if self.config.users
                     else "no basic auth")  # fmt: skip
        if self.health_paths:
            parts.append("open: " + ", ".join(sorted(self.health_paths)))
        return "; ".join(parts)

    def reload(self) -> bool:
        """Re-read the file; on success the new config applies, else the old one stays."""
        if self.path is None:
            log.info("SIGHUP: no --web.config.file to re-read")
            return False
        try:
            config, context = self._read()
        except WebConfigError as exc:
            log.error("web config %s not reloaded, keeping the previous one: %s", self.path, exc)
            return False
        self.config, self.context = config, context
        self.limit = self._bucket(config)
        log.info("web config %s reloaded: %s", self.path, self.describe())
        return True

    def close(self) -> None:
        """Stop the bcrypt worker."""
        self.checker.close()

    # --- the request path -------------------------------------------------------------

    def _headers(self, response: web.StreamResponse) -> None:
        for name, value in self.config.http.headers:
            response.headers[name] = value

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Apply the web config to ``request`` (aiohttp middleware)."""
        try:
            response = await self._guard(request, handler)
        except web.HTTPException as exc:
            self._headers(exc)
            raise
        if not response.prepared:
            self._headers(response)
        return response

    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self.health_paths:
            return await handler(request)
        if self.limit is not None and not self.limit.allow():
            return web.Response(status=429, text="Too Many Requests\n")
        refused = self._certificate_problem(request)
        if refused is not None:
            log.warning("web: refused client=%s path=%s: %s", request.remote,
                        _escaped(request.path), refused)  # fmt: skip
            return web.Response(status=403, text="Forbidden\n")
        if self.config.users:
            denied = await self._basic_auth(request)
            if denied is not None:
                return denied
        return await handler(request)

    def _certificate_problem(self, request: web.Request) -> str | None:
        tls = self.config.tls
        transport = request.transport
        if tls is None or transport is None or transport.get_extra_info("sslcontext") is None:
            return None
        peercert = transport.get_extra_info("peercert")
        if tls.requires_client_cert and not peercert:
            return "no verified client certificate"
        allowed = tls.client_allowed_sans
        if allowed is not None and not _sans(peercert) & set(allowed):
            # A SAN list means a certificate must name one; none at all is no exception.
            return "client certificate has none of client_allowed_sans"
        return None

    async def _basic_auth(self, request: web.Request) -> web.Response | None:
        client = request.remote or "unknown"
        wait = self.failures.blocked(client)
        if wait is not None:
            retry = str(max(1, math.ceil(wait)))
            return web.Response(status=429, text="Too Many Requests\n",
                                headers={"Retry-After": retry})  # fmt: skip
        credentials = _credentials(request.headers.get("Authorization", ""))
        if credentials is None:
            return _unauthorized()
        user, password = credentials
        if await self.checker.check(self.config.users, user, password):
            return None
        self.failures.failed(client)
        limited = self.failures.blocked(client) is not None
        note = "; its next attempts get 429 for now" if limited else ""
        log.warning("web: failed basic auth user=%s client=%s path=%s%s",
                    _escaped(user), client, _escaped(request.path), note)  # fmt: skip
        return _unauthorized()


def _credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = binascii.a2b_base64(encoded.strip().encode("ascii"), strict_mode=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


def _unauthorized() -> web.Response:
    # As exporter-toolkit: the challenge and the status text, nothing about why.
    return web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": "Basic"})


def _bind(host: str | None, port: int) -> list[socket.socket]:
    """Open the listening sockets of ``host:port`` (every address when host is None)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
            if port == 0:  # one port for every address, as asyncio does not guarantee
                port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """The exporter's listening sockets, served with the current web config."""

    def __init__(
        self, runner: web.AppRunner, security: WebSecurity, host: str | None, port: int
    ) -> None:
        self.runner = runner
        self.security = security
        self.host = host
        self.port = port
        self._sockets: list[socket.socket] = []
        self._sites: list[web.SockSite] = []
        self._reloading = asyncio.Lock()  # two quick SIGHUPs: one reload after the other

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Return the bound (host, port) pairs."""
        return [tuple(s.getsockname()[:2]) for s in self._sockets]

    async def start(self) -> None:
        """Bind and start serving."""
        self._sockets = _bind(self.host, self.port)
        await self._serve()

    async def _serve(self) -> None:
        for sock in self._sockets:
            # The site closes its socket when stopped: give it a duplicate, keep the original.
            site = web.SockSite(self.runner, sock.dup(), ssl_context=self.security.context)
            await site.start()
            self._sites.append(site)

    async def reload(self) -> bool:
        """Re-read the web config; on success new connections get the new TLS context."""
        async with self._reloading:
            if not self.security.reload():
                return False
            old, self._sites = self._sites, []
            for site in old:
                await site.stop()  # stops accepting; open connections go on
            await self._serve()
            return True

    def close(self) -> None:
        """Close the original sockets (after the runner's cleanup stopped the sites)."""
        for sock in self._sockets:
            sock.close()
        self._sockets = []
