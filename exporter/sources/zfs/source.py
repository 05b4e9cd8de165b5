"""``kind: zfs``: datasets, snapshot ages and scrubs from the ``zfs``/``zpool`` commands.

Runs two commands per poll (locally, or remotely through ``command_prefix``, e.g.
``["ssh", "-o", "BatchMode=yes", "root@nas"]``):

* ``zfs list -Hp -t filesystem,volume,snapshot -o name,used,avail,quota,refer,creation``
  (or its ``-j --json-int`` form on OpenZFS 2.3+); snapshots are folded into their
  dataset (count, newest and oldest creation time) while parsing, never kept one by one;
* ``zpool status`` (or ``zpool status -jp --json-int``): pool state and the last scrub.

With ``json: auto`` the source asks ``zfs version`` once and uses the JSON forms from
OpenZFS 2.3 on. The text form of ``zpool status`` prints dates in the host's local
time without a zone, hence the ``timezone`` key (default UTC).

Sample exposition::

    # HELP backup_zfs_snapshots Number of snapshots of the dataset.
    # TYPE backup_zfs_snapshots gauge
    backup_zfs_snapshots{dataset="tank/backups",source="nas"} 42.0
    # HELP backup_zfs_scrub_last_end_timestamp_seconds End of the pool's last completed scrub.
    # TYPE backup_zfs_scrub_last_end_timestamp_seconds gauge
    backup_zfs_scrub_last_end_timestamp_seconds{pool="tank",source="nas"} 1.768091642e+09
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from prometheus_client.core import Metric

from exporter.core.command import run_command
from exporter.schedule.jobs import Evidence
from exporter.sources.base import FetchContext, FetchError, Source
from exporter.sources.targets import API_DOWN_REASONS, TargetStatus, dataset_target, render_targets
from exporter.sources.zfs import KIND
from exporter.sources.zfs.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.sources.zfs.config import ZfsConfig
from exporter.storage.evidence import storage_evidence
from exporter.storage.models import DatasetFilter, DatasetInfo, PoolInfo
from exporter.storage.render import render_datasets, render_pools
from exporter.storage.zfs import (
    ZFS_LIST_COLUMNS,
    StorageParseError,
    parse_zfs_list_json,
    parse_zfs_list_text,
    parse_zfs_version,
    parse_zpool_status_json,
    parse_zpool_status_text,
)

#: OpenZFS release that added ``-j`` to ``zfs list`` and ``zpool status``.
JSON_SINCE = (2, 3)
log = logging.getLogger(__name__)

_TYPES = "filesystem,volume,snapshot"
# A failing `zfs list` with one of these reasons means the host is unreachable (ssh), the
# ZFS library cannot start or the command is missing: the source is down, not one listing.
_HOST_DOWN = API_DOWN_REASONS | {"config"}


@dataclass(frozen=True)
class ZfsSnapshot:
    """One poll: the selected datasets and every pool."""

    datasets: tuple[DatasetInfo, ...]
    pools: tuple[PoolInfo, ...]
    json: bool
    targets: tuple[TargetStatus, ...] = ()  # the dataset listing, as dataset/<pool>


class ZfsSource(Source[ZfsConfig, ZfsSnapshot]):
    """Reads ``zfs list`` and ``zpool status``; renders with :mod:`exporter.storage.render`.

    Sample exposition::

        # HELP backup_zfs_pool_healthy 1 when the pool is ONLINE without data errors.
        # TYPE backup_zfs_pool_healthy gauge
        backup_zfs_pool_healthy{pool="tank",source="nas"} 1.0
    """

    kind = KIND

    def __init__(self, config: ZfsConfig) -> None:
        super().__init__(config)
        self.filter = DatasetFilter(config.include, config.exclude)
        self.tz = ZoneInfo(config.timezone)
        # Decided once (json: auto); a ZFS upgrade needs a reboot of the host anyway.
        self._use_json: bool | None = {"true": True, "false": False}.get(config.json)
        self._last_datasets: tuple[DatasetInfo, ...] = ()  # kept while the listing fails

    async def _run(self, ctx: FetchContext, argv: list[str], limit: float | None = None) -> str:
        ctx.count_request()
        result = await run_command(
            argv, timeout=limit or self.config.timeout, prefix=self.config.command_prefix
        )
        return result.stdout

    async def _json_supported(self, ctx: FetchContext) -> bool:
        ctx.count_request()
        try:
            result = await run_command(
                ["zfs", "version"],
                timeout=self.config.timeout,
                prefix=self.config.command_prefix,
                ok_codes=None,
            )
        except FetchError as exc:
            if exc.reason == "timeout":
                raise
            raise FetchError(exc.reason, f"zfs version: {exc.message}") from None
        # OpenZFS < 0.8 has no "version" subcommand: non-zero exit, text mode.
        version = parse_zfs_version(result.stdout) if result.returncode == 0 else None
        return version is not None and version >= JSON_SINCE

    async def fetch(self, ctx: FetchContext) -> ZfsSnapshot:
        """Run ``zfs list`` and ``zpool status`` and parse them."""
        if self._use_json is None:
            self._use_json = await self._json_supported(ctx)
        use_json = self._use_json
        columns = ",".join(ZFS_LIST_COLUMNS)
        if use_json:
            list_argv = ["zfs", "list", "-j", "--json-int", "-p", "-t", _TYPES, "-o", columns]
            status_argv = ["zpool", "status", "-j", "-p", "--json-int"]
        else:
            list_argv = ["zfs", "list", "-H", "-p", "-t", _TYPES, "-o", columns]
            status_argv = ["zpool", "status"]
        # The dataset listing is a target (dataset/<pool>): `zfs list -t snapshot` is what
        # gets slow on a pool with many snapshots. It runs under its own target_timeout; when
        # it fails while the host answers, the last-known datasets stay and the pools are read.
        listing: FetchError | None = None
        datasets = self._last_datasets
        try:
            list_out = await self._run(ctx, list_argv, limit=self.config.dataset_timeout)
            if use_json:
                datasets = parse_zfs_list_json(
                    _load_json(list_out, "zfs list"), dataset_filter=self.filter
                )
            else:
                datasets = parse_zfs_list_text(list_out, dataset_filter=self.filter)
        except StorageParseError as exc:
            listing = FetchError("parse", str(exc))
        except FetchError as exc:
            if exc.reason in _HOST_DOWN:
                raise  # the host (or ssh, or the ZFS library) is down: the whole source
            listing = exc
        status_out = await self._run(ctx, status_argv)
        try:
            if use_json:
                pools = parse_zpool_status_json(_load_json(status_out, "zpool status"))
            else:
                pools = parse_zpool_status_text(status_out, tz=self.tz)
        except StorageParseError as exc:
            raise FetchError("parse", str(exc)) from None
        if listing is None:
            self._last_datasets = datasets
        elif not pools:
            raise listing  # no pool to report it on: the poll fails
        else:
            log.debug("source=%s zfs list: %s", self.name, listing)
        targets = tuple(
            TargetStatus(dataset_target(p.name), up=True)
            if listing is None
            else TargetStatus.failed(dataset_target(p.name), listing)
            for p in pools
        )
        return ZfsSnapshot(datasets=datasets, pools=pools, json=use_json, targets=targets)

    def render(self, snapshot: ZfsSnapshot) -> Iterator[Metric]:
        """Render datasets and pools."""
        yield from render_datasets(self.name, snapshot.datasets)
        yield from render_pools(self.name, snapshot.pools)
        yield from render_targets(self.name, self.kind, snapshot.targets)

    def evidence(self, snapshot: ZfsSnapshot, selector: Mapping[str, str]) -> Evidence | None:
        """``{pool: tank}`` → the last scrub; ``{dataset: tank/x}`` → the newest snapshot."""
        return storage_evidence(selector, datasets=snapshot.datasets, pools=snapshot.pools)


def _load_json(text: str, what: str) -> dict[str, object]:
    try:
        doc = json.loads(text)
    except ValueError:
        raise FetchError("parse", f"{what} did not print JSON") from None
    if not isinstance(doc, dict):
        raise FetchError("parse", f"{what} printed JSON that is not an object")
    return doc
