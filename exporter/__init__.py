"""Prometheus exporter that proves every backup in a homelab strategy happened and can come back."""

__version__ = "0.1.0"
