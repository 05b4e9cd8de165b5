"""The source kinds: each ``kind:`` has a package with its config model and its source class.

The registry loads a kind's ``config`` module (pydantic models only, no SDK) to validate a
configuration or print its schema. The kind's ``source`` module (and its SDK: b2sdk, boto3,
proxmoxer, …) is imported only when a source of that kind is built, so an exporter watching
one Proxmox host does not carry every SDK in memory.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from exporter.core.config import KindSpec, SourceConfig
from exporter.sources.base import Source

# One package per kind, named after it; its ``config`` module defines ``SPEC: KindSpec``.
KIND_NAMES = ("b2", "files", "healthchecks", "proxmox", "s3", "smartctl", "truenas", "zfs")
_MODULES = tuple(f"exporter.sources.{name}" for name in KIND_NAMES)


@functools.cache
def _spec(kind: str) -> KindSpec:
    package = importlib.import_module(f"exporter.sources.{kind}")
    if kind != package.KIND:
        raise RuntimeError(f"exporter.sources.{kind} declares KIND {package.KIND!r}")
    spec: KindSpec = importlib.import_module(f"exporter.sources.{kind}.config").SPEC
    return spec


class _LazyKinds(Mapping[str, KindSpec]):
    """The registry as a mapping whose values are imported on first lookup."""

    def __getitem__(self, kind: str) -> KindSpec:
        if kind not in KIND_NAMES:
            raise KeyError(kind)
        return _spec(kind)

    def __iter__(self) -> Iterator[str]:
        return iter(KIND_NAMES)

    def __len__(self) -> int:
        return len(KIND_NAMES)


_KINDS = _LazyKinds()


def kinds() -> Mapping[str, KindSpec]:
    """Map each ``kind:`` name to its spec, importing a kind's config module on lookup."""
    return _KINDS


def build_source(config: SourceConfig) -> Source[Any, Any]:
    """Instantiate the source object for a validated config (imports the kind's source)."""
    source: Source[Any, Any] = kinds()[config.kind].build(config)
    return source
