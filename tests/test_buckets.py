"""The shared bucket model: aggregation, sampling, verification, scheduling, config, render."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.buckets.engine import (
    BlockingCall,
    BucketConfig,
    BucketSource,
    BucketSourceConfig,
    RestoreCheckConfig,
    bucket_evidence,
)
from exporter.buckets.listing import PrefixAggregate, ReservoirSampler, billed_bytes
from exporter.buckets.model import (
    BucketsSnapshot,
    BucketState,
    Download,
    PrefixStats,
    SampleObject,
)
from exporter.buckets.render import render_buckets
from exporter.buckets.restore import verify
from exporter.core.clock import FakeClock
from exporter.core.config import ConfigError, parse_config
from exporter.core.poller import Poller
from exporter.sources.base import FetchError

MIB = 2**20


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def aws_multipart_etag(data: bytes, part: int) -> str:
    """The multipart ETag as AWS documents it, written independently of the exporter."""
    chunks = [data[i : i + part] for i in range(0, len(data), part)]
    return hashlib.md5(b"".join(hashlib.md5(c).digest() for c in chunks)).hexdigest() + (
        f"-{len(chunks)}"
    )


# ------------------------------------------------------------------------------ aggregation


@given(st.lists(st.tuples(st.integers(0, 10**12), st.integers(0, 2 * 10**9)), min_size=1))
def test_aggregate_does_not_depend_on_order(objects: list[tuple[int, int]]) -> None:
    shuffled = list(objects)
    random.Random(len(objects)).shuffle(shuffled)
    results = []
    for stream in (objects, shuffled):
        agg = PrefixAggregate()
        for size, ts in stream:
            agg.add(size, float(ts))
        results.append(agg.result("p/", 5.0))
    assert results[0] == results[1]
    assert results[0] == PrefixStats(
        prefix="p/",
        objects=len(objects),
        size_bytes=sum(s for s, _ in objects),
        newest=float(max(t for _, t in objects)),
        oldest=float(min(t for _, t in objects)),
        listed_at=5.0,
    )


def test_empty_prefix_has_no_newest_or_oldest() -> None:
    stats = PrefixAggregate().result("empty/", 1.0)
    assert (stats.objects, stats.size_bytes, stats.newest, stats.oldest) == (0, 0, None, None)


def test_reservoir_sampling_is_uniform_and_respects_limits() -> None:
    rng = random.Random(1234)
    sizes = [0, 10, 20, 5000, 30, 40, 50]  # 0 bytes and > max_bytes are never sampled
    chosen: Counter[int] = Counter()
    trials = 20_000
    for _ in range(trials):
        sampler = ReservoirSampler(rng, max_bytes=1000)
        for i, size in enumerate(sizes):
            if sampler.wants(size):
                sampler.take(SampleObject(key=str(i), size=size))
        assert sampler.chosen is not None
        chosen[sampler.chosen.size] += 1
    assert set(chosen) == {10, 20, 30, 40, 50}
    for count in chosen.values():
        # 1/5 each; a 5-sigma band for a binomial with p=0.2 over 20,000 trials is ±283.
        assert abs(count - trials / 5) < 300


def test_sampler_without_eligible_objects_chooses_nothing() -> None:
    sampler = ReservoirSampler(random.Random(0), max_bytes=10)
    assert not sampler.wants(0)
    assert not sampler.wants(11)
    assert sampler.chosen is None and sampler.eligible == 0


# ------------------------------------------------------------------------------ verification


def test_verify_sha1_and_size() -> None:
    data = b"backup bytes"
    sha1 = hashlib.sha1(data).hexdigest()
    assert verify(Download(key="k", data=data, expected_size=len(data), sha1=sha1)) == (
        True,
        "sha1",
        None,
    )
    bad = Download(key="k", data=b"backup bytez", expected_size=len(data), sha1=sha1)
    assert verify(bad) == (False, "sha1", "hash_mismatch")
    short = Download(key="k", data=data[:-1], expected_size=len(data), sha1=sha1)
    assert verify(short)[2] == "hash_mismatch"
    # A large B2 file without large_file_sha1: the size is all there is.
    assert verify(Download(key="k", data=data, expected_size=len(data))) == (True, "size", None)


def test_verify_single_part_md5() -> None:
    data = b"x" * 1000
    good = Download(key="k", data=data, expected_size=1000, etag=f'"{md5(data)}"')
    assert verify(good) == (True, "md5", None)
    rotten = Download(key="k", data=b"y" + data[1:], expected_size=1000, etag=f'"{md5(data)}"')
    assert verify(rotten) == (False, "md5", "hash_mismatch")
    kms = Download(key="k", data=data, expected_size=1000, etag='"0123"', verify_etag=False)
    assert verify(kms) == (True, "size", None)


def test_verify_multipart_with_a_common_part_size() -> None:
    data = bytes(range(256)) * (17 * MIB // 256 // 2)  # 8.5 MiB: AWS CLI uploads 8 MiB parts
    etag = aws_multipart_etag(data, 8 * MIB)
    assert etag.endswith("-2")
    assert verify(Download(key="k", data=data, expected_size=len(data), etag=etag)) == (
        True,
        "multipart_etag",
        None,
    )


def test_verify_multipart_with_an_unknown_part_size_falls_back_to_size() -> None:
    data = b"z" * (6 * MIB + 3)
    etag = aws_multipart_etag(data, 6 * MIB + 1)  # an odd uploader
    unknown = Download(key="k", data=data, expected_size=len(data), etag=etag)
    assert verify(unknown) == (True, "size", None)
    told = Download(key="k", data=data, expected_size=len(data), etag=etag, part_size=6 * MIB + 1)
    assert verify(told) == (True, "multipart_etag", None)
    rotten = Download(
        key="k", data=b"Z" + data[1:], expected_size=len(data), etag=etag, part_size=6 * MIB + 1
    )
    assert verify(rotten) == (False, "multipart_etag", "hash_mismatch")


# ------------------------------------------------------------------------------ config


def parse_source(data: dict[str, object]) -> tuple[Any, list[str]]:
    """Validate a ``kind: s3`` source ``x`` with the bucket keys in ``data``."""
    from exporter.sources.s3.config import SPEC

    source = {"kind": "s3", "endpoint": "https://s3.lan", "access_key_id": "a"}
    source |= {"secret_access_key": "b", **data}
    text = yaml.safe_dump({"sources": {"x": source}})
    try:
        config = parse_config(text, kinds={"s3": SPEC}, base_dir=Path("/etc/backup-exporter"))
    except ConfigError as exc:
        return None, exc.problems
    return config.sources["x"], []


def test_parse_buckets_defaults() -> None:
    cfg, problems = parse_source(
        {
            "price_per_tb_month": 6.0,
            "buckets": {"homelab": None, "media": {"prefixes": "photos/", "restore_check": {}}},
        }
    )
    assert problems == []
    homelab, media = cfg.buckets
    assert homelab == BucketConfig(
        name="homelab", prefixes=("",), interval=6 * 3600, price_per_tb_month=6.0
    )
    assert media.prefixes == ("photos/",)
    assert media.restore_check == RestoreCheckConfig(interval=7 * 86400, max_bytes=16 * MIB)


def test_parse_buckets_problems_have_paths() -> None:
    _, problems = parse_source(
        {
            "retries": 50,
            "buckets": {
                "b": {
                    "prefixes": ["a/", "a/", "/abs"],
                    "interval": "often",
                    "price_per_tb_month": -1,
                    "restore_check": {
                        "max_bytes": "2GiB",
                        "canary": "/x",
                        "keep_file": "sample.bin",
                        "colour": "red",
                    },
                }
            },
        }
    )
    text = "\n".join(problems)
    for expected in (
        "sources.x.retries: must be <= 10",
        "sources.x.buckets.b.prefixes: duplicate prefix 'a/'",
        "sources.x.buckets.b.prefixes: prefix '/abs' must not start with '/'",
        "sources.x.buckets.b.interval: invalid duration 'often'",
        "sources.x.buckets.b.price_per_tb_month: must be >= 0",
        "sources.x.buckets.b.restore_check.max_bytes: must be at most 1GiB",
        "sources.x.buckets.b.restore_check.canary: object keys do not start with '/'",
        "sources.x.buckets.b.restore_check.colour: unknown key",
    ):
        assert expected in text


def test_missing_buckets_is_a_problem() -> None:
    _, problems = parse_source({})
    assert problems == ["sources.x.buckets: missing (name at least one bucket)"]


# ------------------------------------------------------------------------------ render, evidence


def stats(prefix: str, objects: int, size: int, newest: float | None = 100.0) -> PrefixStats:
    return PrefixStats(prefix, objects, size, newest, None if newest is None else 50.0, 200.0)


def samples(metrics: Iterator[Metric]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    families = list(metrics)

    class _C:
        def collect(self) -> list[Metric]:
            return families

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_C())  # type: ignore[arg-type]
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(generate_latest(reg).decode())
        for s in fam.samples
    }


def test_billed_bytes_counts_nested_prefixes_once() -> None:
    state = BucketState(
        name="b",
        price_per_tb_month=6.0,
        prefixes=(stats("", 10, 1000), stats("a/", 3, 300), stats("a/b/", 1, 100)),
    )
    assert billed_bytes(state) == 1000
    state = BucketState(
        name="b", price_per_tb_month=6.0, prefixes=(stats("a/", 3, 300), stats("b/", 2, 200))
    )
    assert billed_bytes(state) == 500


def test_render_empty_prefix_and_unknown_price() -> None:
    snap = BucketsSnapshot(
        buckets=(
            BucketState(name="b", price_per_tb_month=0.0, prefixes=(stats("e/", 0, 0, None),)),
        )
    )
    got = samples(render_buckets("s", snap))
    where = frozenset({("source", "s"), ("bucket", "b"), ("prefix", "e/")})
    assert got["backup_bucket_objects", where] == 0
    assert ("backup_bucket_newest_object_timestamp_seconds", where) not in got
    assert not any(name.startswith("backup_bucket_estimated") for name, _ in got)
    assert not any(name.startswith("backup_restore_check") for name, _ in got)


def test_evidence_selects_bucket_and_prefix() -> None:
    snap = BucketsSnapshot(
        buckets=(
            BucketState(
                name="homelab",
                price_per_tb_month=6.0,
                prefixes=(stats("", 1, 1, 10.0), stats("immich/", 1, 1, 20.0)),
            ),
        )
    )
    ev = bucket_evidence(snap, {"source": "b2", "bucket": "homelab", "prefix": "immich/"})
    assert ev is not None and ev.last_success == 20.0 and not ev.tracks_start
    assert bucket_evidence(snap, {"source": "b2"}).last_success == 10.0  # one bucket, prefix ""
    assert bucket_evidence(snap, {"source": "b2", "bucket": "homelab", "prefix": "x/"}) is None
    assert bucket_evidence(snap, {"source": "b2", "bucket": "other"}) is None


# ------------------------------------------------------------------------------ scheduling


class ScriptedSource(BucketSource[BucketSourceConfig]):
    """A bucket source whose listing and downloads the test scripts."""

    kind = "scripted"

    def __init__(self, config: BucketSourceConfig) -> None:
        super().__init__(config, rng=random.Random(0))
        self.objects: list[tuple[str, int, float]] = [("a/1", 10, 1.0), ("a/2", 20, 2.0)]
        self.outcomes: list[Download | Exception] = []
        self.lists = 0
        self.downloads: list[str] = []
        self.list_error: Exception | None = None

    def prepare(self, call: BlockingCall) -> None:
        pass

    def list_prefix(self, call, bucket, prefix, agg, sampler) -> None:  # type: ignore[no-untyped-def]
        self.lists += 1
        if self.list_error is not None:
            raise self.list_error
        for key, size, ts in self.objects:
            call.check()
            agg.add(size, ts)
            if sampler is not None and sampler.wants(size):
                sampler.take(SampleObject(key=key, size=size))

    def download(self, call, bucket, target, max_bytes) -> Download:  # type: ignore[no-untyped-def]
        key = target if isinstance(target, str) else target.key
        self.downloads.append(key)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def error(self, exc: Exception) -> FetchError | None:
        return FetchError("http", str(exc)) if isinstance(exc, OSError) else None


def scripted(**restore: object) -> ScriptedSource:
    cfg = BucketSourceConfig(
        name="s",
        kind="scripted",
        interval=3600,
        timeout=5,
        buckets=(
            BucketConfig(
                name="b",
                prefixes=("a/",),
                interval=6 * 3600,
                restore_check=RestoreCheckConfig(interval=7 * 86400, **restore),  # type: ignore[arg-type]
            ),
        ),
    )
    return ScriptedSource(cfg)


def good(data: bytes) -> Download:
    return Download(key="k", data=data, expected_size=len(data), etag=md5(data))


async def test_download_errors_retry_at_next_listing_verdicts_wait_an_interval() -> None:
    clock = FakeClock(1_800_000_000)
    src = scripted()
    poller = Poller(src, clock=clock)
    src.outcomes = [
        OSError("connection reset"),  # → download_error: try again at the next listing
        Download(key="k", data=b"abc", expected_size=3, etag=md5(b"abd")),  # → hash_mismatch
        good(b"abc"),
    ]
    state = await poller.poll_once()
    assert state.up, "a failed restore never fails the listing"
    r = state.snapshot.buckets[0].restore
    assert (r.result, r.verified) == ("download_error", "none")
    clock.advance(6 * 3600)
    state = await poller.poll_once()
    r = state.snapshot.buckets[0].restore
    assert r.result == "hash_mismatch"
    for _ in range(27):  # a verdict stands for the interval (7 days of 6-hour listings)
        clock.advance(6 * 3600)
        state = await poller.poll_once()
    assert len(src.downloads) == 2
    assert state.snapshot.buckets[0].restore.result == "hash_mismatch"
    clock.advance(6 * 3600)
    state = await poller.poll_once()
    assert len(src.downloads) == 3
    assert state.snapshot.buckets[0].restore.success
    assert state.snapshot.buckets[0].restore_last_success == clock.time()


async def test_a_failed_listing_keeps_the_restore_state_and_reports_the_bucket() -> None:
    clock = FakeClock(1_800_000_000)
    src = scripted(canary="a/1")
    src.outcomes = [good(b"x")]
    poller = Poller(src, clock=clock)
    first = await poller.poll_once()
    clock.advance(6 * 3600)
    src.list_error = OSError("boom")
    state = await poller.poll_once()
    # The bucket is the target that failed; its source answers and stays up.
    assert state.up
    (target,) = state.snapshot.targets
    assert (target.target, target.up, target.reason) == ("bucket/b", False, "http")
    assert "boom" in target.message
    assert state.snapshot.buckets == first.snapshot.buckets, "last listing and restore kept"
    src.list_error = None
    clock.advance(3600)  # the failed bucket is still due: listed at the next wake-up
    state = await poller.poll_once()
    assert state.up and src.lists == 3
    assert state.snapshot.buckets[0].restore.success
    assert src.downloads == ["a/1"], "the check is not repeated within its interval"


async def test_a_crashing_download_is_a_failed_check() -> None:
    src = scripted()
    src.outcomes = [RuntimeError("sdk bug")]
    state = await Poller(src, clock=FakeClock()).poll_once()
    assert state.up
    r = state.snapshot.buckets[0].restore
    assert (r.success, r.result, r.detail) == (False, "download_error", "unexpected RuntimeError")
