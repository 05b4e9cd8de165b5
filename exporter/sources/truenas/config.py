"""The ``kind: truenas`` configuration keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from exporter.core.config import Secret, Section, SourceConfig, SourceConfigBase, parse_duration
from exporter.sources.truenas.client import PLAIN_WS_REFUSAL, api_url
from exporter.storage.config import parse_dataset_filter

# ------------------------------------------------------------------------------ config


@dataclass(frozen=True, kw_only=True)
class TrueNASConfig(SourceConfig):
    """The ``kind: truenas`` keys."""

    url: str
    username: str = ""
    api_key: Secret = field(default_factory=lambda: Secret(""))
    verify_tls: bool = True
    ca_file: Path | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # The YAML key is ``timezone``; empty means "ask TrueNAS" (system.general.config), so it
    # is deliberately not called ``timezone`` (which would inherit the top-level zone).
    cron_timezone: str = ""
    cloudsync_grace: Mapping[str, float] = field(default_factory=dict)
    scrub_grace: float = 86400.0


def _graces(sec: Section) -> dict[str, float]:
    graces: dict[str, float] = {}
    for key, value in sec.data.items():
        name = str(key)
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError("must be a duration such as 8h")
            seconds = parse_duration(value) if isinstance(value, str) else float(value)
            if seconds <= 0:
                raise ValueError("must be greater than 0")
        except ValueError as exc:
            sec.problem(name, str(exc))
            continue
        graces[name] = seconds
    return graces


def parse(sec: Section, base: SourceConfigBase) -> TrueNASConfig:
    """Read the ``kind: truenas`` keys."""
    url = sec.str("url", required=True)
    if url:
        try:
            if api_url(url).scheme == "ws":
                sec.problem("url", PLAIN_WS_REFUSAL)
        except ValueError as exc:
            sec.problem("url", str(exc))
    api_key = sec.secret("api_key") or Secret("")
    tls = sec.tls()
    datasets = parse_dataset_filter(sec)
    timezone = sec.timezone("timezone", "")
    return TrueNASConfig(
        name=base.name,
        kind=base.kind,
        interval=base.interval,
        timeout=base.timeout,
        jitter=base.jitter,
        url=url,
        username=sec.str("username", ""),
        api_key=api_key,
        verify_tls=tls.verify,
        ca_file=tls.ca_file,
        include=datasets.include,
        exclude=datasets.exclude,
        cron_timezone=timezone,
        cloudsync_grace=MappingProxyType(_graces(sec.section("cloudsync_grace"))),
        scrub_grace=sec.duration("scrub_grace", 86400.0),
    )
