"""The exposition cache: ``/metrics`` serves bytes made when the data last changed.

Nothing a scrape shows changes between polls, apart from job deadlines passing, and those
instants are known in advance. So the exposition is a list of :class:`Part` s, each holding
the families it rendered last, rebuilt only when

* its **key** changed: a tuple of objects the part depends on, compared by identity (a
  poller's ``PollState`` is replaced whole after every poll, a snapshot after every good one);
* the clock reached its **valid_until**: the earliest instant its families can change
  without new evidence (a job's next start, start or finish deadline; an offline window's
  edge), ``math.inf`` when only new evidence changes them;
* someone called :meth:`Part.invalidate` (a part fed from outside the pollers).

:meth:`Exposition.families` merges the parts' families by name, in order (same-named
families of several parts become one family), and :meth:`Exposition.body` keeps the
serialized bytes per negotiated content type, and their gzip, until a part changes. A scrape
where nothing changed costs a few identity checks and a dictionary look-up.

Negotiation is prometheus_client's own (``prometheus_client.exposition.choose_encoder`` and
``gzip_accepted``, as its ``_bake_output`` does for ``make_aiohttp_handler``), so the content
types are the ones the library would send; ``?name[]=`` filtering is kept (served from the
cached families, serialized per request, as ``restricted_registry`` would).

Adding a part (an asset engine, SLA counters) is one line::

    collector.exposition.add(Part("assets", build, key=lambda: (engine.version,)))

where ``build(now)`` returns the families, or ``Rendered(families, valid_until)``.
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter.core.clock import Clock

log = logging.getLogger(__name__)

# Content types seen are cached; a client inventing versions must not grow the cache forever.
MAX_FORMATS = 8
# gzip level 6 (zlib's default): the bytes are made once per change, served many times.
GZIP_LEVEL = 6
OPENMETRICS = "application/openmetrics-text"
EOF = b"# EOF\n"


@dataclass
class Rendered:
    """What a part's build returns: its families and until when they hold."""

    families: list[Metric]
    valid_until: float = math.inf


Build = Callable[[float], "Rendered | Iterable[Metric]"]
Key = Callable[[], Sequence[object]]


def _same(a: Sequence[object] | None, b: Sequence[object]) -> bool:
    return a is not None and len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


@dataclass
class Part:
    """One piece of the exposition: families, until when they hold, and what they depend on.

    ``build(now)`` must be pure apart from logging (it runs at most once per change). A build
    that raises keeps nothing: the part is empty until its next change, and the error is logged.
    """

    name: str
    build: Build
    key: Key = field(default=lambda: ())
    families: list[Metric] = field(default_factory=list)
    valid_until: float = -math.inf
    _key: Sequence[object] | None = field(default=None, repr=False)

    def invalidate(self) -> None:
        """Rebuild at the next scrape."""
        self.valid_until = -math.inf

    def stale(self, now: float) -> bool:
        """Tell whether the part must be rebuilt at ``now``."""
        return now >= self.valid_until or not _same(self._key, self.key())

    def refresh(self, now: float) -> bool:
        """Rebuild if stale; return whether it was."""
        key = self.key()
        if now < self.valid_until and _same(self._key, key):
            return False
        self._key = key
        try:
            out = self.build(now)
            rendered = out if isinstance(out, Rendered) else Rendered(list(out))
        except Exception:
            log.exception("exposition part %s failed to render", self.name)
            rendered = Rendered([], math.inf)
        self.families = rendered.families
        self.valid_until = rendered.valid_until
        return True


def merge(parts: Iterable[Iterable[Metric]]) -> list[Metric]:
    """Merge same-named families (first one's HELP and type), keeping first-seen order.

    The inputs are not touched: a family that takes others' samples is a fresh copy.
    """
    return [family for family, _ in _groups(parts)]


def _groups(parts: Iterable[Iterable[Metric]]) -> list[tuple[Metric, tuple[Metric, ...]]]:
    """Return each merged family with the families it was made of."""
    members: dict[str, list[Metric]] = {}
    for families in parts:
        for family in families:
            members.setdefault(family.name, []).append(family)
    out = []
    for group in members.values():
        first = group[0]
        if len(group) > 1:
            first = Metric(first.name, first.documentation, first.type, first.unit)
            first.samples = [sample for family in group for sample in family.samples]
        out.append((first, tuple(group)))
    return out


class _Families:
    """A registry-like view of a fixed list of families (what the encoders take)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


@dataclass(frozen=True)
class Body:
    """A negotiated answer: the bytes, their content type, and gzip or not."""

    data: bytes
    content_type: str
    gzipped: bool


class Exposition:
    """The parts of the exposition, their merge, and the serialized bytes per format."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.parts: list[Part] = []
        self.generation = 0
        self._families: list[Metric] = []
        self._bodies: dict[tuple[str, bool], Body] = {}
        self._served: list[tuple[str, bool]] = []
        # The Accept header that first chose each content type (to serialize it again).
        self._accepts: dict[str, str] = {}
        self._generation_seen = -1
        self._groups: list[tuple[Metric, tuple[Metric, ...]]] = []
        # Per content type: each family's bytes and the part families they were made from.
        self._chunks: dict[str, dict[str, tuple[tuple[Metric, ...], bytes]]] = {}

    def add(self, part: Part) -> Part:
        """Append ``part`` (its families come after the existing parts'); return it."""
        self.parts.append(part)
        self.generation += 1
        return part

    def part(self, name: str) -> Part:
        """Return the part called ``name``."""
        return next(p for p in self.parts if p.name == name)

    def refresh(self, now: float | None = None) -> bool:
        """Rebuild the stale parts; return whether anything changed."""
        at = self.clock.time() if now is None else now
        changed = False
        for part in self.parts:
            changed = part.refresh(at) or changed
        if changed or self._generation_seen != self.generation:
            self._groups = _groups(p.families for p in self.parts)
            self._families = [family for family, _ in self._groups]
            self._bodies.clear()
            self._generation_seen = self.generation
            changed = True
        return changed

    def families(self, now: float | None = None) -> list[Metric]:
        """Return the merged families, rebuilt where stale (shared: do not modify them)."""
        self.refresh(now)
        return self._families

    def valid_until(self) -> float:
        """Return the earliest instant a part must be rebuilt without new evidence."""
        return min((p.valid_until for p in self.parts), default=math.inf)

    def body(self, accept: str = "", accept_encoding: str = "") -> Body:
        """Return the exposition for these request headers, serialized once per change."""
        _, content_type = choose_encoder(accept)
        gz = gzip_accepted(accept_encoding)
        self.refresh()
        key = (content_type, gz)
        body = self._bodies.get(key)
        if body is None:
            body = self._cached(accept, content_type, gz)
            if key in self._served or len(self._served) < MAX_FORMATS:
                self._bodies[key] = body
                if key not in self._served:
                    self._served.append(key)
        return body

    def filtered(self, names: Iterable[str], accept: str = "", accept_encoding: str = "") -> Body:
        """Return only the samples named ``names`` (``?name[]=``), serialized, not cached."""
        wanted = set(names)
        families = [
            m
            for f in self.families()
            if (m := f._restricted_metric(wanted))  # type: ignore[no-untyped-call]
        ]
        _, content_type = choose_encoder(accept)
        return self._serialize(accept, content_type, gzip_accepted(accept_encoding), families)

    def warm(self) -> None:
        """Serialize again the formats served before (after a poll, so no scrape waits)."""
        self.refresh()
        for content_type, gz in list(self._served):
            if (content_type, gz) not in self._bodies:
                accept = self._accepts.get(content_type, "")
                self._bodies[(content_type, gz)] = self._cached(accept, content_type, gz)

    def _cached(self, accept: str, content_type: str, gz: bool) -> Body:
        """Serialize the whole exposition, reusing each family's bytes while it is unchanged.

        A family's bytes are kept per content type with the part families it was merged
        from (compared by identity): after one source's poll, only its families and the
        health families are serialized again. Both encoders write each family on its own
        (prometheus_client ``generate_latest``: one block per family), OpenMetrics ending
        with one ``# EOF`` line, so the concatenation is what one call would write.
        """
        if content_type not in self._accepts:
            if len(self._accepts) >= MAX_FORMATS:
                return self._serialize(accept, content_type, gz, self._families)
            self._accepts[content_type] = accept
        if gz:
            plain = self._bodies.get((content_type, False)) or self._cached(
                accept, content_type, gz=False
            )
            data = gzip.compress(plain.data, compresslevel=GZIP_LEVEL, mtime=0)
            return Body(data, content_type, gz)
        encoder, _ = choose_encoder(accept)
        old = self._chunks.get(content_type, {})
        chunks: dict[str, tuple[tuple[Metric, ...], bytes]] = {}
        for family, members in self._groups:
            seen = old.get(family.name)
            if seen is None or not _same(seen[0], members):
                data = encoder(_Families([family]))
                seen = (members, data.removesuffix(EOF))
            chunks[family.name] = seen
        self._chunks[content_type] = chunks
        data = b"".join(chunk for _, chunk in chunks.values())
        if content_type.startswith(OPENMETRICS):
            data += EOF
        return Body(data, content_type, gz)

    def _serialize(
        self, accept: str, content_type: str, gz: bool, families: Sequence[Metric]
    ) -> Body:
        encoder, _ = choose_encoder(accept)
        data = encoder(_Families(families))
        if gz:
            data = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
        return Body(data, content_type, gz)
