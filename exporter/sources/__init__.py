"""The source kinds: each module registers one ``kind:`` with its config parser and class.

A kind's module (and its SDK: b2sdk, boto3, proxmoxer, …) is imported only when a config
uses that kind, so an exporter watching one Proxmox host does not carry every SDK in memory.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from exporter.core.config import KindSpec, SourceConfig
from exporter.sources.base import Source

# One module per kind, named after it; each defines ``SPEC: KindSpec`` and ``KIND: str``.
KIND_NAMES = ("b2", "files", "healthchecks", "proxmox", "s3", "smartctl", "truenas", "zfs")
_MODULES = tuple(f"exporter.sources.{name}" for name in KIND_NAMES)


@functools.cache
def _spec(kind: str) -> KindSpec:
    module = importlib.import_module(f"exporter.sources.{kind}")
    if kind != module.KIND:
        raise RuntimeError(f"exporter.sources.{kind} declares KIND {module.KIND!r}")
    spec: KindSpec = module.SPEC
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
    """Map each ``kind:`` name to its spec, importing a kind's module when it is looked up."""
    return _KINDS


def build_source(config: SourceConfig) -> Source[Any, Any]:
    """Instantiate the source object for a validated config."""
    source: Source[Any, Any] = kinds()[config.kind].build(config)
    return source
