"""Backblaze B2 buckets (``kind: b2``) through b2sdk's ``b2sdk.v3`` API."""

from exporter.sources.b2.source import KIND, SPEC

__all__ = ["KIND", "SPEC"]
