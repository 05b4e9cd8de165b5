"""Backup files on disk (``kind: files``): newest mtime, count and total size of a glob."""

from exporter.sources.files.source import KIND, SPEC

__all__ = ["KIND", "SPEC"]
