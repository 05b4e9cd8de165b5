"""The policy checks: each declared policy against a source's last snapshot (pure).

* ``retention``: the job's ``prune-backups``, else its storage's, else vzdump's default
  ``keep-all=1`` (the order of pve-manager ``PVE/VZDump.pm``, see
  :func:`~exporter.sources.proxmox.retention.effective_retention`), compared as PVE reads it
  (:func:`~exporter.sources.proxmox.retention.parse_retention`: zero counts dropped, no
  positive count means keep-all).
* ``quota``: the dataset's ZFS ``quota`` (``pool.dataset.query``; 0/none is no quota).
* ``nfs_export``: who may mount the shares exported at the path (``sharing.nfs.query``). A
  share with neither ``hosts`` nor ``networks`` is exported to everyone: TrueNAS writes
  ``*(...)`` for it (truenas/middleware ``src/middlewared/middlewared/etc_files/exports.mako``,
  the ``anonymous`` case; the share model says "If empty, all networks are allowed",
  ``api/v25_04_2/nfs.py`` ``NfsShareEntry``). Networks compare as networks
  (``198.51.100.0/24`` equals ``198.51.100.7/24``, which TrueNAS accepts), hosts by name.
* ``encryption``: the cloud-sync task's ``encryption`` flag (``cloudsync.query``); only the
  flag is read, never the password or salt.
* ``cloudsync_schedule``: the task's five schedule fields against the declared cron
  expression, compared by their next starts in the NAS's time zone (so ``0 3 * * 1-5`` equals
  ``00 3 * * mon-fri``).

A policy whose target the snapshot does not have drifted (``actual="missing"``); one whose
data was not read is unknown (no ``backup_policy_ok``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice

from exporter.policy.config import (
    CloudSyncSchedulePolicy,
    EncryptionPolicy,
    NfsExportPolicy,
    PolicyRule,
    QuotaPolicy,
    RetentionPolicy,
)
from exporter.policy.model import PolicyResult
from exporter.schedule.expressions import ScheduleError, parse_schedule
from exporter.sources.proxmox.model import ProxmoxSnapshot, Retention
from exporter.sources.proxmox.retention import effective_retention, parse_retention
from exporter.sources.targets import dataset_target
from exporter.sources.truenas.model import CloudSyncTask, TrueNASSnapshot

MISSING = "missing"
EVERYONE = "*"
_SCHEDULE_SAMPLES = 64


def format_retention(rule: Retention | None) -> str:
    """Write a retention as PVE's property string (``None``: vzdump's default keep-all)."""
    if rule is None or rule.keep_all:
        return "keep-all=1"
    return ",".join(f"keep-{k}={n}" for k, n in rule.keep)


def format_bytes(n: int) -> str:
    """Write a quota in binary units (``150 GiB``); 0 is ``none``."""
    if n <= 0:
        return "none"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value.is_integer() else f"{value:.2f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------- Proxmox VE


def pve_results(rules: Iterable[PolicyRule], snap: ProxmoxSnapshot) -> Iterator[PolicyResult]:
    """Check the ``retention`` policies on a PVE snapshot."""
    for rule in rules:
        if isinstance(rule, RetentionPolicy):
            yield _retention(rule, snap)


def _retention(rule: RetentionPolicy, snap: ProxmoxSnapshot) -> PolicyResult:
    expected = format_retention(parse_retention(rule.prune_backups))
    job = next((j for j in snap.jobs if j.id == rule.job), None)
    if job is None:
        return PolicyResult(rule.kind, rule.target, False, expected, MISSING)
    actual = format_retention(effective_retention(snap, job))
    return PolicyResult(rule.kind, rule.target, actual == expected, expected, actual)


# ---------------------------------------------------------------------------- TrueNAS


def truenas_results(rules: Iterable[PolicyRule], snap: TrueNASSnapshot) -> Iterator[PolicyResult]:
    """Check the quota, NFS export, encryption and schedule policies on a TrueNAS snapshot."""
    for rule in rules:
        if isinstance(rule, QuotaPolicy):
            yield _quota(rule, snap)
        elif isinstance(rule, NfsExportPolicy):
            yield _nfs(rule, snap)
        elif isinstance(rule, EncryptionPolicy):
            yield _encryption(rule, snap)
        elif isinstance(rule, CloudSyncSchedulePolicy):
            yield _schedule(rule, snap)


def _quota(rule: QuotaPolicy, snap: TrueNASSnapshot) -> PolicyResult:
    expected = format_bytes(rule.quota)
    pool = rule.dataset.split("/", 1)[0]
    listing = next((t for t in snap.targets if t.target == dataset_target(pool)), None)
    if listing is not None and not listing.up:
        return PolicyResult(rule.kind, rule.target, None, expected, "")  # last-known only
    ds = next((d for d in snap.datasets if d.name == rule.dataset), None)
    if ds is None:
        return PolicyResult(rule.kind, rule.target, False, expected, MISSING)
    return PolicyResult(
        rule.kind, rule.target, ds.quota == rule.quota, expected, format_bytes(ds.quota)
    )


def _allowed(entry: str) -> str:
    """Normalize a host or network: ``203.0.113.7/24`` is ``203.0.113.0/24``; ``/32`` an address."""
    text = entry.strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return text.lower()  # a host name (TrueNAS resolves it when it writes the exports)
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _nfs(rule: NfsExportPolicy, snap: TrueNASSnapshot) -> PolicyResult:
    expected_set = {_allowed(e) for e in (*rule.hosts, *rule.networks)}
    expected = ",".join(sorted(expected_set))
    if snap.nfs_shares is None:
        return PolicyResult(rule.kind, rule.target, None, expected, "")
    path = rule.path.rstrip("/") or "/"
    shares = [s for s in snap.nfs_shares if s.path.rstrip("/") == path and s.enabled]
    if not shares:
        return PolicyResult(rule.kind, rule.target, False, expected, MISSING)
    actual_set: set[str] = set()
    for share in shares:
        clients = {_allowed(e) for e in (*share.hosts, *share.networks)}
        actual_set |= clients or {EVERYONE}
    actual = ",".join(sorted(actual_set))
    return PolicyResult(rule.kind, rule.target, actual_set == expected_set, expected, actual)


def _task(snap: TrueNASSnapshot, name: str) -> CloudSyncTask | None:
    return next((t for t in snap.cloudsync if name in (t.task, f"id-{t.id}")), None)


def _encryption(rule: EncryptionPolicy, snap: TrueNASSnapshot) -> PolicyResult:
    expected = "on" if rule.encrypted else "off"
    task = _task(snap, rule.task)
    if task is None:
        return PolicyResult(rule.kind, rule.target, False, expected, MISSING)
    actual = "on" if task.encrypted else "off"
    return PolicyResult(rule.kind, rule.target, actual == expected, expected, actual)


def _starts(expression: str, tz: str, at: float) -> list[float] | None:
    try:
        schedule = parse_schedule(expression, tz)
    except ScheduleError:
        return None
    start = datetime.fromtimestamp(at, UTC)
    return [t.timestamp() for t in islice(schedule.iter_after(start), _SCHEDULE_SAMPLES)]


def _schedule(rule: CloudSyncSchedulePolicy, snap: TrueNASSnapshot) -> PolicyResult:
    expected = " ".join(rule.schedule.split())
    task = _task(snap, rule.task)
    if task is None:
        return PolicyResult(rule.kind, rule.target, False, expected, MISSING)
    actual = task.schedule
    same = actual == expected
    if not same:
        want = _starts(expected, snap.timezone, snap.fetched_at)
        have = _starts(actual, snap.timezone, snap.fetched_at)
        same = want is not None and want == have
    return PolicyResult(rule.kind, rule.target, same, expected, actual)
