"""``kind: zfs``: datasets, snapshot ages and scrubs from the ``zfs``/``zpool`` commands."""

from exporter.sources.zfs.source import KIND, SPEC

__all__ = ["KIND", "SPEC"]
