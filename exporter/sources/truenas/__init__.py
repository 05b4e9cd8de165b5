"""``kind: truenas``: storage, scrub and cloud-sync tasks from the TrueNAS JSON-RPC 2.0 API."""

from exporter.sources.truenas.source import KIND, SPEC

__all__ = ["KIND", "SPEC"]
