"""The fake TrueNAS's methods: JSON-RPC 2.0 envelopes, the login, the query methods.

:func:`dispatch` answers one JSON-RPC frame of a WebSocket session; :func:`query_handlers` are the
query methods of the scenario's release, which the REST transport serves too (at
:func:`rest_resource`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.sim.truenas.scenario import TrueNASScenario

_VERSIONS = {
    "24.10": "TrueNAS-SCALE-24.10.2.4",
    "25.04": "TrueNAS-25.04.2.6",
    "25.10": "TrueNAS-25.10.0",
    "26.0": "TrueNAS-26.0.0-BETA.3",
}


def rpc_error(
    call_id: Any, code: int, message: str, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return a JSON-RPC 2.0 error envelope."""
    return {
        "jsonrpc": "2.0",
        "id": call_id,
        "error": {"code": code, "message": message, "data": data},
    }


def _call_error(call_id: Any, errname: str, errno_: int, reason: str) -> dict[str, Any]:
    return rpc_error(
        call_id,
        -32001,
        "Method call error",
        {
            "error": errno_,
            "errname": errname,
            "reason": reason,
            "trace": {"class": "CallError", "frames": [], "formatted": "", "repr": reason},
            "extra": None,
        },
    )


def _options(params: list[Any]) -> dict[str, Any]:
    if len(params) > 1 and isinstance(params[1], dict):
        return params[1]
    return {}


def _order_key(field: str) -> Callable[[dict[str, Any]], Any]:
    def key(item: dict[str, Any]) -> Any:
        value: Any = item
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    return key


def _select(items: list[dict[str, Any]], options: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply ``query-options`` as the middleware's ``filter_list`` does.

    truenas/middleware, src/middlewared/middlewared/utils/filter_list.py, ``filter_list``:
    ``order_by`` (a ``-`` prefix reverses), then ``offset`` (``rv[offset:]``), then ``limit``
    (``rv[:limit]``), 0 meaning none; ``select`` keeps the named keys.
    """
    for field in options.get("order_by") or ():
        reverse = field.startswith("-")
        items = sorted(items, key=_order_key(field.lstrip("-")), reverse=reverse)
    offset = options.get("offset") or 0
    limit = options.get("limit") or 0
    if offset:
        items = items[offset:]
    if limit:
        items = items[:limit]
    select = options.get("select")
    if not select:
        return items
    return [{k: v for k, v in item.items() if k in select} for item in items]


class Session:
    """One connection's state."""

    def __init__(self, *, secure: bool) -> None:
        self.secure = secure
        self.authenticated = False


def _login(scenario: TrueNASScenario, session: Session, method: str, params: list[Any]) -> Any:
    if method == "auth.login_with_api_key":
        key = params[0] if params else None
        if not session.secure:
            scenario.key_revoked = True  # the TrueNAS trap: a key seen in clear is revoked
            return False
        ok = key == scenario.api_key and not scenario.key_revoked
        session.authenticated = ok
        return ok
    data = params[0] if params and isinstance(params[0], dict) else {}
    if data.get("mechanism") != "API_KEY_PLAIN":
        return {"response_type": "AUTH_ERR"}
    if not session.secure:
        scenario.key_revoked = True
        return {"response_type": "EXPIRED"}
    if data.get("username") != scenario.username or data.get("api_key") != scenario.api_key:
        return {"response_type": "AUTH_ERR"}
    if scenario.key_revoked:
        return {"response_type": "EXPIRED"}
    session.authenticated = True
    return {"response_type": "SUCCESS", "user_info": None, "authenticator": "LEVEL_1"}


def dispatch(scenario: TrueNASScenario, session: Session, frame: dict[str, Any]) -> dict[str, Any]:
    """Answer one JSON-RPC frame of ``session`` (a reply envelope)."""
    call_id = frame.get("id")
    method = frame.get("method")
    params = frame.get("params") or []
    if frame.get("jsonrpc") != "2.0" or not isinstance(method, str) or not isinstance(params, list):
        return rpc_error(call_id, -32600, "Invalid Request")
    if method in scenario.missing_methods:
        return rpc_error(call_id, -32601, "Method does not exist")
    if method in ("auth.login_with_api_key", "auth.login_ex"):
        return {
            "jsonrpc": "2.0",
            "id": call_id,
            "result": _login(scenario, session, method, params),
        }
    if method == "core.ping":
        return {"jsonrpc": "2.0", "id": call_id, "result": "pong"}
    handler = query_handlers(scenario).get(method)
    if handler is None and method not in scenario.results:
        return rpc_error(call_id, -32601, "Method does not exist")
    if not session.authenticated:
        return _call_error(call_id, "ENOTAUTHENTICATED", 13, "Not authenticated")
    if method in scenario.denied_methods:
        return _call_error(call_id, "EACCES", 13, "Not authorized")
    scenario.sync()
    if method in scenario.results:
        return {"jsonrpc": "2.0", "id": call_id, "result": scenario.results[method]}
    assert handler is not None
    return {"jsonrpc": "2.0", "id": call_id, "result": handler(_options(params))}


def query_handlers(scenario: TrueNASScenario) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """Return the query methods of the scenario's release: method -> handler(options)."""
    handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
        "system.version": lambda o: scenario.version or _VERSIONS[scenario.series],
        "system.general.config": lambda o: {
            "id": 1,
            "timezone": scenario.tz,
            "language": "en",
            "kbdmap": "us",
        },
        "pool.query": lambda o: _select(scenario.pool_entries(), o),
        "pool.dataset.query": lambda o: _select(
            scenario.dataset_entries((o.get("extra") or {}).get("properties")), o
        ),
        "pool.scrub.query": lambda o: _select(scenario.scrub_entries(), o),
        "cloudsync.query": lambda o: _select(scenario.cloudsync_entries(), o),
        "sharing.nfs.query": lambda o: _select(scenario.nfs_entries(), o),
    }

    def snapshots(o: dict[str, Any]) -> Any:
        return _select(scenario.snapshot_entries((o.get("extra") or {}).get("properties")), o)

    if scenario.series in ("24.10", "25.04"):
        handlers["zfs.snapshot.query"] = snapshots
        handlers["smart.test.results"] = lambda o: scenario.smart_entries()
    else:
        handlers["pool.snapshot.query"] = snapshots
    return handlers


def rest_resource(method: str) -> str:
    """Return the REST resource of a method (``pool.dataset.query`` -> ``pool/dataset``)."""
    for suffix in (".query", ".config"):
        if method.endswith(suffix):
            method = method[: -len(suffix)]
            break
    return method.replace(".", "/")
