"""S3-compatible buckets (``kind: s3``): Storj's gateway, B2's S3 endpoint, MinIO, AWS.

boto3 runs in the source's worker thread (request signing stays in botocore), with
path-style addressing always, ``connect_timeout``/``read_timeout`` bounded by the bucket's
``target_timeout`` (10 s / 60 s at most) and botocore's ``standard`` retry mode capped at
``retries + 1`` attempts per call (``total_max_attempts``).

Listing is ``ListObjectsV2`` paginated by hand (``MaxKeys=1000`` and ``ContinuationToken``)
and aggregated page by page without relying on key order: Storj lists ``/``-terminated
prefixes in *encrypted* order and returns at most 1,000 keys a page (docs/backends.md §6).
On a versioned bucket ``ListObjectsV2`` already returns only current versions, and a key
whose current version is a delete marker is left out, which is what a restore sees.

Every HTTP attempt is counted in ``backup_source_api_requests_total`` (botocore
``before-send`` event, so retries count too): class ``list`` for each list page, ``get``
for downloads, matching the LIST and GET request tiers of S3-style price lists
(Storj bills no requests; on B2's S3 endpoint ``list`` is Class C and ``get`` Class B).

Restore checks verify the MD5 of single-part objects against their ETag and multipart
ETags by reproducing them from common part sizes (rules in :func:`exporter.buckets.verify`).
botocore's own CRC checks of responses are left to ``when_required`` so that every store
is checked by the same documented rule.

Pricing default (``price_per_tb_month``), chosen from the endpoint host:

* ``*storj*``: **$4/TB-month**, Storj's legacy price, which projects created before
  2025-11-01 keep for a year; newer projects pay $6 (Active Archive), $10 (Regional) or
  $15 (Global) per TB-month since 2025-11-01 (docs/backends.md §6): set the price explicitly.
* ``*backblazeb2.com``: **$6/TB-month** (B2 pay-as-you-go since 2023-10-03).
* anything else: 0 = unknown, and no cost series is exported.

Sample exposition (see :mod:`exporter.buckets.render` for every family)::

    # HELP backup_bucket_objects Latest visible objects under the prefix.
    # TYPE backup_bucket_objects gauge
    backup_bucket_objects{bucket="offsite",prefix="restic/",source="storj"} 1200.0
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from botocore.parsers import ResponseParserError
from botocore.utils import parse_timestamp

from exporter.buckets.config import BucketConfig
from exporter.buckets.engine import (
    BlockingCall,
    BucketSource,
)
from exporter.buckets.listing import PrefixAggregate, ReservoirSampler
from exporter.buckets.model import Download, SampleObject
from exporter.buckets.restore import BoundedSink, TooLargeError
from exporter.sources.base import FetchError, Reason, retry_after_header
from exporter.sources.s3 import KIND
from exporter.sources.s3.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.sources.s3.config import S3Config

log = logging.getLogger(__name__)

LIST_PAGE = 1000
_CHUNK = 1 << 20

_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidSecurity",
        "Unauthorized",
    }
)
_PERMISSION_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "Forbidden"})
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})
_API_CLASS = {"ListObjectsV2": "list", "GetObject": "get", "HeadObject": "get"}


class RetryAfterError(Exception):
    """The endpoint answered 429/503 with ``Retry-After``: botocore must not retry it."""

    def __init__(self, status: int, retry_after: float) -> None:
        super().__init__(f"HTTP {status}, retry after {retry_after:.0f}s")
        self.status = status
        self.retry_after = retry_after


def veto_early_retry(response: Any = None, **_: Any) -> None:
    """Botocore ``needs-retry`` hook: stop at a 429/503 that carries ``Retry-After``.

    botocore's standard mode retries 429 (``_THROTTLING_STATUS_CODES``) and 503
    (``_TRANSIENT_STATUS_CODES``) after its own backoff and ignores ``Retry-After``
    (botocore/retries/standard.py ``StandardRetryConditions``); raising here ends the call,
    so the poller can wait until the server allows the next request (RFC 9110, Retry-After).
    """
    if not isinstance(response, tuple) or not response or response[0] is None:
        return
    http = response[0]
    status = getattr(http, "status_code", 0)
    if status in (429, 503):
        wait = retry_after_header(http.headers, time.time())
        if wait is not None:
            raise RetryAfterError(status, wait)


def s3_error(exc: Exception, *, secret: str = "") -> FetchError | None:
    """Map a botocore exception to a :class:`FetchError` with a safe message."""
    reason: Reason
    if isinstance(exc, RetryAfterError):
        return FetchError("http", f"rate limited: {exc}", retry_after=exc.retry_after)
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _AUTH_CODES or status == 401:
            reason = "auth"
        elif code in _PERMISSION_CODES or status == 403:
            reason = "permission"
        elif code == "NoSuchBucket":
            reason = "config"
        else:
            reason = "http"
        text = f"HTTP {status} {code}: {err.get('Message', '')}"
    elif isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        reason, text = "timeout", str(exc)
    elif isinstance(exc, SSLError):
        reason, text = "tls", str(exc)
    elif isinstance(exc, (EndpointConnectionError, ConnectionClosedError)):
        reason, text = "connection", str(exc)
    elif isinstance(exc, NoCredentialsError):
        reason, text = "auth", "no credentials"
    elif isinstance(exc, ResponseParserError):
        reason, text = "parse", "unparsable response"
    elif isinstance(exc, BotoCoreError):
        reason, text = "connection", str(exc)
    else:
        return None
    if secret:
        text = text.replace(secret, "***")
    return FetchError(reason, text[:300])


def _entry(obj: Any) -> tuple[str, int, float]:
    """Validate one ``Contents`` entry: key, size and LastModified as Unix seconds."""
    if not isinstance(obj, dict):
        raise FetchError("parse", "listing entry is not an object")
    key, size, modified = obj.get("Key"), obj.get("Size"), obj.get("LastModified")
    if not isinstance(key, str) or not isinstance(size, int) or size < 0:
        raise FetchError("parse", f"malformed listing entry {str(key)[:100]!r}")
    if not isinstance(modified, datetime):
        raise FetchError("parse", f"listing entry {key[:100]!r} has no LastModified")
    return key, size, modified.timestamp()


class S3Source(BucketSource[S3Config]):
    """Lists S3-compatible buckets with boto3 in the source's worker thread.

    ``client_factory`` builds the boto3 client (tests may wrap it); by default it is made
    from the config.

    Sample exposition::

        # HELP backup_bucket_size_bytes Total size of the latest visible objects under the prefix.
        # TYPE backup_bucket_size_bytes gauge
        backup_bucket_size_bytes{bucket="offsite",prefix="restic/",source="storj"} 4.2e+10
    """

    kind = KIND

    def __init__(
        self,
        config: S3Config,
        *,
        client_factory: Callable[[S3Config], Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(config, rng=rng)
        self._client_factory = client_factory or make_client
        self._client: Any = None
        self._call: BlockingCall | None = None

    def error(self, exc: Exception) -> FetchError | None:
        """Translate botocore exceptions."""
        return s3_error(exc, secret=self.config.secret_access_key.reveal())

    def prepare(self, call: BlockingCall) -> None:
        """Create the client once; S3 has no login call."""
        self._call = call
        if self._client is None:
            client = self._client_factory(self.config)
            client.meta.events.register("before-send.s3", self._count)
            self._client = client

    def _count(self, **kwargs: Any) -> None:
        # Called by botocore for every HTTP attempt, retries included.
        operation = str(kwargs.get("event_name", "")).rsplit(".", 1)[-1]
        if self._call is not None:
            self._call.count(_API_CLASS.get(operation, ""))

    def list_prefix(
        self,
        call: BlockingCall,
        bucket: BucketConfig,
        prefix: str,
        agg: PrefixAggregate,
        sampler: ReservoirSampler | None,
    ) -> None:
        """Page through ``ListObjectsV2`` and aggregate each page as it arrives."""
        self._call = call
        token: str | None = agg.cursor  # a retry resumes at the first page not counted
        while True:
            call.check()
            kwargs: dict[str, Any] = {"Bucket": bucket.name, "Prefix": prefix, "MaxKeys": LIST_PAGE}
            if token is not None:
                kwargs["ContinuationToken"] = token
            page = self._client.list_objects_v2(**kwargs)
            for obj in page.get("Contents") or ():
                key, size, modified = _entry(obj)
                agg.add(size, modified)
                if sampler is not None and sampler.wants(size):
                    sampler.take(SampleObject(key=key, size=size))
            if not page.get("IsTruncated"):
                return
            nxt = page.get("NextContinuationToken")
            if not isinstance(nxt, str) or not nxt or nxt == token:
                # A store that says "more" without a new token would loop forever.
                raise FetchError("parse", "truncated listing without a new continuation token")
            agg.checkpoint(nxt, sampler)
            token = nxt

    def download(
        self,
        call: BlockingCall,
        bucket: BucketConfig,
        target: SampleObject | str,
        max_bytes: int,
    ) -> Download:
        """GET the object into memory and return it with its ETag and length."""
        self._call = call
        key = target if isinstance(target, str) else target.key
        kwargs: dict[str, Any] = {"Bucket": bucket.name, "Key": key}
        if isinstance(target, SampleObject) and target.version:
            kwargs["VersionId"] = target.version
        try:
            resp = self._client.get_object(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if str(err.get("Code", "")) in _MISSING_CODES or status == 404:
                return Download(key=key, reason="missing", detail="no such key")
            raise
        body = resp["Body"]
        try:
            length = resp.get("ContentLength")
            if not isinstance(length, int):
                return Download(key=key, reason="download_error", detail="no Content-Length")
            if length > max_bytes:
                return Download(
                    key=key,
                    expected_size=length,
                    reason="too_large",
                    detail=f"{length} bytes > max_bytes {max_bytes}",
                )
            sink = BoundedSink(max_bytes)
            try:
                while chunk := body.read(_CHUNK):
                    call.check()
                    sink.write(chunk)
            except TooLargeError:
                return Download(key=key, reason="too_large", detail="body exceeded max_bytes")
        finally:
            body.close()
        # With SSE-KMS or SSE-C the ETag is not an MD5 of the content (AWS documents this).
        encrypted = resp.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse") or bool(
            resp.get("SSECustomerAlgorithm")
        )
        etag = resp.get("ETag")
        part_size = None
        if isinstance(etag, str) and "-" in etag and not encrypted:
            part_size = self._part_size(kwargs, etag)
        return Download(
            key=key,
            data=sink.getvalue(),
            expected_size=length,
            etag=etag,
            verify_etag=not encrypted,
            part_size=part_size,
        )

    def _part_size(self, kwargs: dict[str, Any], etag: str) -> int | None:
        """Ask the store for part 1's size of a multipart object (None: it cannot say)."""
        parts = etag.strip('"').rpartition("-")[2]
        try:
            # No IfMatch: moto compares it with the part's ETag. A replacement between GET
            # and HEAD is caught by the parts count in most cases.
            head = self._client.head_object(**kwargs, PartNumber=1)
        except (ClientError, BotoCoreError) as exc:
            log.debug("source=%s cannot read the part size: %s", self.name, exc)
            return None
        size, count = head.get("ContentLength"), head.get("PartsCount")
        if not isinstance(size, int) or (count is not None and str(count) != parts):
            return None
        return size


def fast_timestamp(value: Any) -> datetime:
    """Parse a response timestamp: ISO 8601 in C, anything else as botocore does.

    Profiling a 100k-object listing (``bench/s3_listing.py --profile``) put three quarters
    of the client's CPU in botocore's default timestamp parser (``botocore.utils.
    parse_timestamp``, which runs ``dateutil.parser.parse`` on every ``LastModified``).
    S3 lists ISO 8601 UTC times (``2026-01-29T21:00:03.000Z``), which ``datetime.
    fromisoformat`` reads exactly (Python >= 3.11); RFC 822 headers and epoch numbers fall
    back to botocore's parser. The result is timezone-aware, as botocore's is.
    """
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    result: datetime = parse_timestamp(value)
    return result


def make_client(config: S3Config) -> Any:
    """Build a boto3 S3 client: path-style, bounded timeouts and retries, own session."""
    core = botocore.session.get_session()
    # botocore's documented hook for the parser's timestamp function (see fast_timestamp).
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=fast_timestamp
    )
    session = boto3.session.Session(botocore_session=core)
    client = session.client(
        "s3",
        endpoint_url=config.endpoint,
        region_name=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key.reveal(),
        verify=str(config.ca_file) if config.ca_file is not None else True,
        config=BotoConfig(
            # One request ends within a bucket's own time (target_timeout).
            connect_timeout=min(config.bucket_timeout, 10.0),
            read_timeout=min(config.bucket_timeout, 60.0),
            # total_max_attempts counts the first attempt; botocore's max_attempts would
            # count retries only (max_attempts=N makes N+1 attempts).
            retries={"total_max_attempts": config.retries + 1, "mode": "standard"},
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra="backup-exporter",
        ),
    )
    client.meta.events.register_first("needs-retry.s3", veto_early_retry)
    return client
