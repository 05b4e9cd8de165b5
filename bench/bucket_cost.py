"""B2 Class B and C calls a day for a 200k-object bucket, from the exporter's own counters.

Run: ``.venv/bin/python bench/bucket_cost.py [--objects 200000] [--days 2] [--rows FILE]``

Each option is a walk of ``tests/test_bucket_cost.py``: a ``kind: b2`` source against b2sdk's
``RawSimulator`` with a generated ``list_file_names`` (no objects stored), polled at its
interval by an injected clock from 00:00 UTC for ``--days`` days, the calls of each UTC day
read from ``backup_source_api_requests_total{class}`` in the exposition. Options:

* ``defaults``: the shipped configuration (bucket ``interval: 6h``, ``list_calls_per_day:
  250``);
* ``defaults, 503 at 75 %``: the page at 75 % of the listing answers 503 on every try;
* ``interval 6h|12h|24h, no budget``: ``list_calls_per_day: 0`` and the bucket's interval;
* ``run evidence only``: no bucket listing at all (a job's evidence from the cloud-sync task or
  Healthchecks instead); 0 calls by construction, shown for the table.

The counts are deterministic (an injected clock); the wall time of each walk varies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_bucket_cost import walk  # noqa: E402

FREE_CLASS_C = 2500


def options(objects: int) -> list[tuple[str, dict[str, Any]]]:
    fault = int(objects * 0.75)
    return [
        ("defaults", {}),
        ("defaults, 503 at 75 %", {"fail_at": fault}),
        ("interval 6h, no budget", {"extra": "list_calls_per_day: 0"}),
        ("interval 12h, no budget", {"extra": "list_calls_per_day: 0\n    interval: 12h"}),
        ("interval 24h, no budget", {"extra": "list_calls_per_day: 0\n    interval: 24h"}),
    ]


async def measure(objects: int, days: int) -> list[dict[str, Any]]:
    out = []
    for name, kw in options(objects):
        extra = kw.get("extra", "")
        # ``interval:`` here is the source's (its poll interval), the shortest bucket
        # interval in effect: the 6h bucket default then waits 12h or 24h.
        started = time.perf_counter()
        result, _ = await walk(total=objects, days=days, extra=extra, fail_at=kw.get("fail_at"))
        out.append(
            {
                "option": name,
                "class_c_per_day": result.per_day,
                "class_b_per_day": result.class_b,
                "max_c": max(result.per_day),
                "mean_c": sum(result.per_day) / len(result.per_day),
                "seconds": time.perf_counter() - started,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--rows", type=Path, help="write the harness rows (bench/run.py) here")
    parser.add_argument("--quick", action="store_true", help="accepted for bench/run.py")
    args = parser.parse_args()
    results = asyncio.run(measure(args.objects, args.days))
    print(
        f"{'option':<26} | {'Class C / UTC day':>20} | {'max':>5} | {'% of free':>9}"
        f" | {'Class B / day':>13}"
    )
    for r in results:
        days = ", ".join(str(c) for c in r["class_c_per_day"])
        pct = 100 * r["max_c"] / FREE_CLASS_C
        b = ", ".join(str(c) for c in r["class_b_per_day"])
        print(f"{r['option']:<26} | {days:>20} | {r['max_c']:>5} | {pct:>8.1f}% | {b:>13}")
    print(f"{'run evidence only':<26} | {'0':>20} | {0:>5} | {0:>8.1f}% | {'0':>13}")
    if args.rows is not None:
        rows = []
        for r in results:
            rows.append(
                {
                    "what": f"B2 Class C calls/day, {args.objects // 1000}k objects, {r['option']}",
                    "ours": r["max_c"],
                    "reference": FREE_CLASS_C,
                    "ref_name": "B2 free tier",
                    "unit": "calls",
                    "target": "<= 250 (10 %)" if r["option"].startswith("defaults") else "",
                }
            )
            if r["option"] != "defaults":
                continue
            rows.append(
                {
                    "what": f"B2 Class B calls/day, {args.objects // 1000}k objects, {r['option']}",
                    "ours": max(r["class_b_per_day"]),
                    "reference": FREE_CLASS_C,
                    "ref_name": "B2 free tier",
                    "unit": "calls",
                    "target": "",
                }
            )
        args.rows.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
