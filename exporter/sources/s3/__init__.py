"""S3-compatible buckets (``kind: s3``): Storj's gateway, B2's S3 endpoint, MinIO, AWS."""

from exporter.sources.s3.source import KIND, SPEC

__all__ = ["KIND", "SPEC"]
