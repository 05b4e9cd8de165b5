"""A ``command_prefix`` stand-in for ``ssh nas``: runs the command, or misbehaves on purpose.

``python faulty_cmd.py CONTROL -- ARGV...``: CONTROL is a JSON file ``{"mode": ..., "pids":
path}``. ``ok`` answers ``zfs``/``zpool``/``smartctl`` from the captures in
tests/fixtures/ (anything else is executed); ``hang`` sleeps; ``garbage`` prints junk and
exits 2; ``malformed`` prints half a JSON document; ``wrong-shape`` prints valid JSON of
another shape; ``ignore-term`` ignores SIGTERM and sleeps. Every pid is appended to ``pids``
so the test can check that nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ZFS = FIXTURES / "zfs"
#: A real-shaped NVMe answer (tests/fixtures/smartctl/README.md says where it comes from).
SMARTCTL = FIXTURES / "smartctl" / "nvme_selftest_log_holes_smartctl7.4.json"


def main() -> int:
    control = json.loads(Path(sys.argv[1]).read_text())
    argv = sys.argv[sys.argv.index("--") + 1 :]
    with open(control["pids"], "a") as pids:
        pids.write(f"{os.getpid()}\n")
    mode = control["mode"]
    if mode == "hang":
        time.sleep(3600)
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(3600)
    if mode == "garbage":
        sys.stdout.write("\x00\xff garbage \x1b[31m<html>\n")
        sys.stderr.write("bash: line 1: segfault\n")
        return 2
    if mode == "malformed":
        sys.stdout.write('{"output_version": {"command": "x"}, "pools": {"tank": {"na')
        return 0
    if mode == "wrong-shape":
        sys.stdout.write(json.dumps({"surprise": [1, 2, 3], "pools": "none", "devices": 7}))
        return 0
    if argv[:2] == ["zfs", "list"]:
        sys.stdout.write((ZFS / "zfs_list_j_int.json").read_text())
        return 0
    if argv[:2] == ["zpool", "status"]:
        sys.stdout.write((ZFS / "zpool_status_jp.json").read_text())
        return 0
    if argv[:1] == ["smartctl"]:
        text = SMARTCTL.read_text()
        sys.stdout.write(text)
        return int(json.loads(text)["smartctl"]["exit_status"])
    os.execvp(argv[0], argv)
    return 127  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
