"""The ``datasets:`` filter keys shared by ``kind: zfs`` and ``kind: truenas``."""

from __future__ import annotations

import re

from exporter.core.config import Section
from exporter.storage.model import DatasetFilter


def _regexes(sec: Section, key: str) -> tuple[str, ...]:
    patterns = sec.str_list(key)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            sec.problem(key, f"invalid regular expression {pattern!r}: {exc}")
            return ()
    return patterns


def parse_dataset_filter(sec: Section) -> DatasetFilter:
    """Read the ``datasets:`` mapping (``include``/``exclude`` regex lists) of a source."""
    datasets = sec.section("datasets")
    include = _regexes(datasets, "include")
    exclude = _regexes(datasets, "exclude")
    datasets.finish()
    return DatasetFilter(include, exclude)
