"""The ``kind: proxmox`` configuration keys and job evidence selector."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import field_validator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from exporter.core.config import (
    EvidenceSelector,
    KindSpec,
    Secret,
    SourceConfig,
    TLSConfig,
    tls_problems,
)
from exporter.core.fields import (
    STRICT,
    Bool,
    ConfigPath,
    Duration,
    DurationOrZero,
    InheritedZone,
    Text,
    at_least,
    problem,
)
from exporter.sources.targets import effective_target_timeout, target_timeout_problems

DEFAULT_GRACE = 6 * 3600.0
DEFAULT_START_GRACE = 3600.0
DEFAULT_TASKS_LIMIT = 200
DEFAULT_DISABLED_MAX_AGE = 7 * 86400.0

_TOKEN_ID_RE = re.compile(
    r"(?P<user>[^\s:/@!]+@[A-Za-z][A-Za-z0-9._-]*)!(?P<name>[A-Za-z][A-Za-z0-9._-]*)"
)


# --------------------------------------------------------------------------------- config


def parse_url(url: str) -> tuple[str, int]:
    """Return ``(host, port)`` of ``https://host[:port]``; raise ValueError otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https":
        raise ValueError(f"must be https://host[:port] (proxmoxer speaks HTTPS only), got {url!r}")
    try:
        port = parts.port or 8006
    except ValueError:
        raise ValueError(f"invalid port in {url!r}") from None
    host = parts.hostname
    if not host or parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"must be https://host[:port], got {url!r}")
    if parts.path not in ("", "/"):
        raise ValueError(f"must be https://host[:port] without a path, got {url!r}")
    return (f"[{host}]" if ":" in host else host), port


@dataclass(frozen=True, kw_only=True, config=STRICT)
class ProxmoxConfig(SourceConfig):
    """Settings of one ``kind: proxmox`` source.

    ``timezone`` is the nodes' local zone for schedules and vzdump file names; an empty string
    means "the configuration's top-level ``timezone:``", which validation fills in; if it
    stays empty (built in code), UTC is used. ``host``, ``port`` and ``verify`` are derived
    from ``url``, ``verify_tls`` and ``ca_file``.
    """

    derived: ClassVar[tuple[str, ...]] = ("host", "port", "verify")

    kind: Literal["proxmox"] = "proxmox"
    interval: Duration = 300.0
    timeout: Duration = 30.0
    url: Text
    token_id: Text
    token_secret: Secret
    verify_tls: Bool = True
    ca_file: ConfigPath | None = None
    timezone: InheritedZone = ""
    tasks_limit: Annotated[int, at_least(1)] = DEFAULT_TASKS_LIMIT
    job_grace: Duration = DEFAULT_GRACE
    job_start_grace: Duration = DEFAULT_START_GRACE
    #: A run of a PVE job longer than this is backup_job_over_max_duration 1; 0: no limit.
    job_max_duration: DurationOrZero = 0.0
    #: A job disabled longer than this is backup_pve_job_disabled_too_long 1.
    disabled_job_max_age: Duration = DEFAULT_DISABLED_MAX_AGE
    #: Each backup storage's content listing (and each request) within the poll; 0: timeout/2.
    target_timeout: DurationOrZero = 0.0
    host: SkipJsonSchema[str] = ""
    port: SkipJsonSchema[int] = 8006
    verify: SkipJsonSchema[bool | str] = True  # True, False or the path of a CA bundle

    @property
    def storage_timeout(self) -> float:
        """The time one storage's listing (and one request) may take within a poll."""
        return effective_target_timeout(self.timeout, self.target_timeout)

    @property
    def zone(self) -> str:
        """The effective time zone name."""
        return self.timezone or "UTC"

    @field_validator("url")
    @classmethod
    def _https(cls, url: str) -> str:
        if url:
            try:
                parse_url(url)
            except ValueError as exc:
                raise problem(str(exc)) from None
        return url

    @field_validator("token_id")
    @classmethod
    def _token(cls, token_id: str) -> str:
        if token_id and not _TOKEN_ID_RE.fullmatch(token_id):
            raise problem(f"must look like user@realm!tokenname, got {token_id!r}")
        return token_id

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Run the common checks and check ``ca_file`` and the job graces."""
        yield from super().problems(context)
        yield from tls_problems(self.verify_tls, self.ca_file)
        if self.job_start_grace > self.job_grace:
            yield "job_start_grace", "must not be longer than job_grace"
        yield from target_timeout_problems(self.timeout, self.target_timeout)

    def complete(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Derive ``host``/``port`` from ``url`` and ``verify`` from the TLS keys."""
        super().complete(raw, context)
        if self.url:
            host, port = parse_url(self.url)
            self._set("host", host)
            self._set("port", port)
        tls = TLSConfig(verify=self.verify_tls, ca_file=self.ca_file)
        self._set("verify", tls.requests_verify)


@dataclass(frozen=True, kw_only=True, config=STRICT)
class ProxmoxEvidence(EvidenceSelector):
    """``{source, vmid[, storage]}``: a guest's newest archive (on ``storage``) and tasks."""

    vmid: Text
    storage: Text = ""


SPEC = KindSpec(
    config=ProxmoxConfig,
    evidence=ProxmoxEvidence,
    source="exporter.sources.proxmox.source:ProxmoxSource",
)
