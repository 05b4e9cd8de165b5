"""S3 listing cost: the exporter's ``kind: s3`` listing vs ``rclone size`` on the same bucket.

Run: ``.venv/bin/python bench/s3_listing.py [--objects 10000 100000] [--runs 3] [--json FILE]``

A moto S3 server runs in a child process of its own (so its CPU is not the client's), seeded
straight into moto's backend with N objects under 20 prefixes (``p00/`` .. ``p19/``). Each
client then lists the whole bucket, in a fresh process, measured by ``os.wait4``: wall time,
user+system CPU and peak RSS of the client process alone.

* ``exporter``: ``S3Source.fetch()`` of ``exporter.sources.s3.source`` with the 20 prefixes,
  exactly the production path (listing CPU without the import is reported too);
* ``rclone``: ``rclone size`` (Debian package ``rclone``), configured by environment
  variables only (``RCLONE_CONFIG_BENCH_TYPE=s3`` ...), against the same endpoint.

``--profile`` runs the exporter listing once under cProfile in-process and prints the top.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

from exporter.buckets.engine import BlockingCall
from exporter.buckets.listing import PrefixAggregate
from exporter.core.clock import SystemClock
from exporter.core.config import parse_config
from exporter.sources.base import FetchContext
from exporter.sources.s3.source import S3Source

PREFIXES = 20
BUCKET = "bench"
SIZES = (10_000, 100_000)


def serve(objects: int) -> None:
    """Child: a seeded moto server on 127.0.0.1; prints its port, stops at EOF on stdin."""

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    # moto scans, filters and sorts every key of the bucket for every page it serves (O(N)
    # a page, minutes at 100k keys). The bucket does not change once seeded, so keep that
    # scan per (prefix, delimiter): pages are then cut and rendered by moto as usual.
    scans: dict[tuple[str | None, str | None], Any] = {}
    full_scan = type(backend).list_objects

    def list_objects(
        self: Any, bucket: Any, prefix: Any, delimiter: Any, marker: Any, max_keys: Any
    ) -> Any:
        if marker is not None or max_keys is not None:
            return full_scan(self, bucket, prefix, delimiter, marker, max_keys)
        if (prefix, delimiter) not in scans:
            scans[prefix, delimiter] = full_scan(self, bucket, prefix, delimiter, None, None)
        keys, folders, truncated, token = scans[prefix, delimiter]
        return list(keys), list(folders), truncated, token

    type(backend).list_objects = list_objects  # type: ignore[method-assign]
    backend.create_bucket(BUCKET, "us-east-1")
    when = datetime(2026, 1, 29, 21, 0, 3)
    for i in range(objects):
        key = backend.put_object(BUCKET, f"p{i % PREFIXES:02d}/obj-{i:07d}", b"x" * (i % 97))
        key.last_modified = when
    # 100k keys (each with its own buffers and locks) would make every full garbage
    # collection walk them while a request is served: they live until the end anyway.
    gc.collect()
    gc.freeze()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    sys.stdin.read()
    server.stop()


def exporter_config(port: int) -> Any:
    prefixes = ", ".join(f"p{p:02d}/" for p in range(PREFIXES))
    text = f"""
sources:
  bench:
    kind: s3
    endpoint: http://127.0.0.1:{port}
    access_key_id: bench
    secret_access_key: bench-secret
    timeout: 15m
    target_timeout: 14m
    buckets:
      {BUCKET}: {{prefixes: [{prefixes}]}}
"""
    return parse_config(text).sources["bench"]


def list_once(port: int) -> dict[str, Any]:
    """Child: one exporter listing; prints its totals and the listing's own CPU."""
    config = exporter_config(port)
    executor = ThreadPoolExecutor(max_workers=1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    source = S3Source(config)
    ctx = FetchContext(clock=SystemClock(), executor=executor)
    snap = asyncio.run(source.fetch(ctx))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    executor.shutdown()
    if not all(t.up for t in snap.targets):
        raise SystemExit(f"listing failed: {snap.targets}")
    prefixes = snap.buckets[0].prefixes
    return {
        "objects": sum(p.objects for p in prefixes),
        "bytes": sum(p.size_bytes for p in prefixes),
        "list_cpu": cpu,
        "list_wall": wall,
    }


def rclone_env(port: int) -> dict[str, str]:
    # Only rclone's own settings: an inherited AWS_CA_BUNDLE makes rclone 1.60 refuse its
    # plain-HTTP transport, and AWS_* credentials would override the remote's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env.update(
        RCLONE_CONFIG_BENCH_TYPE="s3",
        RCLONE_CONFIG_BENCH_PROVIDER="Other",
        RCLONE_CONFIG_BENCH_ENDPOINT=f"http://127.0.0.1:{port}",
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="bench",
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="bench-secret",
        RCLONE_CONFIG_BENCH_REGION="us-east-1",
        RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true",
        RCLONE_CONFIG="/dev/null",
    )
    return env


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """Run ``cmd``; wall, CPU (user+sys) and peak RSS of that process alone (``wait4``)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    stats = {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
    }
    return stats, out.decode()


@contextlib.contextmanager
def moto_server(objects: int) -> Iterator[int]:
    """Run the seeded moto server child; yield its port."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(objects)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stdin is not None
    try:
        yield int(server.stdout.readline())
    finally:
        server.stdin.close()
        server.wait(30)


def bench(objects: int, runs: int) -> dict[str, Any]:
    rclone = shutil.which("rclone")
    rows: dict[str, list[dict[str, Any]]] = {"exporter": [], "rclone": []}
    with moto_server(objects) as port:
        for _ in range(runs):
            stats, out = measure([sys.executable, __file__, "--list", str(port)])
            got = json.loads(out.strip().splitlines()[-1])
            if got["objects"] != objects:
                raise SystemExit(f"exporter listed {got['objects']} of {objects} objects")
            rows["exporter"].append({**stats, **got})
            if rclone is not None:
                stats, out = measure(
                    [rclone, "size", "--json", f"bench:{BUCKET}"], rclone_env(port)
                )
                count = json.loads(out)["count"]
                if count != objects:
                    raise SystemExit(f"rclone counted {count} of {objects} objects")
                rows["rclone"].append(stats)
    result: dict[str, Any] = {"objects": objects, "runs": runs}
    for client, samples in rows.items():
        if samples:
            result[client] = {
                k: statistics.median(s[k] for s in samples)
                for k in samples[0]
                if isinstance(samples[0][k], float)
            }
    return result


def profile(objects: int) -> None:
    with moto_server(objects) as port:
        # The listing itself runs in the source's worker thread, which cProfile does not
        # see: call the kind's blocking methods here instead, as that thread would.
        config = exporter_config(port)
        source = S3Source(config)
        loop = asyncio.new_event_loop()
        call = BlockingCall(FetchContext(clock=SystemClock()), loop)
        source.prepare(call)
        prof = cProfile.Profile()
        total = 0
        cpu0 = time.process_time()
        with prof:
            for prefix in config.buckets[0].prefixes:
                agg = PrefixAggregate()
                source.list_prefix(call, config.buckets[0], prefix, agg, None)
                total += agg.objects
        got = {"objects": total, "list_cpu": time.process_time() - cpu0, "calls": call.spent}
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        print(json.dumps(got))
        print(buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int)
    parser.add_argument("--list", type=int, metavar="PORT")
    parser.add_argument("--profile", type=int, metavar="OBJECTS")
    parser.add_argument("--objects", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the medians here")
    parser.add_argument("--rows", type=Path, help="write the harness rows (bench/run.py) here")
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    if args.list is not None:
        with contextlib.redirect_stdout(sys.stderr):
            got = list_once(args.list)
        print(json.dumps(got))
        return
    if args.profile is not None:
        profile(args.profile)
        return
    results = [bench(n, args.runs) for n in args.objects]
    print(
        f"{'objects':>8} | {'client':>8} | {'wall s':>7} | {'CPU s':>6} | {'RSS MiB':>7}"
        f" | {'list wall s':>11} | {'list CPU s':>10} | CPU vs rclone | wall vs rclone"
    )
    for r in results:
        ref = r.get("rclone")
        for client in ("exporter", "rclone"):
            row = r.get(client)
            if row is None:
                continue
            ratio = f"{row['cpu'] / ref['cpu']:.2f}x" if ref else "n/a"
            wratio = f"{row['wall'] / ref['wall']:.2f}x" if ref else "n/a"
            print(
                f"{r['objects']:>8} | {client:>8} | {row['wall']:>7.2f} | {row['cpu']:>6.2f}"
                f" | {row['rss_mib']:>7.1f} | {row.get('list_wall', float('nan')):>11.2f}"
                f" | {row.get('list_cpu', float('nan')):>10.2f}"
                f" | {ratio:>13} | {wratio:>14}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    if args.rows is not None:
        args.rows.write_text(json.dumps(harness_rows(results), indent=1))


def harness_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wall, CPU and peak RSS of the exporter's listing next to ``rclone size``'s."""
    rows = []
    # (our figure, rclone's): whole processes, and our listing alone (without the start-up
    # and imports a long-running exporter pays once) against all of rclone's process.
    pairs = {
        "wall": ("wall", "wall"),
        "list_wall": ("list_wall", "wall"),
        "cpu": ("cpu", "cpu"),
        "list_cpu": ("list_cpu", "cpu"),
        "rss_mib": ("rss_mib", "rss_mib"),
    }
    targets = {"wall": "", "list_wall": "<= 1.0x", "cpu": "", "list_cpu": "<= 1.5x"}
    names = {
        "wall": "wall, whole process",
        "list_wall": "wall, listing only",
        "cpu": "client CPU, whole process",
        "list_cpu": "client CPU, listing only",
        "rss_mib": "peak RSS",
    }
    units = {"rss_mib": "MiB"}
    for r in results:
        ref = r.get("rclone")
        for key, (ours, theirs) in pairs.items():
            rows.append(
                {
                    "what": f"S3 listing {r['objects'] // 1000}k objects / {PREFIXES} prefixes,"
                    f" {names[key]}",
                    "ours": r["exporter"][ours],
                    "reference": None if ref is None else ref[theirs],
                    "ref_name": "rclone size",
                    "unit": units.get(key, "s"),
                    "target": targets.get(key, ""),
                }
            )
    return rows


if __name__ == "__main__":
    main()
