"""A thin async JSON-RPC 2.0 client for the TrueNAS WebSocket API (``wss://HOST/api/current``).

TrueNAS 25.04 introduced the versioned JSON-RPC 2.0 API over a WebSocket at ``/api/current``
(docs/backends.md §2.0); the REST API is deprecated since 25.04 and gone in 26. Every request is an
envelope ``{"jsonrpc": "2.0", "id": n, "method": ..., "params": [...]}`` answered by
``{"id": n, "result": ...}`` or ``{"id": n, "error": {"code", "message", "data"}}`` (§2.1).
Datetimes arrive in TrueNAS "ejson": ``{"$date": ms}``, ``{"$type": "date", "$value": ...}``,
``{"$time": "HH:MM:SS"}`` and ``{"$set": [...]}``; :func:`decode_ejson` turns them into Python
objects (aware UTC datetimes for ``$date``).

Errors become :class:`~exporter.sources.base.FetchError` with a reason:

* ``-32601`` method not found -> ``parse`` (:class:`MethodNotFoundError`, the API of this
  version differs), ``-32602``/``-32600``/``-32700`` -> ``parse``;
* ``-32001`` call error: ``EACCES``/``EPERM`` -> ``permission``, ``ENOTAUTHENTICATED`` ->
  ``auth``, anything else -> ``http`` with ``data.reason``;
* ``-32000`` (too many concurrent calls) and other codes -> ``http``;
* TLS failures -> ``tls``; refused/reset connections -> ``connection``; a handshake answered
  404 -> :class:`NoJsonRpcError` (``config``: no JSON-RPC API, TrueNAS 24.10 and older only have
  the legacy ``/websocket`` and REST).

:class:`TrueNASRestClient` is the second transport behind the same ``call(method, *params)``:
REST ``https://HOST/api/v2.0`` (docs/backends.md §2.7), which TrueNAS 24.10 offers instead. A query
method maps to a GET of its namespace (``pool.dataset.query`` -> ``/api/v2.0/pool/dataset``,
``system.general.config`` -> ``/api/v2.0/system/general``), filters to ``?field=value`` and
query options to ``limit``/``offset``/``extra.<opt>=<json>`` (24.10's ``restful.py``
``_filterable_args`` JSON-decodes ``extra.*`` values); ``select`` has no REST form and is
dropped (the whole entries come back). The bodies are the JSON-RPC results, same ejson.
HTTP 401 -> ``auth``, 403 -> ``permission``, 404 -> ``parse`` (endpoint named), 422/5xx ->
``http``, a body that is not JSON -> ``parse``.

**Plain ws:// is refused for API keys.** TrueNAS revokes an API key that logs in over a
non-TLS connection and answers ``EXPIRED`` (docs/backends.md §2.1, "TRAP"), so
:meth:`TrueNASClient.login_api_key` raises before sending anything when the URL is ``ws://``
(and :meth:`TrueNASRestClient.login_api_key` when it is ``http://``).
Server messages are redacted of the key before they reach an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
import time as time_module
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp
from yarl import URL

from exporter.sources.base import FetchError, retry_after_header

__all__ = [
    "PLAIN_HTTP_REFUSAL",
    "PLAIN_WS_REFUSAL",
    "ApiClient",
    "MethodNotFoundError",
    "NoJsonRpcError",
    "TrueNASClient",
    "TrueNASRestClient",
    "api_url",
    "decode_ejson",
    "rest_path",
    "rest_query",
    "rest_url",
]

PLAIN_WS_REFUSAL = (
    "refusing to send an API key over plain ws://: TrueNAS revokes an API key that is used "
    "over an unencrypted connection (the key would stop working); use wss://"
)

PLAIN_HTTP_REFUSAL = (
    "refusing to send an API key over plain http://: TrueNAS revokes an API key that is used "
    "over an unencrypted connection (the key would stop working); use https://"
)

#: Snapshot listings of a busy NAS are large; aiohttp's default frame limit is 4 MiB.
MAX_MESSAGE_BYTES = 256 * 2**20

_MAX_REASON = 300

#: Answers larger than this are decoded in a worker thread, not on the event loop: decoding a
#: few MiB of ejson takes tens of milliseconds, which /metrics must not wait behind.
OFFLOAD_DECODE_BYTES = 64 * 2**10


#: A worker thread decoding a page gives the GIL back every this many JSON objects.
YIELD_EVERY = 1024


def yielding(hook: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """Wrap an ``object_hook`` so that it releases the GIL every ``YIELD_EVERY`` objects.

    A thread holding the GIL gives it up only every ``sys.getswitchinterval()`` (5 ms) when
    another thread asks; the event loop needs it several times per scrape, so a decode in a
    worker thread would add up to 5 ms per step. ``time.sleep(0)`` hands it over at once.
    """
    count = 0

    def wrapped(obj: dict[str, Any]) -> Any:
        nonlocal count
        count += 1
        if count % YIELD_EVERY == 0:
            time_module.sleep(0)
        return hook(obj)

    return wrapped


def loads_yielding(data: str | bytes) -> Any:
    """``json.loads`` with the ejson hook, giving the GIL back regularly (a worker thread's)."""
    return json.loads(data, object_hook=yielding(decode_ejson))


async def _loads(data: str | bytes) -> Any:
    """``json.loads`` with the ejson hook; off the event loop when ``data`` is large."""
    if len(data) <= OFFLOAD_DECODE_BYTES:
        return json.loads(data, object_hook=decode_ejson)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, loads_yielding, data)


class MethodNotFoundError(FetchError):
    """The server has no such method (JSON-RPC ``-32601``); this TrueNAS version lacks it."""

    def __init__(self, method: str) -> None:
        super().__init__("parse", f"TrueNAS has no method {method} (API version mismatch)")
        self.method = method


class NoJsonRpcError(FetchError):
    """The WebSocket handshake was answered 404: no JSON-RPC API (TrueNAS 24.10 or older)."""


class ApiClient(Protocol):
    """What the source needs of a transport (JSON-RPC WebSocket or REST)."""

    async def login_api_key(self, api_key: str, *, username: str = "") -> None:
        """Authenticate (or remember the key) without ever sending it in clear."""

    async def call(self, method: str, *params: Any) -> Any:
        """Call a middleware method; return its decoded result."""

    async def close(self) -> None:
        """Release the connection (idempotent)."""


def decode_ejson(obj: dict[str, Any]) -> Any:
    """Decode one TrueNAS ejson object (a ``json.loads`` ``object_hook``)."""
    if len(obj) == 1:
        if "$date" in obj:
            ms = obj["$date"]
            if isinstance(ms, (int, float)) and not isinstance(ms, bool):
                return datetime.fromtimestamp(ms / 1000, UTC)
        elif "$time" in obj:
            text = obj["$time"]
            if isinstance(text, str):
                with contextlib.suppress(ValueError):
                    return time.fromisoformat(text)
        elif "$set" in obj:
            items = obj["$set"]
            if isinstance(items, list):
                try:
                    return set(items)
                except TypeError:  # unhashable members (dicts): keep the list
                    return items
    elif len(obj) == 2 and obj.get("$type") == "date" and isinstance(obj.get("$value"), str):
        with contextlib.suppress(ValueError):
            return date.fromisoformat(obj["$value"])
    return obj


def api_url(url: str) -> URL:
    """Normalise a URL: ``https``/``http`` become ``wss``/``ws``, no path means ``/api/current``."""
    parsed = URL(url)
    scheme = {"https": "wss", "http": "ws"}.get(parsed.scheme, parsed.scheme)
    if scheme not in ("ws", "wss") or not parsed.host:
        raise ValueError(f"invalid TrueNAS URL {url!r} (expected wss://host[:port])")
    path = parsed.path if parsed.path not in ("", "/") else "/api/current"
    return parsed.with_scheme(scheme).with_path(path).with_query(None).with_fragment(None)


class _Transport:
    """What both transports share: the URL, the plain-text check and ``async with``."""

    url: URL

    @property
    def plain(self) -> bool:
        """Whether the connection is unencrypted (``ws://`` or ``http://``)."""
        return self.url.scheme in ("ws", "http")

    @property
    def where(self) -> str:
        """``host:port`` for messages."""
        return f"{self.url.host}:{self.url.port}"

    async def connect(self) -> None:
        """Open the connection or session."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close it."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class TrueNASClient(_Transport):
    """One WebSocket connection: sequential JSON-RPC calls with ids; use as ``async with``.

    ``on_call`` is called with each method name before it is sent (the source counts API
    calls with it). Calls are sequential: the exporter makes a handful per poll, and one
    outstanding call at a time keeps far below TrueNAS's 20-calls-per-connection limit.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        ssl_context: ssl.SSLContext | bool = True,
        on_call: Callable[[str], None] | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.url = url if isinstance(url, URL) else api_url(url)
        self._ssl = ssl_context
        self._on_call = on_call
        self._max_message_bytes = max_message_bytes
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._secrets: list[str] = []

    async def connect(self) -> None:
        """Open the WebSocket; raise :class:`FetchError` when that fails."""
        self._session = aiohttp.ClientSession()
        ssl_arg: ssl.SSLContext | bool = self._ssl if self.url.scheme == "wss" else False
        try:
            self._ws = await self._session.ws_connect(
                self.url,
                ssl=ssl_arg,
                max_msg_size=self._max_message_bytes,
                autoping=True,
                # A hung server must not stall shutdown: the close handshake waits at most 2 s.
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
            )
        except asyncio.CancelledError:
            # A poll cut at its timeout mid-handshake: the session must not outlive it
            # (found by the soak: one unclosed ClientSession per hung TrueNAS poll).
            await self.close()
            raise
        except aiohttp.WSServerHandshakeError as exc:
            await self.close()
            wait = retry_after_header(exc.headers, time_module.time())
            raise self._handshake_error(exc.status, wait) from None
        except (aiohttp.ClientError, OSError) as exc:
            await self.close()
            raise _transport_error(exc, self.where) from None

    def _handshake_error(self, status: int, retry_after: float | None = None) -> FetchError:
        if status == 404:
            return NoJsonRpcError(
                "config",
                f"{self.url.path} on {self.where} has no JSON-RPC API (HTTP 404): TrueNAS "
                "24.10 and older offer only the legacy /websocket and REST APIs "
                "(JSON-RPC needs TrueNAS 25.04 or newer)",
            )
        if status in (401, 403):
            return FetchError("auth", f"{self.where} refused the WebSocket (HTTP {status})")
        # A reverse proxy (or the middleware's own limits) may refuse the upgrade with 429/503
        # and Retry-After (RFC 9110): the poller then makes no request before it.
        return FetchError(
            "http",
            f"WebSocket handshake with {self.where} failed: HTTP {status}",
            retry_after=retry_after if status in (429, 503) else None,
        )

    async def close(self) -> None:
        """Close the connection (idempotent, never raises)."""
        ws, self._ws = self._ws, None
        session, self._session = self._session, None
        try:
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
        finally:
            # Also when the close handshake with a hung server is cancelled (shutdown).
            if session is not None:
                await session.close()

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:_MAX_REASON]

    async def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` and return its decoded ``result``; raise :class:`FetchError`."""
        ws = self._ws
        if ws is None:
            raise FetchError("connection", f"not connected to {self.where}")
        call_id = next(self._ids)
        envelope = {"jsonrpc": "2.0", "id": call_id, "method": method, "params": list(params)}
        if self._on_call is not None:
            self._on_call(method)
        try:
            await ws.send_str(json.dumps(envelope))
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            raise FetchError(
                "connection", f"{self.where} closed the connection before {method}"
            ) from None
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                answer = await self._decode(msg.data, method)
                if not isinstance(answer, dict) or answer.get("id") != call_id:
                    continue  # a notification or a stale answer
                return self._result(answer, method)
            if msg.type == aiohttp.WSMsgType.ERROR:
                raise FetchError("connection", f"WebSocket error while calling {method}")
            raise FetchError("connection", f"{self.where} closed the connection during {method}")

    async def _decode(self, data: str | bytes, method: str) -> Any:
        try:
            return await _loads(data)
        except (ValueError, RecursionError):
            raise FetchError("parse", f"TrueNAS sent invalid JSON in answer to {method}") from None

    def _result(self, answer: dict[str, Any], method: str) -> Any:
        if "error" in answer and answer["error"] is not None:
            raise self._error(answer["error"], method)
        if "result" not in answer:
            raise FetchError("parse", f"answer to {method} has neither result nor error")
        return answer["result"]

    def _error(self, error: Any, method: str) -> FetchError:
        if not isinstance(error, dict):
            return FetchError("parse", f"malformed error object in answer to {method}")
        code = error.get("code")
        message = self._redact(str(error.get("message") or ""))
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        assert isinstance(data, dict)
        reason = self._redact(str(data.get("reason") or message or "no reason given"))
        errname = str(data.get("errname") or "")
        errno_ = data.get("error")
        if code == -32601:
            return MethodNotFoundError(method)
        if code in (-32700, -32600, -32602):
            return FetchError("parse", f"TrueNAS rejected the call {method}: {reason}")
        if code == -32001:
            if errname == "ENOTAUTHENTICATED":
                return FetchError("auth", f"not authenticated for {method}: {reason}")
            if errname in ("EACCES", "EPERM") or errno_ in (1, 13):
                return FetchError(
                    "permission",
                    f"not allowed to call {method}: {reason} (give the API user's privilege "
                    "the READONLY_ADMIN role)",
                )
            return FetchError("http", f"{method} failed: {reason}")
        if code == -32000:
            return FetchError("http", f"{method}: TrueNAS is busy (too many concurrent calls)")
        return FetchError("http", f"{method} failed with JSON-RPC error {code}: {reason}")

    async def login_api_key(self, api_key: str, *, username: str = "") -> None:
        """Authenticate with an API key.

        ``auth.login_ex`` (API_KEY_PLAIN) is used when a username is given and the server has
        it, else ``auth.login_with_api_key``.

        Raises ``FetchError("config")`` *before sending anything* on a plain ``ws://`` URL.
        """
        if self.plain:
            raise FetchError("config", PLAIN_WS_REFUSAL)
        self._secrets.append(api_key)
        if username:
            try:
                answer = await self.call(
                    "auth.login_ex",
                    {
                        "mechanism": "API_KEY_PLAIN",
                        "username": username,
                        "api_key": api_key,
                        "login_options": {"user_info": False},
                    },
                )
            except MethodNotFoundError:
                pass  # older than 25.04: only the legacy key login exists
            else:
                _check_login_ex(answer, username)
                return
        ok = await self.call("auth.login_with_api_key", api_key)
        if ok is not True:
            raise FetchError(
                "auth", "TrueNAS rejected the API key (auth.login_with_api_key returned false)"
            )


def _transport_error(exc: BaseException, where: str) -> FetchError:
    """Map an aiohttp/OS failure to connect to ``tls`` or ``connection``."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return FetchError(
            "tls",
            f"certificate of {where} not trusted ({exc.certificate_error}); "
            "set ca_file to the TrueNAS certificate (or verify_tls: false)",
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return FetchError("tls", f"TLS handshake with {where} failed: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        why = exc.os_error.strerror or type(exc.os_error).__name__
        return FetchError("connection", f"cannot connect to {where}: {why}")
    return FetchError("connection", f"cannot connect to {where}: {type(exc).__name__}")


def rest_url(url: str | URL) -> URL:
    """Return the REST base ``https://HOST[:PORT]/api/v2.0`` of a ws/wss/http/https URL."""
    parsed = URL(url) if isinstance(url, str) else url
    scheme = {"wss": "https", "ws": "http"}.get(parsed.scheme, parsed.scheme)
    if scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"invalid TrueNAS URL {str(url)!r} (expected https://host[:port])")
    return parsed.with_scheme(scheme).with_path("/api/v2.0").with_query(None).with_fragment(None)


def rest_path(method: str) -> str:
    """Return a method's REST resource (``pool.dataset.query`` -> ``pool/dataset``).

    ``restful.py`` serves a CRUD service's ``query`` and a config service's ``config`` on the
    service path itself, any other method on ``<service>/<method>``.
    """
    for suffix in (".query", ".config"):
        if method.endswith(suffix):
            method = method[: -len(suffix)]
            break
    return method.replace(".", "/")


_REST_OPS = {"=": "", "!=": "__neq", ">": "__gt", "<": "__lt", ">=": "__gte", "<=": "__lte"}


def rest_query(params: tuple[Any, ...]) -> list[tuple[str, str]]:
    """Turn ``[filters, options]`` into REST query parameters (docs/backends.md §2.1).

    Filters ``[field, op, value]`` become ``field[__op]=value``; ``limit``/``offset`` pass
    through; each ``extra`` option becomes ``extra.<opt>=<json>``. ``select``/``order_by`` have
    no REST form and are dropped (the parsers read whole entries anyway).
    """
    query: list[tuple[str, str]] = []
    filters = params[0] if params and isinstance(params[0], list) else []
    options = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
    for item in filters:
        if not isinstance(item, (list, tuple)) or len(item) != 3 or item[1] not in _REST_OPS:
            raise ValueError(f"filter {item!r} has no REST form")
        field, op, value = item
        text = json.dumps(value) if not isinstance(value, str) else value
        query.append((f"{field}{_REST_OPS[op]}", text))
    for key in ("limit", "offset"):
        if isinstance(options.get(key), int) and options[key]:
            query.append((key, str(options[key])))
    extra = options.get("extra")
    if isinstance(extra, dict):
        query.extend((f"extra.{k}", json.dumps(v)) for k, v in extra.items())
    return query


class TrueNASRestClient(_Transport):
    """REST ``/api/v2.0`` over https with ``Authorization: Bearer`` (TrueNAS 24.10).

    Same interface as :class:`TrueNASClient`: ``login_api_key`` only remembers the key (REST
    is stateless: every request carries it), ``call(method, *params)`` GETs the method's
    resource. ``on_call`` is called with each method name before its request is sent.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        ssl_context: ssl.SSLContext | bool = True,
        on_call: Callable[[str], None] | None = None,
    ) -> None:
        self.url = rest_url(url)
        self._ssl = ssl_context
        self._on_call = on_call
        self._session: aiohttp.ClientSession | None = None
        self._key = ""

    async def connect(self) -> None:
        """Open the HTTP session (connections are made per request)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        """Close the session (idempotent, never raises)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def login_api_key(self, api_key: str, *, username: str = "") -> None:
        """Remember the key for the ``Authorization`` header; ``username`` is not needed.

        Raises ``FetchError("config")`` on a plain ``http://`` URL, before anything is sent.
        """
        if self.plain:
            raise FetchError("config", PLAIN_HTTP_REFUSAL)
        self._key = api_key

    def _redact(self, text: str) -> str:
        if self._key:
            text = text.replace(self._key, "***")
        return text[:_MAX_REASON]

    async def call(self, method: str, *params: Any) -> Any:
        """GET the method's REST resource and return the decoded body; raise FetchError."""
        session = self._session
        if session is None:
            raise FetchError("connection", f"not connected to {self.where}")
        if not self._key:
            raise FetchError("auth", f"no API key for {method} (login_api_key first)")
        if self.plain:
            raise FetchError("config", PLAIN_HTTP_REFUSAL)
        endpoint = f"{self.url.path}/{rest_path(method)}"
        try:
            query = rest_query(params)
        except ValueError as exc:
            raise FetchError("config", f"{method}: {exc}") from None
        if self._on_call is not None:
            self._on_call(method)
        try:
            async with session.get(
                self.url.with_path(endpoint),
                params=query,
                headers={"Authorization": f"Bearer {self._key}", "Accept": "application/json"},
                ssl=self._ssl,
                allow_redirects=False,  # never follow a redirect to plain http with the key
            ) as resp:
                status = resp.status
                body = await resp.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise _transport_error(exc, self.where) from None
        if status != 200:
            raise self._status_error(status, body, endpoint)
        try:
            return await _loads(body)
        except (ValueError, RecursionError):
            raise FetchError(
                "parse", f"TrueNAS sent invalid JSON from GET {endpoint} ({method})"
            ) from None

    def _status_error(self, status: int, body: bytes, endpoint: str) -> FetchError:
        what = f"GET {endpoint} on {self.where}"
        if status == 401:
            return FetchError("auth", f"TrueNAS rejected the API key (HTTP 401 on {what})")
        if status == 403:
            return FetchError(
                "permission",
                f"not allowed: {what} (HTTP 403; give the API user's privilege the "
                "READONLY_ADMIN role)",
            )
        if status == 404:
            return FetchError(
                "parse", f"TrueNAS has no REST endpoint {endpoint} (HTTP 404 on {what})"
            )
        reason = ""
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            answer = json.loads(body)
            if isinstance(answer, dict) and isinstance(answer.get("message"), str):
                reason = ": " + self._redact(answer["message"])
        return FetchError("http", f"{what} failed with HTTP {status}{reason}")


def _check_login_ex(answer: Any, username: str) -> None:
    if not isinstance(answer, dict):
        raise FetchError("parse", "auth.login_ex answered something other than an object")
    kind = answer.get("response_type")
    if kind == "SUCCESS":
        return
    messages = {
        "AUTH_ERR": f"TrueNAS rejected the API key for user {username!r} (AUTH_ERR)",
        "EXPIRED": (
            f"the API key of user {username!r} is expired or revoked (EXPIRED); TrueNAS "
            "also revokes keys that were once used over plain ws://"
        ),
        "OTP_REQUIRED": (
            f"user {username!r} needs a one-time password (OTP_REQUIRED); use a dedicated "
            "user without two-factor authentication for the exporter"
        ),
        "REDIRECT": "TrueNAS redirects the login (REDIRECT): point url at the active controller",
    }
    if kind not in messages:
        # Not a refusal we know: an answer we cannot read, not proof the key is bad.
        raise FetchError("parse", f"unexpected auth.login_ex response_type {str(kind)[:40]!r}")
    raise FetchError("auth", messages[str(kind)])
