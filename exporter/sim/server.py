"""Pieces the fake servers share: serving an app, holding requests, moving the clock.

The fakes (:mod:`exporter.sim.pve`, :mod:`~exporter.sim.truenas`,
:mod:`~exporter.sim.healthchecks`) each hold one :class:`AppServer` and keep their own
public API (``url``, ``port``, ``ca_file``, ``stop()``, ``hang()``) around these pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from exporter.sim.tls import SelfSignedCert

__all__ = ["AppServer", "Hold", "advance_clock", "cert_path"]


def advance_clock(now: Callable[[], float], seconds: float) -> None:
    """Move the clock behind the bound method ``now`` (it must have ``advance``, like FakeClock)."""
    clock = getattr(now, "__self__", None)
    advance = getattr(clock, "advance", None)
    if advance is None:
        raise TypeError("advance() needs a clock with an advance() method (FakeClock)")
    advance(seconds)


class Hold:
    """Holds requests without answering between :meth:`hold` and :meth:`release`."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def hold(self) -> None:
        """Hold every request from now on (a no-op while already holding)."""
        if self._event is None or self._event.is_set():
            self._event = asyncio.Event()

    def release(self) -> None:
        """Let the held requests (and all later ones) through."""
        if self._event is not None:
            self._event.set()

    @property
    def holding(self) -> bool:
        """Whether requests are being held."""
        return self._event is not None and not self._event.is_set()

    async def wait(self) -> None:
        """Wait until released; return at once when not holding."""
        if self._event is not None:
            await self._event.wait()


def cert_path(cert: SelfSignedCert | None) -> str | None:
    """Return the file a client trusts (``ca_file:``) for ``cert``; ``None`` without TLS."""
    return None if cert is None else str(cert.cert_file)


class AppServer:
    """One aiohttp application served by an ``AppRunner`` and a ``TCPSite``.

    ``app`` stays set after :meth:`stop`, so a fake can still reach its state (open
    sockets) while shutting down or after a restart.
    """

    def __init__(self) -> None:
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None

    async def start(
        self, app: web.Application, *, host: str, port: int, cert: SelfSignedCert | None
    ) -> int:
        """Serve ``app`` on ``host:port`` and return the port (the one chosen for 0)."""
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        ssl_context = None if cert is None else cert.server_context
        # reuse_address: a restart binds the same port again at once.
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        self.app, self._runner = app, runner
        return port if port != 0 else int(runner.addresses[0][1])

    async def stop(self, *, abort_connections: bool = False) -> None:
        """Stop serving (no-op when stopped); the port is then refused.

        ``abort_connections`` drops open keep-alive connections first: a polite TLS close
        would wait up to 30 s for the client's close_notify, which an idle client never sends.
        """
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        if abort_connections:
            server = runner.server
            for handler in list(server.connections if server is not None else ()):
                if handler.transport is not None:
                    handler.transport.abort()
        await runner.cleanup()
