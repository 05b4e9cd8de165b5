"""The ``kind: files`` configuration keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter.core.config import Section, SourceConfig, SourceConfigBase


@dataclass(frozen=True, kw_only=True)
class FilesConfig(SourceConfig):
    """``path`` and ``glob`` select the files; ``vzdump`` reads archive names per guest."""

    path: Path
    glob: str
    vzdump: bool
    storage: str
    timezone: str


def parse(sec: Section, base: SourceConfigBase) -> FilesConfig:
    """Read the ``kind: files`` keys."""
    path = sec.path_value("path", required=True)
    pattern = sec.str("glob", "*")
    if pattern.startswith("/") or ".." in Path(pattern).parts:
        sec.problem("glob", "must be relative to path and stay inside it")
    return FilesConfig(
        name=base.name,
        kind=base.kind,
        interval=base.interval,
        timeout=base.timeout,
        jitter=base.jitter,
        path=path,
        glob=pattern,
        vzdump=sec.bool("vzdump", False),
        storage=sec.str("storage", base.name),
        timezone=sec.str("timezone", ""),
    )
