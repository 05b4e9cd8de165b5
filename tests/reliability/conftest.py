"""The reliability suite: Hypothesis profiles and the fault matrix's table in the summary."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from reliability.matrix_table import render

# CI: a bounded budget; `make fuzz` runs HYPOTHESIS_PROFILE=fuzz.
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    table = render()
    if table:
        terminalreporter.section("fault matrix (kind x fault: reason held, or why n/a)")
        terminalreporter.write_line(table)
