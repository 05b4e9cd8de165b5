"""Per-target status: one bucket, PVE storage or dataset listing failing alone.

A *target* is one listing inside a poll that can fail by itself while the source's API as a
whole answers: a bucket of a ``b2``/``s3`` source (``bucket/<name>``), a backup storage of a
``proxmox`` source (``storage/<id>``), the dataset listing of a ``truenas``/``zfs`` source
(``dataset/<pool-or-root>``). Each target listing runs under its own ``target_timeout``
(default: half the source ``timeout``), a failing one keeps its last-known values (the kind
keeps them in its snapshot or memory) and does not fail its source; the source is down only
when its API as a whole cannot be reached.

Sample exposition::

    # HELP backup_target_up 1 if the last listing of the target (...) succeeded; (...)
    # TYPE backup_target_up gauge
    backup_target_up{kind="b2",source="b2",target="bucket/homelab"} 1.0
    backup_target_up{kind="b2",source="b2",target="bucket/photos"} 0.0
    # HELP backup_target_error_info Why the target's last listing failed (...)
    # TYPE backup_target_error_info gauge
    backup_target_error_info{kind="b2",reason="timeout",source="b2",target="bucket/photos"} 1.0
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.sources.base import FetchContext, FetchError, Reason

R = TypeVar("R")

#: Reasons that say the API as a whole cannot be reached (rather than one listing failing).
API_DOWN_REASONS: frozenset[str] = frozenset({"connection", "tls", "auth"})


@dataclass(frozen=True)
class TargetStatus:
    """The outcome of one target's last listing (``reason``/``message`` set when down)."""

    target: str
    up: bool
    reason: Reason | None = None
    message: str = ""

    @classmethod
    def failed(cls, target: str, exc: FetchError) -> TargetStatus:
        """Build the status of a target whose listing raised ``exc``."""
        return cls(target=target, up=False, reason=exc.reason, message=exc.message)


def bucket_target(name: str) -> str:
    """Return the target name of a bucket."""
    return f"bucket/{name}"


def storage_target(storage: str) -> str:
    """Return the target name of a Proxmox VE storage."""
    return f"storage/{storage}"


def dataset_target(root: str) -> str:
    """Return the target name of a dataset listing (a pool or a root dataset)."""
    return f"dataset/{root}"


def effective_target_timeout(timeout: float, target_timeout: float) -> float:
    """``target_timeout`` when set (> 0), else half the source ``timeout``."""
    return target_timeout if target_timeout > 0 else timeout / 2


def target_timeout_problems(timeout: float, target_timeout: float) -> Iterator[tuple[str, str]]:
    """Check that a target's own timeout ends before the poll's."""
    if target_timeout >= timeout:
        yield "target_timeout", "must be shorter than timeout"


async def within(ctx: FetchContext, work: Coroutine[Any, Any, R], seconds: float, what: str) -> R:
    """Run ``work`` for at most ``seconds``; then raise ``FetchError('timeout')``.

    A blocking SDK call that an earlier target's timeout abandoned may still hold the
    source's single worker thread: this waits for it *before* the target's own time starts,
    so one slow target does not use up the next one's (the poll's ``timeout`` bounds both).
    """
    try:
        await drain(ctx)
    except BaseException:
        work.close()  # never started
        raise
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise FetchError("timeout", f"{what}: no answer within {seconds:g}s") from None


async def drain(ctx: FetchContext) -> None:
    """Wait until the worker thread has finished the calls queued before this one."""
    await ctx.run_blocking(_nothing)


def _nothing() -> None:
    return None


def render_targets(source: str, kind: str, targets: Iterable[TargetStatus]) -> Iterator[Metric]:
    """``backup_target_up`` and ``backup_target_error_info`` (see the module docstring)."""
    labels = ["source", "kind", "target"]
    up = GaugeMetricFamily(
        "backup_target_up",
        "1 if the last listing of the target (bucket, storage, dataset listing) succeeded; "
        "a target that is down keeps its last-known values.",
        labels=labels,
    )
    info = GaugeMetricFamily(
        "backup_target_error_info",
        "Why the target's last listing failed (present only while it is down): reason "
        "timeout, auth, permission, tls, http, parse, connection or config.",
        labels=[*labels, "reason"],
    )
    for status in targets:
        values = [source, kind, status.target]
        up.add_metric(values, 1.0 if status.up else 0.0)
        if not status.up:
            info.add_metric([*values, status.reason or "http"], 1.0)
    yield up
    yield info
