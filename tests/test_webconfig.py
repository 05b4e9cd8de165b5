"""The web config (``--web.config.file``), over real TLS on 127.0.0.1.

Certificates are made here (a server CA, a client CA, a stranger's self-signed certificate).
The bcrypt hashes and the files checked for errors are exporter-toolkit's own test data
(tests/fixtures/webconfig/, see its README), so ``$2y$`` hashes made by htpasswd and Go are
proven to work. A real Prometheus scrapes the exporter over TLS with basic auth at the end.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_cli import free_port

from exporter.core.app import create_app
from exporter.core.clock import FakeClock
from exporter.core.config import load_config
from exporter.sim.stack import prometheus_config, start_prometheus
from exporter.web.auth import FailureLimiter
from exporter.web.config import WebConfigError, load_web_config
from exporter.web.security import Listener, WebSecurity

FIXTURES = Path(__file__).parent / "fixtures" / "webconfig"
# exporter-toolkit web/tls_config_test.go TestUsers: dave/dave123 and carol/carol123 match
# the $2y$10$ hashes of web_config_users.good.yml.
UPSTREAM_USERS = {"dave": "dave123", "carol": "carol123"}


# --- certificates ---------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key: Any) -> None:
    (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    subject: str,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    sans: list[x509.GeneralName],
    ca: bool,
    client: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(signer_cert.subject if signer_cert else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = x509.oid.ExtendedKeyUsageOID
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([usage.CLIENT_AUTH if client else usage.SERVER_AUTH]),
            critical=False,
        )
    return builder.sign(signer_key, hashes.SHA256()), key


@dataclass
class PKI:
    """Files in ``folder``: server.crt/.key (signed by ca.crt), client.crt/.key and
    client-other-san.crt/.key (signed by client-ca.crt), stranger.crt/.key (self-signed)."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def client(self, stem: str = "client") -> tuple[str, str]:
        return str(self.folder / f"{stem}.crt"), str(self.folder / f"{stem}.key")


def make_pki(folder: Path) -> PKI:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _issue("test server CA", issuer=None, sans=[], ca=True)
    _write(folder, "ca", *ca)
    ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    _write(folder, "server", *_issue("127.0.0.1", issuer=ca, sans=[ip], ca=False))
    client_ca = _issue("test client CA", issuer=None, sans=[], ca=True)
    _write(folder, "client-ca", *client_ca)
    prom = [x509.DNSName("prometheus.example")]
    _write(folder, "client", *_issue("prom", issuer=client_ca, sans=prom, ca=False, client=True))
    other = [x509.DNSName("someone-else.example")]
    _write(folder, "client-other-san",
           *_issue("other", issuer=client_ca, sans=other, ca=False, client=True))  # fmt: skip
    stranger = _issue("stranger", issuer=None, sans=prom, ca=False, client=True)
    _write(folder, "stranger", *stranger)
    return PKI(folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_context(pki: PKI, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(*pki.client(cert))
    return context


def write_web_config(folder: Path, doc: dict[str, Any], pki: PKI) -> Path:
    """Write ``doc`` as web.yml in ``folder`` next to copies of the server key pair."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("server.crt", "server.key", "client-ca.crt"):
        shutil.copy(pki.folder / name, folder / name)
    path = folder / "web.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


TLS = {"cert_file": "server.crt", "key_file": "server.key"}
MTLS = {**TLS, "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "client-ca.crt"}


def upstream_users() -> dict[str, str]:
    users: dict[str, str] = yaml.safe_load((FIXTURES / "web_config_users.good.yml").read_text())[
        "basic_auth_users"
    ]
    return users


def dave_only(folder: Path, pki: PKI) -> Path:
    """A TLS web config whose one user is upstream's dave."""
    doc = {"tls_server_config": TLS, "basic_auth_users": {"dave": upstream_users()["dave"]}}
    return write_web_config(folder, doc, pki)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- an exporter listening with a web config, in this event loop ----------------------------


@dataclass
class Served:
    url: str
    port: int
    security: WebSecurity
    listener: Listener


@asynccontextmanager
async def serving(
    path: Path | None,
    *,
    health: Iterable[str] = (),
    clock: FakeClock | None = None,
    failures: FailureLimiter | None = None,
) -> AsyncIterator[Served]:
    config_file = (path.parent if path else Path.cwd()) / "exporter.yml"
    config_file.write_text("timezone: UTC\n")
    config = load_config(config_file)
    security = WebSecurity(path, health_paths=health, clock=clock, failures=failures)
    app = create_app(config, run_pollers=False, middlewares=[security.middleware])
    runner = web.AppRunner(app)
    await runner.setup()
    listener = Listener(runner, security, "127.0.0.1", 0)
    await listener.start()
    port = listener.addresses[0][1]
    scheme = "https" if security.context is not None else "http"
    try:
        yield Served(f"{scheme}://127.0.0.1:{port}", port, security, listener)
    finally:
        await runner.cleanup()
        listener.close()
        security.close()


async def fetch(
    url: str,
    *,
    context: ssl.SSLContext | bool | None = None,
    headers: dict[str, str] | None = None,
    local_addr: tuple[str, int] | None = None,
) -> tuple[int, str, dict[str, str]]:
    connector = aiohttp.TCPConnector(ssl=context if context is not None else True,
                                     local_addr=local_addr, force_close=True)  # fmt: skip
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(url, headers=headers) as resp,
    ):
        return resp.status, await resp.text(), dict(resp.headers)


async def status_of(
    url: str, *, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None
) -> int:
    return (await fetch(url, context=context, headers=headers))[0]


# --- basic auth ------------------------------------------------------------------------------


async def test_upstream_hashes_right_credentials_200_wrong_or_none_401(
    tmp_path: Path, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_web_config(tmp_path, {"tls_server_config": TLS, "basic_auth_users":
                                       upstream_users()}, pki)  # fmt: skip
    ctx = client_context(pki)
    caplog.set_level(logging.WARNING, logger="exporter.web")
    async with serving(path) as srv:
        for user, password in UPSTREAM_USERS.items():
            status, body, _ = await fetch(srv.url + "/metrics", context=ctx,
                                          headers=basic(user, password))  # fmt: skip
            assert status == 200, (user, body)
            assert "backup_exporter_build_info" in body
        for path_ in ("/metrics", "/", "/-/healthy", "/-/ready"):
            for headers in ({}, basic("dave", "bad"), basic("nonexistent", "nonexistent")):
                status, body, got = await fetch(srv.url + path_, context=ctx, headers=headers)
                assert status == 401, (path_, headers)
                assert got["WWW-Authenticate"] == "Basic"
                assert body == "Unauthorized\n"  # no detail: not which part was wrong
        # Malformed headers are no credentials, not a crash.
        for raw in ("Basic", "Basic !!!", "Bearer abc", "Basic " + base64.b64encode(b"x").decode()):
            status, _, _ = await fetch(srv.url + "/metrics", context=ctx,
                                       headers={"Authorization": raw})  # fmt: skip
            assert status == 401
    failures = [r.getMessage() for r in caplog.records if "failed basic auth" in r.getMessage()]
    assert any('user="dave"' in m for m in failures)
    assert any('user="nonexistent"' in m for m in failures)
    for message in failures:
        assert "bad" not in message.replace("basic", "")  # the wrong password is never logged
        assert "dave123" not in message


async def test_failed_attempt_log_escapes_the_user_name(
    tmp_path: Path, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_web_config(tmp_path, {"basic_auth_users": upstream_users()}, pki)
    caplog.set_level(logging.WARNING, logger="exporter.web")
    async with serving(path) as srv:
        forged = basic('evil\nlevel=error msg="forged"', "pw-canary")
        assert await status_of(srv.url + "/metrics", headers=forged) == 401
    (message,) = [r.getMessage() for r in caplog.records if "failed basic auth" in r.getMessage()]
    assert "\n" not in message
    assert r"evil\nlevel=error msg=\"forged\"" in message
    assert "pw-canary" not in message


async def test_bcrypt_runs_off_the_event_loop_and_a_verified_pair_is_cached(
    tmp_path: Path, pki: PKI
) -> None:
    path = write_web_config(tmp_path, {"basic_auth_users": upstream_users()}, pki)
    async with serving(path, health=["/-/healthy"]) as srv:
        checker = srv.security.checker
        entered, release = threading.Event(), threading.Event()
        real = checker._compare

        def held(password: bytes, hashed: bytes) -> bool:
            entered.set()
            release.wait(timeout=30)
            return real(password, hashed)

        checker._compare = held  # type: ignore[method-assign]
        scrape = asyncio.create_task(fetch(srv.url + "/metrics", headers=basic("dave", "dave123")))
        await asyncio.to_thread(entered.wait, 30)
        # bcrypt is busy in its thread: the event loop still answers other requests.
        status, _, _ = await fetch(srv.url + "/-/healthy")
        assert status == 200
        assert not scrape.done()
        release.set()
        assert (await scrape)[0] == 200
        checker._compare = real  # type: ignore[method-assign]
        for _ in range(5):
            assert (await fetch(srv.url + "/metrics", headers=basic("dave", "dave123")))[0] == 200
        assert checker.bcrypt_runs == 1  # the verified pair is not hashed again
        assert (await fetch(srv.url + "/metrics", headers=basic("dave", "other")))[0] == 401
        assert checker.bcrypt_runs == 2


async def test_failed_attempts_are_rate_limited_per_client_address(
    tmp_path: Path, pki: PKI
) -> None:
    path = write_web_config(tmp_path, {"basic_auth_users": upstream_users()}, pki)
    clock = FakeClock()
    limiter = FailureLimiter(clock, burst=3, interval=6.0)
    async with serving(path, clock=clock, failures=limiter) as srv:
        url = srv.url + "/metrics"
        for attempt in range(3):
            assert (await fetch(url, headers=basic("dave", f"guess{attempt}")))[0] == 401
        runs = srv.security.checker.bcrypt_runs
        status, body, headers = await fetch(url, headers=basic("dave", "guess3"))
        assert (status, body) == (429, "Too Many Requests\n")
        assert headers["Retry-After"] == "6"
        # Limited means limited: even the right password waits, and bcrypt is not run.
        assert (await fetch(url, headers=basic("dave", "dave123")))[0] == 429
        assert srv.security.checker.bcrypt_runs == runs
        # Another client address is not affected (Linux routes all of 127/8 to loopback).
        other = await fetch(url, headers=basic("dave", "dave123"), local_addr=("127.0.0.2", 0))
        assert other[0] == 200
        clock.advance(6.0)  # one attempt earned back
        assert (await fetch(url, headers=basic("dave", "dave123")))[0] == 200
        assert (await fetch(url, headers=basic("dave", "guess4")))[0] == 401
        assert (await fetch(url, headers=basic("dave", "dave123")))[0] == 429
        clock.advance(18.0)  # the bucket refills completely and is forgotten
        assert (await fetch(url, headers=basic("dave", "dave123")))[0] == 200
        assert limiter.blocked("127.0.0.1") is None


async def test_upstream_global_rate_limit_and_headers_apply_to_every_response(
    tmp_path: Path, pki: PKI
) -> None:
    headers_doc = yaml.safe_load((FIXTURES / "web_config_headers.good.yml").read_text())
    limit_doc = yaml.safe_load((FIXTURES / "web_config_rate_limiter_one_second.yaml").read_text())
    path = write_web_config(tmp_path, {**headers_doc, "basic_auth_users": upstream_users()}, pki)
    async with serving(path) as srv:
        for auth, expected in (({}, 401), (basic("carol", "carol123"), 200)):
            status, _, got = await fetch(srv.url + "/metrics", headers=auth)
            assert status == expected
            assert got["X-Frame-Options"] == "deny"
            assert got["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
            assert got["X-XSS-Protection"] == "1"
        status, _, got = await fetch(srv.url + "/nothing-here", headers=basic("carol", "carol123"))
        assert status == 404
        assert got["X-Content-Type-Options"] == "nosniff"
    # exporter-toolkit's "1s, burst 0" file refuses every request with 429.
    path.write_text(yaml.safe_dump(limit_doc))
    async with serving(path) as srv:
        assert (await fetch(srv.url + "/metrics"))[0] == 429


# --- TLS -------------------------------------------------------------------------------------


async def test_plain_http_to_the_tls_port_fails(tmp_path: Path, pki: PKI) -> None:
    path = write_web_config(tmp_path, {"tls_server_config": TLS}, pki)
    async with serving(path) as srv:
        assert srv.url.startswith("https://")
        assert (await fetch(srv.url + "/-/healthy", context=client_context(pki)))[0] == 200
        with pytest.raises(aiohttp.ClientError):
            await fetch(f"http://127.0.0.1:{srv.port}/-/healthy")


def _tls11_client() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer TLS 1.1
    return context


def _blocking_handshake(port: int, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return str(tls.version())


async def _handshake(port: int, context: ssl.SSLContext) -> str:
    # A blocking client in a thread reads the server's alert before the socket closes.
    return await asyncio.to_thread(_blocking_handshake, port, context)


async def test_tls_1_1_is_refused_by_the_default_min_version(tmp_path: Path, pki: PKI) -> None:
    path = write_web_config(tmp_path, {"tls_server_config": TLS}, pki)
    async with serving(path) as srv:
        with pytest.raises(ssl.SSLError) as refused:
            await _handshake(srv.port, _tls11_client())
        # The server hung up on the hello (asyncio drops the alert), not the client failing
        # to offer TLS 1.1 (NO_PROTOCOLS_AVAILABLE); the control below proves it offers it.
        assert refused.value.reason in ("UNEXPECTED_EOF_WHILE_READING",
                                        "TLSV1_ALERT_PROTOCOL_VERSION")  # fmt: skip
        assert await _handshake(srv.port, client_context(pki)) == "TLSv1.3"
        tls12 = client_context(pki)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert await _handshake(srv.port, tls12) == "TLSv1.2"
    # Control: when the file asks for min_version TLS11, the same client gets in.
    path.write_text(yaml.safe_dump({"tls_server_config": {**TLS, "min_version": "TLS11"}}))
    async with serving(path) as srv:
        assert await _handshake(srv.port, _tls11_client()) == "TLSv1.1"
    path.write_text(yaml.safe_dump({"tls_server_config": {**TLS, "min_version": "TLS13"}}))
    async with serving(path) as srv:
        with pytest.raises(ssl.SSLError):
            await _handshake(srv.port, tls12)


async def test_client_certificate_is_enforced_when_configured(tmp_path: Path, pki: PKI) -> None:
    path = write_web_config(tmp_path, {"tls_server_config": MTLS}, pki)
    async with serving(path) as srv:
        url = srv.url + "/metrics"
        assert (await fetch(url, context=client_context(pki, "client")))[0] == 200
        for who in (None, "stranger"):  # no certificate, or one the client CA did not sign
            with pytest.raises(aiohttp.ClientError):
                await fetch(url, context=client_context(pki, who))
    sans = {**MTLS, "client_allowed_sans": ["prometheus.example"]}
    path.write_text(yaml.safe_dump({"tls_server_config": sans}))
    async with serving(path) as srv:
        url = srv.url + "/metrics"
        assert (await fetch(url, context=client_context(pki, "client")))[0] == 200
        status, body, _ = await fetch(url, context=client_context(pki, "client-other-san"))
        assert (status, body) == (403, "Forbidden\n")
    # With a certificate optional, a SAN list still demands one that names an allowed SAN.
    optional = {**sans, "client_auth_type": "VerifyClientCertIfGiven"}
    path.write_text(yaml.safe_dump({"tls_server_config": optional}))
    async with serving(path) as srv:
        url = srv.url + "/metrics"
        assert (await fetch(url, context=client_context(pki)))[0] == 403
        assert (await fetch(url, context=client_context(pki, "client")))[0] == 200
        with pytest.raises(aiohttp.ClientError):  # given, it must verify
            await fetch(url, context=client_context(pki, "stranger"))


async def test_health_path_stays_open_when_configured(tmp_path: Path, pki: PKI) -> None:
    doc = {"tls_server_config": MTLS, "basic_auth_users": upstream_users()}
    path = write_web_config(tmp_path, doc, pki)
    bare = client_context(pki)  # no client certificate, no credentials
    with_cert = client_context(pki, "client")
    async with serving(path, health=["/-/healthy"]) as srv:
        assert (await fetch(srv.url + "/-/healthy", context=bare))[:2] == (200, "OK\n")
        # Everything else still needs the certificate, then the password.
        assert (await fetch(srv.url + "/metrics", context=bare))[0] == 403
        assert (await fetch(srv.url + "/-/ready", context=bare))[0] == 403
        assert (await fetch(srv.url + "/metrics", context=with_cert))[0] == 401
        ok = await fetch(srv.url + "/metrics", context=with_cert, headers=basic("dave", "dave123"))
        assert ok[0] == 200
        with pytest.raises(aiohttp.ClientError):  # a stranger's certificate fails the handshake
            await fetch(srv.url + "/-/healthy", context=client_context(pki, "stranger"))
    async with serving(path) as srv:  # not configured: the health path is protected too
        with pytest.raises(aiohttp.ClientError):
            await fetch(srv.url + "/-/healthy", context=bare)
        assert (await fetch(srv.url + "/-/healthy", context=with_cert))[0] == 401


async def test_reload_swaps_the_tls_context_and_users_and_keeps_the_old_on_error(
    tmp_path: Path, pki: PKI
) -> None:
    users = upstream_users()
    first = dave_only(tmp_path, pki)
    async with serving(first) as srv:
        url = srv.url + "/metrics"
        dave, carol = basic("dave", "dave123"), basic("carol", "carol123")
        assert await status_of(url, context=client_context(pki), headers=dave) == 200
        other = make_pki(tmp_path / "other")
        for name in ("server.crt", "server.key"):
            shutil.copy(other.folder / name, tmp_path / name)
        doc = {"tls_server_config": TLS, "basic_auth_users": {"carol": users["carol"]}}
        first.write_text(yaml.safe_dump(doc))
        assert await srv.listener.reload()
        assert await status_of(url, context=client_context(other), headers=carol) == 200
        assert await status_of(url, context=client_context(other), headers=dave) == 401
        with pytest.raises(aiohttp.ClientError):  # the old certificate is gone
            await fetch(url, context=client_context(pki))
        first.write_text("tls_server_config: {cert_file: missing.crt, key_file: server.key}\n")
        assert not await srv.listener.reload()
        assert await status_of(url, context=client_context(other), headers=carol) == 200


# --- bad files -------------------------------------------------------------------------------

# exporter-toolkit's own bad files (web/tls_config_test.go TestYAMLFiles) and what we say.
UPSTREAM_BAD = {
    "web_config_junk.yml": "must be a mapping",
    "web_config_junk_key.yml": "tls_server_config.cert_filse: unknown key",
    "web_config_noAuth_certPath_empty.bad.yml": "missing one of cert or cert_file",
    "web_config_noAuth_cert_empty.bad.yml": "missing one of cert or cert_file",
    "web_config_noAuth_keyPath_empty.bad.yml": "missing one of key or key_file",
    "web_config_noAuth_key_empty.bad.yml": "missing one of key or key_file",
    "web_config_noAuth_certPath_keyPath_empty.bad.yml": "invalid ClientAuth 'x'",
    "web_config_noAuth_certPath_invalid.bad.yml": "cert_file: no such file",
    "web_config_noAuth_keyPath_invalid.bad.yml": "key_file: no such file",
    "web_config_noAuth_certPath_keyPath_invalid.bad.yml": "no such file",
    "web_config_noAuth.bad.yml": "configured without a Client Auth Policy",
    "web_config_auth_clientCAs_invalid.bad.yml": "client_ca_file: no such file",
    "web_config_auth_user_list_invalid.bad.yml": "basic_auth_users.john: not a bcrypt hash",
    "web_config_noAuth_inventedCiphers.bad.yml": "unknown cipher: TLS_ECDHE_ECDSA_WITH_AES_128",
    "web_config_noAuth_inventedCurves.bad.yml": "unknown curve: CurveP257",
    "web_config_noAuth_wrongTLSVersion.bad.yml": "unknown TLS version 'TLS111'",
    "web_config_headers_content_type_options.bad.yml": "X-Content-Type-Options: invalid value",
    "web_config_headers_frame_options.bad.yml": "X-Frame-Options: invalid value 'foo'",
    "web_config_headers_extra_header.bad.yml": "headers.Content-Type: unknown key",
    # Where Python's ssl cannot do what Go does, the file is refused, never served otherwise.
    "tls_config_noAuth.requireanyclientcert.good.yml": "RequireAnyClientCert",
    "tls_config_noAuth.requireanyclientcertkeyinline.good.yml": "RequireAnyClientCert",
    "web_config_noAuth_allCurves.good.yml": "give at most one curve",
}
UPSTREAM_GOOD = (
    "web_config_empty.yml", "web_config_users.good.yml", "web_config_users_noTLS.good.yml",
    "web_config_noAuth.good.yml", "web_config_noAuth.good.blocking.yml",
    "web_config_noAuth_allCiphers.good.yml", "web_config_noAuth_someCiphers.good.yml",
    "web_config_noAuth_someCiphers_noOrder.good.yml", "web_config_noAuth_someCurves.good.yml",
    "web_config_noAuth_noHTTP2.good.yml", "web_config_noAuth_noHTTP2Cipher.bad.yml",
    "web_config_noAuth_tlsInline.good.yml", "web_config_headers.good.yml",
    "tls_config_noAuth.requireandverifyclientcert.good.yml", "web_config_auth_client_san.good.yaml",
    "web_config_rate_limiter_nonblocking.yaml", "web_config_rate_limiter_one_second.yaml",
    # A SAN list that no client matches is refused per connection, not at load.
    "web_config_auth_client_san.bad.yaml",
    # Upstream never loads it; Go verifies against the system roots then, and so do we.
    "web_config_auth_clientCAs_missing.bad.yml",
)  # fmt: skip


@pytest.fixture(scope="module")
def upstream_dir(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Path:
    """The fixtures beside the certificate files they name, as in exporter-toolkit's testdata."""
    folder = tmp_path_factory.mktemp("upstream")
    for item in FIXTURES.glob("*.y*ml"):
        shutil.copy(item, folder / item.name)
    shutil.copy(pki.folder / "server.crt", folder / "server.crt")
    shutil.copy(pki.folder / "server.key", folder / "server.key")
    shutil.copy(pki.folder / "client-ca.crt", folder / "client_selfsigned.pem")
    shutil.copy(pki.folder / "client-ca.crt", folder / "client2_selfsigned.pem")
    return folder


def test_every_upstream_fixture_is_covered() -> None:
    names = {p.name for p in FIXTURES.glob("*.y*ml")}
    unlisted = names - set(UPSTREAM_BAD) - set(UPSTREAM_GOOD)
    assert not unlisted


@pytest.mark.parametrize(("name", "expected"), sorted(UPSTREAM_BAD.items()))
def test_upstream_bad_files_are_refused_with_the_reason(
    upstream_dir: Path, name: str, expected: str
) -> None:
    with pytest.raises(WebConfigError) as caught:
        WebSecurity(upstream_dir / name)
    assert any(expected in p for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize("name", UPSTREAM_GOOD)
def test_upstream_good_files_load(upstream_dir: Path, name: str) -> None:
    WebSecurity(upstream_dir / name).close()


def test_defaults_are_exporter_toolkits(upstream_dir: Path) -> None:
    tls = load_web_config(upstream_dir / "web_config_noAuth.good.yml").tls
    assert tls is not None
    assert (tls.min_version, tls.max_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert tls.prefer_server_cipher_suites
    assert load_web_config(upstream_dir / "web_config_empty.yml").tls is None
    # Inline PEM (cert/key) works as well as files.
    inline = WebSecurity(upstream_dir / "web_config_noAuth_tlsInline.good.yml")
    assert inline.context is not None
    inline.close()


def test_a_hash_is_checked_at_load_and_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n  prom: plain-text-canary\n")
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert "plain-text-canary" not in str(caught.value)
    made = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    path.write_text(yaml.safe_dump({"basic_auth_users": {"prom": made}}))
    assert dict(load_web_config(path).users) == {"prom": made}


# --- the command line -----------------------------------------------------------------------


def exporter_config(folder: Path) -> Path:
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump({"timezone": "UTC", "state_path": str(folder / "state.db")}))
    return path


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"tls_server_config": {"cert_file": "nope.crt", "key_file": "server.key"}},
         "tls_server_config.cert_file: no such file"),
        ({"basic_auth_users": {"prom": "secret"}}, "basic_auth_users.prom: not a bcrypt hash"),
        ({"tls_server_config": {"cert_file": "server.key", "key_file": "server.key"}},
         "failed to load the certificate and key"),
    ],
)  # fmt: skip
def test_serve_with_a_bad_web_config_exits_2_before_listening(
    tmp_path: Path, pki: PKI, doc: dict[str, Any], expected: str
) -> None:
    path = write_web_config(tmp_path, doc, pki)
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(exporter_config(tmp_path)),
         "--web.config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"{path}: " in proc.stderr
    assert expected in proc.stderr
    assert "secret" not in proc.stderr.replace("secret=", "")
    check = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config.file",
         str(exporter_config(tmp_path)), "--web.config.file", str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert check.returncode == 2
    assert expected in check.stderr


def test_a_health_path_must_be_a_path(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(exporter_config(tmp_path)),
         "--web.health-path", "healthy", "--web.listen-address", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "--web.health-path 'healthy': must start with /"


def test_request_client_cert_asks_nothing_it_would_not_use(tmp_path: Path, pki: PKI) -> None:
    doc = {"tls_server_config": {**MTLS, "client_auth_type": "RequestClientCert"}}
    security = WebSecurity(write_web_config(tmp_path, doc, pki))
    assert security.context is not None
    assert security.context.verify_mode == ssl.CERT_NONE
    security.close()
    doc = {"tls_server_config": {**MTLS, "client_auth_type": "NoClientCert"}}
    with pytest.raises(WebConfigError, match="without a Client Auth Policy"):
        WebSecurity(write_web_config(tmp_path, doc, pki))


async def _read_until(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> None:
    async with asyncio.timeout(30):
        while True:
            line = (await stream.readline()).decode()
            assert line, "the exporter exited: " + "".join(seen)
            seen.append(line)
            if needle in line:
                return


async def test_sighup_rereads_the_file_and_a_broken_one_keeps_the_old(
    tmp_path: Path, pki: PKI
) -> None:
    users = upstream_users()
    path = dave_only(tmp_path, pki)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--config.file", str(exporter_config(tmp_path)),
        "--web.config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[str] = []
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        await _read_until(proc.stderr, "listening on", seen)
        ctx = client_context(pki)
        assert (await fetch(url, context=ctx, headers=basic("dave", "dave123")))[0] == 200
        doc = {"tls_server_config": TLS, "basic_auth_users": {"carol": users["carol"]}}
        path.write_text(yaml.safe_dump(doc))
        proc.send_signal(signal.SIGHUP)
        await _read_until(proc.stderr, "reloaded", seen)
        assert (await fetch(url, context=ctx, headers=basic("carol", "carol123")))[0] == 200
        assert (await fetch(url, context=ctx, headers=basic("dave", "dave123")))[0] == 401
        path.write_text("basic_auth_users: [not, a, mapping]\n")
        proc.send_signal(signal.SIGHUP)
        await _read_until(proc.stderr, "not reloaded", seen)
        assert "basic_auth_users: must be a mapping" in seen[-1]
        assert (await fetch(url, context=ctx, headers=basic("carol", "carol123")))[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, "".join(seen)


# --- a real Prometheus scrapes it -----------------------------------------------------------


async def _targets(prom_url: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(prom_url + "/api/v1/targets") as resp,
    ):
        doc = await resp.json()
    targets: list[dict[str, Any]] = doc["data"]["activeTargets"]
    return targets


async def _wait_for(check: Callable[[], Any], within: float = 60.0) -> Any:
    async with asyncio.timeout(within):
        while True:
            got = await check()
            if got:
                return got
            await asyncio.sleep(0.2)


@pytest.mark.e2e
async def test_prometheus_scrapes_over_tls_with_basic_auth(tmp_path: Path, pki: PKI) -> None:
    doc = {"tls_server_config": TLS, "basic_auth_users": {"prometheus": upstream_users()["dave"]}}
    path = write_web_config(tmp_path / "exporter", doc, pki)
    (tmp_path / "password").write_text("dave123\n")
    (tmp_path / "wrong").write_text("not-it\n")
    async with serving(path) as srv:
        exporter = f"127.0.0.1:{srv.port}"
        config = prometheus_config(exporter=exporter, alertmanager=None, rule_files=[],
                                   interval="1s")  # fmt: skip
        good = config["scrape_configs"][0]
        good.update(scheme="https", tls_config={"ca_file": str(pki.ca)},
                    basic_auth={"username": "prometheus",
                                "password_file": str(tmp_path / "password")})  # fmt: skip
        wrong = {**good, "job_name": "wrong-password",
                 "basic_auth": {"username": "prometheus",
                                "password_file": str(tmp_path / "wrong")}}  # fmt: skip
        config["scrape_configs"].append(wrong)
        prom = await start_prometheus(tmp_path / "prom", port=free_port(), config=config)
        try:

            async def settled() -> dict[str, dict[str, Any]] | None:
                by_job = {t["labels"]["job"]: t for t in await _targets(prom.url)}
                done = len(by_job) == 2 and all(t["health"] != "unknown" for t in by_job.values())
                return by_job if done and by_job["backup-exporter"]["health"] == "up" else None

            by_job = await _wait_for(settled)
            assert by_job["backup-exporter"]["scrapeUrl"] == f"https://{exporter}/metrics"
            assert by_job["wrong-password"]["health"] == "down"
            assert "401" in by_job["wrong-password"]["lastError"]

            async def up() -> list[Any] | None:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(prom.url + "/api/v1/query",
                             params={"query": 'up{job="backup-exporter"} == 1'}) as resp,
                ):  # fmt: skip
                    result: list[Any] = (await resp.json())["data"]["result"]
                return result or None

            assert await _wait_for(up)
        finally:
            prom.stop()
