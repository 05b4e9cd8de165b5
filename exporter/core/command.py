"""Run a local (or, through a prefix such as ``ssh``, remote) command without a shell.

Used by the ``zfs`` and ``smartctl`` kinds. The command runs in its own process group
so that a timeout (or a cancelled poll) kills it *and* its children (``ssh``, a wrapper
script's ``sleep``) and reaps it before returning: no process outlives its poll. The
locale is forced to ``C`` so that the text output (dates in ``zpool status``) has the
documented English format; ``ssh`` forwards ``LC_*`` with Debian's default
``SendEnv``, so this usually holds for remote hosts too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from exporter.sources.base import FetchError

#: Exit statuses a shell (remote side of ``ssh``) uses for "not executable" / "not found".
_NOT_EXECUTABLE, _NOT_FOUND = 126, 127
#: ``ssh`` exits with 255 when the connection itself failed.
_SSH_FAILED = 255
_PERMISSION_HINTS = ("permission denied", "operation not permitted", "must be root")


@dataclass(frozen=True)
class CommandResult:
    """What a finished command printed (decoded as UTF-8, invalid bytes replaced)."""

    returncode: int
    stdout: str
    stderr: str


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # start_new_session=True made the child a group leader: its pid is the group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def run_command(
    argv: Sequence[str],
    *,
    # Own timeout (not just the caller's asyncio.timeout): it names the command and
    # reports reason "timeout"; cancellation by an outer timeout is handled as well.
    timeout: float,  # noqa: ASYNC109
    prefix: Sequence[str] = (),
    ok_codes: Collection[int] | None = (0,),
) -> CommandResult:
    """Run ``prefix + argv`` and return its output.

    ``ok_codes`` lists the exit statuses that are not errors (``None``: any status, for
    tools such as ``smartctl`` whose status is a bitmask next to valid output). Raises
    :class:`FetchError`: ``timeout`` after ``timeout`` seconds (the process group is
    killed and reaped), ``config`` when the program is missing or not executable,
    ``auth``/``connection`` when ``ssh`` fails, ``permission`` when the command says
    so, ``connection`` for any other unexpected exit status.
    """
    full = [*prefix, *argv]
    if not full:
        raise FetchError("config", "empty command")
    program = full[0]
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        proc = await asyncio.create_subprocess_exec(
            *full,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise FetchError("config", f"{program}: command not found") from None
    except PermissionError:
        raise FetchError("config", f"{program}: not executable") from None
    except OSError as exc:
        raise FetchError("config", f"{program}: cannot run: {exc.strerror or exc}") from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        raise FetchError(
            "timeout", f"{_one_line(' '.join(argv), 120)} did not finish within {timeout:g}s"
        ) from None
    except BaseException:
        # Cancelled by the poller's own timeout: still leave no process behind.
        _kill_group(proc)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    rc = proc.returncode if proc.returncode is not None else -1
    result = CommandResult(
        rc, out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace")
    )
    if ok_codes is not None and rc not in ok_codes:
        raise _exit_error(full, prefix, result)
    return result


def _exit_error(full: Sequence[str], prefix: Sequence[str], result: CommandResult) -> FetchError:
    what = " ".join(full[len(prefix) : len(prefix) + 2])
    detail = _one_line(result.stderr) or _one_line(result.stdout) or "no output"
    rc = result.returncode
    lowered = detail.lower()
    if prefix and os.path.basename(prefix[0]) == "ssh" and rc == _SSH_FAILED:
        if "permission denied" in lowered or "host key verification failed" in lowered:
            return FetchError("auth", f"ssh failed: {detail}")
        return FetchError("connection", f"ssh failed: {detail}")
    if rc in (_NOT_EXECUTABLE, _NOT_FOUND):
        return FetchError("config", f"{what}: not found or not executable (exit {rc}): {detail}")
    if any(hint in lowered for hint in _PERMISSION_HINTS):
        return FetchError("permission", f"{what} exited with {rc}: {detail}")
    if rc < 0:
        return FetchError("connection", f"{what} killed by signal {-rc}: {detail}")
    return FetchError("connection", f"{what} exited with {rc}: {detail}")
