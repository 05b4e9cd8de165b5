"""Backblaze B2 buckets (``kind: b2``) through b2sdk's ``b2sdk.v3`` API.

``b2sdk.v3`` is the import Backblaze recommends since b2sdk 2.9.1 (docs/backends.md §5); its
``RawSimulator`` plumbing works the same as v2's, so tests run against the simulator.

Listing walks ``b2_list_file_names`` pages the way ``Bucket.ls(path=prefix, recursive=True,
latest_only=True)`` does: only the latest version of each name, hidden names left out, exactly
what a restore of "the bucket as of now" would see. Entries whose ``action`` is not ``upload``
(unfinished large files ``start``, ``folder``) are skipped. Pages hold 1000 names because B2
bills a list call per started 1000 names whatever ``maxFileCount`` is (B2's
``b2_list_file_names`` docs: "The maximum number of files returned per transaction is 1000. If
you set maxFileCount to more than 1000 and more than 1000 are returned, the call will be billed
as multiple transactions"; docs/backends.md §5), and smaller pages keep memory flat. Prefixes
are folders (``""`` or ending in ``/``) because ``ls`` treats any other path as a file name
first; use ``kind: s3`` against B2's S3 endpoint for arbitrary string prefixes.

Cost: the source's ``list_calls_per_day`` (default 250, 10 % of the free 2,500 Class C calls
a day) stretches the listing interval of large buckets, and a failing page is retried with
back-off from where the listing stopped (:mod:`exporter.buckets.engine`).

Every call that reaches the B2 API is counted per billing class in
``backup_source_api_requests_total{class=...}``: ``C`` for ``b2_authorize_account``,
``b2_list_buckets`` and each list page; ``B`` for downloads. The count is taken at the raw
API layer (below b2sdk's session, above HTTP), where this module also retries: b2sdk's own
HTTP retries (5 to 20 attempts with sleeps up to 64 s) are turned off, so one listing
costs at most ``retries + 1`` attempts per page.

Pricing default: **$6 per TB-month** (Backblaze pay-as-you-go, since the 2023-10-03 price
change; docs/backends.md §5). Class C calls: 2,500 a day free, then $0.004 per 1,000.

Sample exposition (see :mod:`exporter.buckets.render` for every family)::

    # HELP backup_bucket_objects Latest visible objects under the prefix.
    # TYPE backup_bucket_objects gauge
    backup_bucket_objects{bucket="homelab",prefix="immich/",source="b2"} 2042.0
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from b2sdk.v3 import B2Api, B2Http, B2Session, Bucket, InMemoryAccountInfo
from b2sdk.v3.exception import (
    AccessDenied,
    B2ConnectionError,
    B2Error,
    B2RequestTimeout,
    BadJson,
    BrokenPipe,
    BucketIdNotFound,
    ChecksumMismatch,
    ConnectionReset,
    FileNotPresent,
    InvalidAuthToken,
    InvalidJsonResponse,
    MissingAccountData,
    NonExistentBucket,
    NotAllowedByAppKeyError,
    RequestTimeout,
    RestrictedBucket,
    TruncatedOutput,
    Unauthorized,
    UnknownHost,
)

from exporter.buckets.config import BucketConfig
from exporter.buckets.engine import (
    BlockingCall,
    BucketSource,
)
from exporter.buckets.listing import PrefixAggregate, ReservoirSampler
from exporter.buckets.model import Download, SampleObject
from exporter.buckets.restore import BoundedSink, TooLargeError
from exporter.sources.b2 import KIND
from exporter.sources.b2.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.sources.b2.config import B2Config
from exporter.sources.base import MAX_RETRY_AFTER, FetchError, Reason

log = logging.getLogger(__name__)

LIST_PAGE = 1000

# Billing classes of the raw API methods (https://www.backblaze.com/b2/b2-transactions-price.html).
_CLASS_B = frozenset({"download_file_from_url", "get_file_info_by_id", "get_file_info_by_name"})
_CLASS_C = frozenset(
    {
        "authorize_account",
        "list_buckets",
        "list_file_names",
        "list_file_versions",
        "list_keys",
        "list_parts",
        "list_unfinished_large_files",
        "get_download_authorization",
        "create_bucket",
        "delete_bucket",
        "update_bucket",
        "create_key",
        "delete_key",
    }
)
# Methods that only build a URL locally and send nothing.
_LOCAL = frozenset({"get_download_url_by_id", "get_download_url_by_name"})


class _OneTryB2Http(B2Http):  # type: ignore[misc]
    """b2sdk's HTTP layer without its own retries; :class:`_RawApiGuard` retries instead."""

    @classmethod
    def _translate_and_retry(
        cls, fcn: Callable[[], Any], try_count: int, post_params: Any = None
    ) -> Any:
        return super()._translate_and_retry(fcn, 1, post_params)


class _OneTrySession(B2Session):  # type: ignore[misc]
    B2HTTP_CLASS = staticmethod(_OneTryB2Http)


class _Api(B2Api):  # type: ignore[misc]
    SESSION_CLASS = staticmethod(_OneTrySession)


def production_api(timeout: float) -> B2Api:
    """Build a ``B2Api`` for the real service.

    Auth stays in memory (nothing written to disk), each call makes one HTTP attempt, and
    request timeouts are bounded by ``timeout`` (a bucket's ``target_timeout``).
    """
    api = _Api(InMemoryAccountInfo())
    http = api.session.raw_api.b2_http
    # b2sdk reads these per request through ``self``; its defaults reach 20 minutes.
    http.CONNECTION_TIMEOUT = min(timeout, 10.0)
    for attr in ("TIMEOUT", "TIMEOUT_FOR_COPY", "TIMEOUT_FOR_UPLOAD"):
        setattr(http, attr, min(timeout, 60.0))
    return api


def billing_class(method: str) -> str | None:
    """Return the B2 transaction class of a raw API method (None: sends nothing)."""
    if method in _LOCAL:
        return None
    if method in _CLASS_B:
        return "B"
    if method in _CLASS_C:
        return "C"
    return "A"


class _RawApiGuard:
    """Wraps b2sdk's raw API: counts every attempt and bounds retries.

    Each attempt is counted by billing class; transient errors are retried at most
    ``retries`` times, so a listing never costs more than configured.
    """

    def __init__(self, inner: Any, *, retries: int, sleep: Callable[[float], None]) -> None:
        self._inner = inner
        self._retries = retries
        self._sleep = sleep
        self.call: BlockingCall | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        api_class = billing_class(name)
        if name.startswith("_") or not callable(attr) or api_class is None:
            return attr

        def guarded(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(self._retries + 1):
                call = self.call
                if call is not None:
                    call.check()
                    call.count(api_class)
                try:
                    return attr(*args, **kwargs)
                except B2Error as exc:
                    # A Retry-After (b2sdk keeps it as retry_after_seconds, from HTTP 429/503:
                    # b2sdk/_internal/exception.py interpret_b2_error) is left to the poller,
                    # which makes no request before it; sleeping it here would hold the
                    # worker thread past the poll's timeout.
                    if (
                        attempt >= self._retries
                        or not exc.should_retry_http()
                        or exc.retry_after_seconds is not None
                    ):
                        raise
                    self._sleep(min(0.5 * 2**attempt, 30.0))
            raise AssertionError("unreachable")  # pragma: no cover

        return guarded


def b2_error(exc: Exception, *, secret: str = "") -> FetchError | None:
    """Map a b2sdk exception to a :class:`FetchError` with a safe message."""
    if not isinstance(exc, B2Error):
        return None
    reason: Reason
    text = str(exc)
    if isinstance(exc, (B2RequestTimeout, RequestTimeout)):
        reason = "timeout"
    elif isinstance(exc, (B2ConnectionError, ConnectionReset, UnknownHost, BrokenPipe)):
        reason = "tls" if "SSL" in text or "CERTIFICATE" in text.upper() else "connection"
    elif isinstance(exc, (Unauthorized, InvalidAuthToken, MissingAccountData)):
        reason = "auth"
    elif isinstance(exc, (AccessDenied, NotAllowedByAppKeyError, RestrictedBucket)):
        reason = "permission"
    elif isinstance(exc, (NonExistentBucket, BucketIdNotFound)):
        reason = "config"
    elif isinstance(exc, (BadJson, InvalidJsonResponse)):
        reason = "parse"
    else:
        reason = "http"
    if secret:
        text = text.replace(secret, "***")
    wait = exc.retry_after_seconds
    retry_after = None if wait is None else min(max(0.0, float(wait)), MAX_RETRY_AFTER)
    return FetchError(reason, f"{type(exc).__name__}: {text[:300]}", retry_after=retry_after)


def _take(entry: Any, prefix: str, agg: PrefixAggregate, sampler: ReservoirSampler | None) -> bool:
    """Count one ``b2_list_file_names`` entry; False once the names leave ``prefix``."""
    if not isinstance(entry, dict):
        raise FetchError("parse", "listing entry is not an object")
    name = entry.get("fileName")
    if not isinstance(name, str):
        raise FetchError("parse", "listing entry without a fileName")
    if not name.startswith(prefix):
        return False
    if entry.get("action") != "upload":
        return True  # "start": unfinished large file; "folder"/"hide": not data
    size, uploaded = entry.get("contentLength", entry.get("size")), entry.get("uploadTimestamp")
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or not isinstance(uploaded, int)
        or size < 0
    ):
        raise FetchError("parse", f"malformed entry for {name[:100]!r} in listing")
    agg.add(size, uploaded / 1000)
    if sampler is not None and sampler.wants(size):
        sampler.take(SampleObject(key=name, size=size, version=str(entry.get("fileId", ""))))
    return True


class B2Source(BucketSource[B2Config]):
    """Lists B2 buckets with b2sdk in the source's worker thread.

    ``api_factory`` returns a fresh ``B2Api``; tests pass one bound to b2sdk's
    ``RawSimulator``. ``sleep`` is the pause between retries (tests pass a no-op).

    Sample exposition::

        # HELP backup_bucket_size_bytes Total size of the latest visible objects under the prefix.
        # TYPE backup_bucket_size_bytes gauge
        backup_bucket_size_bytes{bucket="homelab",prefix="immich/",source="b2"} 2.1e+11
    """

    kind = KIND

    def __init__(
        self,
        config: B2Config,
        *,
        api_factory: Callable[[], B2Api] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(config, rng=rng)
        self._api_factory = api_factory or (lambda: production_api(config.bucket_timeout))
        self._sleep = sleep
        self._api: B2Api | None = None
        self._guard: _RawApiGuard | None = None
        self._authorized = False
        self._buckets: dict[str, Bucket] = {}

    def error(self, exc: Exception) -> FetchError | None:
        """Translate b2sdk exceptions; auth or bucket errors drop the cached state."""
        err = b2_error(exc, secret=self.config.application_key.reveal())
        if err is not None and err.reason in ("auth", "config"):
            # Log in and look the buckets up again next time (a recreated bucket has a
            # new id; a rotated key needs a new token).
            self._authorized = False
            self._buckets.clear()
        return err

    def prepare(self, call: BlockingCall) -> None:
        """Build the API once and authorize (again after a failure)."""
        if self._api is None or self._guard is None:
            api = self._api_factory()
            self._guard = _RawApiGuard(
                api.session.raw_api, retries=self.config.retries, sleep=self._sleep
            )
            api.session.raw_api = self._guard
            self._api = api
        self._guard.call = call
        if not self._authorized:
            self._buckets.clear()
            self._api.authorize_account(self.config.key_id, self.config.application_key.reveal())
            self._authorized = True

    def _bucket(self, call: BlockingCall, name: str) -> Bucket:
        assert self._api is not None, "prepare() runs first"
        assert self._guard is not None, "prepare() runs first"
        self._guard.call = call
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._api.get_bucket_by_name(name)
            self._buckets[name] = bucket
        return bucket

    def list_prefix(
        self,
        call: BlockingCall,
        bucket: BucketConfig,
        prefix: str,
        agg: PrefixAggregate,
        sampler: ReservoirSampler | None,
    ) -> None:
        """Stream ``b2_list_file_names`` pages into ``agg`` (latest visible versions only).

        The same walk as b2sdk's ``Bucket.ls(path, recursive=True, latest_only=True)``
        (b2sdk ``_internal/bucket.py``, ``Bucket.ls``): start at the prefix itself, follow
        ``nextFileName`` and stop at the first name outside the prefix. It calls the session
        directly so that a retry can start at ``agg.cursor`` (the ``nextFileName`` of the last
        page counted) and reads the entry dicts without building b2sdk ``FileVersion``s.
        """
        b = self._bucket(call, bucket.name)
        assert self._api is not None, "prepare() runs first"
        session = self._api.session
        start = prefix if agg.cursor is None else agg.cursor
        while True:
            call.check()
            page = session.list_file_names(b.id_, start, LIST_PAGE, prefix)
            files = page.get("files") if isinstance(page, dict) else None
            if not isinstance(files, list):
                raise FetchError("parse", "b2_list_file_names answered without files")
            for entry in files:
                if not _take(entry, prefix, agg, sampler):
                    return  # past the prefix
            nxt = page.get("nextFileName")
            if nxt is None or not files:
                return
            if not isinstance(nxt, str) or nxt <= start:
                raise FetchError("parse", "b2_list_file_names did not move on")
            agg.checkpoint(nxt, sampler)
            start = nxt

    def download(
        self,
        call: BlockingCall,
        bucket: BucketConfig,
        target: SampleObject | str,
        max_bytes: int,
    ) -> Download:
        """Download one file version (sampled: by id; canary: latest by name) into memory."""
        b = self._bucket(call, bucket.name)
        key = target if isinstance(target, str) else target.key
        try:
            if isinstance(target, SampleObject):
                downloaded = b.download_file_by_id(target.version)
            else:
                downloaded = b.download_file_by_name(target)
        except FileNotPresent:
            return Download(key=key, reason="missing", detail="file not present")
        try:
            version = downloaded.download_version
            size = version.content_length
            if size > max_bytes:
                return Download(
                    key=key,
                    expected_size=size,
                    reason="too_large",
                    detail=f"{size} bytes > max_bytes {max_bytes}",
                )
            sha1 = version.content_sha1
            if not sha1 or sha1 == "none":
                # Large files carry their whole-file SHA-1 (if the uploader set it) here.
                sha1 = (version.file_info or {}).get("large_file_sha1")
            sink = BoundedSink(max_bytes)
            try:
                downloaded.save(sink, allow_seeking=False)
            except ChecksumMismatch:
                pass  # b2sdk saw it too; verify() reports it from the bytes we kept
            except TruncatedOutput as exc:
                return Download(key=key, reason="download_error", detail=str(exc)[:200])
            except TooLargeError:
                return Download(key=key, reason="too_large", detail="body exceeded max_bytes")
            return Download(key=key, data=sink.getvalue(), expected_size=size, sha1=sha1)
        finally:
            downloaded.response.close()
