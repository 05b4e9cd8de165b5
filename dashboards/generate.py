"""Generate the provisionable Grafana dashboards of backup-exporter with grafana-foundation-sdk.

Run ``python dashboards/generate.py`` (``make dashboards``) after editing the generator, the
package ``dashboards/gen/`` next to this script (``common``: the shared panel helpers; one module
per dashboard); it rewrites ``dashboards/*.json`` (``tests/test_dashboards.py`` fails when the
committed JSON differs from what this produces). Pin the SDK with its full epoch version
(``grafana-foundation-sdk==1769699379!11.6.0``, Grafana 11.6 schema): an unpinned install
resolves to a 10.1 build.

:func:`all_queries` lists every PromQL expression with its dashboard and panel, for tests that
run them against a real Prometheus (:func:`resolve_variables` fills in the template variables).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# The generator package sits next to this script (tests load the script by path, so this
# directory is not necessarily on the path yet).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen import exporter, offsite, overview, proxmox, storage

DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "overview.json": overview.build,
    "proxmox.json": proxmox.build,
    "storage.json": storage.build,
    "offsite.json": offsite.build,
    "exporter.json": exporter.build,
}
OUT_DIR = Path(__file__).resolve().parent


def render(data: dict[str, Any]) -> str:
    """Stable JSON text of a dashboard (sorted keys, two-space indent, final newline)."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def build_all() -> dict[str, dict[str, Any]]:
    """Every dashboard by file name."""
    return {name: make() for name, make in DASHBOARDS.items()}


def write(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write every dashboard into ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in build_all().items():
        path = out_dir / name
        path.write_text(render(data), encoding="utf-8")
        paths.append(path)
    return paths


def _panels(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in data.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def all_queries() -> list[tuple[str, str, str]]:
    """Every panel query as ``(dashboard uid, panel title, expr)``, in dashboard order."""
    out = []
    for data in build_all().values():
        for panel in _panels(data):
            for target in panel.get("targets", []):
                out.append((data["uid"], panel["title"], target["expr"]))
    return out


def resolve_variables(expr: str, *, source: str = ".*", rate_interval: str = "2m") -> str:
    """Substitute the dashboard variables Grafana would (for running a query directly)."""
    expr = expr.replace("$__rate_interval", rate_interval)
    return re.sub(r"\$source\b|\$\{source\}", source, expr)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dashboards (default: next to this file)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
