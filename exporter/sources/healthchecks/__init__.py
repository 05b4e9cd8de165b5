"""``kind: healthchecks``: Healthchecks.io checks as metrics and job evidence."""

from exporter.sources.healthchecks.source import KIND, SPEC

__all__ = ["KIND", "SPEC"]
