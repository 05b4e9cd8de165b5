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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from exporter.buckets.model import PrefixStats, RestoreResult, Verified

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
    }


def buckets(memory: dict[str, Any]) -> dict[str, Any]:
    """Return the ``buckets`` mapping of a source's memory (created when absent or junk)."""
    raw = memory.get(MEMORY_KEY)
    if not isinstance(raw, dict):
        raw = memory[MEMORY_KEY] = {}
    return raw
