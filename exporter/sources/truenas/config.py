"""The ``kind: truenas`` configuration keys and job evidence selector."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from exporter.core.config import EvidenceSelector, KindSpec, Secret, SourceConfig, tls_problems
from exporter.core.fields import (
    STRICT,
    Bool,
    ConfigPath,
    Duration,
    DurationOrZero,
    OptionalZone,
    Text,
    problem,
)
from exporter.sources.targets import effective_target_timeout, target_timeout_problems
from exporter.storage.config import DatasetsConfig

# The same text as exporter.sources.truenas.client.PLAIN_WS_REFUSAL (not imported: aiohttp).
PLAIN_WS_REFUSAL = (
    "refusing to send an API key over plain ws://: TrueNAS revokes an API key that is used "
    "over an unencrypted connection (the key would stop working); use wss://"
)

# ------------------------------------------------------------------------------ config


def _check_url(url: str) -> str | None:
    """Return the problem of a TrueNAS URL (as the client would see it), or ``None``."""
    parts = urlsplit(url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        return f"invalid TrueNAS URL {url!r} (expected wss://host[:port])"
    if scheme == "ws":
        return PLAIN_WS_REFUSAL
    return None


@dataclass(frozen=True, kw_only=True, config=ConfigDict(**STRICT, validate_by_name=True))
class TrueNASConfig(SourceConfig):
    """The ``kind: truenas`` keys; ``datasets:`` fills ``include``/``exclude``."""

    derived: ClassVar[tuple[str, ...]] = ("include", "exclude", "cron_timezone")

    def discovered_job_prefixes(self) -> tuple[str, ...]:
        """Return ``cloudsync-``, ``scrub-``: cloud-sync and scrub tasks are always jobs."""
        return ("cloudsync-", "scrub-")

    kind: Literal["truenas"] = "truenas"
    interval: Duration = 600.0
    timeout: Duration = 60.0
    #: The dataset listing (datasets and snapshots) within the poll; 0: half of ``timeout``.
    target_timeout: DurationOrZero = 0.0
    url: Text
    username: Text = ""
    api_key: Secret = Secret("")
    verify_tls: Bool = True
    ca_file: ConfigPath | None = None
    datasets: DatasetsConfig | None = None
    include: SkipJsonSchema[tuple[str, ...]] = ()
    exclude: SkipJsonSchema[tuple[str, ...]] = ()
    # The YAML key is ``timezone``; empty means "ask TrueNAS" (system.general.config), so it
    # is deliberately not called ``timezone`` (which would inherit the top-level zone).
    cron_timezone: Annotated[OptionalZone, Field(alias="timezone")] = ""
    cloudsync_grace: Mapping[str, Duration] = field(default_factory=dict)
    scrub_grace: Duration = 86400.0

    @field_validator("url")
    @classmethod
    def _secure(cls, url: str, info: ValidationInfo) -> str:
        # Only YAML is refused here: the source refuses plain URLs again before connecting.
        if info.context is not None and url and (text := _check_url(url)):
            raise problem(text)
        return url

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Run the common checks and check ``ca_file``."""
        yield from super().problems(context)
        yield from tls_problems(self.verify_tls, self.ca_file)
        yield from target_timeout_problems(self.timeout, self.target_timeout)

    @property
    def dataset_timeout(self) -> float:
        """The time the dataset and snapshot listing may take within a poll."""
        return effective_target_timeout(self.timeout, self.target_timeout)

    def complete(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Copy the patterns of ``datasets:``; freeze the graces."""
        super().complete(raw, context)
        if self.datasets is not None:
            self._set("include", self.datasets.include)
            self._set("exclude", self.datasets.exclude)
        self._set("cloudsync_grace", MappingProxyType(dict(self.cloudsync_grace)))


@dataclass(frozen=True, kw_only=True, config=STRICT)
class TrueNASEvidence(EvidenceSelector):
    """``cloudsync`` (a task description or id), ``pool``, ``dataset``, ``test``[+``device``]."""

    cloudsync: Text = ""
    pool: Text = ""
    dataset: Text = ""
    test: Text = ""
    device: Text = ""


SPEC = KindSpec(
    config=TrueNASConfig,
    evidence=TrueNASEvidence,
    source="exporter.sources.truenas.source:TrueNASSource",
)
