"""Proxmox VE source: vzdump archives, backup jobs, vzdump tasks and retention, via proxmoxer."""

from exporter.sources.proxmox.source import KIND, SPEC

__all__ = ["KIND", "SPEC"]
