"""A fake Healthchecks.io Management API v3 (read side) with the real shapes (tests, demo).

It serves, over http (or https with a :mod:`exporter.sim.tls` certificate):

* ``GET /api/v3/checks/[?tag=..&tag=..][&slug=..]`` -> ``{"checks": [...]}``, every check shaped
  as Healthchecks' ``Check.to_dict(v=3)`` (docs/backends.md §7): the read-write key gets ``uuid``,
  ``ping_url``, ``update_url``, ``pause_url``, ``resume_url`` and ``channels``; the read-only key
  gets ``unique_key`` instead (sha1 of the first 16 hex digits of the uuid); ``timeout`` for
  simple checks, ``schedule`` + ``tz`` for cron/OnCalendar checks; ``tag`` filters AND;
* ``GET /api/v3/checks/<uuid>/pings/`` -> ``{"pings": [...]}`` newest first (read-write key only,
  as Healthchecks' ``@authorize``);
* ``X-Api-Key`` checked like ``hc/api/decorators``: not 32 characters -> 401
  ``{"error": "missing api key"}``, unknown -> 401 ``{"error": "wrong api key"}``.

The state follows Healthchecks' ``Check.ping``/``get_status``/``get_grace_start``: a start ping
sets only ``last_start``; a success or failure ping sets ``last_ping``, the duration when it
completes a start, and the stored status (``up``/``down``); the reported status adds ``grace``
and ``down`` from the schedule (cronsim for cron, the ``oncalendar`` package for OnCalendar,
both independent of :mod:`exporter.schedule`) and a run started more than ``grace`` ago is
``down``; like ``sendalerts``, a stored ``up`` whose deadline passed becomes ``down`` (so
``next_ping`` turns null).

Scheduled checks can run by themselves: a :class:`FakeRun` sends a start ping at each
scheduled instant and its completion ``duration`` later (``behaviour`` ``ok``, ``fail``,
``skip`` = no pings at all, ``hang`` = start only). :meth:`HealthchecksScenario.sync` simulates
lazily up to ``now()`` before every answer.

Knobs: :meth:`~HealthchecksScenario.ping`, :meth:`~HealthchecksScenario.pause`,
:meth:`~HealthchecksScenario.advance`, ``rate_limited`` (answer the next n requests 429),
``errors`` (statuses for the next requests, e.g. ``[500]``), :meth:`~HealthchecksScenario.hang`
/ :meth:`~HealthchecksScenario.release`, ``document`` (serve this JSON as the check list, e.g. a
captured fixture), ``raw_body`` (serve these bytes, e.g. malformed JSON), ``redirect_to``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from cronsim import CronSim
from oncalendar import OnCalendar

from exporter.sim.server import AppServer, Hold, advance_clock, cert_path
from exporter.sim.tls import SelfSignedCert, make_self_signed_cert

__all__ = [
    "FakeCheck",
    "FakeHealthchecks",
    "FakeRun",
    "HealthchecksScenario",
    "homelab",
    "start_fake_healthchecks",
]

HOUR = 3600
DAY = 86400
PING_ENDPOINT = "https://hc-ping.com/"


def isostring(ts: float | None) -> str | None:
    """Healthchecks' ``isostring``: ISO 8601 in UTC without microseconds."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).replace(microsecond=0).isoformat()


def guess_kind(schedule: str) -> str:
    """Healthchecks' ``guess_kind``: one line of five fields is cron, else OnCalendar."""
    if "\n" not in schedule.strip() and len(schedule.split()) == 5:
        return "cron"
    return "oncalendar"


def schedule_instants(schedule: str, tz: str, after: float) -> Iterator[float]:
    """Yield the scheduled instants strictly after ``after`` (cronsim / oncalendar)."""
    start = datetime.fromtimestamp(after, ZoneInfo(tz))
    if guess_kind(schedule) == "cron":
        for when in CronSim(schedule, start):
            yield when.timestamp()
    else:
        for when in OnCalendar(schedule, start):
            yield when.timestamp()


@dataclass
class FakeRun:
    """How the job behind a scheduled check behaves at each of its instants."""

    duration: float
    behaviour: str = "ok"  # ok | fail | skip | hang


@dataclass
class FakeCheck:
    """One check and its stored state (Unix seconds)."""

    name: str
    slug: str = ""
    tags: str = ""
    desc: str = ""
    grace: int = HOUR
    timeout: int | None = DAY  # simple checks; ignored when ``schedule`` is set
    schedule: str | None = None
    tz: str = "UTC"
    code: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "new"  # the stored status: new | up | down | paused
    last_ping: float | None = None
    last_start: float | None = None
    last_duration: float | None = None
    n_pings: int = 0
    manual_resume: bool = False
    methods: str = ""
    start_kw: str = ""
    success_kw: str = ""
    failure_kw: str = ""
    filter_subject: bool = False
    filter_body: bool = False
    channels: str = ""
    run: FakeRun | None = None
    log: list[dict[str, Any]] = field(default_factory=list)  # newest last

    @property
    def kind(self) -> str:
        """``simple``, ``cron`` or ``oncalendar``."""
        return "simple" if self.schedule is None else guess_kind(self.schedule)

    @property
    def unique_key(self) -> str:
        """What a read-only key sees instead of the uuid."""
        return hashlib.sha1(uuid.UUID(self.code).hex[:16].encode()).hexdigest()  # noqa: S324

    def grace_start(self, *, with_started: bool = True) -> float | None:
        """``Check.get_grace_start``: when the grace time starts (``None``: never)."""
        result: float | None = None
        if self.status == "up" and self.last_ping is not None:
            if self.schedule is None:
                result = self.last_ping + (self.timeout or DAY)
            else:
                result = next(schedule_instants(self.schedule, self.tz, self.last_ping), None)
        if with_started and self.last_start is not None and self.status != "down":
            result = self.last_start if result is None else min(result, self.last_start)
        return result

    def going_down_after(self) -> float | None:
        """``Check.going_down_after``: when ``sendalerts`` flips the check down."""
        start = self.grace_start()
        return None if start is None else start + self.grace

    def status_at(self, now: float) -> str:
        """``Check.get_status(with_started=False)``: the status the v3 API reports."""
        if self.last_start is not None and now >= self.last_start + self.grace:
            return "down"
        if self.status in ("new", "paused", "down"):
            return self.status
        start = self.grace_start(with_started=False)
        if start is None:
            return "up"
        if now >= start + self.grace:
            return "down"
        if now >= start:
            return "grace"
        return "up"

    def settle(self, now: float) -> None:
        """Do what ``sendalerts`` does: a stored ``up`` past its deadline becomes ``down``."""
        deadline = self.going_down_after()
        if self.status == "up" and deadline is not None and deadline <= now:
            self.status = "down"

    def ping(self, action: str, at: float) -> None:
        """``Check.ping`` for ``success``, ``fail``, ``start`` or ``log`` (no run ids)."""
        self.settle(at)
        if self.status == "paused" and self.manual_resume:
            action = "ign"
        duration: float | None = None
        if action == "start":
            self.last_start = at
        elif action in ("success", "fail"):
            self.last_ping = at
            self.last_duration = None
            if self.last_start is not None:
                duration = at - self.last_start
                self.last_duration = duration
                self.last_start = None
            self.status = "down" if action == "fail" else "up"
        self.n_pings += 1
        entry: dict[str, Any] = {
            "type": action,
            "date": datetime.fromtimestamp(at, UTC).isoformat(),
            "n": self.n_pings,
            "scheme": "https",
            "remote_addr": "192.0.2.10",
            "method": "GET",
            "ua": "curl/8.5.0",
            "rid": None,
        }
        if duration is not None:
            entry["duration"] = duration
        entry["body_url"] = None
        self.log.append(entry)

    def to_dict(self, now: float, *, readonly: bool, site_root: str) -> dict[str, Any]:
        """``Check.to_dict(readonly=..., v=3)`` at ``now``."""
        self.settle(now)
        result: dict[str, Any] = {
            "name": self.name,
            "slug": self.slug,
            "tags": self.tags,
            "desc": self.desc,
            "grace": int(self.grace),
            "n_pings": self.n_pings,
            "status": self.status_at(now),
            "started": self.last_start is not None,
            "last_ping": isostring(self.last_ping),
            "next_ping": isostring(self.grace_start()),
            "manual_resume": self.manual_resume,
            "methods": self.methods,
            "subject": self.success_kw if self.filter_subject else "",
            "subject_fail": self.failure_kw if self.filter_subject else "",
            "start_kw": self.start_kw,
            "success_kw": self.success_kw,
            "failure_kw": self.failure_kw,
            "filter_subject": self.filter_subject,
            "filter_body": self.filter_body,
            "filter_http_body": False,
            "filter_default_fail": False,
            "badge_url": f"{site_root}/b/2/{uuid.uuid5(uuid.NAMESPACE_URL, self.code)}.svg",
        }
        if self.last_duration:
            result["last_duration"] = int(self.last_duration)
        if readonly:
            result["unique_key"] = self.unique_key
        else:
            update_url = f"{site_root}/api/v3/checks/{self.code}"
            result["uuid"] = self.code
            result["ping_url"] = PING_ENDPOINT + self.code
            result["update_url"] = update_url
            result["pause_url"] = update_url + "/pause"
            result["resume_url"] = update_url + "/resume"
            result["channels"] = self.channels
        if self.schedule is None:
            result["timeout"] = int(self.timeout or DAY)
        else:
            result["schedule"] = self.schedule
            result["tz"] = self.tz
        return result


@dataclass(frozen=True)
class RequestRecord:
    """One request the fake received (the key only as which key it was)."""

    path: str
    query: tuple[tuple[str, str], ...]
    key: str  # "rw" | "ro" | "wrong" | "missing"


@dataclass
class HealthchecksScenario:
    """Everything the fake serves, and the knobs tests and the demo turn."""

    now: Callable[[], float]
    checks: list[FakeCheck] = field(default_factory=list)
    api_key: str = "hcrw" + "x7Kq" * 7  # 32 characters, like a real key
    readonly_key: str = "hcro" + "p2Zt" * 7
    site_root: str = "https://healthchecks.example"
    path_prefix: str = ""  # serve under e.g. "/hc", like a self-hosted SITE_ROOT with a path
    ping_log_limit: int = 100
    requests: list[RequestRecord] = field(default_factory=list)
    document: Any = None  # serve this JSON as the check list instead of ``checks``
    raw_body: bytes | None = None  # serve these bytes (200) as the check list
    rate_limited: int = 0  # answer this many next requests with 429
    errors: list[int] = field(default_factory=list)  # statuses for the next requests
    redirect_to: str | None = None
    simulated_until: float | None = None
    _pending: list[tuple[float, int, str, str]] = field(default_factory=list)
    _hang: Hold = field(default_factory=Hold)

    # ---- knobs

    def check(self, slug: str) -> FakeCheck:
        """Return the check with this slug."""
        return next(c for c in self.checks if c.slug == slug)

    def ping(self, slug: str, action: str = "success") -> None:
        """Send a ping (``success``, ``fail``, ``start``, ``log``) to a check now."""
        self.sync()
        self.check(slug).ping(action, self.now())

    def pause(self, slug: str) -> None:
        """Pause a check (the API's ``/pause``)."""
        check = self.check(slug)
        check.status = "paused"
        check.last_start = None

    def advance(self, seconds: float) -> None:
        """Move the clock (it must have ``advance``, like FakeClock) and simulate."""
        advance_clock(self.now, seconds)
        self.sync()

    def hang(self) -> None:
        """Hold every request without answering until :meth:`release`."""
        self._hang.hold()

    def release(self) -> None:
        """Answer the requests held by :meth:`hang`."""
        self._hang.release()

    # ---- the simulation

    def sync(self) -> None:
        """Send the pings of every scheduled run between the last simulated instant and now."""
        now = self.now()
        since = self.simulated_until
        self.simulated_until = now if since is None else max(since, now)
        if since is None or now <= since:
            return
        events = [e for e in self._pending if e[0] <= now]
        self._pending = [e for e in self._pending if e[0] > now]
        for index, check in enumerate(self.checks):
            run = check.run
            if run is None or check.schedule is None or run.behaviour == "skip":
                continue
            for at in schedule_instants(check.schedule, check.tz, since):
                if at > now:
                    break
                events.append((at, index, check.slug, "start"))
                if run.behaviour in ("ok", "fail"):
                    end = (at + run.duration, index, check.slug, _OUTCOME[run.behaviour])
                    (events if end[0] <= now else self._pending).append(end)
        for at, _, slug, action in sorted(events):
            self.check(slug).ping(action, at)

    # ---- answers

    def list_checks(self, *, readonly: bool, tags: list[str], slug: str | None) -> Any:
        """Return the ``GET /api/v3/checks/`` document."""
        if self.document is not None:
            return self.document
        now = self.now()
        wanted = set(tags)
        return {
            "checks": [
                c.to_dict(now, readonly=readonly, site_root=self.site_root)
                for c in self.checks
                if wanted.issubset(c.tags.split()) and (not slug or c.slug == slug)
            ]
        }


_OUTCOME = {"ok": "success", "fail": "fail"}


def homelab(now: Callable[[], float], *, history_days: float = 15) -> HealthchecksScenario:
    """Build the strategy document's two offsite syncs, with ``history_days`` of past runs.

    ``b2-daily``: TrueNAS cloud sync to Backblaze B2 at 01:30 Europe/Berlin, grace 8 h;
    ``storj-weekly``: to Storj on Wednesdays at 05:00, grace 12 h. Both ping start and
    success from pre/post-scripts.
    """
    scenario = HealthchecksScenario(
        now=now,
        checks=[
            FakeCheck(
                name="B2 daily sync",
                slug="b2-daily",
                tags="backup offsite b2",
                desc="TrueNAS cloud sync to Backblaze B2 (pre/post-script pings)",
                grace=8 * HOUR,
                schedule="30 1 * * *",
                tz="Europe/Berlin",
                run=FakeRun(duration=47 * 60),
            ),
            FakeCheck(
                name="Storj weekly sync",
                slug="storj-weekly",
                tags="backup offsite storj",
                desc="TrueNAS cloud sync to Storj (pre/post-script pings)",
                grace=12 * HOUR,
                schedule="0 5 * * 3",
                tz="Europe/Berlin",
                run=FakeRun(duration=3 * HOUR + 20 * 60),
            ),
        ],
    )
    scenario.simulated_until = now() - history_days * DAY
    scenario.sync()
    return scenario


# ------------------------------------------------------------------------------ HTTP

_SCENARIO: web.AppKey[HealthchecksScenario] = web.AppKey("scenario", HealthchecksScenario)


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _gate(request: web.Request, scenario: HealthchecksScenario) -> web.Response | str:
    """Record the request, apply the faults and check the key; return the key kind."""
    key = request.headers.get("X-Api-Key", "")
    kind = "missing"
    if len(key) == 32:
        kind = {scenario.api_key: "rw", scenario.readonly_key: "ro"}.get(key, "wrong")
    scenario.requests.append(
        RequestRecord(path=request.path, query=tuple(request.query.items()), key=kind)
    )
    await scenario._hang.wait()
    if scenario.redirect_to is not None:
        raise web.HTTPMovedPermanently(location=scenario.redirect_to)
    if scenario.rate_limited > 0:
        scenario.rate_limited -= 1
        return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": "60"})
    if scenario.errors:
        status = scenario.errors.pop(0)
        return web.Response(status=status, text=f"<h1>Server Error ({status})</h1>")
    if kind == "missing":
        return _error("missing api key", 401)
    if kind == "wrong":
        return _error("wrong api key", 401)
    scenario.sync()
    return kind


async def _checks(request: web.Request) -> web.Response:
    scenario = request.app[_SCENARIO]
    gate = await _gate(request, scenario)
    if isinstance(gate, web.Response):
        return gate
    if scenario.raw_body is not None:
        return web.Response(body=scenario.raw_body, content_type="application/json")
    document = scenario.list_checks(
        readonly=gate == "ro",
        tags=request.query.getall("tag", []),
        slug=request.query.get("slug"),
    )
    return web.json_response(document)


async def _pings(request: web.Request) -> web.Response:
    scenario = request.app[_SCENARIO]
    gate = await _gate(request, scenario)
    if isinstance(gate, web.Response):
        return gate
    if gate != "rw":  # @authorize: the read-only key is not accepted here
        return _error("wrong api key", 401)
    code = request.match_info["code"]
    check = next((c for c in scenario.checks if c.code == code), None)
    if check is None:
        return web.Response(status=404, text="Not Found")
    newest_first = list(reversed(check.log))[: scenario.ping_log_limit]
    return web.json_response({"pings": newest_first})


def create_app(scenario: HealthchecksScenario) -> web.Application:
    """Build the aiohttp application serving ``scenario``."""
    app = web.Application()
    app[_SCENARIO] = scenario
    prefix = scenario.path_prefix.rstrip("/")
    app.router.add_get(f"{prefix}/api/v3/checks/", _checks)
    app.router.add_get(f"{prefix}/api/v3/checks/{{code}}/pings/", _pings)
    return app


@dataclass
class FakeHealthchecks:
    """A running fake: where it listens and which keys it accepts."""

    scenario: HealthchecksScenario
    cert: SelfSignedCert | None
    host: str
    port: int
    _server: AppServer = field(default_factory=AppServer, repr=False)

    @property
    def url(self) -> str:
        """The base URL, as a ``kind: healthchecks`` source's ``url:`` takes it."""
        scheme = "https" if self.cert is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> str | None:
        """The certificate to trust (``ca_file:``); ``None`` for plain http."""
        return cert_path(self.cert)

    @property
    def api_key(self) -> str:
        """The read-write key."""
        return self.scenario.api_key

    @property
    def readonly_key(self) -> str:
        """The read-only key."""
        return self.scenario.readonly_key

    async def _start(self) -> None:
        app = create_app(self.scenario)
        self.port = await self._server.start(app, host=self.host, port=self.port, cert=self.cert)
        self.scenario.site_root = self.url + self.scenario.path_prefix.rstrip("/")

    async def stop(self) -> None:
        """Stop serving; held requests are released first."""
        self.scenario.release()
        await self._server.stop()


async def start_fake_healthchecks(
    scenario: HealthchecksScenario,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: bool = False,
    cert: SelfSignedCert | None = None,
) -> FakeHealthchecks:
    """Start the fake on ``host:port`` (0: a free port), plain http unless ``tls``."""
    if tls and cert is None:
        cert = make_self_signed_cert()
    fake = FakeHealthchecks(scenario=scenario, cert=cert if tls else None, host=host, port=port)
    await fake._start()
    return fake
