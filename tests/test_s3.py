"""``kind: s3`` against moto in server mode on 127.0.0.1, through a fault-injecting proxy."""

from __future__ import annotations

import asyncio
import http.client
import logging
import random
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.utils import parse_timestamp
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.buckets.restore import multipart_etag
from exporter.core.clock import FakeClock
from exporter.core.config import parse_config
from exporter.core.poller import Poller
from exporter.sources.base import FetchContext
from exporter.sources.s3.config import default_price
from exporter.sources.s3.source import S3Source, fast_timestamp, make_client, s3_error

BASE = datetime(2026, 1, 29, 21, 0, 3, tzinfo=UTC)
NOW = (BASE + timedelta(days=40)).timestamp()
MIB = 2**20
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ------------------------------------------------------------------------------ moto + proxy


@pytest.fixture(scope="session")
def moto_port() -> Iterator[int]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()[1]
    finally:
        server.stop()


def seed_client(port: int) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="seed",
        aws_secret_access_key="seed",
        # No x-amz-checksum-* stored: the ETag is the only hash, as on Storj.
        config=Config(
            s3={"addressing_style": "path"}, request_checksum_calculation="when_required"
        ),
    )


def backend_bucket(name: str) -> Any:
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[name]


@dataclass
class Seeded:
    """What the test put into a bucket: the latest visible version of every key."""

    client: Any
    bucket: str
    latest: dict[str, tuple[int, float]] = field(default_factory=dict)  # key -> (size, ts)

    def put(self, key: str, data: bytes, when: datetime) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        self.stamp(key, when)
        self.latest[key] = (len(data), when.timestamp())

    def stamp(self, key: str, when: datetime) -> None:
        # moto stamps uploads with the wall clock; give them realistic backup times
        # (whole seconds: S3 listings carry no sub-second part).
        backend_bucket(self.bucket).keys[key].last_modified = when.replace(tzinfo=None)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)
        del self.latest[key]

    def multipart(self, key: str, data: bytes, part_size: int, when: datetime) -> None:
        up = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        parts = []
        for n, i in enumerate(range(0, len(data), part_size), start=1):
            r = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                PartNumber=n,
                UploadId=up["UploadId"],
                Body=data[i : i + part_size],
            )
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
        )
        self.stamp(key, when)
        self.latest[key] = (len(data), when.timestamp())

    def expected(self, prefix: str) -> tuple[int, int, float, float]:
        rows = [v for k, v in self.latest.items() if k.startswith(prefix)]
        return (
            len(rows),
            sum(s for s, _ in rows),
            max(t for _, t in rows),
            min(t for _, t in rows),
        )


@pytest.fixture(scope="session")
def offsite(moto_port: int) -> Seeded:
    """A versioned bucket: versions, delete markers, multipart uploads, a 2,100-key prefix."""
    c = seed_client(moto_port)
    c.create_bucket(Bucket="offsite")
    c.put_bucket_versioning(Bucket="offsite", VersioningConfiguration={"Status": "Enabled"})
    s = Seeded(c, "offsite")
    for i in range(10):
        s.put(f"immich/photo-{i:03d}.jpg", bytes([i]) * (500 + i), BASE + timedelta(minutes=i))
    s.put("immich/db.sql", b"v1" * 10, BASE + timedelta(hours=1))
    s.put("immich/db.sql", b"v2" * 50, BASE + timedelta(hours=2))  # a second version
    s.put("immich/deleted.bin", b"d" * 99, BASE + timedelta(hours=3))  # newest, then...
    s.delete("immich/deleted.bin")  # ...hidden by a delete marker
    s.multipart("immich/mp.bin", b"a" * 5 * MIB + b"b" * 100, 5 * MIB, BASE - timedelta(days=2))
    s.put("docs/readme.txt", b"hello", BASE + timedelta(days=1))
    s.put("other/not-watched", b"x", BASE + timedelta(days=90))
    # restic/: several list pages, seeded in parallel (moto takes ~165 puts/s).
    keys = [f"restic/data/{i:05d}" for i in range(2100)]

    def put(i: int) -> None:
        c.put_object(Bucket="offsite", Key=keys[i], Body=b"r" * (i % 11))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(len(keys))))
    for i, key in enumerate(keys):
        when = BASE + timedelta(seconds=37 * i)
        s.stamp(key, when)
        s.latest[key] = (i % 11, when.timestamp())
    return s


class FaultProxy:
    """A reverse proxy in front of moto that counts requests and injects 500s or hangs."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.counts: Counter[str] = Counter()
        self.fail_lists = False
        self.fail_buckets: set[str] = set()  # 500 on the listings of these buckets only
        self.hang: threading.Event | None = None
        self.hung = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                kind = "list" if "list-type=2" in self.path else self.command.lower()
                proxy.counts[kind] += 1
                if kind == "list" and proxy.hang is not None:
                    proxy.hung.set()
                    proxy.hang.wait(30)
                    self.close_connection = True
                    return  # the client gave up long ago
                bucket = self.path.split("?", 1)[0].strip("/").split("/", 1)[0]
                if kind == "list" and (proxy.fail_lists or bucket in proxy.fail_buckets):
                    msg = (
                        b"<Error><Code>InternalError</Code>"
                        b"<Message>injected failure</Message></Error>"
                    )
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=30)
                conn.request(self.command, self.path, body=data, headers=dict(self.headers))
                resp = conn.getresponse()
                payload = resp.read()
                self.send_response(resp.status)
                length_header = resp.getheader("Content-Length")
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                if self.command == "HEAD":  # no body, but the length of the object
                    self.send_header("Content-Length", length_header or "0")
                else:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hangs up early (a too_large check) is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def proxy(moto_port: int) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_port)
    p.thread.start()
    try:
        yield p
    finally:
        if p.hang is not None:
            p.hang.set()
        p.server.shutdown()
        p.server.server_close()


# ------------------------------------------------------------------------------ helpers


def config_yaml(
    endpoint: str,
    *,
    bucket: str = "offsite",
    prefixes: str = "[immich/, restic/, docs/]",
    restore: str = "",
    extra: str = "",
) -> str:
    return f"""
timezone: UTC
sources:
  storj:
    kind: s3
    endpoint: {endpoint}
    access_key_id: exporter
    secret_access_key: "s3cr3t-value"
    {extra}
    buckets:
      {bucket}:
        prefixes: {prefixes}
        {restore}
"""


def make_source(text: str, *, seed: int = 3) -> S3Source:
    return S3Source(parse_config(text).sources["storj"], rng=random.Random(seed))


def exposition(metrics: list[Metric]) -> str:
    class _C:
        def collect(self) -> list[Metric]:
            return metrics

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_C())  # type: ignore[arg-type]
    return generate_latest(reg).decode()


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def lbl(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset(kw.items())


# ------------------------------------------------------------------------------ listing


async def test_listing_aggregates_current_versions_page_by_page(
    offsite: Seeded, proxy: FaultProxy
) -> None:
    source = make_source(config_yaml(proxy.url))
    poller = Poller(source, clock=FakeClock(NOW))
    state = await poller.poll_once()
    assert state.up, state.error
    got = samples(exposition(list(source.render(state.snapshot))))
    for prefix in ("immich/", "restic/", "docs/"):
        count, size, newest, oldest = offsite.expected(prefix)
        where = lbl(source="storj", bucket="offsite", prefix=prefix)
        assert got["backup_bucket_objects", where] == count
        assert got["backup_bucket_size_bytes", where] == size
        assert got["backup_bucket_newest_object_timestamp_seconds", where] == newest
        assert got["backup_bucket_oldest_object_timestamp_seconds", where] == oldest
        assert got["backup_bucket_last_listing_timestamp_seconds", where] == NOW
    assert offsite.expected("immich/")[0] == 12, "db.sql once, deleted.bin hidden"
    assert proxy.counts["list"] >= 3 + 1 + 1, "restic/ alone needs three pages"
    assert poller.requests["list"] == proxy.counts["list"]
    assert poller.requests["get"] == 0
    # Not a Storj endpoint and no price configured: no cost series.
    assert not [k for k in got if k[0].startswith("backup_bucket_estimated_monthly_cost")]
    ev = source.evidence(
        state.snapshot, {"source": "storj", "bucket": "offsite", "prefix": "docs/"}
    )
    assert ev is not None and ev.last_success == offsite.expected("docs/")[2]
    assert not ev.tracks_start


def test_fast_timestamps_list_exactly_what_botocores_parser_lists(
    offsite: Seeded, moto_port: int
) -> None:
    # The exporter's client parses LastModified with datetime.fromisoformat instead of
    # botocore's dateutil parser (3/4 of the listing CPU): every listed entry, and the
    # timestamps of a GET's headers, must be the same as with a stock boto3 client.
    config = parse_config(config_yaml(f"http://127.0.0.1:{moto_port}")).sources["storj"]
    lean, stock = make_client(config), seed_client(moto_port)

    def listing(client: Any) -> list[tuple[str, int, float, datetime]]:
        out = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="offsite"):
            for obj in page.get("Contents", []):
                key, size, modified = obj["Key"], obj["Size"], obj["LastModified"]
                out.append((key, size, modified.timestamp(), modified))
        return out

    ours, theirs = listing(lean), listing(stock)
    assert len(ours) == sum(1 for _ in offsite.latest) > 2100
    assert ours == theirs
    assert all(entry[3].utcoffset() == timedelta(0) for entry in ours)
    # Aggregated the exporter's way, both give the seeded truth.
    for prefix in ("immich/", "restic/", "docs/"):
        rows = [(size, ts) for key, size, ts, _ in ours if key.startswith(prefix)]
        assert (len(rows), sum(s for s, _ in rows)) == offsite.expected(prefix)[:2]
        assert max(t for _, t in rows) == offsite.expected(prefix)[2]
    # RFC 822 headers (Last-Modified of a GET) go through botocore's own parser.
    got = lean.get_object(Bucket="offsite", Key="docs/readme.txt")
    assert (
        got["LastModified"]
        == stock.get_object(Bucket="offsite", Key="docs/readme.txt")["LastModified"]
    )
    assert got["LastModified"].timestamp() == offsite.latest["docs/readme.txt"][1]
    assert fast_timestamp("2026-01-29T21:00:03.000Z") == parse_timestamp("2026-01-29T21:00:03.000Z")
    assert fast_timestamp("1769720403") == parse_timestamp("1769720403")


async def test_random_restore_check_verifies_md5(offsite: Seeded, proxy: FaultProxy) -> None:
    text = config_yaml(proxy.url, prefixes="[immich/]", restore="restore_check: {max_bytes: 4KiB}")
    poller = Poller(make_source(text, seed=11), clock=FakeClock(NOW))
    state = await poller.poll_once()
    r = state.snapshot.buckets[0].restore
    assert r.success, r
    assert r.key in offsite.latest and r.key.startswith("immich/")
    assert r.verified == "md5"
    assert r.bytes == offsite.latest[r.key][0] <= 4096
    assert proxy.counts["get"] == 1 == poller.requests["get"]


@pytest.fixture(scope="session")
def scratch(moto_port: int) -> Seeded:
    c = seed_client(moto_port)
    c.create_bucket(Bucket="scratch")
    s = Seeded(c, "scratch")
    s.put("canary/good.txt", b"restore me" * 100, BASE)
    s.put("canary/bad.txt", b"will rot" * 100, BASE)
    # Bit rot: the stored bytes change, the recorded ETag stays (moto keeps it cached).
    stored = backend_bucket("scratch").keys["canary/bad.txt"]
    stored.value = bytes(b ^ 0x20 for b in stored.value)
    s.multipart("canary/mp.bin", bytes(range(256)) * (24 * 1024), 5 * MIB, BASE)
    # An uncommon part size: only the store's HeadObject(PartNumber=1) reveals it.
    s.multipart("canary/odd-mp.bin", b"o" * 6_000_107, 6_000_007, BASE)
    s.multipart("canary/bad-mp.bin", b"m" * (5 * MIB + 1), 5 * MIB, BASE)
    stored = backend_bucket("scratch").keys["canary/bad-mp.bin"]
    stored.value = b"M" + stored.value[1:]
    return s


@pytest.mark.parametrize(
    ("canary", "max_bytes", "result", "verified"),
    [
        ("canary/good.txt", "16MiB", "ok", "md5"),
        ("canary/bad.txt", "16MiB", "hash_mismatch", "md5"),
        ("canary/mp.bin", "16MiB", "ok", "multipart_etag"),
        ("canary/odd-mp.bin", "16MiB", "ok", "multipart_etag"),
        ("canary/bad-mp.bin", "16MiB", "hash_mismatch", "multipart_etag"),
        ("canary/good.txt", "100", "too_large", "none"),
        ("canary/nope.txt", "16MiB", "missing", "none"),
    ],
)
async def test_canary_restore_checks(
    scratch: Seeded,
    proxy: FaultProxy,
    canary: str,
    max_bytes: str,
    result: str,
    verified: str,
) -> None:
    restore = f"restore_check: {{canary: {canary}, max_bytes: {max_bytes}}}"
    text = config_yaml(proxy.url, bucket="scratch", prefixes="[canary/]", restore=restore)
    state = await Poller(make_source(text), clock=FakeClock(NOW)).poll_once()
    assert state.up, "a failed check never fails the listing"
    assert state.snapshot.buckets[0].prefixes[0].objects == scratch.expected("canary/")[0]
    r = state.snapshot.buckets[0].restore
    assert (r.result, r.verified, r.success) == (result, verified, result == "ok")
    if result == "ok":
        assert r.bytes == scratch.latest[canary][0]


def test_multipart_etag_matches_what_moto_computed(scratch: Seeded) -> None:
    head = scratch.client.head_object(Bucket="scratch", Key="canary/mp.bin")
    data = bytes(range(256)) * (24 * 1024)
    assert head["ETag"].strip('"') == multipart_etag(data, 5 * MIB)


# ------------------------------------------------------------------------------ failures


async def test_listing_interrupted_by_500s(offsite: Seeded, proxy: FaultProxy) -> None:
    clock = FakeClock(NOW)
    text = config_yaml(proxy.url, prefixes="[docs/, immich/]", extra="retries: 2")
    source = make_source(text)
    poller = Poller(source, clock=clock)
    good = await poller.poll_once()
    assert good.up, good.error
    clock.advance(6 * 3600)
    proxy.counts.clear()
    proxy.fail_lists = True
    state = await poller.poll_once()
    # The endpoint answers: a failing bucket is a target down, its last listing kept.
    assert state.up
    (target,) = state.snapshot.targets
    assert (target.target, target.up, target.reason) == ("bucket/offsite", False, "http")
    assert "InternalError" in target.message
    assert proxy.counts["list"] == 3, "one attempt plus two retries"
    assert poller.requests["list"] >= 3
    assert state.snapshot.buckets == good.snapshot.buckets
    proxy.fail_lists = False
    clock.advance(3600)  # a failed listing is tried again at the next wake-up
    state = await poller.poll_once()
    assert state.up and state.snapshot.targets[0].up


async def test_listing_hang_times_out_with_bounded_attempts(
    offsite: Seeded, proxy: FaultProxy
) -> None:
    clock = FakeClock(NOW)
    text = config_yaml(
        proxy.url, prefixes="[docs/]", extra="retries: 1\n    timeout: 3s\n    interval: 1h"
    )
    poller = Poller(make_source(text), clock=clock)
    good = await poller.poll_once()
    assert good.up
    clock.advance(6 * 3600)
    proxy.hang = threading.Event()
    state = await poller.poll_once()
    assert state.up
    assert (state.snapshot.targets[0].up, state.snapshot.targets[0].reason) == (False, "timeout")
    assert state.snapshot.buckets == good.snapshot.buckets
    assert proxy.hung.is_set()
    hang, proxy.hang = proxy.hang, None
    hang.set()
    clock.advance(3600)  # a failed listing is tried again at the next wake-up
    assert (await poller.poll_once()).up
    # What an abandoned hung listing costs: run a fetch on a worker of our own, keep the
    # backend hung, and wait for the worker to finish: botocore stops after
    # retries + 1 attempts (each ends at read_timeout = the bucket's target_timeout).
    proxy.counts.clear()
    proxy.hang = threading.Event()
    executor = ThreadPoolExecutor(max_workers=1)
    ctx = FetchContext(clock=clock, executor=executor)
    snapshot = await make_source(text).fetch(ctx)
    assert (snapshot.targets[0].up, snapshot.targets[0].reason) == (False, "timeout")
    await asyncio.to_thread(executor.shutdown, wait=True)
    assert proxy.counts["list"] == 2, "retries: 1 means two attempts, no more"


async def test_unreachable_endpoint_is_a_connection_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    text = config_yaml(f"http://127.0.0.1:{port}", extra="retries: 0")
    state = await Poller(make_source(text), clock=FakeClock(NOW)).poll_once()
    assert (state.up, state.reason) == (False, "connection")


def test_error_mapping_and_secret_scrubbing() -> None:
    def client_error(code: str, status: int, message: str = "m") -> ClientError:
        return ClientError(
            {
                "Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "ListObjectsV2",
        )

    assert s3_error(client_error("InvalidAccessKeyId", 403)).reason == "auth"
    assert s3_error(client_error("AccessDenied", 403)).reason == "permission"
    assert s3_error(client_error("NoSuchBucket", 404)).reason == "config"
    assert s3_error(client_error("SlowDown", 503)).reason == "http"
    err = s3_error(client_error("X", 500, "echo s3cr3t-value"), secret="s3cr3t-value")
    assert "s3cr3t-value" not in err.message
    assert s3_error(ValueError()) is None


# ------------------------------------------------------------------------------ config, lint


def test_default_prices_by_endpoint() -> None:
    assert default_price("https://gateway.storjshare.io") == 4.0
    assert default_price("https://s3.eu-central-003.backblazeb2.com") == 6.0
    assert default_price("https://minio.lan:9000") == 0.0
    cfg = parse_config(config_yaml("https://gateway.storjshare.io")).sources["storj"]
    assert cfg.buckets[0].price_per_tb_month == 4.0
    assert (cfg.region, cfg.retries) == ("us-east-1", 2)
    assert "s3cr3t" not in repr(cfg)


async def test_cost_and_promtool(offsite: Seeded, proxy: FaultProxy) -> None:
    text = config_yaml(
        proxy.url,
        prefixes="['', immich/]",
        restore="price_per_tb_month: 4.0\n        restore_check: {}",
    )
    source = make_source(text)
    state = await Poller(source, clock=FakeClock(NOW)).poll_once()
    assert state.up
    out = exposition(list(source.render(state.snapshot)))
    got = samples(out)
    # immich/ lies inside "": its bytes are billed once.
    total = offsite.expected("")[1]
    cost = got[
        "backup_bucket_estimated_monthly_cost_dollars", lbl(source="storj", bucket="offsite")
    ]
    assert cost == pytest.approx(total / 1e12 * 4.0)
    proc = subprocess.run(
        ["/usr/bin/promtool", "check", "metrics"],
        input=out,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
