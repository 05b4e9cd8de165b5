"""``backup-exporter report``: the living strategy document, from the status document.

The data comes from a running exporter's ``/api/status`` (``--url``) or, without one, from the
state database named by the config (what the last polls before the exporter stopped saw). The
report is Markdown (``--format markdown``) or a standalone HTML page (``--format html``, the
Markdown's content as tables, autoescaped). Names from backends are escaped in both.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from exporter.status.document import local_time
from exporter.status.page import format_bytes

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#])")


def md(text: object) -> str:
    """Escape ``text`` for a Markdown table cell: specials backslashed, newlines as spaces."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def code(text: object) -> str:
    """Make ``text`` safe inside a Markdown code span in a table (no escapes apply there)."""
    return " ".join(str(text).split()).replace("`", "'").replace("|", "\\|")


def _environment(zone: ZoneInfo) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("exporter.status", "templates"),
        autoescape=False,  # noqa: S701 - Markdown, not HTML: every cell goes through md()
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md
    env.filters["code"] = code
    env.filters["bytes"] = format_bytes
    env.filters["local"] = lambda ts: local_time(ts, zone) or "never"
    return env


def render_markdown(doc: Mapping[str, Any], *, origin: str) -> str:
    """Render the report of ``doc`` as Markdown."""
    env = _environment(ZoneInfo(str(doc["timezone"])))
    text = env.get_template("report.md.j2").render(doc=doc, origin=origin)
    return re.sub(r"\n{3,}", "\n\n", text)


def render_html(doc: Mapping[str, Any], *, origin: str) -> str:
    """Render the report as one HTML page: the Markdown's tables, every cell escaped."""
    import html  # noqa: PLC0415

    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>Backup strategy report</title><style>body{font-family:system-ui,sans-serif;"
        "max-width:1100px;margin:1rem auto;padding:0 1rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}</style></head><body>",
    ]
    in_table = False
    in_list = False
    for line in render_markdown(doc, origin=origin).splitlines():
        if line.startswith("|"):
            cells = [_unescape(c.strip()) for c in line.strip("|").split(" | ")]
            if set(line) <= set("|-"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        numbered = re.match(r"^(\d+)\. (.*)$", line)
        if numbered:
            if not in_list:
                out.append("<ol>")
                in_list = True
            out.append(f"<li>{_inline(_unescape(numbered.group(2)))}</li>")
            continue
        if in_list:
            out.append("</ol>")
            in_list = False
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(_unescape(line[2:]))}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(_unescape(line[3:]))}</h2>")
        elif line.strip():
            out.append(f"<p>{_inline(_unescape(line))}</p>")
    if in_table:
        out.append("</table>")
    if in_list:
        out.append("</ol>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, then render the report's only emphasis: ``**bold**``."""
    import html  # noqa: PLC0415

    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def fetch_status(url: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """GET ``<url>/api/status`` from a running exporter (the URL the operator gave)."""
    target = url.rstrip("/") + "/api/status"
    if not target.startswith(("http://", "https://")):
        raise ValueError(f"--url must be http:// or https://, not {url!r}")
    with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310 - checked above
        doc: dict[str, Any] = json.load(resp)
    if doc.get("schema_version") != 1:
        raise ValueError(f"{target}: unsupported status schema {doc.get('schema_version')!r}")
    return doc


async def status_from_store(config: Any, path: Any, *, clock: Any = None) -> dict[str, Any]:
    """Build the status document from the state database alone (no source is polled)."""
    from exporter.core.app import POLLERS, create_app, status_document  # noqa: PLC0415
    from exporter.core.state import StateKeeper  # noqa: PLC0415

    keeper = StateKeeper(path)
    app = create_app(config, clock=clock, keeper=keeper, run_pollers=False)
    try:
        return status_document(app)
    finally:
        await keeper.close()
        for poller in app[POLLERS]:
            await poller.source.close()


def write_report(doc: Mapping[str, Any], *, fmt: str, origin: str) -> str:
    """Render ``doc`` in ``fmt`` (``markdown`` or ``html``)."""
    if fmt == "html":
        return render_html(doc, origin=origin)
    return render_markdown(doc, origin=origin)
