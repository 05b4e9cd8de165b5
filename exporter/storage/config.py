"""The ``datasets:`` filter keys shared by ``kind: zfs`` and ``kind: truenas``."""

from __future__ import annotations

from pydantic.dataclasses import dataclass

from exporter.core.fields import STRICT, ConfigSection, Regexes


@dataclass(frozen=True, kw_only=True, config=STRICT)
class DatasetsConfig(ConfigSection):
    """The ``datasets:`` mapping: ``include``/``exclude`` regex lists (each a full match)."""

    include: Regexes = ()
    exclude: Regexes = ()
