r"""``POST /api/records``: a restore script reports its own result as a verification record.

Disabled (404) unless ``records_api: {token_file: ...}`` is configured. The request carries
``Authorization: Bearer <token>``; the token is compared in constant time (both sides hashed
first, so neither the content nor the length leaks through timing) and never logged. A
missing or wrong token is 401 and stores nothing; a body that is not a JSON object, or a record
that does not validate, is 400 with the reason; a stored record is 201 with its id::

    curl -sS -X POST http://127.0.0.1:9879/api/records \
      -H "Authorization: Bearer $(cat /etc/backup-exporter/records.token)" \
      -H 'Content-Type: application/json' \
      -d '{"activity": "restore-test", "asset": "immich", "result": "pass", "depth": "sample"}'

The record is written in the state thread (one transaction); ``/metrics`` shows it after the
next poll at the latest. Nothing here runs at scrape time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import asdict, dataclass
from zoneinfo import ZoneInfo

from aiohttp import web

from exporter.assets.records import RecordError, RecordsApiConfig, make_record
from exporter.core.clock import Clock
from exporter.core.state import StateKeeper

log = logging.getLogger(__name__)

#: A record is a few hundred bytes; refuse anything much larger before parsing it.
MAX_BODY = 16 * 1024


@dataclass(frozen=True)
class RecordsApi:
    """What the handler needs: the config (``None``: disabled), assets, keeper and clock."""

    config: RecordsApiConfig | None
    assets: tuple[str, ...]
    keeper: StateKeeper
    clock: Clock
    zone: ZoneInfo


RECORDS_API = web.AppKey("records_api", RecordsApi)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _authorized(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    digest = hashlib.sha256
    return hmac.compare_digest(
        digest(given.strip().encode()).digest(), digest(token.encode()).digest()
    )


async def post_record(request: web.Request) -> web.Response:
    """Validate and store one record (see the module docstring)."""
    api = request.app[RECORDS_API]
    if api.config is None:
        raise web.HTTPNotFound(text="the records API is disabled (records_api: not configured)\n")
    if not _authorized(request.headers.get("Authorization", ""), api.config.token.reveal()):
        log.warning("records API: request without a valid bearer token from %s", request.remote)
        response = _error(401, "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="backup-exporter"'
        return response
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, f"a record is at most {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return _error(413, f"a record is at most {MAX_BODY} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(400, f"the body is not JSON: {exc}")
    if not isinstance(data, dict):
        example = '{"activity": "restore-test", "asset": "immich", "result": "pass"}'
        return _error(400, f"the body must be a JSON object such as {example}")
    now = api.clock.time()
    try:
        record = make_record(data, assets=api.assets, origin="api", now=now, zone=api.zone)
    except RecordError as exc:
        return _error(400, str(exc))
    rid = await api.keeper.add_record(record, now)
    if rid is None:
        reason = api.keeper.error.reason if api.keeper.error else "no state database"
        return _error(503, f"the record could not be stored ({reason}); try again")
    log.info(
        "records API: stored %s of %s (%s) as record %d",
        record.activity,
        record.asset,
        record.result,
        rid,
    )
    return web.json_response({"id": rid, **asdict(record)}, status=201)


def add_records_api(app: web.Application, api: RecordsApi) -> None:
    """Register ``POST /api/records`` (it answers 404 while ``api.config`` is ``None``)."""
    app[RECORDS_API] = api
    app.router.add_post("/api/records", post_record)
