"""Write the simulated homelab's living report (``make report-example``: docs/examples/).

The homelab is started, every source is polled once, the results land in its state database,
and ``backup-exporter report`` renders from that database, as it would for a real deployment.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from exporter.core.app import create_app
from exporter.core.clock import FakeClock
from exporter.core.state import StateKeeper
from exporter.sim.homelab import start_homelab
from exporter.status import report


async def generate(workdir: Path, *, fmt: str = "markdown") -> str:
    """Start the homelab in ``workdir``, poll it once and return its report."""
    clock = FakeClock(start=time.time())
    lab = await start_homelab(workdir, clock=clock)
    state = lab.config.state_path or workdir / "state.db"
    keeper = StateKeeper(state)
    pollers = lab.pollers(keeper)
    create_app(lab.config, clock=clock, pollers=pollers, keeper=keeper, run_pollers=False)
    try:
        await asyncio.gather(*(p.poll_once() for p in pollers))
        await keeper.close()
        doc = await report.status_from_store(lab.config, state, clock=clock)
    finally:
        for poller in pollers:
            await poller.source.close()
        await lab.stop()
    return report.write_report(doc, fmt=fmt, origin="the simulated homelab's state database")


def main(argv: list[str]) -> int:
    """``python -m exporter.sim.example_report OUTPUT.md``."""
    if len(argv) != 1:
        print("usage: python -m exporter.sim.example_report OUTPUT.md", file=sys.stderr)
        return 2
    out = Path(argv[0])
    with tempfile.TemporaryDirectory(prefix="report-example-") as tmp:
        text = asyncio.run(generate(Path(tmp)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
