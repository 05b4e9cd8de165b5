"""The fake PVE's aiohttp application and the running fake (:class:`FakePVE`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from exporter.sim.pve.handlers import SCENARIO, add_routes, middleware
from exporter.sim.pve.peer import add_peer_routes
from exporter.sim.pve.scenario import PVEScenario
from exporter.sim.server import AppServer
from exporter.sim.tls import SelfSignedCert, make_self_signed_cert


def create_app(scenario: PVEScenario) -> web.Application:
    """Build the aiohttp application serving ``scenario`` under ``/api2/json``."""
    app = web.Application(middlewares=[middleware])
    app[SCENARIO] = scenario
    api = "/api2/json"
    add_routes(app, api)
    # Read only by the peer tool in bench/scrape_latency.py.
    add_peer_routes(app, api)
    return app


@dataclass
class FakePVE:
    """A running fake: where it listens and how to authenticate."""

    scenario: PVEScenario
    cert: SelfSignedCert
    host: str
    port: int
    _server: AppServer = field(default_factory=AppServer, repr=False)

    @property
    def url(self) -> str:
        """The base URL, as a ``kind: proxmox`` source's ``url:`` takes it."""
        return f"https://{self.host}:{self.port}"

    @property
    def ca_file(self) -> str:
        """The certificate to trust (``ca_file:`` / proxmoxer ``verify_ssl=``)."""
        return str(self.cert.cert_file)

    @property
    def token_id(self) -> str:
        """The accepted API token id, ``user@realm!name``."""
        return self.scenario.token_id

    @property
    def token_secret(self) -> str:
        """The accepted API token secret."""
        return self.scenario.token_secret

    async def _start(self) -> None:
        app = create_app(self.scenario)
        self.port = await self._server.start(app, host=self.host, port=self.port, cert=self.cert)

    async def stop(self) -> None:
        """Stop serving (held requests are released first); the port is then refused."""
        self.scenario.release()
        await self._server.stop(abort_connections=True)

    async def restart(self) -> None:
        """Serve again on the same port, with the same certificate and scenario."""
        await self.stop()
        await self._start()


async def start_fake_pve(
    scenario: PVEScenario,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    cert: SelfSignedCert | None = None,
) -> FakePVE:
    """Start the fake over HTTPS on ``host:port`` (0: a free port) with a fresh certificate."""
    fake = FakePVE(scenario=scenario, cert=cert or make_self_signed_cert(), host=host, port=port)
    await fake._start()
    return fake
