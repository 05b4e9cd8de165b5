"""Restore-check verification: bounded in-memory downloads and hash checks (SHA-1, MD5, ETag).

See :func:`verify` for the rules; the scheduling of the checks is in
:class:`exporter.buckets.engine.BucketSource`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from exporter.buckets.model import Download, FailReason, Verified

# Part sizes tried when reproducing a multipart ETag: the defaults of common uploaders
# (5 MiB S3 minimum / rclone / restic-minio 16 MiB, AWS CLI 8 MiB, s3cmd 15 MiB, larger
# chunkers 32-128 MiB, Storj's 64 MiB segments) and the same sizes in decimal MB.
COMMON_PART_SIZES: tuple[int, ...] = tuple(
    sorted(
        {m * 2**20 for m in (5, 8, 10, 15, 16, 25, 32, 50, 64, 100, 128)}
        | {m * 10**6 for m in (5, 8, 10, 15, 16, 25, 32, 50, 64, 100, 128)}
    )
)


class TooLargeError(Exception):
    """The download grew past ``max_bytes``."""


class BoundedSink:
    """A write-only, non-seekable in-memory file that refuses more than ``limit`` bytes.

    Non-seekable on purpose: b2sdk then uses its simple single-stream downloader (one
    Class B call) instead of parallel ranged downloads.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        """Append ``data``; raise :class:`TooLargeError` past the limit."""
        if len(self._buf) + len(data) > self.limit:
            raise TooLargeError(f"more than {self.limit} bytes")
        self._buf += data
        return len(data)

    def writable(self) -> bool:
        """Tell file-like consumers this sink can be written."""
        return True

    def seekable(self) -> bool:
        """Tell b2sdk not to use seeking (parallel) download strategies."""
        return False

    def flush(self) -> None:
        """Nothing to flush."""

    def getvalue(self) -> bytes:
        """Return the bytes written so far."""
        return bytes(self._buf)


def multipart_etag(data: bytes, part_size: int) -> str:
    """Compute the S3 ETag of ``data`` uploaded in parts of ``part_size``: ``md5(md5s)-<n>``."""
    digests = b"".join(
        hashlib.md5(data[i : i + part_size], usedforsecurity=False).digest()
        for i in range(0, len(data), part_size)
    )
    parts = max(1, -(-len(data) // part_size))
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{parts}"


def _multipart_candidates(size: int, parts: int) -> Iterator[int]:
    """Part sizes that split ``size`` bytes into exactly ``parts`` parts."""
    seen: set[int] = set()
    for part_size in COMMON_PART_SIZES:
        if -(-size // part_size) == parts:
            seen.add(part_size)
            yield part_size
    if parts > 1:
        # Uploaders that split evenly (size / parts rounded up to a MiB, or to a byte).
        for mult in (2**20, 10**6, 1):
            guess = -(-size // parts)
            guess = -(-guess // mult) * mult
            if guess not in seen and -(-size // guess) == parts:
                seen.add(guess)
                yield guess


def verify(download: Download) -> tuple[bool, Verified, FailReason | None]:
    """Check downloaded bytes against the service's hash; return (ok, what was verified, why).

    Rules, strongest first:

    * B2: SHA-1 of the bytes equals ``content_sha1`` (for large files the
      ``large_file_sha1`` file info); without either, the size only.
    * S3 single-part (ETag without ``-``): MD5 of the bytes equals the ETag.
    * S3 multipart (``<hex>-<n>``): the ETag is the MD5 of the parts' MD5s, which depends on
      the uploader's part size. The part size the store reports for part 1
      (``HeadObject(PartNumber=1)``), then common part sizes (and an even split) that give
      exactly ``n`` parts are tried, assuming equal parts but the last (as the AWS CLI,
      rclone, restic/minio-go and boto3 upload). A reproduced ETag counts as verified
      (``multipart_etag``). When the store reported the part size and no candidate
      reproduces the ETag, the check fails (``hash_mismatch``). When the store cannot
      report it (no ``PartNumber`` support) and no common size fits, only the size is
      verified (``size``): such a check cannot detect corruption, and says so in its
      ``verified`` label.
    * An ETag known not to be an MD5 (SSE-KMS / SSE-C) is checked by size only.

    The size always has to match the size the service reports.
    """
    data = download.data
    if download.expected_size is not None and len(data) != download.expected_size:
        return False, "size", "hash_mismatch"
    if download.sha1:
        ok = hashlib.sha1(data, usedforsecurity=False).hexdigest() == download.sha1.lower()
        return ok, "sha1", None if ok else "hash_mismatch"
    etag = (download.etag or "").strip().strip('"').lower()
    if etag and download.verify_etag:
        if "-" not in etag:
            ok = hashlib.md5(data, usedforsecurity=False).hexdigest() == etag
            return ok, "md5", None if ok else "hash_mismatch"
        _, _, count = etag.rpartition("-")
        if count.isdigit() and int(count) > 0:
            parts = int(count)
            reported = download.part_size
            if reported is not None and not 0 < reported <= len(data):
                reported = None  # nonsense from the store: ignore it
            first = (reported,) if reported is not None else ()
            for part_size in (*first, *_multipart_candidates(len(data), parts)):
                if multipart_etag(data, part_size) == etag:
                    return True, "multipart_etag", None
            if reported is not None:
                return False, "multipart_etag", "hash_mismatch"
    if download.expected_size is None:
        return True, "none", None  # downloadable, but nothing recorded to compare with
    return True, "size", None
