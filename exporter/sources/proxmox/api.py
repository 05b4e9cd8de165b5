"""Access to the Proxmox VE API through proxmoxer: one GET per call, every failure a FetchError.

One poll reads (docs/backends.md §1; 5 + 2 per online node + 1 per backup storage calls)::

    GET /nodes                                   node list and online status
    GET /cluster/resources?type=vm               guests: vmid, name, node, type, pool, template
    GET /storage                                 storage config: prune-backups (property string)
    GET /cluster/backup                          backup jobs (prune-backups as an object)
    GET /cluster/backup-info/not-backed-up       guests no job covers
    GET /nodes/{node}/storage                    per online node: backup storages, size, used
    GET /nodes/{node}/tasks?typefilter=vzdump&source=all&limit=N   recent vzdump tasks
    GET /nodes/{node}/storage/{sid}/content?content=backup         once per storage (shared: once)
    GET /nodes/{node}/tasks/{upid}/log?start=S&limit=N             multi-guest vzdump tasks not
                                                 yet attributed (a few per poll, paged)

:class:`ProxmoxApi` has one method per endpoint, returning the answer's ``data`` as decoded
JSON; :mod:`~exporter.sources.proxmox.responses` and :mod:`~exporter.sources.proxmox.tasks`
parse it.

The API token needs ``PVEAuditor`` on ``/`` and, to see backups at all, ``Datastore.Allocate`` on
``/storage/<sid>`` or ``Datastore.AllocateSpace`` there plus ``VM.Backup`` on ``/vms``: without
them PVE answers the backup listing with an empty list and HTTP 200. When the vzdump tasks show
successful backups but no storage lists a single archive, the poll fails with reason
``permission`` instead of reporting "no backups" (:func:`check_backup_visibility`). When only
some storages or guests are hidden, :func:`find_hidden_backups` names them per storage. The
task logs need ``Sys.Audit`` on ``/nodes/{node}`` (part of ``PVEAuditor``) for tasks the token
did not start (pve-manager PVE/API2/Tasks.pm ``read_task_log``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from exporter.sources.base import FetchContext, FetchError, retry_after_header
from exporter.sources.proxmox.config import ProxmoxConfig
from exporter.sources.proxmox.model import HiddenBackups, ProxmoxSnapshot
from exporter.sources.proxmox.tasks import Charge


class ProxmoxApi:
    """The API of one Proxmox VE cluster, read with an API token."""

    def __init__(self, config: ProxmoxConfig) -> None:
        self.config = config
        self._api: ProxmoxAPI | None = None
        # The headers of the last 429/503 answer (for Retry-After): proxmoxer's
        # ResourceException keeps the status but not the headers, so a response hook does.
        self._retry_after: Mapping[str, str] | None = None

    def _client(self) -> ProxmoxAPI:
        # Token auth does no I/O here; the client (and its keep-alive session) is reused.
        if self._api is None:
            cfg = self.config
            user, _, token_name = cfg.token_id.partition("!")
            self._api = ProxmoxAPI(
                cfg.host,
                port=cfg.port,
                user=user,
                token_name=token_name,
                token_value=cfg.token_secret.reveal(),
                verify_ssl=cfg.verify,
                # One request ends within a storage's own time (target_timeout).
                timeout=cfg.storage_timeout,
            )
            session = self._api._store.get("session")
            if isinstance(session, requests.Session):
                session.hooks["response"].append(self._note_retry_after)
        return self._api

    def _note_retry_after(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        if resp.status_code in (429, 503):
            self._retry_after = resp.headers

    def _request(self, path: str, params: dict[str, Any]) -> Any:
        self._retry_after = None
        return self._client()(path).get(**params)

    async def get(self, ctx: FetchContext, path: str, **params: Any) -> Any:
        """GET ``path`` (relative to /api2/json) and map every failure to a FetchError."""
        where = f"GET /{path}"
        ctx.count_request()
        try:
            return await ctx.run_blocking(self._request, path, params)
        except ResourceException as exc:
            # A reverse proxy in front of pveproxy may answer 429/503 with Retry-After
            # (RFC 9110): the poller then makes no request before it.
            wait = retry_after_header(self._retry_after, ctx.clock.time())
            raise _http_error(where, exc.status_code, wait) from None
        except requests.exceptions.SSLError:
            raise FetchError(
                "tls", f"{where}: TLS verification failed (set ca_file or verify_tls)"
            ) from None
        except requests.exceptions.Timeout:
            raise FetchError(
                "timeout", f"{where}: no answer within {self.config.storage_timeout:g}s"
            ) from None
        except requests.exceptions.ConnectionError:
            raise FetchError(
                "connection", f"{where}: cannot connect to {self.config.host}:{self.config.port}"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise FetchError("connection", f"{where}: {type(exc).__name__}") from None
        except OSError as exc:  # e.g. an unreadable CA bundle
            raise FetchError("tls", f"{where}: {exc.strerror or type(exc).__name__}") from None
        except (KeyError, TypeError, ValueError) as exc:
            # proxmoxer indexes ["data"] into whatever JSON came back.
            raise FetchError(
                "parse", f"{where}: malformed response ({type(exc).__name__})"
            ) from None

    async def nodes(self, ctx: FetchContext) -> Any:
        """``GET /nodes``."""
        return await self.get(ctx, "nodes")

    async def guests(self, ctx: FetchContext) -> Any:
        """``GET /cluster/resources?type=vm``."""
        return await self.get(ctx, "cluster/resources", type="vm")

    async def storage_config(self, ctx: FetchContext) -> Any:
        """``GET /storage``."""
        return await self.get(ctx, "storage")

    async def backup_jobs(self, ctx: FetchContext) -> Any:
        """``GET /cluster/backup``."""
        return await self.get(ctx, "cluster/backup")

    async def not_backed_up(self, ctx: FetchContext) -> Any:
        """``GET /cluster/backup-info/not-backed-up``."""
        return await self.get(ctx, "cluster/backup-info/not-backed-up")

    async def node_storages(self, ctx: FetchContext, node: str) -> Any:
        """``GET /nodes/{node}/storage``."""
        return await self.get(ctx, f"nodes/{node}/storage")

    async def vzdump_tasks(self, ctx: FetchContext, node: str, limit: int) -> Any:
        """``GET /nodes/{node}/tasks?typefilter=vzdump&source=all&limit={limit}``."""
        return await self.get(
            ctx,
            f"nodes/{node}/tasks",
            typefilter="vzdump",
            source="all",
            limit=limit,
        )

    async def backup_content(self, ctx: FetchContext, node: str, storage: str) -> Any:
        """``GET /nodes/{node}/storage/{storage}/content?content=backup``."""
        return await self.get(ctx, f"nodes/{node}/storage/{storage}/content", content="backup")

    async def task_log(
        self, ctx: FetchContext, node: str, upid: str, start: int, limit: int
    ) -> Any:
        """``GET /nodes/{node}/tasks/{upid}/log?start={start}&limit={limit}``.

        PVE numbers the lines from 1 (``n``) and skips the first ``start`` (pve-common
        src/PVE/Tools.pm ``dump_logfile_by_filehandle``); ``limit=0`` would read to the end,
        so the callers always page.
        """
        return await self.get(ctx, f"nodes/{node}/tasks/{upid}/log", start=start, limit=limit)

    def close(self) -> None:
        """Close the HTTP session's idle keep-alive connections."""
        if self._api is not None:
            session = self._api._store.get("session")
            if session is not None:
                session.close()
            self._api = None


def _http_error(where: str, status: int, retry_after: float | None = None) -> FetchError:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    if status == 401:
        return FetchError(
            "auth", f"{where}: HTTP 401 {phrase}: check token_id and the token secret"
        )
    if status == 403:
        return FetchError(
            "permission", f"{where}: HTTP 403 {phrase}: the token needs PVEAuditor on /"
        )
    if retry_after is not None and status in (429, 503):
        return FetchError(
            "http",
            f"{where}: HTTP {status} {phrase}, retry after {retry_after:.0f}s",
            retry_after=retry_after,
        )
    return FetchError("http", f"{where}: HTTP {status} {phrase}")


def check_backup_visibility(snapshot: ProxmoxSnapshot) -> None:
    """Fail with ``permission`` when tasks report backups that no storage listing shows.

    PVE silently drops backup volumes the token may not access (docs/backends.md §1.1), so an
    empty listing next to successful vzdump tasks means missing privileges, not "no backups".
    """
    if snapshot.archives or not any(t.succeeded for t in snapshot.tasks):
        return
    listed = [s.storage for s in snapshot.storages if s.listed]
    targets = {j.storage for j in snapshot.jobs}
    # Judge the storages the jobs write to (all listed ones if there are no jobs); when those
    # could not be listed (offline), an empty local storage proves nothing.
    names = [s for s in listed if s in targets] if targets else listed
    if not names:
        return
    sids = ", ".join(names)
    first = names[0]
    raise FetchError(
        "permission",
        f"vzdump tasks report successful backups but the backup listing of {sids} is empty: "
        f"the API token lacks Datastore.Allocate on /storage/{first}, or "
        f"Datastore.AllocateSpace on /storage/{first} plus VM.Backup on /vms "
        f"(PVE hides backups it may not access)",
    )


def find_hidden_backups(
    snapshot: ProxmoxSnapshot, found: Iterable[Charge]
) -> tuple[HiddenBackups, ...]:
    """Name the listed storages that hide backups successful vzdump tasks wrote to them.

    ``found`` are the task attributions (:func:`~exporter.sources.proxmox.tasks.charges`). For
    each guest its newest successful part with a known storage counts: if that storage was
    listed and shows no archive of the guest, PVE filtered it. The rule is pve-storage
    src/PVE/Storage.pm ``check_volume_access``, which the content listing (src/PVE/API2/Storage/
    Content.pm ``index``) applies per volume: a backup volume is visible with
    ``Datastore.Allocate`` on ``/storage/<sid>``, or with ``Datastore.AllocateSpace`` there plus
    ``VM.Backup`` on ``/vms/<owner vmid>``. An empty listing means the storage privileges are
    missing; a listing that shows other guests means ``VM.Backup`` on those guests is.
    """
    newest: dict[int, Charge] = {}
    for c in found:
        if not c.task.succeeded or not c.storage or c.task.endtime is None:
            continue
        old = newest.get(c.vmid)
        if old is None or c.task.starttime > old.task.starttime:
            newest[c.vmid] = c
    listed = {s.storage for s in snapshot.storages if s.listed}
    written: dict[str, set[int]] = {}
    for c in newest.values():
        if c.storage in listed:
            written.setdefault(c.storage, set()).add(c.vmid)
    out = []
    for sid, vmids in sorted(written.items()):
        visible = {a.vmid for a in snapshot.archives if a.storage == sid}
        missing = sorted(vmids - visible)
        if not missing:
            continue
        guests = ", ".join(str(v) for v in missing)
        if not visible:
            message = (
                f"the backup listing of storage {sid} is empty although vzdump tasks wrote "
                f"backups of VM {guests} there: the API token lacks Datastore.Allocate on "
                f"/storage/{sid}, or Datastore.AllocateSpace on /storage/{sid} plus VM.Backup "
                f"on /vms (PVE hides backups it may not access)"
            )
        else:
            paths = ", ".join(f"/vms/{v}" for v in missing)
            message = (
                f"the backup listing of storage {sid} hides the backups of VM {guests} that "
                f"vzdump tasks wrote there: the API token lacks VM.Backup on {paths} (with "
                f"Datastore.AllocateSpace on /storage/{sid}), or Datastore.Allocate on "
                f"/storage/{sid} (PVE hides backups it may not access)"
            )
        out.append(HiddenBackups(storage=sid, vmids=tuple(missing), message=message))
    return tuple(out)
