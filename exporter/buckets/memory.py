"""What a bucket source remembers about each bucket, kept in its durable memory.

The last listing's aggregates (what :mod:`exporter.buckets.render` and the evidence need, never
the object list), when it was taken, and the last restore check with its schedule, encoded as
JSON-safe data in :attr:`exporter.sources.base.FetchContext.memory` under ``buckets``::

    {"homelab": {"listed_from": 1769720403.0,
                 "prefixes": [{"prefix": "immich/", "objects": 3, "size_bytes": 1024,
                               "newest": 1769720400.0, "oldest": 1769634000.0,
                               "listed_at": 1769720404.0}],
                 "restore": {"checked_at": 1769720405.0, "success": true, ...} | null,
                 "restore_last_success": 1769720405.0 | null,
                 "restore_due_at": 1770325203.0}}

So a restart neither lists a bucket again before its interval nor repeats its restore check.
Anything that does not decode (an older layout, a hand edit) counts as never listed.

Cost bookkeeping (added later, every key optional): ``list_calls`` (API calls the last
complete listing cost), ``failures``/``retry_at``/``failure`` (the back-off of a failing
listing and its last error) and ``partial`` (how far an interrupted listing got: the finished
prefixes, the checkpoint within the next one and the restore sampler's state), so a retry
resumes at the first page not yet counted, after a restart too::

    "list_calls": 201, "failures": 2, "retry_at": 1769727603.0,
    "failure": {"reason": "http", "message": "HTTP 503 ..."},
    "partial": {"started": 1769720403.0, "calls": 151, "done": [{...PrefixStats...}],
                "saved": [objects, size_bytes, newest, oldest, cursor, eligible, chosen],
                "eligible": 0, "chosen": {"key": "a", "size": 1, "version": ""} | null}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from exporter.buckets.listing import Checkpoint
from exporter.buckets.model import PrefixStats, RestoreResult, SampleObject, Verified

MEMORY_KEY = "buckets"
_VERIFIED: frozenset[str] = frozenset(get_args(Verified))


@dataclass
class BucketMemory:
    """What the source remembers between polls about one bucket."""

    listed_from: float  # poll start of the last listing: when the next one is due
    prefixes: tuple[PrefixStats, ...]
    restore: RestoreResult | None = None
    restore_last_success: float | None = None
    restore_due_at: float = 0.0
    list_calls: int = 0  # API calls of the last complete listing (retries included)
    failures: int = 0  # listings failed in a row
    retry_at: float = 0.0  # the next try of a failing listing (exponential back-off)
    failure: tuple[str, str] | None = None  # (reason, message) of the last failure
    partial: PartialListing | None = None


@dataclass
class PartialListing:
    """How far an interrupted listing got; a retry resumes from here."""

    started: float  # poll start of the interrupted listing
    done: tuple[PrefixStats, ...]  # the prefixes listed completely
    saved: Checkpoint | None  # within the next prefix (None: from its start)
    eligible: int  # restore sampler state at the end of ``done``
    chosen: SampleObject | None
    calls: int  # API calls spent on this listing so far


def _num(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("not an int")


def _req(value: object) -> float:
    num = _num(value)
    if num is None:
        raise ValueError("not a number")
    return num


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def _prefix(raw: Mapping[str, Any]) -> PrefixStats:
    return PrefixStats(
        prefix=_str(raw["prefix"]),
        objects=_int(raw["objects"]),
        size_bytes=_int(raw["size_bytes"]),
        newest=_num(raw.get("newest")),
        oldest=_num(raw.get("oldest")),
        listed_at=_req(raw["listed_at"]),
    )


def _restore(raw: Any) -> RestoreResult | None:
    if not isinstance(raw, dict):
        return None
    verified = raw.get("verified")
    if verified not in _VERIFIED or not isinstance(raw.get("success"), bool):
        raise ValueError("not a restore result")
    return RestoreResult(
        checked_at=_req(raw["checked_at"]),
        success=raw["success"],
        result=_str(raw["result"]),
        verified=verified,
        duration=_req(raw["duration"]),
        bytes=_int(raw["bytes"]),
        key=_str(raw.get("key", "")),
        detail=_str(raw.get("detail", "")),
    )


def _sample(raw: Any) -> SampleObject | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("not a sample")
    return SampleObject(key=_str(raw["key"]), size=_int(raw["size"]), version=_str(raw["version"]))


def _checkpoint(raw: Any) -> Checkpoint | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 7:
        raise ValueError("not a checkpoint")
    objects, size, newest, oldest, cursor, eligible, chosen = raw
    return (
        _int(objects),
        _int(size),
        _num(newest),
        _num(oldest),
        _str(cursor),
        _int(eligible),
        _sample(chosen),
    )


def _partial(raw: Any) -> PartialListing | None:
    if not isinstance(raw, dict):
        return None
    done = raw["done"]
    if not isinstance(done, list) or not all(isinstance(p, dict) for p in done):
        raise ValueError("not a partial listing")
    return PartialListing(
        started=_req(raw["started"]),
        done=tuple(_prefix(p) for p in done),
        saved=_checkpoint(raw.get("saved")),
        eligible=_int(raw.get("eligible", 0)),
        chosen=_sample(raw.get("chosen")),
        calls=_int(raw.get("calls", 0)),
    )


def _failure(raw: Any) -> tuple[str, str] | None:
    if not isinstance(raw, dict):
        return None
    return _str(raw["reason"]), _str(raw.get("message", ""))


def decode(raw: Any) -> BucketMemory | None:
    """Rebuild one bucket's memory from its JSON form; ``None`` when it does not decode."""
    if not isinstance(raw, dict):
        return None
    try:
        prefixes = raw["prefixes"]
        if not isinstance(prefixes, list) or not all(isinstance(p, dict) for p in prefixes):
            return None
        return BucketMemory(
            listed_from=_req(raw["listed_from"]),
            prefixes=tuple(_prefix(p) for p in prefixes),
            restore=_restore(raw.get("restore")),
            restore_last_success=_num(raw.get("restore_last_success")),
            restore_due_at=_num(raw.get("restore_due_at")) or 0.0,
            list_calls=_int(raw.get("list_calls", 0)),
            failures=_int(raw.get("failures", 0)),
            retry_at=_num(raw.get("retry_at")) or 0.0,
            failure=_failure(raw.get("failure")),
            partial=_partial(raw.get("partial")),
        )
    except (KeyError, ValueError):
        return None


def encode(mem: BucketMemory) -> dict[str, Any]:
    """Turn one bucket's memory into JSON-safe data (see the module docstring)."""
    return {
        "listed_from": mem.listed_from,
        "prefixes": [dataclasses.asdict(p) for p in mem.prefixes],
        "restore": None if mem.restore is None else dataclasses.asdict(mem.restore),
        "restore_last_success": mem.restore_last_success,
        "restore_due_at": mem.restore_due_at,
        "list_calls": mem.list_calls,
        "failures": mem.failures,
        "retry_at": mem.retry_at,
        "failure": None
        if mem.failure is None
        else {"reason": mem.failure[0], "message": mem.failure[1]},
        "partial": None if mem.partial is None else _encode_partial(mem.partial),
    }


def _encode_sample(sample: SampleObject | None) -> dict[str, Any] | None:
    return None if sample is None else dataclasses.asdict(sample)


def _encode_partial(p: PartialListing) -> dict[str, Any]:
    saved = None
    if p.saved is not None:
        saved = [*p.saved[:6], _encode_sample(p.saved[6])]
    return {
        "started": p.started,
        "done": [dataclasses.asdict(d) for d in p.done],
        "saved": saved,
        "eligible": p.eligible,
        "chosen": _encode_sample(p.chosen),
        "calls": p.calls,
    }


def buckets(memory: dict[str, Any]) -> dict[str, Any]:
    """Return the ``buckets`` mapping of a source's memory (created when absent or junk)."""
    raw = memory.get(MEMORY_KEY)
    if not isinstance(raw, dict):
        raw = memory[MEMORY_KEY] = {}
    return raw
