"""The exporter dashboard: the exporter's own health (sources, polls, API calls, errors)."""

from __future__ import annotations

from typing import Any

from gen.common import (
    UP_DOWN,
    Builder,
    Col,
    age,
    sel,
)


def build() -> dict[str, Any]:
    """The exporter's own health: sources up, poll durations, API calls, errors."""
    b = Builder(
        uid="backup-exporter",
        title="Backups / Exporter",
        description="Is the exporter polling every source? Poll durations, API calls and errors.",
    )
    b.row("Source status")
    b.table(
        "Sources",
        [
            Col(
                "Up", sel("backup_source_up"), mapping=UP_DOWN, colored=True, by=("source", "kind")
            ),
            Col("Data age", age("backup_source_last_success_timestamp_seconds"), unit="s"),
            Col("Poll duration", sel("backup_source_poll_duration_seconds"), unit="s"),
            # The reason while down, "none" while up: the column is never empty.
            Col(
                "Error",
                f"{sel('backup_source_error_info')}"
                f" or on(source) label_replace({sel('backup_source_up')} == 1,"
                ' "reason", "none", "", "")',
                by=("source", "reason"),
                hidden=True,
            ),
        ],
        description="Data age is the time since the last successful poll.",
        key=["source"],
        labels=["kind", "reason"],
        sort_by="Data age",
        height=8,
    )
    b.states(
        "Source up",
        sel("backup_source_up"),
        "{{source}} ({{kind}})",
        description="Polls succeeding per source; TrueNAS may be powered off overnight.",
        mapping=UP_DOWN,
        span=24,
        height=6,
    )
    b.row("Polling")
    b.series(
        "Data age",
        [(age("backup_source_last_success_timestamp_seconds"), "{{source}}")],
        description="Time since each source's last successful poll (saw-tooth at its interval).",
        unit="s",
    )
    b.series(
        "Poll duration",
        [(sel("backup_source_poll_duration_seconds"), "{{source}}")],
        description="How long each source's last poll took; compare with its timeout.",
        unit="s",
    )
    b.series(
        "API requests",
        [
            (
                f"sum by (source, class) (rate({sel('backup_source_api_requests_total')}"
                "[$__rate_interval]))",
                "{{source}} {{class}}",
            )
        ],
        description="API calls per second by source and billing class (B2 class A/B/C).",
        unit="reqps",
    )
    b.series(
        "Sources down by reason",
        # "none" = 0 while every source is up, so the panel shows a flat line, not "no data".
        [
            (
                f"count by (reason) ({sel('backup_source_error_info')}) or on()"
                f' label_replace(0 * count({sel("backup_source_up")}), "reason", "none", "", "")',
                "{{reason}}",
            )
        ],
        description="Why sources fail: timeout, connection, auth, permission, tls, http, parse.",
        unit="none",
    )
    return b.build()
