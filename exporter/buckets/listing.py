"""Streaming aggregation of a bucket listing: per-prefix totals and the restore sample.

A kind's ``list_prefix`` feeds every latest visible object to a :class:`PrefixAggregate`
(and a :class:`ReservoirSampler` when a restore check is due), page by page, so memory is
O(prefixes), never O(objects).
"""

from __future__ import annotations

import random

from exporter.buckets.model import BucketState, PrefixStats, SampleObject

#: What a listing had reached after its last complete page: the prefix aggregate so far,
#: the kind's cursor for the next page and the restore sampler's state (eligible, chosen).
Checkpoint = tuple[int, int, float | None, float | None, str, int, SampleObject | None]


class PrefixAggregate:
    """Running count/size/newest/oldest of one prefix while its listing streams.

    ``cursor`` is where a resumed listing starts (``None``: at the beginning of the prefix):
    the continuation token (S3) or start file name (B2) of the first page not yet counted.
    After each complete page a kind calls :meth:`checkpoint`, which saves the whole state in
    one assignment (``saved``), so the poll loop can read it while the worker thread of an
    abandoned listing is still running.
    """

    __slots__ = ("cursor", "newest", "objects", "oldest", "saved", "size_bytes")

    def __init__(self, saved: Checkpoint | None = None) -> None:
        self.objects = 0
        self.size_bytes = 0
        self.newest: float | None = None
        self.oldest: float | None = None
        self.cursor: str | None = None
        self.saved = saved
        if saved is not None:
            self.objects, self.size_bytes, self.newest, self.oldest, self.cursor = saved[:5]

    def checkpoint(self, cursor: str, sampler: ReservoirSampler | None) -> None:
        """Record that every object before ``cursor`` is counted (call after each page)."""
        self.cursor = cursor
        eligible, chosen = (0, None) if sampler is None else (sampler.eligible, sampler.chosen)
        self.saved = (
            self.objects,
            self.size_bytes,
            self.newest,
            self.oldest,
            cursor,
            eligible,
            chosen,
        )

    def add(self, size: int, timestamp: float) -> None:
        """Count one object (order does not matter: Storj lists in encrypted order)."""
        self.objects += 1
        self.size_bytes += size
        if self.newest is None or timestamp > self.newest:
            self.newest = timestamp
        if self.oldest is None or timestamp < self.oldest:
            self.oldest = timestamp

    def result(self, prefix: str, listed_at: float) -> PrefixStats:
        """Freeze the aggregate."""
        return PrefixStats(
            prefix=prefix,
            objects=self.objects,
            size_bytes=self.size_bytes,
            newest=self.newest,
            oldest=self.oldest,
            listed_at=listed_at,
        )


class ReservoirSampler:
    """Chooses one object uniformly at random from a stream, in O(1) memory.

    Reservoir sampling with a reservoir of one: the n-th eligible object replaces the
    current choice with probability 1/n, so every eligible object ends up chosen with
    probability 1/N without the stream ever being stored.
    """

    __slots__ = ("chosen", "eligible", "max_bytes", "rng")

    def __init__(self, rng: random.Random, max_bytes: int) -> None:
        self.rng = rng
        self.max_bytes = max_bytes
        self.eligible = 0
        self.chosen: SampleObject | None = None

    def wants(self, size: int) -> bool:
        """Tell whether the object of ``size`` bytes should replace the current choice."""
        if size <= 0 or size > self.max_bytes:
            return False  # an empty object proves nothing; a huge one costs egress
        self.eligible += 1
        return self.rng.randrange(self.eligible) == 0

    def take(self, sample: SampleObject) -> None:
        """Record the object that :meth:`wants` accepted."""
        self.chosen = sample


def billed_bytes(state: BucketState) -> int:
    """Bytes of the bucket's listed prefixes, counting nested configured prefixes once."""
    prefixes = [p.prefix for p in state.prefixes]
    total = 0
    for stats in state.prefixes:
        covered = any(o != stats.prefix and stats.prefix.startswith(o) for o in prefixes)
        if not covered:
            total += stats.size_bytes
    return total
