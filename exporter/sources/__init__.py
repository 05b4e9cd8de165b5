"""The source kinds: each module registers one ``kind:`` with its config parser and class."""

from __future__ import annotations

import functools
import importlib
from typing import Any

from exporter.config import KindSpec, SourceConfig
from exporter.sources.base import Source

# One line per kind module; each defines ``SPEC: KindSpec`` and ``KIND: str``.
_MODULES = (
    "exporter.sources.b2",
    "exporter.sources.files",
    "exporter.sources.healthchecks",
    "exporter.sources.s3",
    "exporter.sources.proxmox",
    "exporter.sources.smartctl",
    "exporter.sources.truenas",
    "exporter.sources.zfs",
)


@functools.cache
def kinds() -> dict[str, KindSpec]:
    """Map each ``kind:`` name to its spec (imported on first use, not at package import)."""
    found: dict[str, KindSpec] = {}
    for module_name in _MODULES:
        module = importlib.import_module(module_name)
        found[module.KIND] = module.SPEC
    return found


def build_source(config: SourceConfig) -> Source[Any, Any]:
    """Instantiate the source object for a validated config."""
    source: Source[Any, Any] = kinds()[config.kind].build(config)
    return source
