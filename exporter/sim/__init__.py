"""The simulated homelab: fake PVE, TrueNAS, Healthchecks and smartctl, and the demo stack.

Only the demo (``backup-exporter demo``, installed with the ``[demo]`` extra) and the tests
import this package; the runtime never does.
"""
