"""S3-compatible buckets (``kind: s3``): Storj's gateway, B2's S3 endpoint, MinIO, AWS."""

KIND = "s3"
