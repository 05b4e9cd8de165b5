"""Verification records: restore tests, DR drills and docs reviews, made durable.

The reference strategy's testing schedule (a restore test each quarter, a DR drill and a docs
review each year) only means something if the exporter knows when each was last done. A record
says that an activity was done for an asset, when, with what result and how deep it went:

* ``backup-exporter record restore-test --asset immich --result pass --depth sample`` appends
  one to the state database (one transaction; safe while the exporter runs: SQLite WAL);
* ``POST /api/records`` takes the same record as JSON, so a restore script reports its own
  result (bearer token from ``records_api.token_file``; see :mod:`exporter.assets.api`).

Records are append-only: the store's triggers refuse UPDATE and DELETE. A record for an asset
that is not in ``assets:`` is an error listing the known assets. The running exporter re-reads
new records in its state thread after each poll (never at scrape time).

Overdue. An activity is due ``interval`` after its last passing record (``verification:
intervals:``, by default 90 days for restore tests, 365 days for DR drills and docs reviews).
An asset never verified is due ``interval`` after the exporter first saw the asset: a new asset
is not overdue the moment it is declared, and "never" becomes overdue once a whole interval
has passed without a pass. A failing record does not reset the clock.

Sample exposition::

    # HELP backup_verification_last_timestamp_seconds When the activity was last recorded.
    # TYPE backup_verification_last_timestamp_seconds gauge
    backup_verification_last_timestamp_seconds{activity="dr-drill",asset="nc",result="pass"} 1.79e9
    # HELP backup_verification_interval_seconds How often the activity is due.
    # TYPE backup_verification_interval_seconds gauge
    backup_verification_interval_seconds{activity="restore-test"} 7776000.0
    # HELP backup_verification_due_timestamp_seconds When the next passing record is due.
    # TYPE backup_verification_due_timestamp_seconds gauge
    backup_verification_due_timestamp_seconds{activity="restore-test",asset="immich"} 1.8e9
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass as plain_dataclass
from dataclasses import field
from datetime import datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from exporter.assets.model import VerificationStatus
from exporter.core.fields import (
    STRICT,
    ConfigPath,
    ConfigSection,
    Duration,
    Loc,
    Secret,
)

Activity = Literal["restore-test", "dr-drill", "docs-review"]
ACTIVITIES: tuple[Activity, ...] = get_args(Activity)
Result = Literal["pass", "fail"]
RESULTS: tuple[Result, ...] = get_args(Result)
Depth = Literal["listing", "sample", "full", "boot"]
DEPTHS: tuple[Depth, ...] = get_args(Depth)
Origin = Literal["cli", "api"]

DAY = 86400.0
#: The strategy's testing schedule: restore tests quarterly, DR drills and docs reviews yearly.
DEFAULT_INTERVALS: Mapping[str, float] = {
    "restore-test": 90 * DAY,
    "dr-drill": 365 * DAY,
    "docs-review": 365 * DAY,
}
MAX_NOTE = 1000
#: A record's time may be this far ahead of the exporter's clock (clock skew), no more.
FUTURE_SLACK = 300.0


class RecordError(ValueError):
    """A record is invalid; the message says what to change."""


@plain_dataclass(frozen=True)
class Record:
    """A validated record, not stored yet."""

    activity: Activity
    asset: str
    result: Result
    at: float
    note: str = ""
    depth: Depth | None = None
    origin: Origin = "cli"


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise RecordError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_at(text: str, zone: ZoneInfo) -> float:
    """Parse an ISO 8601 time; without an offset it is in ``zone`` (the config's timezone)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(
            f"at: not an ISO 8601 time: {text!r} (e.g. 2026-11-30T14:00:00+01:00)"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=zone)).timestamp()


def make_record(
    data: Mapping[str, Any],
    *,
    assets: Collection[str],
    origin: Origin,
    now: float,
    zone: ZoneInfo,
) -> Record:
    """Validate a record given as ``{activity, asset, result, at?, note?, depth?}``.

    ``at`` defaults to ``now``; it is an ISO 8601 string (or Unix seconds from the API).
    Raises :class:`RecordError` with one clear message.
    """
    known = {"activity", "asset", "result", "at", "note", "depth"}
    extra = sorted(str(k) for k in data if k not in known)
    if extra:
        raise RecordError(f"unknown keys: {', '.join(extra)} (known: {', '.join(sorted(known))})")
    for key in ("activity", "asset", "result"):
        if data.get(key) is None:
            raise RecordError(f"{key}: missing")
    activity = _choice("activity", data["activity"], ACTIVITIES)
    asset = data["asset"]
    if not isinstance(asset, str) or asset not in assets:
        listed = ", ".join(sorted(assets)) if assets else "none: add an assets: section"
        raise RecordError(f"asset: {asset!r} is not a configured asset (known: {listed})")
    result = _choice("result", data["result"], RESULTS)
    depth = data.get("depth")
    if depth is not None:
        depth = _choice("depth", depth, DEPTHS)
    note = data.get("note", "") or ""
    if not isinstance(note, str):
        raise RecordError("note: must be a string")
    if len(note) > MAX_NOTE:
        raise RecordError(f"note: at most {MAX_NOTE} characters, got {len(note)}")
    raw_at = data.get("at")
    if raw_at is None:
        at = now
    elif isinstance(raw_at, str):
        at = parse_at(raw_at, zone)
    elif isinstance(raw_at, int | float) and not isinstance(raw_at, bool):
        at = float(raw_at)
    else:
        raise RecordError("at: must be an ISO 8601 time or Unix seconds")
    if not math.isfinite(at) or at <= 0:
        raise RecordError(f"at: not a valid time: {raw_at!r}")
    if at > now + FUTURE_SLACK:
        raise RecordError(f"at: {raw_at!r} is in the future; record what was done")
    return Record(activity, asset, result, at, note, depth, origin)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True, kw_only=True, config=STRICT)
class VerificationConfig(ConfigSection):
    """``verification:``: how often each activity is due (defaults: the strategy's schedule)."""

    intervals: Mapping[Activity, Duration] = field(default_factory=dict)

    def interval(self, activity: str) -> float:
        """Return how often ``activity`` is due, in seconds."""
        configured = {str(k): float(v) for k, v in self.intervals.items()}
        return configured.get(activity, DEFAULT_INTERVALS[activity])


@dataclass(frozen=True, kw_only=True, config=STRICT)
class RecordsApiConfig(ConfigSection):
    """``records_api:``: enables ``POST /api/records`` with a bearer token read from a file."""

    token_file: ConfigPath
    token: SkipJsonSchema[Secret] = Secret("")

    @classmethod
    def prepare(
        cls, raw: dict[str, Any], found: list[tuple[Loc, str]], context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Read the token from ``token_file``; an inline token is refused."""
        if "token" in raw:
            del raw["token"]
            found.append(
                (
                    ("token",),
                    "the token is read from token_file only (a file only the exporter reads)",
                )
            )
        name = raw.get("token_file")
        if name is None:
            return raw  # "token_file: missing" comes from the field
        # The same reading as every *_file secret (relative to the config, ${ENV}, not empty).
        from exporter.core.config import _read_secret  # noqa: PLC0415 - config imports us

        secret = _read_secret(raw, "token", found, context)
        raw["token_file"] = name
        if secret is None:
            return raw
        if len(secret.reveal()) < 16:
            found.append((("token_file",), "the token must have at least 16 characters"))
            return raw
        raw["token"] = secret
        return raw


# ------------------------------------------------------------------------------ status


def verification_statuses(
    assets: Iterable[str],
    latest: Mapping[tuple[str, str, str], float],
    config: VerificationConfig,
    first_seen: Callable[[str], float],
    now: float,
) -> list[VerificationStatus]:
    """Judge every activity of every asset at ``now``.

    ``latest`` maps ``(activity, asset, result)`` to the newest record's time; ``first_seen``
    returns when the exporter first saw an asset (the start of the clock of a never-verified
    activity).
    """
    out = []
    for asset in sorted(assets):
        for activity in ACTIVITIES:
            interval = config.interval(activity)
            last_pass = latest.get((activity, asset, "pass"))
            last_fail = latest.get((activity, asset, "fail"))
            due = (last_pass if last_pass is not None else first_seen(asset)) + interval
            out.append(
                VerificationStatus(
                    asset=asset,
                    activity=activity,
                    interval=interval,
                    last_pass=last_pass,
                    last_fail=last_fail,
                    overdue=now > due,
                    due=due,
                )
            )
    return out


def render_verification(
    statuses: Iterable[VerificationStatus], config: VerificationConfig
) -> Iterator[Metric]:
    """Render the verification families (see the module docstring)."""
    last = GaugeMetricFamily(
        "backup_verification_last_timestamp_seconds",
        "When the activity was last recorded for the asset, per result.",
        labels=["activity", "asset", "result"],
    )
    interval = GaugeMetricFamily(
        "backup_verification_interval_seconds",
        "How often the activity is due (verification.intervals).",
        labels=["activity"],
    )
    due = GaugeMetricFamily(
        "backup_verification_due_timestamp_seconds",
        "When the next passing record is due: last pass (or first seen) plus the interval.",
        labels=["activity", "asset"],
    )
    for activity in ACTIVITIES:
        interval.add_metric([activity], config.interval(activity))
    for st in statuses:
        for result, at in (("pass", st.last_pass), ("fail", st.last_fail)):
            if at is not None:
                last.add_metric([st.activity, st.asset, result], at)
        due.add_metric([st.activity, st.asset], st.due)
    yield last
    yield interval
    yield due
