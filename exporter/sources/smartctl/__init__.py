"""``kind: smartctl``: disk health and self-test results from ``smartctl --json``."""

from exporter.sources.smartctl.source import KIND, SPEC

__all__ = ["KIND", "SPEC"]
