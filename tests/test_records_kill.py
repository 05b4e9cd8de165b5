"""kill -9 of ``backup-exporter record`` in the middle of writing: nothing corrupt, nothing lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml
from test_records import one_asset

from exporter.core.store import StateStore

# Runs the real ``record`` command (config load, store open, one transaction, commit line)
# again and again in one process, so a kill lands anywhere in it: loading, opening the
# database, inside the transaction, between the commit and the line, or between commands.
_RECORDER = textwrap.dedent(
    """
    import sys
    from exporter.core.cli import main
    config, prefix = sys.argv[1], sys.argv[2]
    for n in range(10_000):
        status = main(["record", "restore-test", "--asset", "immich", "--result", "pass",
                       "--note", f"{prefix}-{n}", "--config.file", config])
        if status != 0:
            sys.exit(status)
    """
)


def test_kill_9_of_record_twenty_times_corrupts_nothing_and_loses_no_committed_record(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump({"state_path": "state.db", **one_asset(tmp_path)})
    )
    config = str(tmp_path / "config.yml")
    rng = random.Random(20261201)
    committed: set[int] = set()  # ids of the records whose commit line was printed
    kills = 0
    for batch in range(4):
        # Five recorders at once (they also contend for the write lock), killed one by one.
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RECORDER, config, f"b{batch}p{i}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for i in range(5)
        ]
        for proc in procs:
            assert proc.stdout is not None
            # Let a random number of records commit, then kill at a random instant of the next.
            for _ in range(rng.randint(1, 4)):
                committed.add(record_id(proc.stdout.readline()))
            time.sleep(rng.uniform(0, 0.08))  # the kill's random point inside the next command
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL
            kills += 1
            # Complete lines printed before the kill, not read yet, are committed records too.
            rest = proc.stdout.read()
            proc.stdout.close()
            committed |= {
                record_id(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")
            }
        store = StateStore(tmp_path / "state.db")
        try:
            assert store.integrity_check() == "ok"
            records = store.records()
        finally:
            store.close()
        assert committed <= {r.id for r in records}, "a committed record was lost"
        notes = [r.note for r in records]
        assert len(notes) == len(set(notes)), "a record was written twice"
        assert all(
            (r.activity, r.asset, r.result, r.origin) == ("restore-test", "immich", "pass", "cli")
            for r in records
        )
    assert kills == 20
    assert len(committed) >= 20


def record_id(line: str) -> int:
    """The id in a commit line: ``recorded 17: restore-test immich pass at ...``."""
    assert line.startswith("recorded ") and line.endswith("\n"), line
    return int(line.split()[1].rstrip(":"))
