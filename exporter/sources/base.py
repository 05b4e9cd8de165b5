"""The contract every source kind implements: async ``fetch()`` then pure ``render()``.

A source does all of its I/O in :meth:`Source.fetch`, which returns a frozen snapshot.
:meth:`Source.render` turns a snapshot into fresh metric families and never does I/O;
it runs at scrape time. Blocking SDKs run through :meth:`FetchContext.run_blocking`,
which uses one thread per source, so a hung SDK call can never overlap the next poll.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import datetime
import email.utils
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, ParamSpec, TypeVar, get_args

from prometheus_client.core import Metric

from exporter.core.clock import Clock
from exporter.core.config import SourceConfig

if TYPE_CHECKING:
    from exporter.schedule.jobs import Evidence, JobSpec

# ``starting``: not polled since the exporter started (its last-known values are served);
# ``offline``: a failed poll inside the source's declared offline window; ``inactive``: a
# backup storage no node has active (a per-target reason).
Reason = Literal[
    "timeout",
    "auth",
    "permission",
    "tls",
    "http",
    "parse",
    "connection",
    "config",
    "starting",
    "offline",
    "inactive",
]
REASONS: tuple[Reason, ...] = get_args(Reason)

S = TypeVar("S")
C = TypeVar("C", bound=SourceConfig)
P = ParamSpec("P")
R = TypeVar("R")


class FetchError(Exception):
    """An expected failure of a poll, with a machine-readable ``reason``.

    The message must be safe to log and show: it never contains a credential.

    ``retry_after`` (seconds from now) is set when the backend asked us to wait before the
    next request (HTTP 429/503 ``Retry-After``): the poller makes no request before then.
    """

    def __init__(self, reason: Reason, message: str, *, retry_after: float | None = None) -> None:
        self.reason: Reason = reason
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{reason}: {message}")


#: The longest wait a ``Retry-After`` may impose (a bogus "retry in a year" must not silence
#: a source for good): one day.
MAX_RETRY_AFTER = 86400.0


def retry_after_header(headers: Mapping[str, str] | None, now: float) -> float | None:
    """Return the wait a response's ``Retry-After`` asks for (see :func:`parse_retry_after`).

    An HTTP-date is measured against the response's own ``Date`` when it has one, so a
    server whose clock differs from ours still gets the wait it asked for; else ``now``.
    """
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    served = parse_http_date(headers.get("Date"))
    return parse_retry_after(value, now if served is None else served)


def parse_http_date(value: str | None) -> float | None:
    """Parse an HTTP-date (RFC 9110 §5.6.7, all three forms) into Unix seconds, or None."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # the asctime form has no zone: HTTP-dates are always GMT
        when = when.replace(tzinfo=datetime.UTC)
    try:
        return when.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the seconds to wait that a ``Retry-After`` header value asks for, or None.

    RFC 9110, Retry-After: the value is either ``delay-seconds`` (``1*DIGIT``) or an
    ``HTTP-date`` (IMF-fixdate, or the obsolete RFC 850 and asctime forms a recipient must
    accept, §5.6.7), the instant after which to retry. A date in the past means "now" (0);
    anything else (negative, fractional, garbage) is ignored (None). The wait is capped at
    :data:`MAX_RETRY_AFTER`.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        # Many digits would overflow int parsing limits; any such wait is capped anyway.
        return MAX_RETRY_AFTER if len(text) > 9 else min(float(text), MAX_RETRY_AFTER)
    at = parse_http_date(text)
    if at is None:
        return None
    return min(max(0.0, at - now), MAX_RETRY_AFTER)


class FetchContext:
    """Per-source helpers for ``fetch()``: clock, request counter, worker thread and memory.

    ``memory`` is the source's small durable key-value memory (JSON-serializable values):
    the same mapping on every poll, loaded from the state store at start and saved after each
    successful poll. A kind keeps in it what it learns across polls (a scrub seen before a
    resilver hid it, when a SMART self-test was first seen, the last bucket listing) and never
    deals with the store itself. Without a state database it lives only as long as the process.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        executor: ThreadPoolExecutor | None = None,
        memory: dict[str, Any] | None = None,
    ) -> None:
        self.clock = clock
        self.requests: collections.Counter[str] = collections.Counter()
        self._executor = executor
        self.memory: dict[str, Any] = {} if memory is None else memory

    def count_request(self, api_class: str = "", n: int = 1) -> None:
        """Count ``n`` API calls; ``api_class`` is a billing class (B2: ``B``/``C``) or empty."""
        self.requests[api_class] += n

    async def run_blocking(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a blocking SDK call in this source's single worker thread."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)


class Source(ABC, Generic[C, S]):
    """One configured source; ``kind`` names the YAML ``kind:`` it implements."""

    kind: ClassVar[str]

    def __init__(self, config: C) -> None:
        self.config = config
        self.name = config.name
        # The ``policy:`` rules checked on this source's polls (exporter.policy.config
        # rules; set by the app when it builds the source, see build_pollers).
        self.policies: tuple[Any, ...] = ()

    @abstractmethod
    async def fetch(self, ctx: FetchContext) -> S:
        """Do all I/O and return a frozen snapshot; raise :class:`FetchError` on failure."""

    @abstractmethod
    def render(self, snapshot: S) -> Iterable[Metric]:
        """Build fresh metric families from ``snapshot`` (pure, no I/O)."""

    def jobs(self, snapshot: S) -> Iterable[tuple[JobSpec, Evidence]]:
        """Yield the jobs this system schedules itself, each with its evidence."""
        return ()

    def evidence(self, snapshot: S, selector: Mapping[str, str]) -> Evidence | None:
        """Return the evidence for a configured job's ``evidence:`` selector, if any."""
        return None

    async def close(self) -> None:
        """Release connections; called once at shutdown."""
