"""The ``kind: zfs`` configuration keys."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.config import Section, SourceConfig, SourceConfigBase
from exporter.storage.config import parse_dataset_filter


@dataclass(frozen=True, kw_only=True)
class ZfsConfig(SourceConfig):
    """The ``kind: zfs`` keys."""

    command_prefix: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    json: str = "auto"  # auto | true | false
    timezone: str = "UTC"


def parse_json_mode(sec: Section) -> str:
    """Read ``json:`` as ``auto``, ``true`` or ``false`` (YAML booleans or strings)."""
    if not sec.has("json"):
        return "auto"
    raw = sec.data["json"]
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str) and raw.lower() in ("auto", "true", "false"):
        return raw.lower()
    sec.problem("json", f"must be auto, true or false, got {raw!r}")
    return "auto"


def parse(sec: Section, base: SourceConfigBase) -> ZfsConfig:
    """Read the ``kind: zfs`` keys."""
    datasets = parse_dataset_filter(sec)
    timezone = sec.timezone("timezone", "UTC")
    return ZfsConfig(
        name=base.name,
        kind=base.kind,
        interval=base.interval,
        timeout=base.timeout,
        jitter=base.jitter,
        command_prefix=sec.str_list("command_prefix"),
        include=datasets.include,
        exclude=datasets.exclude,
        json=parse_json_mode(sec),
        timezone=timezone,
    )
