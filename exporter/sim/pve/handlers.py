"""HTTP handlers of the fake PVE: the endpoints the exporter reads, and the shared plumbing.

Every answer is wrapped in ``{"data": ...}``; the middleware records the request, applies the
scenario's latency, hang, token check and forced failure, and advances the simulation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from exporter.sim.pve.scenario import PVEScenario, daily_starts

SCENARIO = web.AppKey("scenario", PVEScenario)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bit(value: bool) -> int:
    """Return a boolean as PVE sends it: ``0`` or ``1``."""
    return 1 if value else 0


def ok(data: Any, **extra: Any) -> web.Response:
    """Answer ``{"data": data, ...extra}``."""
    return web.json_response({"data": data, **extra})


def listing(request: web.Request, items: list[Any], **extra: Any) -> web.Response:
    """Answer a list endpoint (an object instead while the scenario is ``malformed``)."""
    if request.app[SCENARIO].malformed:
        return ok({"unexpected": "object instead of a list"}, **extra)
    return ok(items, **extra)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record, delay, hold, authenticate or fail the request, then sync and handle it."""
    sc = request.app[SCENARIO]
    sc.requests.append(request.path)
    if sc.latency:
        await asyncio.sleep(sc.latency)
    await sc._hang.wait()
    expected = f"PVEAPIToken={sc.token_id}={sc.token_secret}"
    if request.headers.get("Authorization") != expected:
        return web.json_response({"data": None}, status=401, reason="invalid token value")
    if sc.fail_status is not None:
        return web.json_response({"data": None}, status=sc.fail_status, reason="fake failure")
    sc.sync()
    return await handler(request)


def request_node(request: web.Request) -> str:
    """Return the request's ``{node}``; 400 when unknown, 500 when offline, as PVE."""
    sc = request.app[SCENARIO]
    node = request.match_info["node"]
    if node not in sc.nodes:
        raise web.HTTPBadRequest(reason="no such node")
    if node in sc.offline_nodes:
        raise web.HTTPInternalServerError(reason=f"node '{node}' not online")
    return node


async def _nodes(request: web.Request) -> web.Response:
    sc = request.app[SCENARIO]
    items = [
        {
            "node": n,
            "status": "offline" if n in sc.offline_nodes else "online",
            "type": "node",
            "id": f"node/{n}",
            "maxcpu": 8,
            "level": "",
        }
        for n in sc.nodes
    ]
    return listing(request, items)


async def _resources(request: web.Request) -> web.Response:
    sc = request.app[SCENARIO]
    kind = request.query.get("type", "")
    items: list[dict[str, Any]] = []
    if kind in ("", "vm"):
        for g in sc.guests:
            item: dict[str, Any] = {
                "id": f"{g.guest_type}/{g.vmid}",
                "type": g.guest_type,
                "vmid": g.vmid,
                "name": g.name,
                "node": g.node,
                "status": "unknown" if g.node in sc.offline_nodes else "running",
                "template": bit(g.template),
            }
            if g.pool:
                item["pool"] = g.pool
            items.append(item)
    return listing(request, items)


async def _storage_config(request: web.Request) -> web.Response:
    sc = request.app[SCENARIO]
    items = []
    for s in sc.storages:
        item: dict[str, Any] = {
            "storage": s.storage,
            "type": s.type,
            "content": s.content,
            "digest": "0123456789abcdef0123456789abcdef01234567",
        }
        if s.prune_backups is not None:
            item["prune-backups"] = s.prune_backups
        if s.type == "nfs":
            item.update({"server": "192.0.2.10", "export": "/mnt/storage/backups/proxmox"})
        if not s.enabled:
            item["disable"] = 1
        items.append(item)
    return listing(request, items)


async def _node_storage(request: web.Request) -> web.Response:
    sc = request.app[SCENARIO]
    request_node(request)
    content = request.query.get("content")
    items = []
    for s in sc.storages:
        if content and (content not in s.content.split(",") or not s.enabled):
            continue
        total = s.total if s.active else 0
        used = sc.used(s) if s.active else 0
        item: dict[str, Any] = {
            "storage": s.storage,
            "type": s.type,
            "content": s.content,
            "enabled": bit(s.enabled),
            "active": bit(s.active),
            "shared": bit(s.shared),
            "total": total,
            "used": used,
            "avail": total - used,
        }
        if total > 0:
            item["used_fraction"] = used / total
        items.append(item)
    return listing(request, items)


async def _content(request: web.Request) -> web.Response:
    sc = request.app[SCENARIO]
    request_node(request)
    storage_id = request.match_info["storage"]
    try:
        storage = sc.storage(storage_id)
    except StopIteration:
        raise web.HTTPInternalServerError(reason=f"storage '{storage_id}' does not exist") from None
    if not storage.active:
        raise web.HTTPInternalServerError(reason=f"storage '{storage_id}' is not online")
    if storage.content_delay:
        await asyncio.sleep(storage.content_delay)
    if storage.content_fail_status is not None:
        return web.json_response(
            {"data": None}, status=storage.content_fail_status, reason="fake storage failure"
        )
    content = request.query.get("content")
    if content not in (None, "backup") or "backup" not in storage.content.split(","):
        return listing(request, [])
    if not sc.privileged:
        # check_volume_access drops every backup volume silently: HTTP 200, empty list.
        return listing(request, [])
    vmid = request.query.get("vmid")
    items = []
    for a in sc.archives:
        if a.storage != storage_id or (vmid is not None and str(a.vmid) != vmid):
            continue
        if not sc.may_see(storage_id, a.vmid):  # dropped the same way, per volume
            continue
        volid = sc.volid(a)
        pbs = storage.type == "pbs"
        item: dict[str, Any] = {
            "volid": volid,
            "content": "backup",
            "format": ("pbs-vm" if a.guest_type == "qemu" else "pbs-ct")
            if pbs
            else sc.extension(a),
            "subtype": a.guest_type,
            "vmid": a.vmid,
            "ctime": a.ctime,
            "size": a.size,
        }
        if a.notes:
            item["notes"] = a.notes
        if a.protected:
            item["protected"] = 1
        if pbs and a.verification is not None:
            item["verification"] = {
                "state": a.verification,
                "upid": f"UPID:pbs:0000C0DE:0012ABCD:{a.ctime + 3600:08X}:verify::root@pam:",
            }
        items.append(item)
    items.sort(key=lambda i: str(i["volid"]).lower())
    return listing(request, items)


async def _backup_jobs(request: web.Request) -> web.Response:
    sc = request.app[SCENARIO]
    items = []
    for j in sc.jobs:
        item: dict[str, Any] = {
            "id": j.id,
            "type": "vzdump",
            "schedule": j.schedule,
            "enabled": bit(j.enabled),
            "storage": j.storage,
            "mode": j.mode,
            "compress": j.compress,
            "notes-template": "{{guestname}}",
            "notification-mode": "auto",
            "repeat-missed": 0,
        }
        nxt = next(iter(daily_starts(j.schedule, sc.tz, sc.now(), sc.now() + 2 * 86400)), None)
        if nxt is not None:
            item["next-run"] = int(nxt)
        if j.all:
            item["all"] = 1
        for key, value in (
            ("vmid", j.vmid),
            ("exclude", j.exclude),
            ("pool", j.pool),
            ("node", j.node),
        ):
            if value:
                item[key] = value
        if j.prune_backups is not None:
            item["prune-backups"] = dict(j.prune_backups)
        items.append(item)
    return listing(request, items)


async def _not_backed_up(request: web.Request) -> web.Response:
    sc = request.app[SCENARIO]
    items = [{"vmid": g.vmid, "type": g.guest_type, "name": g.name} for g in sc.not_backed_up()]
    return listing(request, items)


async def _tasks(request: web.Request) -> web.Response:
    sc = request.app[SCENARIO]
    node = request_node(request)
    q = request.query
    source = q.get("source", "archive")
    typefilter = q.get("typefilter")
    selected = []
    for t in sc.tasks:
        if t.node != node or (typefilter and typefilter != "vzdump"):
            continue
        running = t.endtime is None
        if (source == "archive" and running) or (source == "active" and not running):
            continue
        if "vmid" in q and t.id != q["vmid"]:
            continue
        selected.append(t)
    selected.sort(key=lambda t: t.starttime, reverse=True)
    start = int(q.get("start", "0"))
    limit = int(q.get("limit", "50"))
    items = []
    for t in selected[start : start + limit]:
        item: dict[str, Any] = {
            "upid": t.upid,
            "node": t.node,
            "pid": t.pid,
            "pstart": t.pid * 7,
            "starttime": t.starttime,
            "type": "vzdump",
            "id": t.id,
            "user": t.user,
        }
        if t.endtime is None:
            item["status"] = "RUNNING"
        else:
            item["endtime"] = t.endtime
            item["status"] = t.status
        items.append(item)
    return listing(request, items, total=len(selected))


async def _task_log(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/tasks/{upid}/log``: ``[{n, t}]`` from line ``start + 1``, ``total``.

    As pve-manager PVE/API2/Tasks.pm ``read_task_log`` over pve-common ``dump_logfile``:
    ``limit`` 50 by default, 0 reads to the end, an empty page is ``[{n: 1, t: "no content"}]``
    only when the log itself is empty.
    """
    sc = request.app[SCENARIO]
    node = request_node(request)
    upid = request.match_info["upid"]
    if sc.task_logs_forbidden:
        raise web.HTTPForbidden(reason=f"Permission check failed (/nodes/{node}, Sys.Audit)")
    task = next((t for t in sc.tasks if t.upid == upid and t.node == node), None)
    if task is None:
        raise web.HTTPBadRequest(reason="unable to parse worker upid")
    start = int(request.query.get("start", "0"))
    limit = int(request.query.get("limit", "50"))
    lines = task.log
    end = len(lines) if limit == 0 else start + limit
    items = [{"n": i + 1, "t": t} for i, t in enumerate(lines) if start <= i < end]
    if not lines:
        items = [{"n": 1, "t": "no content"}]
    return listing(request, items, total=len(lines))


async def _version(request: web.Request) -> web.Response:
    return ok({"version": "9.1.7", "release": "9.1", "repoid": "0c56bad8"})


def add_routes(app: web.Application, api: str) -> None:
    """Route the endpoints the exporter reads (and ``version``) under ``api``."""
    app.router.add_get(f"{api}/version", _version)
    app.router.add_get(f"{api}/nodes", _nodes)
    app.router.add_get(f"{api}/cluster/resources", _resources)
    app.router.add_get(f"{api}/storage", _storage_config)
    app.router.add_get(f"{api}/cluster/backup", _backup_jobs)
    app.router.add_get(f"{api}/cluster/backup-info/not-backed-up", _not_backed_up)
    app.router.add_get(f"{api}/nodes/{{node}}/storage", _node_storage)
    app.router.add_get(f"{api}/nodes/{{node}}/storage/{{storage}}/content", _content)
    app.router.add_get(f"{api}/nodes/{{node}}/tasks", _tasks)
    app.router.add_get(f"{api}/nodes/{{node}}/tasks/{{upid}}/log", _task_log)
