"""Render the status document as HTML (Jinja2, autoescaped: every backend name is text).

The page has no JavaScript and no external assets, so it works offline and behind any proxy.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2


def format_bytes(value: float | None) -> str:
    """Format a byte count in binary units ("151.2 GiB"); "—" for unknown."""
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # pragma: no cover - the loop returns at TiB


@functools.cache
def environment() -> jinja2.Environment:
    """Return the template environment: package templates, autoescape on, strict undefined."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("exporter.status", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["bytes"] = format_bytes
    return env


def render_page(doc: Mapping[str, Any]) -> str:
    """Render the status page of ``doc`` (a :func:`~exporter.status.document.build_status`)."""
    return environment().get_template("status.html.j2").render(doc=doc)
