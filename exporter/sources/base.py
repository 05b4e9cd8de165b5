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
    """

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason: Reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


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
