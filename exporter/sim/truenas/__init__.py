"""A fake TrueNAS JSON-RPC 2.0 WebSocket API with the real envelopes and quirks (tests, demo).

It serves ``/api/current`` and ``/api/v<release>`` (WebSocket) and ``GET /api/versions`` over
TLS (or plain ws:// for the refusal test), shaped as docs/backends.md §2 describes:

* envelopes ``{"jsonrpc": "2.0", "id", "result" | "error"}``; errors ``-32601`` (method not
  found), ``-32001`` with ``data.errname``/``data.reason`` (call errors, ``ENOTAUTHENTICATED``
  before login), ``-32700`` for a frame that is not JSON;
* dates as ejson ``{"$date": ms}``; property objects ``{parsed, rawvalue, value, source}`` with
  an unset quota as ``parsed: null, rawvalue: "0"``; snapshot ``createtxg`` as a string;
  ``pool.query`` scan byte counters swapped as py-libzfs does;
* release ``"25.04"``: ``zfs.snapshot.query`` and ``smart.test.results``; release ``"25.10"``:
  ``pool.snapshot.query`` and no ``smart.*`` (``-32601``); both accept ``auth.login_ex``
  (API_KEY_PLAIN) and ``auth.login_with_api_key``;
* release ``"24.10"``: no JSON-RPC API (the ``/api/current`` handshake and ``/api/versions``
  answer 404); the same methods as 25.04 over REST ``GET /api/v2.0/<resource>`` (docs/backends.md
  §2.7) with ``Authorization: Bearer <key>`` (401 otherwise), ``extra.<opt>=<json>`` query
  options, 403 for a denied method, 404 for a missing one; SMART tests without
  ``power_on_hours_ago`` (a 25.04.1 addition);
* an API-key login over plain ws:// (or a key sent over plain http) revokes the key and
  answers ``EXPIRED`` (401), as TrueNAS does.

The package: :mod:`.scenario` (the mutable :class:`TrueNASScenario`, its simulation and the
homelab scenario :func:`homelab`), :mod:`.methods` (the JSON-RPC methods, the login and the
method-to-REST-resource mapping) and :mod:`.server` (the aiohttp WebSocket and REST transport,
:func:`start_fake_truenas`).
"""

from __future__ import annotations

from exporter.sim.truenas.scenario import (
    DAY,
    GIB,
    POOL_SIZE,
    FakeCloudSync,
    FakeDataset,
    FakeDisk,
    FakeScrubTask,
    TrueNASScenario,
    cron_instants,
    homelab,
)
from exporter.sim.truenas.server import FakeTrueNAS, create_app, start_fake_truenas

__all__ = [
    "DAY",
    "GIB",
    "POOL_SIZE",
    "FakeCloudSync",
    "FakeDataset",
    "FakeDisk",
    "FakeScrubTask",
    "FakeTrueNAS",
    "TrueNASScenario",
    "create_app",
    "cron_instants",
    "homelab",
    "start_fake_truenas",
]
