"""``kind: smartctl``: disk health and self-test results from ``smartctl --json``."""

KIND = "smartctl"
