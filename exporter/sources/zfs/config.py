"""The ``kind: zfs`` configuration keys and job evidence selector."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, WithJsonSchema
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from exporter.core.config import EvidenceSelector, KindSpec, SourceConfig
from exporter.core.fields import STRICT, Duration, StrList, Text, Zone, problem
from exporter.storage.config import DatasetsConfig


def _json_mode(raw: Any) -> str:
    """Read ``json:`` as ``auto``, ``true`` or ``false`` (YAML booleans or strings)."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str) and raw.lower() in ("auto", "true", "false"):
        return raw.lower()
    raise problem(f"must be auto, true or false, got {raw!r}")


@dataclass(frozen=True, kw_only=True, config=STRICT)
class ZfsConfig(SourceConfig):
    """The ``kind: zfs`` keys; ``datasets:`` fills ``include``/``exclude``."""

    derived: ClassVar[tuple[str, ...]] = ("include", "exclude")

    kind: Literal["zfs"] = "zfs"
    interval: Duration = 300.0
    timeout: Duration = 30.0
    command_prefix: StrList = ()
    datasets: DatasetsConfig | None = None
    include: SkipJsonSchema[tuple[str, ...]] = ()
    exclude: SkipJsonSchema[tuple[str, ...]] = ()
    json: Annotated[
        str,
        BeforeValidator(_json_mode),
        WithJsonSchema({"enum": ["auto", True, False, "true", "false"]}),
    ] = "auto"  # auto | true | false
    timezone: Zone = "UTC"

    def complete(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Copy the patterns of ``datasets:``."""
        super().complete(raw, context)
        if self.datasets is not None:
            self._set("include", self.datasets.include)
            self._set("exclude", self.datasets.exclude)


@dataclass(frozen=True, kw_only=True, config=STRICT)
class ZfsEvidence(EvidenceSelector):
    """``{source, pool}``: the last scrub; ``{source, dataset}``: the newest snapshot."""

    pool: Text = ""
    dataset: Text = ""


SPEC = KindSpec(
    config=ZfsConfig, evidence=ZfsEvidence, source="exporter.sources.zfs.source:ZfsSource"
)
