"""The TrueNAS clients: JSON-RPC envelopes, ejson, error mapping, login, the ws:// refusal, REST."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from yarl import URL

from exporter.core.clock import FakeClock
from exporter.sim.tls import SelfSignedCert, make_self_signed_cert
from exporter.sim.truenas import FakeTrueNAS, TrueNASScenario, homelab, start_fake_truenas
from exporter.sources.base import FetchError
from exporter.sources.truenas.client import (
    MethodNotFoundError,
    NoJsonRpcError,
    TrueNASClient,
    TrueNASRestClient,
    api_url,
    decode_ejson,
    rest_path,
    rest_query,
    rest_url,
)

START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def scenario(clock: FakeClock) -> TrueNASScenario:
    return homelab(clock.time, history_days=3)


@pytest.fixture
async def fake(scenario: TrueNASScenario) -> AsyncIterator[FakeTrueNAS]:
    server = await start_fake_truenas(scenario)
    yield server
    await server.stop()


def client_for(fake: FakeTrueNAS) -> TrueNASClient:
    assert fake.ca_file is not None
    return TrueNASClient(fake.url, ssl_context=ssl.create_default_context(cafile=fake.ca_file))


def test_decode_ejson_types() -> None:
    text = json.dumps(
        {
            "when": {"$date": 1768091642000},
            "day": {"$type": "date", "$value": "2026-01-29"},
            "at": {"$time": "02:10:00"},
            "tags": {"$set": ["a", "b"]},
            "nested": [{"$date": 0}, {"$date": "not a number"}],
            "plain": {"$date": 1, "other": 2},
        }
    )
    got = json.loads(text, object_hook=decode_ejson)
    assert got["when"] == datetime(2026, 1, 11, 0, 34, 2, tzinfo=UTC)
    assert got["day"] == date(2026, 1, 29)
    assert got["at"] == time(2, 10)
    assert got["tags"] == {"a", "b"}
    assert got["nested"][0] == datetime(1970, 1, 1, tzinfo=UTC)
    assert got["nested"][1] == {"$date": "not a number"}
    assert got["plain"] == {"$date": 1, "other": 2}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("wss://nas.lan", "wss://nas.lan/api/current"),
        ("wss://nas.lan:8443/", "wss://nas.lan:8443/api/current"),
        ("https://nas.lan", "wss://nas.lan/api/current"),
        ("wss://nas.lan/api/v25.04.2", "wss://nas.lan/api/v25.04.2"),
        ("ws://nas.lan", "ws://nas.lan/api/current"),
    ],
)
def test_api_url(given: str, expected: str) -> None:
    assert str(api_url(given)) == expected


@pytest.mark.parametrize("bad", ["nas.lan", "ftp://nas.lan", "wss://"])
def test_api_url_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="expected wss://host"):
        api_url(bad)


async def test_login_ex_then_calls_with_increasing_ids(
    fake: FakeTrueNAS, scenario: TrueNASScenario
) -> None:
    calls: list[str] = []
    async with TrueNASClient(
        fake.url,
        ssl_context=ssl.create_default_context(cafile=fake.ca_file),
        on_call=calls.append,
    ) as client:
        await client.login_api_key(fake.api_key, username=fake.username)
        version = await client.call("system.version")
        pools = await client.call("pool.query", [], {"select": ["name", "scan"]})
    assert version == "TrueNAS-25.04.2.6"
    assert set(pools[0]) == {"name", "scan"}
    assert isinstance(pools[0]["scan"]["start_time"], datetime)
    frames = scenario.frames
    assert (
        [f["method"] for f in frames]
        == calls
        == [
            "auth.login_ex",
            "system.version",
            "pool.query",
        ]
    )
    assert [f["id"] for f in frames] == [1, 2, 3]
    assert all(f["jsonrpc"] == "2.0" for f in frames)
    assert frames[0]["params"][0]["mechanism"] == "API_KEY_PLAIN"


async def test_falls_back_to_login_with_api_key(
    fake: FakeTrueNAS, scenario: TrueNASScenario
) -> None:
    scenario.missing_methods.add("auth.login_ex")
    async with client_for(fake) as client:
        await client.login_api_key(fake.api_key, username=fake.username)
        assert await client.call("core.ping") == "pong"
    assert [f["method"] for f in scenario.frames][:2] == [
        "auth.login_ex",
        "auth.login_with_api_key",
    ]


@pytest.mark.parametrize("username", ["svc-exporter", ""])
async def test_wrong_key_is_auth_and_never_echoed(fake: FakeTrueNAS, username: str) -> None:
    wrong = "2-" + "z" * 64
    async with client_for(fake) as client:
        with pytest.raises(FetchError) as err:
            await client.login_api_key(wrong, username=username)
    assert err.value.reason == "auth"
    assert wrong not in str(err.value)


async def test_revoked_key_says_expired(fake: FakeTrueNAS, scenario: TrueNASScenario) -> None:
    scenario.revoke_key()
    async with client_for(fake) as client:
        with pytest.raises(FetchError, match="EXPIRED") as err:
            await client.login_api_key(fake.api_key, username=fake.username)
    assert err.value.reason == "auth"


async def test_error_mapping(fake: FakeTrueNAS, scenario: TrueNASScenario) -> None:
    scenario.denied_methods.add("cloudsync.query")
    async with client_for(fake) as client:
        with pytest.raises(FetchError) as before_login:
            await client.call("pool.query", [], {})
        assert before_login.value.reason == "auth"
        await client.login_api_key(fake.api_key, username=fake.username)
        with pytest.raises(MethodNotFoundError) as missing:
            await client.call("smart.nonexistent")
        assert missing.value.reason == "parse"
        assert "smart.nonexistent" in missing.value.message
        with pytest.raises(FetchError) as denied:
            await client.call("cloudsync.query", [], {})
        assert denied.value.reason == "permission"
        assert "READONLY_ADMIN" in denied.value.message


async def test_plain_ws_refuses_the_key_before_sending_it() -> None:
    clock = FakeClock(start=START)
    scenario = homelab(clock.time, history_days=1)
    fake = await start_fake_truenas(scenario, tls=False)
    try:
        assert fake.url.startswith("ws://")
        async with TrueNASClient(fake.url) as client:
            assert await client.call("core.ping") == "pong"  # the connection itself works
            with pytest.raises(FetchError) as err:
                await client.login_api_key(fake.api_key, username=fake.username)
    finally:
        await fake.stop()
    assert err.value.reason == "config"
    assert "revokes" in err.value.message and "wss://" in err.value.message
    assert [f["method"] for f in scenario.frames] == ["core.ping"]
    assert fake.api_key not in json.dumps(scenario.frames)
    assert not scenario.key_revoked


async def test_untrusted_certificate_is_tls(fake: FakeTrueNAS) -> None:
    with pytest.raises(FetchError) as err:
        async with TrueNASClient(fake.url, ssl_context=ssl.create_default_context()):
            pass
    assert err.value.reason == "tls"
    assert "ca_file" in err.value.message


async def test_refused_port_is_connection(scenario: TrueNASScenario) -> None:
    fake = await start_fake_truenas(scenario)
    await fake.stop()
    with pytest.raises(FetchError) as err:
        async with client_for(fake):
            pass
    assert err.value.reason == "connection"


async def test_dropped_connection_is_connection(
    fake: FakeTrueNAS, scenario: TrueNASScenario
) -> None:
    async with client_for(fake) as client:
        await client.login_api_key(fake.api_key, username=fake.username)
        scenario.drop_connections()
        with pytest.raises(FetchError) as err:
            await client.call("pool.query", [], {})
    assert err.value.reason == "connection"
    assert "pool.query" in err.value.message


async def _raw_server(handler: Any) -> tuple[web.AppRunner, str, SelfSignedCert]:
    """Serve ``handler`` at /api/current over TLS; return the runner, base URL and cert."""
    cert = make_self_signed_cert()
    app = web.Application()
    app.router.add_get("/api/current", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=cert.server_context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"wss://127.0.0.1:{port}", cert


async def test_invalid_json_404_and_redaction() -> None:
    secret = "7-" + "s" * 64

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame["method"] == "auth.login_with_api_key":
                # A server message that echoes the key must not leak it into our errors.
                error = {
                    "code": -32001,
                    "message": "Method call error",
                    "data": {"errname": "EINVAL", "reason": f"bad key {frame['params'][0]}"},
                }
                await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": frame["id"], "error": error}))
            else:
                await ws.send_str('{"jsonrpc": "2.0", "id": ' + str(frame["id"]) + ", oops")
        return ws

    runner, base, cert = await _raw_server(handler)
    context = cert.client_context()
    try:
        async with TrueNASClient(base, ssl_context=context) as client:
            with pytest.raises(FetchError) as echoed:
                await client.login_api_key(secret)
            with pytest.raises(FetchError) as bad_json:
                await client.call("system.version")
        with pytest.raises(FetchError) as not_found:
            async with TrueNASClient(f"{base}/api/v24.10", ssl_context=context):
                pass
    finally:
        await runner.cleanup()
    assert echoed.value.reason == "http"
    assert secret not in str(echoed.value) and "***" in echoed.value.message
    assert bad_json.value.reason == "parse"
    assert not_found.value.reason == "config"
    assert isinstance(not_found.value, NoJsonRpcError)  # the source falls back to REST on it
    assert "25.04" in not_found.value.message


# ------------------------------------------------------------------------------ REST (24.10)


def test_rest_mapping() -> None:
    # restful.py: a CRUD service's query and a config service's config live on the service path.
    assert rest_url("wss://nas.lan:8443/api/current") == URL("https://nas.lan:8443/api/v2.0")
    assert rest_url("https://nas.lan") == URL("https://nas.lan/api/v2.0")
    assert rest_path("pool.dataset.query") == "pool/dataset"
    assert rest_path("zfs.snapshot.query") == "zfs/snapshot"
    assert rest_path("smart.test.results") == "smart/test/results"
    assert rest_path("system.general.config") == "system/general"
    assert rest_path("system.version") == "system/version"
    options = {"select": ["name"], "limit": 5, "extra": {"flat": True, "properties": ["used"]}}
    assert rest_query(([["pool", "=", "tank"], ["id", ">", 3]], options)) == [
        ("pool", "tank"),
        ("id__gt", "3"),
        ("limit", "5"),
        ("extra.flat", "true"),
        ("extra.properties", '["used"]'),
    ]
    assert rest_query(()) == []


async def test_rest_refuses_plain_http_before_sending() -> None:
    async with TrueNASRestClient("http://127.0.0.1:9") as client:  # nothing listens there
        with pytest.raises(FetchError) as err:
            await client.login_api_key("1-" + "k" * 64)
        assert err.value.reason == "config" and "https://" in err.value.message
        with pytest.raises(FetchError) as no_key:
            await client.call("system.version")
    assert no_key.value.reason == "auth"


async def test_rest_status_and_body_errors() -> None:
    secret = "7-" + "s" * 64
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        status = int(request.match_info["status"])
        if status == 200:
            return web.Response(text='{"oops": ', content_type="application/json")
        body = json.dumps({"message": f"boom with {secret}", "errno": 5})
        return web.Response(status=status, text=body, content_type="application/json")

    cert = make_self_signed_cert()
    app = web.Application()
    app.router.add_get("/api/v2.0/status/{status}", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=cert.server_context)
    await site.start()
    port = runner.addresses[0][1]
    errors: dict[int, FetchError] = {}
    try:
        client = TrueNASRestClient(f"wss://127.0.0.1:{port}", ssl_context=cert.client_context())
        async with client:
            await client.login_api_key(secret)
            for status in (200, 401, 403, 404, 422, 502):
                with pytest.raises(FetchError) as err:
                    await client.call(f"status.{status}")
                errors[status] = err.value
    finally:
        await runner.cleanup()
    assert seen[0] == f"Bearer {secret}"
    reasons = {status: e.reason for status, e in errors.items()}
    assert reasons == {
        200: "parse",  # a body that is not JSON
        401: "auth",
        403: "permission",
        404: "parse",
        422: "http",
        502: "http",
    }
    assert "/api/v2.0/status/404" in errors[404].message
    assert "HTTP 502" in errors[502].message and "***" in errors[502].message
    assert all(secret not in str(e) for e in errors.values())
