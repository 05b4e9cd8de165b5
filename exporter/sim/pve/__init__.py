"""A fake Proxmox VE API over HTTPS, with the real shapes and quirks, for tests and the demo.

It serves the endpoints :mod:`exporter.sources.proxmox.api` reads, shaped as docs/backends.md §1
describes them: every answer wrapped in ``{"data": ...}``, booleans as ``0``/``1``,
``prune-backups`` values as strings, backup volumes sorted alphabetically by volid, ``total``
beside ``data`` on task lists, a multi-guest vzdump task's ``id`` empty, and, without the
backup privileges, an empty ``content=backup`` list with HTTP 200 (the permission trap).

The data is a mutable :class:`PVEScenario` built from a clock (``now`` callable). It simulates
the enabled jobs whose schedule is a plain daily ``HH:MM`` lazily: before every request, each
scheduled run between the last simulated instant and ``now()`` happens (an archive per covered
guest and a vzdump task, or a failed task while :meth:`PVEScenario.break_backups` is in
effect), then ``keep-last`` pruning. So advancing the clock advances the homelab's days.

Its own schedule and coverage rules are written independently of the exporter's so the tests
compare two implementations rather than one with itself.

It also serves the read-only endpoints the peer tool prometheus-pve-exporter scrapes
(``cluster/status``, ``cluster/config/qdevice``, ``nodes/{n}/qemu``, ``nodes/{n}/lxc``, their
``config``, ``nodes/{n}/replication`` and ``nodes/{n}/subscription``), so
``bench/scrape_latency.py`` can run it against the same fake.

The package: :mod:`~exporter.sim.pve.scenario` holds the state and the simulation (and the
``homelab`` builder), :mod:`~exporter.sim.pve.handlers` the HTTP handlers of the endpoints the
exporter reads, :mod:`~exporter.sim.pve.peer` those only the peer tool reads, and
:mod:`~exporter.sim.pve.server` the aiohttp application and the running :class:`FakePVE`.
"""

from exporter.sim.pve.scenario import (
    FakeArchive,
    FakeGuest,
    FakeJob,
    FakeStorage,
    FakeTask,
    PVEScenario,
    homelab,
)
from exporter.sim.pve.server import FakePVE, start_fake_pve

__all__ = [
    "FakeArchive",
    "FakeGuest",
    "FakeJob",
    "FakePVE",
    "FakeStorage",
    "FakeTask",
    "PVEScenario",
    "homelab",
    "start_fake_pve",
]
