"""The floor server of the benches: a bare prometheus_client server over fixed families.

``python bench/scrape_floor.py EXPOSITION PORT`` parses ``EXPOSITION`` (a text exposition)
once and serves it at ``/metrics`` with aiohttp and prometheus_client's
``make_aiohttp_handler``, so every scrape runs ``generate_latest`` over the same families.
It imports nothing else (its memory is the floor of ``bench/idle_rss.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.parser import text_string_to_metric_families


class Static:
    """A collector returning the same families on every scrape."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families

    def describe(self) -> list[Any]:
        return []


def main(exposition: Path, port: int) -> None:
    families = list(text_string_to_metric_families(exposition.read_text()))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Static(families))  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
