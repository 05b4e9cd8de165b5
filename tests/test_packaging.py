"""What ``pip install backup-exporter`` brings: the runtime only, never the simulator's extras.

Two checks. Every module outside ``exporter.sim`` is imported in a subprocess of the test venv
(which has moto, flask, pytest, … installed) and none of those gets loaded. Then the project is
``pip install``-ed, not editable, into a fresh venv: that venv lacks the demo and test extras,
``backup-exporter demo`` there says in one line what to install and exits 2, and
``backup-exporter once`` works for a config of every kind against backends the test starts on
127.0.0.1 (promtool accepts each exposition).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from moto.server import ThreadedMotoServer
from test_cli import PROMTOOL, samples
from test_s3 import seed_client

import exporter
from exporter.sim.healthchecks import homelab as healthchecks_homelab
from exporter.sim.healthchecks import start_fake_healthchecks
from exporter.sim.pve import homelab as pve_homelab
from exporter.sim.pve import start_fake_pve
from exporter.sim.truenas import homelab as truenas_homelab
from exporter.sim.truenas import start_fake_truenas
from exporter.sources import KIND_NAMES

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
# Distributions only the demo or the tests need: a runtime install must not have them.
EXTRAS_ONLY = ("moto", "flask", "flask-cors", "pytest", "cryptography", "oncalendar")
# Top-level modules the runtime must never load (the kinds' SDKs are fine: they need them).
FORBIDDEN_MODULES = ("moto", "flask", "flask_cors", "cryptography", "oncalendar", "pytest")

WALK = """
import importlib, json, pkgutil, sys
import exporter

def walk(path, prefix):
    for info in pkgutil.iter_modules(path, prefix):
        # __main__ runs the command line; it imports nothing but exporter.core.cli.
        if info.name in ("exporter.sim", "exporter.__main__"):
            continue
        module = importlib.import_module(info.name)
        yield info.name
        if info.ispkg:
            yield from walk(module.__path__, info.name + ".")

print(json.dumps({"imported": list(walk(exporter.__path__, "exporter.")),
                  "loaded": sorted(sys.modules)}))
"""


def test_the_runtime_never_imports_the_simulator_or_the_extras() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WALK], capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    imported = set(doc["imported"])
    assert {f"exporter.sources.{kind}.source" for kind in KIND_NAMES} <= imported
    assert {"exporter.core.cli", "exporter.core.app", "exporter.storage.models"} <= imported
    bad = [
        name
        for name in doc["loaded"]
        if name == "exporter.sim"
        or name.startswith("exporter.sim.")
        or name.partition(".")[0] in FORBIDDEN_MODULES
    ]
    assert bad == []


# ------------------------------------------------------------------------------ a clean venv


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Return the bin folder of a fresh venv with ``pip install <copy of the repo>``."""
    base = tmp_path_factory.mktemp("packaging")
    # A copy: setuptools would leave build/ in the checkout, whose stale files go into the
    # next wheel.
    src = base / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "*.egg-info", "build", "dist", "__pycache__", ".*_cache",
            ".hypothesis", "demo-data",
        ),
    )  # fmt: skip
    env = _env()
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, env=env)
    python = base / "venv" / "bin" / "python"
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(src)],
        capture_output=True, text=True, check=False, env=env, timeout=900,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    yield python.parent
    shutil.rmtree(base)  # a venv is large; pytest would keep the last three runs'


def _env(**extra: str) -> dict[str, str]:
    """Return this environment without anything that would leak the test venv into a child."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.lower().endswith("_proxy")
    }
    env.update(extra)
    return env


def test_a_runtime_install_has_no_demo_or_test_extras(venv: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(venv / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, check=True, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(proc.stdout)}
    assert "backup-exporter" in installed
    assert {"aiohttp", "b2sdk", "boto3", "proxmoxer", "prometheus-client"} <= installed
    assert sorted(installed & set(EXTRAS_ONLY)) == []
    where = subprocess.run(
        [str(venv / "python"), "-c", "import exporter; print(exporter.__file__)"],
        capture_output=True, text=True, check=True, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    assert where.stdout.startswith(str(venv.parent)), "not the installed copy"


def test_a_runtime_install_ships_the_page_and_report_templates(venv: Path, tmp_path: Path) -> None:
    code = (
        "from zoneinfo import ZoneInfo\n"
        "from exporter.status.page import environment\n"
        "from exporter.status.report import _environment\n"
        "print(environment().get_template('status.html.j2').filename)\n"
        "print(_environment(ZoneInfo('UTC')).get_template('report.md.j2').filename)\n"
    )
    proc = subprocess.run(
        [str(venv / "python"), "-c", code],
        capture_output=True, text=True, check=False, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert all(line.startswith(str(venv.parent)) for line in proc.stdout.splitlines())


def test_demo_without_the_extra_says_what_to_install(venv: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(venv / "backup-exporter"), "demo", "--no-stack", "--workdir", str(tmp_path / "d")],
        capture_output=True, text=True, check=False, env=_env(), cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("backup-exporter demo needs the demo extra: ")
    assert "pip install 'backup-exporter[demo]' (missing: " in lines[0]
    assert not (tmp_path / "d").exists()


# Placeholders of the right shape for the secrets deploy/config.example.yml reads from ${ENV}.
EXAMPLE_SECRETS = {
    "PVE_TOKEN_SECRET": "00000000-0000-0000-0000-000000000000",
    "TRUENAS_API_KEY": "1-placeholder",
    "HC_API_KEY": "0123456789abcdef0123456789abcdef",
    "B2_KEY_ID": "placeholder",
    "B2_APPLICATION_KEY": "placeholder",
    "STORJ_ACCESS_KEY_ID": "placeholder",
    "STORJ_SECRET_ACCESS_KEY": "placeholder",
}


def test_version_comes_from_one_place_and_the_command_prints_it(venv: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(venv / "backup-exporter"), "--version"],
        capture_output=True, text=True, check=True, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout == f"backup-exporter {exporter.__version__}\n"
    # The installed distribution's metadata is the same single value (pyproject: dynamic).
    meta = subprocess.run(
        [str(venv / "python"), "-c",
         "import importlib.metadata as m; print(m.version('backup-exporter'))"],
        capture_output=True, text=True, check=True, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    assert meta.stdout.strip() == exporter.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "exporter.__version__" }' in pyproject


def test_check_config_on_the_example_config_in_a_runtime_install(
    venv: Path, tmp_path: Path
) -> None:
    example = str(ROOT / "deploy" / "config.example.yml")
    for args in ([example], ["--config.file", example]):
        proc = subprocess.run(
            [str(venv / "backup-exporter"), "check-config", *args],
            capture_output=True, text=True, check=False, env=_env(**EXAMPLE_SECRETS),
            cwd=tmp_path, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"{example}: OK, 7 sources, 2 jobs\n"
    # Without the secrets it names each missing variable and exits 2.
    proc = subprocess.run(
        [str(venv / "backup-exporter"), "check-config", "--config.file", example],
        capture_output=True, text=True, check=False, env=_env(), cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "environment variable PVE_TOKEN_SECRET is not set" in proc.stderr
    # Two different files at once is a mistake, not a guess.
    proc = subprocess.run(
        [str(venv / "backup-exporter"), "check-config", example, "--config.file", "other.yml"],
        capture_output=True, text=True, check=False, env=_env(), cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "give the config file once" in proc.stderr


def test_the_web_config_example_is_valid_in_a_runtime_install(venv: Path, tmp_path: Path) -> None:
    example = ROOT / "deploy" / "web-config.example.yml"
    # Its certificate files are placeholders: a copy without TLS checks the users and headers.
    doc = yaml.safe_load(example.read_text())
    assert doc["tls_server_config"]["client_auth_type"] == "NoClientCert"
    doc.pop("tls_server_config")
    copy = tmp_path / "web.yml"
    copy.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [str(venv / "backup-exporter"), "check-config", "--config.file",
         str(ROOT / "deploy" / "config.example.yml"), "--web.config.file", str(copy)],
        capture_output=True, text=True, check=False, env=_env(**EXAMPLE_SECRETS), cwd=tmp_path,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"{copy}: OK, no TLS; basic auth for 1 users" in proc.stdout


# ------------------------------------------------------------------------------ once, every kind

Backend = Callable[[Path], contextlib.AbstractAsyncContextManager[dict[str, Any]]]


def _secret(tmp: Path, name: str, value: str) -> str:
    path = tmp / name
    path.write_text(value + "\n")
    return str(path)


@contextlib.asynccontextmanager
async def _proxmox(tmp: Path) -> AsyncIterator[dict[str, Any]]:
    fake = await start_fake_pve(pve_homelab(time.time))
    try:
        yield {
            "url": fake.url,
            "token_id": fake.token_id,
            "token_secret_file": _secret(tmp, "pve.secret", fake.token_secret),
            "ca_file": fake.ca_file,
        }
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def _truenas(tmp: Path) -> AsyncIterator[dict[str, Any]]:
    fake = await start_fake_truenas(truenas_homelab(time.time))
    try:
        yield {
            "url": fake.url,
            "username": fake.username,
            "api_key_file": _secret(tmp, "truenas.key", fake.api_key),
            "ca_file": fake.ca_file,
        }
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def _healthchecks(tmp: Path) -> AsyncIterator[dict[str, Any]]:
    fake = await start_fake_healthchecks(healthchecks_homelab(time.time), tls=True)
    try:
        yield {
            "url": fake.url,
            "api_key_file": _secret(tmp, "hc.key", fake.readonly_key),
            "ca_file": fake.ca_file,
        }
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def _s3(tmp: Path) -> AsyncIterator[dict[str, Any]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # moto keeps its buckets per process, shared with test_s3's servers: a name of our own,
    # removed again.
    bucket, keys = "packaging-check", [f"restic/data-{i}" for i in range(3)]
    try:
        client = seed_client(server.get_host_and_port()[1])
        client.create_bucket(Bucket=bucket)
        for i, key in enumerate(keys):
            client.put_object(Bucket=bucket, Key=key, Body=b"x" * (100 + i))
        yield {
            "endpoint": f"http://127.0.0.1:{server.get_host_and_port()[1]}",
            "access_key_id": "seed",
            "secret_access_key_file": _secret(tmp, "s3.key", "seed"),
            "buckets": {bucket: {"prefixes": ["restic/"]}},
        }
        for key in keys:
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def _b2(tmp: Path) -> AsyncIterator[dict[str, Any]]:
    # No HTTP fake and no URL setting: _env() sends every request off 127.0.0.1 to a port that
    # refuses connections, so the source is down; the exposition must still be valid.
    yield {
        "key_id": "0012345678abcdef0000000001",
        "application_key_file": _secret(tmp, "b2.key", "K001notarealkeynotarealkeynotr"),
        "buckets": {"homelab-b2": {"prefixes": ["immich/"]}},
    }


@contextlib.asynccontextmanager
async def _files(tmp: Path) -> AsyncIterator[dict[str, Any]]:
    folder = tmp / "ha-backup"
    folder.mkdir()
    now = time.time()
    for day in range(3):
        path = folder / f"ha_{day}.tar"
        path.write_bytes(b"x" * 1024)
        os.utime(path, (now - day * 86400, now - day * 86400))
    yield {"path": str(folder), "glob": "*.tar"}


@contextlib.asynccontextmanager
async def _smartctl(tmp: Path) -> AsyncIterator[dict[str, Any]]:
    # The simulator's smartctl through the prefix, as a real one runs through ssh.
    yield {"command_prefix": [sys.executable, "-m", "exporter.sim.smartctl"]}


@contextlib.asynccontextmanager
async def _zfs(tmp: Path) -> AsyncIterator[dict[str, Any]]:
    # tests/fixtures/bin/{zfs,zpool} come first on PATH; they answer from FAKE_TOOL_CONFIG.
    answers = {
        "zfs_list": {"file": str(FIXTURES / "zfs" / "zfs_list_hp.txt")},
        "zpool_status": {"file": str(FIXTURES / "zfs" / "zpool_status_two_pools.txt")},
    }
    (tmp / "fake-tools.json").write_text(json.dumps(answers))
    yield {"json": False}


BACKENDS: dict[str, Backend] = {
    "b2": _b2,
    "files": _files,
    "healthchecks": _healthchecks,
    "proxmox": _proxmox,
    "s3": _s3,
    "smartctl": _smartctl,
    "truenas": _truenas,
    "zfs": _zfs,
}
# A family that only a working source of the kind renders.
EVIDENCE = {
    "files": "backup_files",
    "healthchecks": "backup_healthchecks_check_up",
    "proxmox": "backup_pve_archives",
    "s3": "backup_bucket_objects",
    "smartctl": "backup_smart_selftest_last_passed",
    "truenas": "backup_truenas_info",
    "zfs": "backup_zfs_pool_healthy",
}


@pytest.fixture
def refused_port() -> Iterator[int]:
    """Return a 127.0.0.1 port that is bound but never listens: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def test_every_kind_has_a_backend() -> None:
    assert set(BACKENDS) == set(KIND_NAMES)


@pytest.mark.parametrize("kind", sorted(BACKENDS))
async def test_once_works_for_every_kind_in_a_runtime_install(
    venv: Path, tmp_path: Path, refused_port: int, kind: str
) -> None:
    async with BACKENDS[kind](tmp_path) as settings:
        config = {"sources": {"src": {"kind": kind, "timeout": "20s", **settings}}}
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(config))
        proxy = f"http://127.0.0.1:{refused_port}"
        env = _env(
            PATH=f"{FIXTURES / 'bin'}{os.pathsep}{os.environ['PATH']}",
            FAKE_PYTHON=sys.executable,
            FAKE_TOOL_CONFIG=str(tmp_path / "fake-tools.json"),
            HTTP_PROXY=proxy,
            HTTPS_PROXY=proxy,
            NO_PROXY="127.0.0.1,localhost",
        )
        proc = await asyncio.create_subprocess_exec(
            str(venv / "backup-exporter"), "once", f"--config.file={path}",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
        )  # fmt: skip
        out_b, err_b = await asyncio.wait_for(proc.communicate(), timeout=120)
    out, err = out_b.decode(), err_b.decode()
    up = samples(out)[("backup_source_up", frozenset({("source", "src"), ("kind", kind)}))]
    if kind == "b2":
        assert (proc.returncode, up) == (1, 0), err
        assert 'backup_source_error_info{kind="b2",reason="connection",source="src"} 1.0' in out
    else:
        assert (proc.returncode, up) == (0, 1), err
        assert any(name == EVIDENCE[kind] for name, _ in samples(out)), out
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=out, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == ""
