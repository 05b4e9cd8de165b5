"""Peak memory of a bucket listing: the exporter's streaming aggregation vs list-then-aggregate.

Run: ``.venv/bin/python bench/bucket_memory.py`` (under 10 s on 2 slow cores).

Each measurement runs in a fresh subprocess. It sets up b2sdk against a synthetic
``RawSimulator`` whose ``list_file_names`` generates pages on the fly (so the fake service
itself holds no objects), lists 1,000 objects once to warm imports and caches, records
``ru_maxrss`` as the baseline, then lists N objects:

* ``streaming``: the real ``B2Source.fetch()`` of ``exporter.sources.b2.source`` (pages of
  1000 from b2sdk's ``session.list_file_names`` → ``PrefixAggregate``, with restore-check
  reservoir sampling on every object), exactly the production code path;
* ``naive``: what peer exporters do, ``list(bucket.ls(...))`` and then aggregate.

Peak RSS growth over the baseline is printed side by side. The streaming growth should
not depend on N; the naive one grows linearly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from b2sdk.v3 import B2Api, B2HttpApiConfig, InMemoryAccountInfo, RawSimulator

from exporter.buckets.engine import BucketConfig, RestoreCheckConfig
from exporter.buckets.listing import PrefixAggregate
from exporter.core.clock import SystemClock
from exporter.core.config import Secret
from exporter.sources.b2.source import B2Config, B2Source
from exporter.sources.base import FetchContext

SIZES = (10_000, 200_000)
APPROACHES = ("streaming", "naive")
BASE_MS = 1_769_720_403_000


class SyntheticSim(RawSimulator):  # type: ignore[misc]
    """Generates ``total`` file names page by page; stores none of them."""

    total = 0

    def list_file_names(
        self,
        api_url: str,
        account_auth_token: str,
        bucket_id: str,
        start_file_name: str | None = None,
        max_file_count: int | None = None,
        prefix: str | None = None,
    ) -> dict[str, Any]:
        prefix = prefix or ""
        count = max_file_count or 100
        start = 0
        if start_file_name and start_file_name.startswith(prefix + "obj-"):
            start = int(start_file_name[len(prefix) + 4 :].strip())
        end = min(start + count, self.total)
        files = [
            {
                "accountId": "account-0",
                "bucketId": bucket_id,
                "fileId": f"4_z{i:024d}",
                "fileName": f"{prefix}obj-{i:09d}",
                "contentLength": 1000 + i % 4096,
                "contentType": "application/octet-stream",
                "contentSha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
                "fileInfo": {"src_last_modified_millis": str(BASE_MS + i)},
                "action": "upload",
                "uploadTimestamp": BASE_MS + i * 1000,
                "replicationStatus": None,
                "serverSideEncryption": {"mode": "none"},
                "fileRetention": {"isClientAuthorizedToRead": True, "value": {"mode": None}},
                "legalHold": {"isClientAuthorizedToRead": True, "value": None},
            }
            for i in range(start, end)
        ]
        nxt = f"{prefix}obj-{end:09d}" if end < self.total else None
        return {"files": files, "nextFileName": nxt}


def child(objects: int, approach: str) -> dict[str, Any]:
    seed = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=SyntheticSim))
    sim = seed.session.raw_api
    key_id, key = sim.create_account()
    seed.authorize_account(key_id, key)
    seed.create_bucket("homelab", "allPrivate")

    def factory() -> B2Api:
        api = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=SyntheticSim))
        api.session.raw_api = sim
        return api

    config = B2Config(
        name="bench",
        kind="b2",
        interval=3600,
        timeout=600,
        key_id=key_id,
        application_key=Secret(key),
        buckets=(
            BucketConfig(
                name="homelab",
                prefixes=("pve/",),
                interval=1,
                # Reservoir sampling runs on every object; the synthetic objects have no
                # bytes, so the download itself reports "missing" (logged, silenced below).
                restore_check=RestoreCheckConfig(),
            ),
        ),
    )
    executor = ThreadPoolExecutor(max_workers=1)
    logging.disable(logging.WARNING)

    def streaming() -> int:
        source = B2Source(config, api_factory=factory, rng=random.Random(1))
        ctx = FetchContext(clock=SystemClock(), executor=executor)
        snap = asyncio.run(source.fetch(ctx))
        return snap.buckets[0].prefixes[0].objects

    def naive() -> int:
        api = factory()
        api.authorize_account(key_id, key)
        bucket = api.get_bucket_by_name("homelab")
        versions = [fv for fv, _ in bucket.ls("pve/", recursive=True, fetch_count=1000)]
        agg = PrefixAggregate()
        for fv in versions:
            if fv.action == "upload":
                agg.add(fv.size, fv.upload_timestamp / 1000)
        return agg.objects

    run = streaming if approach == "streaming" else naive
    SyntheticSim.total = 1000
    run()  # warm-up: imports, caches, thread pool, event loop machinery
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    SyntheticSim.total = objects
    started = time.perf_counter()
    listed = run()
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    executor.shutdown()
    assert listed == objects, (listed, objects)
    return {
        "objects": objects,
        "approach": approach,
        "baseline_kib": baseline,
        "growth_kib": peak - baseline,
        "seconds": round(elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("OBJECTS", "APPROACH"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1])))
        return
    results: dict[tuple[int, str], dict[str, Any]] = {}
    for objects in SIZES:
        for approach in APPROACHES:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(objects), approach],
                capture_output=True,
                text=True,
                check=True,
            )
            results[objects, approach] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"{'objects':>8} | {'streaming ΔRSS':>15} | {'naive ΔRSS':>12} | {'naive/streaming':>15}"
        f" | {'time s (stream/naive)':>21}"
    )
    print("-" * 84)
    for objects in SIZES:
        s, n = results[objects, "streaming"], results[objects, "naive"]
        ratio = n["growth_kib"] / max(s["growth_kib"], 1)
        s_mib, n_mib = s["growth_kib"] / 1024, n["growth_kib"] / 1024
        print(
            f"{objects:>8} | {s_mib:>11.1f} MiB | {n_mib:>8.1f} MiB"
            f" | {ratio:>14.0f}x | {s['seconds']:>10} / {n['seconds']:<8}"
        )
    small, large = (results[o, "streaming"]["growth_kib"] for o in SIZES)
    nsmall, nlarge = (results[o, "naive"]["growth_kib"] for o in SIZES)
    baseline = results[SIZES[0], "streaming"]["baseline_kib"]
    print()
    print(
        f"{SIZES[1] // SIZES[0]}x the objects: streaming grows "
        f"{(large - small) / 1024:+.1f} MiB, naive grows {(nlarge - nsmall) / 1024:+.1f} MiB "
        f"(baseline RSS after warm-up ≈ {baseline / 1024:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
