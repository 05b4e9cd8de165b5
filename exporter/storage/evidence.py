"""Job evidence from the shared storage models: scrubs, snapshots and SMART self-tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from exporter.schedule.jobs import Evidence
from exporter.storage.models import DatasetInfo, PoolInfo, SmartDevice


def scrub_evidence(pools: Iterable[PoolInfo], pool: str) -> Evidence | None:
    """Evidence of pool ``pool``'s scrubs: the last completed scrub's end, running, errors."""
    for info in pools:
        if info.name == pool:
            return Evidence(
                last_success=info.scrub_last_end,
                last_start=info.scrub_last_start,
                running=info.scrub_running,
                failed=info.scrub_errors > 0,
                tracks_start=False,
            )
    return None


def snapshot_evidence(datasets: Iterable[DatasetInfo], dataset: str) -> Evidence | None:
    """Evidence of ``dataset``'s snapshots: the newest snapshot's creation time."""
    for info in datasets:
        if info.name == dataset:
            return Evidence(last_success=info.snapshot_newest, tracks_start=False)
    return None


def selftest_evidence(
    devices: Iterable[SmartDevice],
    test: str,
    device: str | None = None,
    *,
    disk: str | None = None,
    device_type: str | None = None,
) -> Evidence | None:
    """Evidence of ``test`` self-tests across disks (or those matching the selector).

    ``device`` (path), ``disk`` (serial number or WWN) and ``device_type`` (the ``-d``
    type) narrow the disks when given: ``{disk: ZA1B2C3D}`` names one disk wherever it
    sits, ``{device: /dev/bus/0, type: megaraid,3}`` one slot behind a controller.

    ``last_success`` is the *oldest* among the disks of each disk's newest passed test of
    that kind, so a job is satisfied only once every disk ran it; a disk that never passed
    one makes it ``None``. ``failed`` is set when any disk's newest test of that kind failed.
    Disks that could not be read are skipped (their own error metric reports them).
    """
    chosen = [
        d
        for d in devices
        if (not device or d.device == device)
        and (not disk or d.disk == disk)
        and (not device_type or d.device_type == device_type)
        and d.error is None
    ]
    if not chosen:
        return None
    successes: list[float | None] = []
    failed = False
    running = False
    for dev in chosen:
        result = dev.selftest(test)
        successes.append(None if result is None else result.last_success)
        failed = failed or (result is not None and result.passed is False)
        running = running or bool(dev.selftest_running)
    known = [s for s in successes if s is not None]
    last = min(known) if known and len(known) == len(successes) else None
    return Evidence(last_success=last, failed=failed, running=running, tracks_start=False)


def storage_evidence(
    selector: Mapping[str, str],
    *,
    datasets: Iterable[DatasetInfo] = (),
    pools: Iterable[PoolInfo] = (),
    devices: Iterable[SmartDevice] = (),
) -> Evidence | None:
    """Resolve an ``evidence:`` selector: ``pool``, ``dataset`` or ``test`` [+ ``device``]."""
    if "pool" in selector:
        return scrub_evidence(pools, selector["pool"])
    if "dataset" in selector:
        return snapshot_evidence(datasets, selector["dataset"])
    if "test" in selector:
        return selftest_evidence(
            devices,
            selector["test"],
            selector.get("device"),
            disk=selector.get("disk"),
            device_type=selector.get("type"),
        )
    return None
