"""The fake TrueNAS's transport: aiohttp WebSocket (25.04+) and REST (24.10) endpoints.

:func:`start_fake_truenas` serves a :class:`~exporter.sim.truenas.scenario.TrueNASScenario`
over TLS (or plain ws:// for the refusal test) and returns the running :class:`FakeTrueNAS`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from exporter.sim.server import AppServer, cert_path
from exporter.sim.tls import SelfSignedCert, make_self_signed_cert
from exporter.sim.truenas.methods import (
    Session,
    dispatch,
    query_handlers,
    rest_resource,
    rpc_error,
)
from exporter.sim.truenas.scenario import TrueNASScenario

__all__ = ["FakeTrueNAS", "create_app", "start_fake_truenas"]

_API_VERSIONS = {
    "25.04": ["v25.04.0", "v25.04.1", "v25.04.2"],
    "25.10": ["v25.04.0", "v25.04.1", "v25.04.2", "v25.10.0"],
    "26.0": ["v25.04.0", "v25.04.1", "v25.04.2", "v25.10.0", "v26.0.0"],
}


_SCENARIO = web.AppKey("scenario", TrueNASScenario)


class _Sockets:
    """The open WebSockets of one app, closed at stop."""

    def __init__(self) -> None:
        self.open: set[web.WebSocketResponse] = set()


_SOCKETS = web.AppKey("sockets", _Sockets)


async def _answer(
    ws: web.WebSocketResponse, scenario: TrueNASScenario, session: Session, frame: dict[str, Any]
) -> None:
    await scenario._hang.wait()
    delay = scenario.slow_methods.get(str(frame.get("method")))
    if delay:
        await asyncio.sleep(delay)
    if scenario.dropping:
        await ws.close(code=1011, message=b"dropped")
        return
    reply = dispatch(scenario, session, frame)
    if not ws.closed:
        await ws.send_str(json.dumps(reply))


async def _websocket(request: web.Request) -> web.StreamResponse:
    scenario = request.app[_SCENARIO]
    if scenario.series == "24.10":
        return web.Response(status=404, text="404: Not Found")  # no JSON-RPC API before 25.04
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    scenario.connections += 1
    session = Session(secure=request.secure)
    sockets = request.app[_SOCKETS]
    sockets.open.add(ws)
    tasks: set[asyncio.Task[None]] = set()
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
            except ValueError:
                await ws.send_str(json.dumps(rpc_error(None, -32700, "Parse error")))
                continue
            if not isinstance(frame, dict):
                await ws.send_str(json.dumps(rpc_error(None, -32600, "Invalid Request")))
                continue
            scenario.frames.append(frame)
            # Answer in a task, as the middleware does: a hung call does not block the socket.
            task = asyncio.create_task(_answer(ws, scenario, session, frame))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        sockets.open.discard(ws)
    return ws


async def _versions(request: web.Request) -> web.Response:
    series = request.app[_SCENARIO].series
    if series not in _API_VERSIONS:
        return web.Response(status=404, text="404: Not Found")
    return web.json_response(_API_VERSIONS[series])


def _rest_json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


async def _rest(request: web.Request) -> web.StreamResponse:
    """``GET /api/v2.0/<resource>``: restful.py's Bearer auth and ``_filterable_args``."""
    scenario = request.app[_SCENARIO]
    if scenario.series != "24.10":
        return web.Response(status=404, text="404: Not Found")  # REST is only faked for 24.10
    resource = request.match_info["resource"].strip("/")
    handlers = query_handlers(scenario)
    names = set(handlers) | set(scenario.results)
    method = next((m for m in names if rest_resource(m) == resource), None)
    scenario.frames.append({"method": method, "path": request.path, "query": dict(request.query)})
    await scenario._hang.wait()
    delay = scenario.slow_methods.get(str(method))
    if delay:
        await asyncio.sleep(delay)
    if scenario.dropping:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and not request.secure:
        scenario.key_revoked = True  # a key seen in clear is revoked
    if not auth.startswith("Bearer ") or auth[7:] != scenario.api_key or scenario.key_revoked:
        return web.Response(status=401, text="401: Unauthorized")
    if method is None or method in scenario.missing_methods:
        return web.Response(status=404, text="404: Not Found")
    if method in scenario.denied_methods:
        return web.Response(status=403)
    extra: dict[str, Any] = {}
    for key, value in request.query.items():
        if key.startswith("extra."):
            try:
                extra[key[len("extra.") :]] = json.loads(value)
            except ValueError:
                extra[key[len("extra.") :]] = value
    scenario.sync()
    if method in scenario.results:
        return _rest_json(200, scenario.results[method])
    options: dict[str, Any] = {"extra": extra}
    for key in ("limit", "offset"):  # restful.py passes them through as query-options
        if request.query.get(key, "").isdigit():
            options[key] = int(request.query[key])
    return _rest_json(200, handlers[method](options))


def create_app(scenario: TrueNASScenario) -> web.Application:
    """Build the aiohttp application serving ``scenario``."""
    app = web.Application()
    app[_SCENARIO] = scenario
    app[_SOCKETS] = _Sockets()
    app.router.add_get("/api/versions", _versions)
    app.router.add_get("/api/current", _websocket)
    app.router.add_get("/api/{version:v[0-9.]+}", _websocket)
    app.router.add_get("/api/v2.0/{resource:.+}", _rest)
    return app


@dataclass
class FakeTrueNAS:
    """A running fake: where it listens and how to authenticate."""

    scenario: TrueNASScenario
    cert: SelfSignedCert | None
    host: str
    port: int
    _server: AppServer = field(default_factory=AppServer, repr=False)

    @property
    def url(self) -> str:
        """The base URL, as a ``kind: truenas`` source's ``url:`` takes it."""
        scheme = "wss" if self.cert is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> str | None:
        """The certificate to trust (``ca_file:``); ``None`` for plain ws://."""
        return cert_path(self.cert)

    @property
    def api_key(self) -> str:
        """The accepted API key."""
        return self.scenario.api_key

    @property
    def username(self) -> str:
        """The user the API key belongs to (for ``auth.login_ex``)."""
        return self.scenario.username

    async def _start(self) -> None:
        app = create_app(self.scenario)
        self.port = await self._server.start(app, host=self.host, port=self.port, cert=self.cert)

    async def stop(self) -> None:
        """Stop serving: held calls are released and open sockets closed first."""
        self.scenario.release()
        if self._server.app is not None:
            for ws in list(self._server.app[_SOCKETS].open):
                await ws.close(code=1001, message=b"server shutdown")
        await self._server.stop()


async def start_fake_truenas(
    scenario: TrueNASScenario,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: bool = True,
    cert: SelfSignedCert | None = None,
) -> FakeTrueNAS:
    """Start the fake on ``host:port`` (0: a free port).

    It serves TLS with a fresh certificate unless ``tls=False`` (plain ws://, only for the
    refusal test).
    """
    if tls and cert is None:
        cert = make_self_signed_cert()
    fake = FakeTrueNAS(scenario=scenario, cert=cert if tls else None, host=host, port=port)
    await fake._start()
    return fake
