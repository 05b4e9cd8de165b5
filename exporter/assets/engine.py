"""Judge every asset at one instant: copies, media and offsite copies within the RPO, one state.

Pure: the inputs are, per location, an :class:`Observation` (what its source's evidence says,
built at scrape time by :mod:`exporter.assets.observe`), and per asset its
:class:`~exporter.assets.model.VerificationStatus` list. No I/O, no clock: ``now`` is given.

The rule (the README's "Assets" section says the same, with examples):

* A location is **known** when its source's last poll succeeded and its evidence was found
  (a ``{job:}`` location: the job's state is not ``unknown``). Its newest copy is the
  evidence's last success. It is **fresh** when known and ``newest > now - rpo``.
* **3-2-1 within the RPO** (``compliant``): at least 3 fresh locations, on at least 2 media
  (distinct ``medium`` values; a snapshot shares the medium of what it snapshots), at least 1
  of them ``offsite``. Only listed locations count: the live data counts only if a
  ``primary`` location is listed.
* A **backup** is a fresh ``local`` or ``offsite`` copy: snapshots and the live data alone are
  not a backup (same hardware).
* The **state**, first match wins:

  1. ``unknown``: no fresh backup is known and an unknown ``local``/``offsite`` location could
     be one; or not compliant on the known evidence while the unknown locations, were they
     fresh, would make it compliant. Reason: why the first such location is unknown
     (``source truenas down``). Unknown is never success.
  2. ``unprotected``: no fresh backup (``only snapshots within rpo 2d``,
     ``no copy within rpo 2d``).
  3. ``attention``: not compliant (the first stale location, ``storj copy 8d old (rpo 2d)``,
     else ``no offsite copy within rpo 2d`` / ``2 copies within rpo (3 needed)`` /
     ``1 medium within rpo (2 needed)``); or compliant but a listed location is unknown,
     stale or failing (``source b2 down``, ``b2 copy 3d old (rpo 2d)``, ``b2: last run
     failed``); or the restore test is missing, failed or overdue (``restore never tested``,
     ``restore test failed``, ``restore test overdue (every 92d)``).
  4. ``protected``: compliant, every location fresh and sound, a restore test passed within
     its interval. Its reason is empty.

The four states follow Pulse's "protection posture" (rcourtman/Pulse, docs/RECOVERY.md at
1cfefa783d7936993df4b5f15886aa979da43a78, "Protection posture" and "What the evidence means"):
protected needs current evidence that nothing invalidates; attention is evidence that is
stale, failing, incomplete or unverified where verification is expected; unprotected needs
*complete* evidence that no qualifying protection exists; unknown is whatever cannot support
a stronger claim ("an unknown outcome is not success"); and a recent snapshot is "a point on
the source system", not an independent copy, so snapshots alone never make an asset protected.
The rule itself (counting copies against 3-2-1 within the RPO) is ours.

A restore test is the ``restore-test`` activity: overdue when no pass lies within its
interval (``now >= last_pass + interval``); failed when its newest record failed. An automated
bucket restore check counts (``observe.bucket_verifications``, depth ``sample``).

:func:`next_change` is the earliest instant after ``now`` at which the judgment (states,
counts, reasons) changes without new evidence: a copy leaving the RPO, a restore test becoming
overdue, or the age shown in a reason ticking over (``8d`` → ``9d``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from exporter.assets.config import AssetConfig, LocationConfig
from exporter.assets.model import AssetState, AssetStatus, LocationStatus, VerificationStatus
from exporter.core.fields import format_duration

MIN_COPIES = 3
MIN_MEDIA = 2
MIN_OFFSITE = 1
BACKUP_LAYERS = ("local", "offsite")
RESTORE_TEST = "restore-test"
#: The strategy's quarterly restore test, as an interval: the longest quarter (92 days).
DEFAULT_RESTORE_TEST_INTERVAL = 92 * 86400.0


@dataclass(frozen=True)
class Observation:
    """What one location's evidence says now.

    ``known``: its source is up and the evidence was found; ``why`` says why not
    (``source truenas down``), or what is wrong with a known one (``last run failed``).
    ``failed``: the evidence says the last run failed (the copy may still be fresh).
    """

    known: bool
    newest: float | None = None
    failed: bool = False
    why: str = ""


def age_text(seconds: float) -> str:
    """Render an age in its largest whole unit, rounded down: ``9d``, ``5h``, ``12m``."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size or unit == "m":
            return f"{int(seconds // size)}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _age_tick(age: float) -> float:
    """Return how much older a copy must get before :func:`age_text` of it changes."""
    age = max(age, 0.0)
    size = 86400.0 if age >= 86400 else 3600.0 if age >= 3600 else 60.0
    # 59m ticks to 1h and 23h to 1d at the same instants as the next whole unit.
    return (math.floor(age / size) + 1) * size - age


def _label(loc: LocationConfig) -> str:
    return loc.source or loc.job or loc.name


def _location(loc: LocationConfig, obs: Observation, rpo: float, now: float) -> LocationStatus:
    newest = obs.newest if obs.known else None
    fresh = newest is not None and newest > now - rpo
    if not obs.known:
        reason = obs.why or f"no evidence for {loc.name}"
    elif newest is None:
        reason = f"no {_label(loc)} copy"
    elif not fresh:
        reason = f"{_label(loc)} copy {age_text(now - newest)} old (rpo {format_duration(rpo)})"
    elif obs.failed:
        reason = f"{_label(loc)}: {obs.why or 'last run failed'}"
    else:
        reason = ""
    return LocationStatus(
        name=loc.name,
        layer=loc.layer,
        medium=loc.medium,
        source=loc.source or loc.job,
        known=obs.known,
        newest=newest,
        fresh=fresh,
        reason=reason,
    )


def _counts(locations: Iterable[LocationStatus]) -> tuple[int, int, int]:
    chosen = list(locations)
    return (
        len(chosen),
        sum(1 for s in chosen if s.layer == "offsite"),
        len({s.medium for s in chosen}),
    )


def _compliant(copies: int, offsite: int, media: int) -> bool:
    return copies >= MIN_COPIES and media >= MIN_MEDIA and offsite >= MIN_OFFSITE


def _restore_problem(statuses: Sequence[VerificationStatus], now: float) -> str:
    """Return why the restore tests are not good now, or ``""``."""
    tests = [s for s in statuses if s.activity == RESTORE_TEST]
    passes = [(s.last_pass, s.interval) for s in tests if s.last_pass is not None]
    fails = [s.last_fail for s in tests if s.last_fail is not None]
    if not passes:
        return "restore test failed" if fails else "restore never tested"
    last_pass = max(p for p, _ in passes)
    if fails and max(fails) > last_pass:
        return "restore test failed"
    if not any(now < p + interval for p, interval in passes):
        interval = max(i for _, i in passes)
        return f"restore test overdue (every {format_duration(interval)})"
    return ""


def _not_compliant_reason(
    statuses: Sequence[LocationStatus], copies: int, offsite: int, media: int, rpo: float
) -> str:
    stale = next((s.reason for s in statuses if s.known and not s.fresh), "")
    if stale:
        return stale
    if offsite < MIN_OFFSITE:
        return f"no offsite copy within rpo {format_duration(rpo)}"
    if copies < MIN_COPIES:
        return f"{copies} {'copy' if copies == 1 else 'copies'} within rpo ({MIN_COPIES} needed)"
    return f"{media} medium within rpo ({MIN_MEDIA} needed)"


def judge_asset(
    asset: AssetConfig,
    observations: Sequence[Observation],
    verifications: Sequence[VerificationStatus],
    now: float,
) -> AssetStatus:
    """Judge one asset; ``observations`` are its locations', in order."""
    rpo = asset.rpo
    statuses = tuple(
        _location(loc, obs, rpo, now)
        for loc, obs in zip(asset.locations, observations, strict=True)
    )
    fresh = [s for s in statuses if s.fresh]
    unknown = [s for s in statuses if not s.known]
    copies, offsite, media = _counts(fresh)
    compliant = _compliant(copies, offsite, media)
    backups = [s for s in fresh if s.layer in BACKUP_LAYERS]
    state: AssetState
    if not compliant and (
        (not backups and any(s.layer in BACKUP_LAYERS for s in unknown))
        or _compliant(*_counts([*fresh, *unknown]))
    ):
        state, reason = "unknown", unknown[0].reason
    elif not backups:
        state = "unprotected"
        window = f"within rpo {format_duration(rpo)}"
        reason = f"only snapshots {window}" if fresh else f"no copy {window}"
    elif not compliant:
        state = "attention"
        reason = _not_compliant_reason(statuses, copies, offsite, media, rpo)
    else:
        problem = next((s.reason for s in statuses if s.reason), "")
        problem = problem or _restore_problem(verifications, now)
        state, reason = ("attention", problem) if problem else ("protected", "")
    return AssetStatus(
        name=asset.name,
        criticality=asset.criticality,
        rpo=rpo,
        state=state,
        reason=reason,
        copies=copies,
        offsite_copies=offsite,
        media=media,
        compliant=compliant,
        locations=statuses,
    )


def judge(
    assets: Mapping[str, AssetConfig],
    observations: Mapping[str, Sequence[Observation]],
    verifications: Mapping[str, Sequence[VerificationStatus]],
    now: float,
) -> tuple[AssetStatus, ...]:
    """Judge every asset at ``now`` (``observations[asset]``: one per location, in order)."""
    return tuple(
        judge_asset(asset, observations[name], verifications.get(name, ()), now)
        for name, asset in assets.items()
    )


def next_change(
    assets: Mapping[str, AssetConfig],
    observations: Mapping[str, Sequence[Observation]],
    verifications: Mapping[str, Sequence[VerificationStatus]],
    now: float,
) -> float | None:
    """Return the earliest instant after ``now`` at which :func:`judge` gives another answer.

    Candidates: each known copy leaving the RPO (at ``newest + rpo`` it is no longer fresh),
    each stale copy's shown age ticking over, and each restore-test pass expiring (at
    ``last_pass + interval`` it is overdue). ``None``: nothing changes until new evidence.
    """
    candidates: list[float] = []
    for name, asset in assets.items():
        for obs in observations[name]:
            if not obs.known or obs.newest is None:
                continue
            expires = obs.newest + asset.rpo
            if expires > now:
                candidates.append(expires)
            else:
                candidates.append(now + _age_tick(now - obs.newest))
        for status in verifications.get(name, ()):
            if status.activity == RESTORE_TEST and status.last_pass is not None:
                due = status.last_pass + status.interval
                if due > now:
                    candidates.append(due)
    return min(candidates) if candidates else None
