"""Checked reading of PVE API answers: integers that may be strings, typed fields of an item.

Every malformed value becomes a ``parse`` FetchError that names the request and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from exporter.sources.base import FetchError

# Node names and storage ids go into URL paths; PVE's own formats are narrower than this.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def as_int(value: Any) -> int | None:
    """Return an API value as an integer (PVE sends some as strings); ``None`` if it is not one."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit() and text.isascii():
            return int(text)
    return None


class Reader:
    """Checks one item of a response and raises a ``parse`` FetchError naming the field."""

    def __init__(self, item: Mapping[str, Any], what: str) -> None:
        self.item = item
        self.what = what

    def _bad(self, key: str, expected: str) -> FetchError:
        value = self.item.get(key)
        shown = repr(value)[:60]
        return FetchError("parse", f"{self.what}: field {key!r} must be {expected}, got {shown}")

    def integer(self, key: str, default: int | None = None) -> int:
        """Return field ``key`` as an integer (``default`` when absent)."""
        value = self.item.get(key)
        if value is None and default is not None:
            return default
        number = as_int(value)
        if number is None:
            raise self._bad(key, "an integer")
        return number

    def optional_integer(self, key: str) -> int | None:
        """Return field ``key`` as an integer, ``None`` when absent."""
        if self.item.get(key) is None:
            return None
        return self.integer(key)

    def flag(self, key: str, default: bool = False) -> bool:
        """Return field ``key``, a ``0``/``1`` boolean (``default`` when absent)."""
        value = self.item.get(key)
        if value is None:
            return default
        number = as_int(value)
        if number not in (0, 1):
            raise self._bad(key, "0 or 1")
        return number == 1

    def text(self, key: str, default: str | None = None) -> str:
        """Return field ``key`` as a string (``default`` when absent)."""
        value = self.item.get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self._bad(key, "a string")
        return str(value)

    def ident(self, key: str) -> str:
        """Return field ``key``, a node name or storage id that may go into a URL path."""
        value = self.text(key)
        if not _ID_RE.fullmatch(value):
            raise self._bad(key, "a Proxmox identifier")
        return value


def object_list(data: Any, what: str) -> list[Mapping[str, Any]]:
    """Return ``data`` checked to be a list of objects (``what`` names the request)."""
    if not isinstance(data, list):
        raise FetchError("parse", f"{what}: expected a list, got {type(data).__name__}")
    for item in data:
        if not isinstance(item, Mapping):
            raise FetchError("parse", f"{what}: expected objects, got {type(item).__name__}")
    return data
