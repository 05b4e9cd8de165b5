"""``kind: healthchecks``: Healthchecks.io checks as metrics and job evidence.

Works with the hosted service and with self-hosted instances.

One poll is one ``GET <url>/api/v3/checks/`` with the ``X-Api-Key`` header (plus one
``?tag=`` per configured tag; Healthchecks returns the checks that carry *all* of them),
counted in ``backup_source_api_requests_total``. A read-only API key is enough and
recommended: its answer lacks ``uuid``/``ping_url``/``update_url``/... and has ``unique_key``
instead (docs/backends.md §7), and nothing here needs the uuid. The check label is the check's
``slug``, else its name, else ``unnamed``; repeated labels get ``-2``, ``-3``... in API order.

What the check list can and cannot tell (Healthchecks ``Check.ping``/``get_status``):

* ``last_ping`` is the time of the last *completion* ping (success, failure or exit status);
  start, log and ignored pings do not move it. ``started`` is true between a start ping and
  its completion.
* ``status`` (v3) is ``new`` (never completed), ``up``, ``grace`` (the expected ping is late
  but within the grace time), ``down`` (a failure ping, a missed deadline, or a run that
  started more than ``grace`` ago) or ``paused``. So with ``up``/``grace`` the last
  completion was a *success* and ``last_ping`` is its time; with ``down`` the list alone
  cannot tell an explicit failure from a late or overlong run.

Job evidence of a check therefore is: ``last_success = last_ping`` when the status is
``up`` or ``grace``, otherwise none; ``late = status == "grace"`` (the expected ping has not
come and the grace time runs: the job is ``late``, not failed, until Healthchecks decides);
``failed = status == "down"`` (Healthchecks' verdict: failure ping *or* missed deadline);
``running = started``; ``last_duration`` from the list.
A down check is thus overdue once a scheduled run is past its grace, whatever the cause.

``pings: true`` reads ``GET /api/v3/checks/<uuid>/pings/`` for each *down* scheduled check
(one more request per down check per poll, nothing while all are up) and takes the newest
``success`` ping as ``last_success``, ``failed`` = the newest completion was a ``fail`` and
the newest ``start`` ping as the last start. That endpoint needs a read-write key (and the
uuid), which can also change and delete checks: the trade-off is better evidence while a
check is down against a more powerful credential. With a read-only key the option is a no-op.

Jobs (``jobs: true``): every check with a ``schedule`` (cron, or OnCalendar) and ``tz``,
except paused ones, becomes the job ``hc-<check>`` with the check's grace; the schedule is
evaluated by :mod:`exporter.schedule`, a check whose schedule it cannot evaluate (multi-line
OnCalendar, ``~`` days, a time zone inside the expression) is skipped with one warning and
``backup_healthchecks_schedule_supported 0``. Simple checks (a ``timeout`` period, no
calendar) are not jobs: their Healthchecks status is in the metrics, and a ``jobs:`` entry
with ``evidence: {source: <name>, check: <slug>}`` can give one a schedule.

The API key is sent only to the configured host: redirects are not followed (a redirect
would carry the header elsewhere), and no message ever contains the key.

Sample exposition::

    # HELP backup_healthchecks_check_up 1 when the check is up or in its grace time, 0 when down.
    # TYPE backup_healthchecks_check_up gauge
    backup_healthchecks_check_up{check="b2-daily",source="hc"} 1.0
    # HELP backup_healthchecks_check_status Healthchecks status of the check (state set).
    # TYPE backup_healthchecks_check_status gauge
    backup_healthchecks_check_status{check="b2-daily",source="hc",status="up"} 1.0
    # HELP backup_healthchecks_last_ping_timestamp_seconds Time of the last success or failure ping.
    # TYPE backup_healthchecks_last_ping_timestamp_seconds gauge
    backup_healthchecks_last_ping_timestamp_seconds{check="b2-daily",source="hc"} 1.7727e+09
    # HELP backup_healthchecks_check_info Schedule of the check (always 1).
    # TYPE backup_healthchecks_check_info gauge
    backup_healthchecks_check_info{check="b2-daily",kind="cron",schedule="30 1 * * *",...} 1.0
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric

from exporter.core.config import (
    TLSConfig,
)
from exporter.core.tls import ClientSSL
from exporter.schedule.expressions import Schedule, ScheduleError, parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec
from exporter.sources.base import FetchContext, FetchError, Source, retry_after_header
from exporter.sources.healthchecks import KIND
from exporter.sources.healthchecks.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.sources.healthchecks.config import HealthchecksConfig, _base_url

log = logging.getLogger(__name__)


STATUSES = ("new", "up", "grace", "down", "paused")
#: A check list is ~1.5 KB per check; this bounds what a misbehaving server can make us hold.
MAX_RESPONSE_BYTES = 32 * 2**20
_MAX_TEXT = 200
# The uuid goes into a request path (the ping log): accept nothing but a uuid.
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


# ------------------------------------------------------------------------------ snapshot


@dataclass(frozen=True)
class PingLog:
    """What the ping log of a check showed (Unix seconds), when it was read."""

    last_success: float | None = None
    last_failure: float | None = None
    last_start: float | None = None


@dataclass(frozen=True, kw_only=True)
class HCCheck:
    """One check as the v3 list reports it, plus its evaluated schedule."""

    label: str  # the ``check`` label: slug, else name, else "unnamed"; made unique
    name: str
    slug: str
    status: str
    started: bool
    grace: float
    last_ping: float | None
    next_ping: float | None
    last_duration: float | None = None
    timeout: float | None = None  # simple checks
    schedule: str | None = None  # cron / oncalendar checks
    tz: str = ""
    # The uuid is the check's ping address: kept only to read the ping log, never rendered.
    uuid: str | None = field(default=None, repr=False)
    parsed: Schedule | None = field(default=None, repr=False, compare=False)
    schedule_error: str = ""
    pings: PingLog | None = None

    @property
    def kind(self) -> str:
        """``simple``, ``cron`` or ``oncalendar``, guessed as Healthchecks' ``guess_kind`` does."""
        if self.schedule is None:
            return "simple"
        one_line = "\n" not in self.schedule.strip()
        return "cron" if one_line and len(self.schedule.split()) == 5 else "oncalendar"

    def evidence(self) -> Evidence:
        """Return the job evidence of this check (see the module docstring)."""
        if self.pings is not None:
            log_ = self.pings
            failed = log_.last_failure is not None and (
                log_.last_success is None or log_.last_failure > log_.last_success
            )
            return Evidence(
                last_success=log_.last_success,
                last_start=log_.last_start,
                last_duration=self.last_duration,
                failed=failed,
                running=self.started,
                tracks_start=True,
            )
        success = self.last_ping if self.status in ("up", "grace") else None
        return Evidence(
            last_success=success,
            last_duration=self.last_duration,
            failed=self.status == "down",
            running=self.started,
            late=self.status == "grace",
        )


@dataclass(frozen=True)
class HealthchecksSnapshot:
    """One poll: the checks in API order."""

    fetched_at: float
    checks: tuple[HCCheck, ...] = ()
    readonly: bool = False


# ------------------------------------------------------------------------------ parsing


class _ShapeError(Exception):
    """The answer does not have the documented shape."""


def _clean(text: str) -> str:
    """Make server-provided text safe for a one-line message."""
    return " ".join(text.split())[:_MAX_TEXT]


def _timestamp(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _ShapeError(f"{what} is {type(value).__name__}, expected an ISO 8601 date")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _ShapeError(f"{what} is not an ISO 8601 date: {_clean(value)[:40]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _seconds(value: Any, what: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _ShapeError(f"{what} is {type(value).__name__}, expected a number of seconds")
    return float(value)


def _string(entry: Mapping[str, Any], key: str, what: str, *, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str):
        raise _ShapeError(f"{what}.{key} is {type(value).__name__}, expected a string")
    return value


def parse_checks(document: Any) -> list[HCCheck]:
    """Parse a ``{"checks": [...]}`` answer (read-write or read-only key) into checks.

    Raises :class:`FetchError` (``parse``) naming the first malformed field.
    """
    try:
        if not isinstance(document, dict) or not isinstance(document.get("checks"), list):
            raise _ShapeError('expected an object with a "checks" list')
        checks: list[HCCheck] = []
        used: dict[str, int] = {}
        for index, raw in enumerate(document["checks"]):
            what = f"checks[{index}]"
            if not isinstance(raw, dict):
                raise _ShapeError(f"{what} is {type(raw).__name__}, expected an object")
            name = _string(raw, "name", what, default="")
            slug = _string(raw, "slug", what, default="")
            status = _string(raw, "status", what)
            started = raw.get("started", False)
            if not isinstance(started, bool):
                raise _ShapeError(f"{what}.started is {type(started).__name__}, expected a bool")
            schedule = raw.get("schedule")
            if schedule is not None and not isinstance(schedule, str):
                raise _ShapeError(f"{what}.schedule is {type(schedule).__name__}, expected text")
            tz = _string(raw, "tz", what, default="UTC") if schedule is not None else ""
            uuid = raw.get("uuid")
            base = slug or name.strip() or "unnamed"
            count = used.get(base, 0) + 1
            used[base] = count
            checks.append(
                HCCheck(
                    label=base if count == 1 else f"{base}-{count}",
                    name=name,
                    slug=slug,
                    status=status,
                    started=started,
                    grace=_seconds(raw.get("grace"), f"{what}.grace") or 0.0,
                    last_ping=_timestamp(raw.get("last_ping"), f"{what}.last_ping"),
                    next_ping=_timestamp(raw.get("next_ping"), f"{what}.next_ping"),
                    last_duration=_seconds(
                        raw.get("last_duration"), f"{what}.last_duration", optional=True
                    ),
                    timeout=_seconds(raw.get("timeout"), f"{what}.timeout", optional=True)
                    if schedule is None
                    else None,
                    schedule=schedule,
                    tz=tz,
                    uuid=uuid if isinstance(uuid, str) and _UUID_RE.fullmatch(uuid) else None,
                )
            )
    except _ShapeError as exc:
        raise FetchError("parse", f"unexpected check list: {exc}") from None
    # A label made unique with "-2" could collide with a real slug "x-2": suffix again.
    seen: set[str] = set()
    unique: list[HCCheck] = []
    for check in checks:
        label = check.label
        n = 2
        while label in seen:
            label = f"{check.label}-{n}"
            n += 1
        seen.add(label)
        unique.append(check if label == check.label else replace(check, label=label))
    return unique


def parse_pings(document: Any) -> PingLog:
    """Fold a ``{"pings": [...]}`` answer into the newest success, failure and start."""
    try:
        if not isinstance(document, dict) or not isinstance(document.get("pings"), list):
            raise _ShapeError('expected an object with a "pings" list')
        newest: dict[str, float] = {}
        for index, raw in enumerate(document["pings"]):
            if not isinstance(raw, dict):
                raise _ShapeError(f"pings[{index}] is {type(raw).__name__}, expected an object")
            kind = raw.get("type")
            if kind not in ("success", "fail", "start"):
                continue  # log / ign pings say nothing about runs
            when = _timestamp(raw.get("date"), f"pings[{index}].date")
            if when is not None and when > newest.get(kind, float("-inf")):
                newest[kind] = when
    except _ShapeError as exc:
        raise FetchError("parse", f"unexpected ping log: {exc}") from None
    return PingLog(
        last_success=newest.get("success"),
        last_failure=newest.get("fail"),
        last_start=newest.get("start"),
    )


# ------------------------------------------------------------------------------ source


def _family(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=["source", "check", *extra])


class HealthchecksSource(Source[HealthchecksConfig, HealthchecksSnapshot]):
    """Reads the Management API v3 check list with one aiohttp session per source.

    Sample exposition::

        # HELP backup_healthchecks_started 1 between a start ping and its completion.
        # TYPE backup_healthchecks_started gauge
        backup_healthchecks_started{check="storj-weekly",source="hc"} 0.0
        # HELP backup_healthchecks_grace_seconds Grace time of the check.
        # TYPE backup_healthchecks_grace_seconds gauge
        backup_healthchecks_grace_seconds{check="storj-weekly",source="hc"} 43200.0
    """

    kind = KIND

    def __init__(self, config: HealthchecksConfig) -> None:
        super().__init__(config)
        self._base = _base_url(config.url)
        # A self-hosted instance may live under a path prefix (https://host/hc).
        self._prefix = self._base.path.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._ssl = ClientSSL(TLSConfig(verify=config.verify_tls, ca_file=config.ca_file))
        self._warned: set[tuple[str, str]] = set()

    @property
    def _where(self) -> str:
        return f"{self._base.host}:{self._base.port}"

    def _redact(self, text: str) -> str:
        key = self.config.api_key.reveal()
        cleaned = _clean(text)
        return cleaned.replace(key, "***") if key else cleaned

    async def _get_json(self, ctx: FetchContext, path: str, query: list[tuple[str, str]]) -> Any:
        """GET ``path`` under the base URL with the key; return the decoded JSON."""
        if self._session is None:
            # No DNS cache: polls are minutes apart, far beyond its 10 s TTL, and a cached
            # address would hide a name that stopped resolving.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(use_dns_cache=False)
            )
        url = self._base.with_path(self._prefix + path).with_query(query)
        ssl_arg = self._ssl.get() if url.scheme == "https" else False
        ctx.count_request()
        try:
            async with self._session.get(
                url,
                headers={"X-Api-Key": self.config.api_key.reveal(), "Accept": "application/json"},
                ssl=ssl_arg,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            ) as resp:
                if resp.status != 200:
                    body = await resp.content.read(2048)
                    raise self._status_error(resp, body, ctx.clock.time())
                if (resp.content_length or 0) > MAX_RESPONSE_BYTES:
                    raise FetchError("parse", f"answer of {self._where} is too large")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > MAX_RESPONSE_BYTES:
                        raise FetchError("parse", f"answer of {self._where} is too large")
        except aiohttp.ClientConnectorCertificateError as exc:
            raise FetchError(
                "tls",
                f"certificate of {self._where} not trusted ({exc.certificate_error}); "
                "set ca_file (or verify_tls: false)",
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise FetchError("tls", f"TLS with {self._where} failed: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            why = exc.os_error.strerror or type(exc.os_error).__name__
            raise FetchError("connection", f"cannot connect to {self._where}: {why}") from None
        except TimeoutError:
            raise FetchError(
                "timeout", f"{self._where} did not answer within {self.config.timeout:g}s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise FetchError(
                "connection", f"connection to {self._where} failed: {type(exc).__name__}"
            ) from None
        try:
            return json.loads(bytes(data))
        except (UnicodeDecodeError, ValueError):
            raise FetchError("parse", f"answer of {self._where}{path} is not JSON") from None

    def _status_error(self, resp: aiohttp.ClientResponse, body: bytes, now: float) -> FetchError:
        status = resp.status
        detail = ""
        try:
            decoded = json.loads(body)
            if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
                detail = f": {self._redact(decoded['error'])}"
        except ValueError:
            pass
        where = self._where
        if status in (401, 403):
            return FetchError(
                "auth", f"{where} refused the API key (HTTP {status}{detail}); check api_key"
            )
        # Healthchecks rate-limits the API per key (HTTP 429) and a proxy in front of it may
        # answer 503; either may carry Retry-After (RFC 9110: seconds or an HTTP-date):
        # the poller then makes no request before it.
        retry_after = retry_after_header(resp.headers, now)
        if status == 429:
            after = "" if retry_after is None else f", retry after {retry_after:.0f}s"
            return FetchError(
                "http",
                f"rate limited by {where} (HTTP 429: about 100 API requests per minute{after})",
                retry_after=retry_after,
            )
        if 300 <= status < 400:
            location = self._redact(resp.headers.get("Location", "?"))
            return FetchError(
                "config",
                f"{where} redirects (HTTP {status}) to {location}; the API key is not sent "
                "across redirects, set url to the final address",
            )
        if status == 404:
            return FetchError(
                "config", f"{where} has no Healthchecks API v3 at {resp.url.path} (HTTP 404)"
            )
        return FetchError(
            "http",
            f"{where} answered HTTP {status}{detail}",
            retry_after=retry_after if status == 503 else None,
        )

    async def fetch(self, ctx: FetchContext) -> HealthchecksSnapshot:
        """Read the check list (and, with ``pings: true``, the ping logs of down checks)."""
        query = [("tag", tag) for tag in self.config.tags]
        checks = parse_checks(await self._get_json(ctx, "/api/v3/checks/", query))
        now = ctx.clock.time()
        readonly = bool(checks) and all(c.uuid is None for c in checks)
        result: list[HCCheck] = []
        for listed in checks:
            check = self._with_schedule(listed)
            if (
                self.config.pings
                and check.status == "down"
                and check.parsed is not None
                and check.uuid is not None
            ):
                doc = await self._get_json(ctx, f"/api/v3/checks/{check.uuid}/pings/", [])
                check = replace(check, pings=parse_pings(doc))
            result.append(check)
        return HealthchecksSnapshot(fetched_at=now, checks=tuple(result), readonly=readonly)

    def _with_schedule(self, check: HCCheck) -> HCCheck:
        if check.schedule is None:
            return check
        try:
            parsed = parse_schedule(check.schedule, check.tz or "UTC")
        except ScheduleError as exc:
            message = str(exc)
            if (check.label, check.schedule) not in self._warned:
                self._warned.add((check.label, check.schedule))
                log.warning(
                    "source=%s check %r is not a job: its schedule %r (tz %s) cannot be "
                    "evaluated: %s",
                    self.name,
                    check.label,
                    check.schedule,
                    check.tz,
                    message,
                )
            return replace(check, schedule_error=message)
        return replace(check, parsed=parsed)

    # ---- rendering

    def render(self, snapshot: HealthchecksSnapshot) -> Iterator[Metric]:
        """Render one series per check (and a state set over the five statuses)."""
        up = _family(
            "backup_healthchecks_check_up",
            "1 when the check is up or in its grace time, 0 when down (absent: new or paused).",
        )
        status = _family(
            "backup_healthchecks_check_status",
            "Healthchecks status of the check (state set over new, up, grace, down, paused).",
            ("status",),
        )
        last_ping = _family(
            "backup_healthchecks_last_ping_timestamp_seconds",
            "Time of the check's last success or failure ping (start pings do not count).",
        )
        next_ping = _family(
            "backup_healthchecks_next_ping_timestamp_seconds",
            "When the check's grace time starts (the next expected ping).",
        )
        started = _family(
            "backup_healthchecks_started", "1 between a start ping and its completion."
        )
        grace = _family("backup_healthchecks_grace_seconds", "Grace time of the check.")
        timeout = _family(
            "backup_healthchecks_timeout_seconds",
            "Expected period between pings of a simple (non-calendar) check.",
        )
        duration = _family(
            "backup_healthchecks_last_duration_seconds",
            "Time between the last start ping and its completion.",
        )
        supported = _family(
            "backup_healthchecks_schedule_supported",
            "1 when the exporter evaluates the check's schedule as a job, 0 when it cannot.",
        )
        info = InfoMetricFamily(
            "backup_healthchecks_check",
            "Schedule of the check (always 1).",
            labels=["source", "check"],
        )
        for check in snapshot.checks:
            values = [self.name, check.label]
            if check.status in ("up", "grace", "down"):
                up.add_metric(values, float(check.status != "down"))
            for state in STATUSES:
                status.add_metric([*values, state], float(check.status == state))
            if check.last_ping is not None:
                last_ping.add_metric(values, check.last_ping)
            if check.next_ping is not None:
                next_ping.add_metric(values, check.next_ping)
            started.add_metric(values, float(check.started))
            grace.add_metric(values, check.grace)
            if check.timeout is not None:
                timeout.add_metric(values, check.timeout)
            if check.last_duration is not None:
                duration.add_metric(values, check.last_duration)
            if check.schedule is not None:
                supported.add_metric(values, float(check.parsed is not None))
            info.add_metric(
                values,
                {"schedule": check.schedule or "", "timezone": check.tz, "kind": check.kind},
            )
        yield from (up, status, last_ping, next_ping, started, grace, timeout, duration)
        yield from (supported, info)

    # ---- jobs

    def jobs(self, snapshot: HealthchecksSnapshot) -> Iterator[tuple[JobSpec, Evidence]]:
        """Yield each scheduled, not paused check whose schedule evaluates, as ``hc-<check>``."""
        if not self.config.jobs:
            return
        for check in snapshot.checks:
            if check.parsed is None or check.status == "paused":
                continue
            spec = JobSpec(
                name=f"hc-{check.label}",
                source=self.name,
                schedule=check.parsed,
                grace=check.grace,
                start_grace=None,
            )
            yield spec, check.evidence()

    def evidence(
        self, snapshot: HealthchecksSnapshot, selector: Mapping[str, str]
    ) -> Evidence | None:
        """Resolve ``check:`` (the check label, slug or name) to the check's evidence."""
        wanted = selector.get("check")
        if wanted is None:
            return None
        # The label first: it is unique, while slugs and names may repeat.
        for attribute in ("label", "slug", "name"):
            for check in snapshot.checks:
                if getattr(check, attribute) == wanted:
                    return check.evidence()
        return None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
