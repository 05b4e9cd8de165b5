"""The ``kind: zfs`` configuration keys and job evidence selector."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, WithJsonSchema
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from exporter.core.config import EvidenceSelector, KindSpec, SourceConfig
from exporter.core.fields import STRICT, Duration, DurationOrZero, StrList, Text, Zone, problem
from exporter.sources.targets import effective_target_timeout, target_timeout_problems
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
    #: The dataset listing (``zfs list``) within the poll; 0: half of ``timeout``.
    target_timeout: DurationOrZero = 0.0

    @property
    def dataset_timeout(self) -> float:
        """The time ``zfs list`` (datasets and snapshots) may take within a poll."""
        return effective_target_timeout(self.timeout, self.target_timeout)

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Run the common checks; the dataset listing's timeout ends before the poll's."""
        yield from super().problems(context)
        yield from target_timeout_problems(self.timeout, self.target_timeout)

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
