"""The ``kind: files`` configuration keys and job evidence selector."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator
from pydantic.dataclasses import dataclass

from exporter.core.config import EvidenceSelector, KindSpec, SourceConfig
from exporter.core.fields import STRICT, Bool, ConfigPath, Duration, InheritedZone, Text, problem


@dataclass(frozen=True, kw_only=True, config=STRICT)
class FilesConfig(SourceConfig):
    """``path`` and ``glob`` select the files; ``vzdump`` reads archive names per guest.

    ``storage`` (the ``storage`` label of vzdump archives) defaults to the source's name;
    an empty ``timezone`` inherits the top-level one.
    """

    kind: Literal["files"] = "files"
    interval: Duration = 300.0
    timeout: Duration = 60.0
    path: ConfigPath
    glob: Text = "*"
    vzdump: Bool = False
    storage: Text = ""
    timezone: InheritedZone = ""

    @field_validator("glob")
    @classmethod
    def _inside(cls, pattern: str) -> str:
        if pattern.startswith("/") or ".." in Path(pattern).parts:
            raise problem("must be relative to path and stay inside it")
        return pattern

    def complete(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Default ``storage`` to the source's name."""
        super().complete(raw, context)
        if not self.storage:
            self._set("storage", self.name)


@dataclass(frozen=True, kw_only=True, config=STRICT)
class FilesEvidence(EvidenceSelector):
    """``{source}``: the newest file; ``{source, vmid}``: a guest's newest vzdump archive."""

    vmid: Text = ""


SPEC = KindSpec(
    config=FilesConfig, evidence=FilesEvidence, source="exporter.sources.files.source:FilesSource"
)
