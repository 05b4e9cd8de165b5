"""Secret hygiene: a canary in every credential field never shows up anywhere.

The credential fields are discovered from the kinds' config models (every ``Secret`` field of
every registered kind), so a kind or field added later joins by itself; the table is checked
to contain the five known today. Two credentials come from other parts of the project and join
when their code exists on the branch (no skip: when the code is there, it is tested, and
:func:`test_credential_table` says which were found):

* the web config password (``--web.config.file`` basic auth, ``exporter.web``);
* the records API token (``records_api.token_file`` in the config).

Each canary goes through the simulated homelab as the real credential (the fakes are told to
accept it), then the fakes are told to refuse it, so both the working and the failing paths
run. It must not appear in: the logs at DEBUG level (every logger), the exposition, the status
page and any ``/api/*`` page, error messages and ``check-config`` output (also for a config
whose secret field is malformed), the traceback of a crashing poll, and the state database's
bytes (with its WAL).
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import importlib.util
import io
import logging
import secrets
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import yaml
from aiohttp.test_utils import TestClient

from exporter.core import cli
from exporter.core.app import create_app
from exporter.core.clock import FakeClock
from exporter.core.config import Config, ConfigError, Secret, parse_config
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.sim.homelab import start_homelab
from exporter.sources import KIND_NAMES
from tests.conftest import memory_source

EXPECTED = {
    ("proxmox", "token_secret"),
    ("truenas", "api_key"),
    ("b2", "application_key"),
    ("s3", "secret_access_key"),
    ("healthchecks", "api_key"),
}
WEB = importlib.util.find_spec("exporter.web") is not None
RECORDS = (
    "records_api" in {f.name for f in dataclasses.fields(Config)}
    if dataclasses.is_dataclass(Config)
    else "records_api" in getattr(Config, "model_fields", {})
)


def secret_fields() -> set[tuple[str, str]]:
    """Every (kind, field) whose config type is ``Secret``."""
    found = set()
    for kind in KIND_NAMES:
        module = importlib.import_module(f"exporter.sources.{kind}.config")
        spec = module.SPEC
        hints = get_type_hints(spec.config, include_extras=True)
        for name, hint in hints.items():
            if (
                hint is Secret
                or Secret in getattr(hint, "__args__", ())
                or (getattr(hint, "__origin__", None) is not None and Secret in hint.__args__)
            ):
                found.add((kind, name))
    return found


def canary(label: str, length: int = 32) -> str:
    """A unique credential-looking string of ``length`` characters (hex after the label)."""
    head = f"CANARY{label}"
    return head + secrets.token_hex(length)[: length - len(head)]


def forms(value: str) -> list[str]:
    """The canary and the encodings a leak could take (Basic auth, URL quoting)."""
    return [value, base64.b64encode(value.encode()).decode(), value[::-1]]


def assert_clean(where: str, text: str | bytes, values: list[str]) -> None:
    blob = text if isinstance(text, bytes) else text.encode(errors="replace")
    for value in values:
        for form in forms(value):
            assert form.encode() not in blob, f"a credential leaked into {where}"


def test_credential_table() -> None:
    fields = secret_fields()
    assert fields >= EXPECTED, f"credential fields not found: {EXPECTED - fields}"
    print(  # the report reads this: which optional credentials were covered
        f"credential fields: {sorted(fields)}; web config password: "
        f"{'tested' if WEB else 'absent on this branch'}; records API token: "
        f"{'tested' if RECORDS else 'absent on this branch'}"
    )


async def test_canaries_never_leak(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    aiohttp_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock(start=1_780_000_000.0)
    lab = await start_homelab(tmp_path / "lab", clock=clock, healthy=True)
    values: list[str] = []
    try:
        # The lengths the kinds check: a Healthchecks key has 32 characters, a TrueNAS key is
        # <id>-<64 characters>.
        pve, nas, hc = canary("pve"), "1-" + canary("nas", 64), canary("hc", 32)
        s3 = canary("s3")
        lab.pve.scenario.token_secret = pve
        lab.truenas.scenario.api_key = nas
        lab.healthchecks.scenario.readonly_key = hc
        # b2sdk's simulator makes its own (short) keys: B2 gets the canary and is refused,
        # which runs its failing path (b2_error redacts the key) in both rounds.
        b2 = canary("b2")
        values = [pve, nas, hc, s3, b2]
        secrets_dir = lab.workdir / "secrets"
        files = {"pve.token": pve, "truenas.key": nas, "healthchecks.key": hc,
                 "storj.key": s3, "b2.key": b2}  # fmt: skip
        for name, value in files.items():
            (secrets_dir / name).write_text(value + "\n")
        doc = yaml.safe_load(lab.config_path.read_text())
        doc["state_path"] = str(tmp_path / "state.db")
        if RECORDS:  # the records API token (B), from its file
            token = canary("records")
            values.append(token)
            (secrets_dir / "records.token").write_text(token + "\n")
            doc["records_api"] = {"token_file": str(secrets_dir / "records.token")}
        lab.config_path.write_text(yaml.safe_dump(doc))
        config = parse_config(lab.config_path.read_text(), base_dir=lab.workdir)
        lab.config = config
        assert_clean("the parsed config's repr", repr(config), values)

        keeper = StateKeeper(tmp_path / "state.db")
        pollers = lab.pollers(keeper)
        crasher = memory_source("crasher")
        crasher.crash = RuntimeError(f"token={pve} url=https://u:{s3}@host/?key={hc}")
        pollers.append(Poller(crasher, clock=clock))
        client: TestClient[Any, Any] = await aiohttp_client(
            create_app(config, clock=clock, pollers=pollers, run_pollers=False, keeper=keeper)
        )
        for poller in pollers:
            await poller.poll_once()
        up = {p.name: p.state.up for p in pollers}
        assert all(v for k, v in up.items() if k not in ("crasher", "b2")), up
        pages = ["/metrics", "/", "/-/healthy", "/-/ready"]
        pages += [
            r.resource.canonical
            for r in client.app.router.routes()
            if r.resource is not None and r.resource.canonical.startswith("/api/")
            and "{" not in r.resource.canonical
        ]  # fmt: skip
        for page in pages:
            resp = await client.get(page)
            assert_clean(page, await resp.read(), values)

        # Now the backends refuse the credentials: the failing paths and their messages.
        lab.pve.scenario.token_secret = "refused"
        lab.truenas.scenario.api_key = "refused"
        lab.healthchecks.scenario.readonly_key = "refused"
        clock.advance(3600)
        for poller in pollers:
            await poller.poll_once()
        down = {p.name: p.state.reason for p in pollers if not p.state.up}
        assert {"pve1", "truenas", "healthchecks", "crasher"} <= set(down), down
        for poller in pollers:
            if poller.state.error is not None:
                assert_clean(f"{poller.name}'s error", str(poller.state.error), values)
        for page in pages:
            resp = await client.get(page)
            assert_clean(f"{page} (failing)", await resp.read(), values)
        await keeper.flush()
        for poller in pollers:  # the app closes sources only of pollers it runs itself
            await poller.source.close()
    finally:
        await lab.stop()

    # The crash was logged (its traceback), just not the exception's arguments.
    assert "source=crasher" in caplog.text and "builtins.RuntimeError" in caplog.text
    assert_clean("the logs (DEBUG)", caplog.text, values)
    for record in caplog.records:
        assert_clean("a log record's args", repr(record.args), values)
        if record.exc_info:
            assert_clean("a logged traceback", repr(record.exc_info[1]), values)
    db = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert db, "the state database was not written"
    assert_clean("the state database", db, values)

    # check-config: the good config, and configs whose secret fields are malformed.
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["check-config", str(lab.config_path)])
    assert code == 0, err.getvalue()
    assert_clean("check-config output", out.getvalue() + err.getvalue(), values)
    bad = yaml.safe_load(lab.config_path.read_text())
    bad["sources"]["pve1"]["token_secret"] = {"nested": pve}
    del bad["sources"]["pve1"]["token_secret_file"]
    bad["sources"]["storj"]["secret_access_key"] = [s3, 1]
    del bad["sources"]["storj"]["secret_access_key_file"]
    bad["sources"]["truenas"]["api_key"] = nas
    bad["sources"]["truenas"]["url"] = "ws://nas.example"  # refused: a key over plain ws
    del bad["sources"]["truenas"]["api_key_file"]
    bad_path = tmp_path / "bad.yml"
    bad_path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as problem:
        parse_config(bad_path.read_text(), base_dir=lab.workdir)
    assert_clean("a config error", str(problem.value), [*values[:3], s3])
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["check-config", str(bad_path)])
    assert code != 0
    assert_clean("check-config output (bad config)", out.getvalue() + err.getvalue(), values)
    assert_clean("captured output", "".join(capsys.readouterr()), values)


async def test_web_config_password_never_leaks(tmp_path: Path) -> None:
    """Basic auth of ``--web.config.file`` (exporter-toolkit format): the password stays out.

    Without ``exporter.web`` on the branch, the option must really be absent (so this test
    starts covering it as soon as the code is merged).
    """
    import asyncio
    import socket
    import subprocess
    import sys

    import aiohttp

    help_text = io.StringIO()
    with redirect_stdout(help_text), pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    if not WEB:
        assert "--web.config.file" not in help_text.getvalue()
        return
    import bcrypt  # the exporter-toolkit format stores bcrypt hashes

    password = canary("web")
    wrong = canary("wrong")
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    config = tmp_path / "config.yml"
    config.write_text(f"sources:\n  ha:\n    kind: files\n    path: {tmp_path}\n    interval: 1h\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--log.level", "debug", "--config.file", str(config),
        "--web.config.file", str(web_config), "--web.listen-address", f"127.0.0.1:{port}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    bodies = b""
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    auth = _basic("prometheus", password)
                    async with http.get(f"http://127.0.0.1:{port}/metrics", headers=auth) as r:
                        bodies += await r.read()
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            for who in (wrong, password):
                for page in ("/metrics", "/"):
                    auth = _basic("prometheus", who)
                    async with http.get(f"http://127.0.0.1:{port}{page}", headers=auth) as r:
                        bodies += await r.read() + repr(r.headers).encode()
    finally:
        proc.terminate()
        out, err = await proc.communicate()
    assert_clean("the web app's answers", bodies, [password, wrong])
    assert_clean("the exporter's output", out + err, [password, wrong])


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
