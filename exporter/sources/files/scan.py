"""The file-scan child: walks one glob and streams what it finds as JSON lines on stdout.

``kind: files`` runs this file as its own process (``python …/scan.py '<request>'``), never in
a thread of the exporter: a ``stat()`` on a hung NFS or SMB mount blocks in the kernel and
cannot be interrupted from Python, so a thread stuck in it would hold the poll and stop the
process from exiting. A child process can be abandoned: at the poll's timeout it is sent
SIGKILL (``TASK_KILLABLE`` waits of a hard NFS mount honour it) and the poll fails with
``timeout`` while ``/metrics`` keeps answering.

It imports only the standard library (it starts in a few tens of milliseconds) and is run
by path, not as ``-m exporter…``, so it loads none of the exporter. The request is one JSON
object ``{"path": …, "glob": …}`` as the only argument. Every output line is a JSON array:

* ``["f", name, size, mtime]`` for each regular file matching the glob;
* ``["e", reason, message]`` for an error that ends the scan (``config``: not a readable
  directory, ``permission``, ``connection``: any other OS error);
* ``["done", entries]`` last, when the walk completed (the parent treats its absence as a
  failed scan, whatever was streamed before).

A file removed while the walk runs (a prune) is skipped, as ``ls`` would.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path


def _emit(*item: object) -> None:
    sys.stdout.write(json.dumps(item, separators=(",", ":")) + "\n")


def walk(path: Path, pattern: str) -> int:
    """Emit one ``f`` line per regular file matching ``pattern`` under ``path``."""
    if not path.is_dir():
        _emit("e", "config", f"{path} is not a readable directory")
        return 0
    entries = 0
    try:
        # pathlib's glob swallows PermissionError (CPython Lib/pathlib.py, the selectors'
        # ``except PermissionError``) and would report an unreadable directory as empty:
        # open it first so that EACCES is an error, never "no backups".
        with os.scandir(path):
            pass
        for entry in path.glob(pattern):
            entries += 1
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue  # removed by a prune while we walked
            if not stat.S_ISREG(st.st_mode):
                continue
            _emit("f", entry.name, st.st_size, st.st_mtime)
    except PermissionError as exc:
        _emit("e", "permission", f"cannot read {exc.filename or path}")
        return entries
    except OSError as exc:
        _emit("e", "connection", f"{path}: {exc.strerror or exc}")
        return entries
    _emit("done", entries)
    return entries


def main(argv: list[str]) -> int:
    """Run one scan; the exit status is 0 unless the request was malformed."""
    try:
        request = json.loads(argv[1])
        path, pattern = Path(request["path"]), str(request["glob"])
    except (IndexError, ValueError, KeyError, TypeError):
        print('usage: scan.py \'{"path": DIR, "glob": PATTERN}\'', file=sys.stderr)
        return 2
    walk(path, pattern)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:  # the exporter stopped reading (timeout): nothing to say
        os._exit(1)
