"""deploy/compose/: the compose stack, validated offline.

* Debian's ``docker-compose`` (1.29) parses and validates compose.yaml (``config``), and
  rejects broken copies of it: no engine is needed for that.
* Every bind-mounted path exists in the repository; every secret file is one
  ``make_secrets.py`` makes.
* The configs the containers get, with their in-container paths mapped to the files compose
  would mount there: ``promtool check config`` on the Prometheus config, ``amtool
  check-config`` on the Alertmanager one, ``check-config`` on the exporter's, and the Grafana
  provisioning points at the mounted dashboards and the Prometheus service.
* What make_secrets.py makes works: the exporter's certificate verifies against its CA for the
  name Prometheus uses (a real TLS handshake on 127.0.0.1), and the scrape password matches
  the bcrypt hash in the web config.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
SERVICES = {"backup-exporter", "prometheus", "alertmanager", "grafana"}


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose not found: install the Debian package (make debs)"
    return found


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [docker_compose(), "-f", str(path), "config"],
        capture_output=True, text=True, check=False, timeout=120, cwd=path.parent,
    )  # fmt: skip


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files make_secrets.py makes, in a temp folder."""
    out = tmp_path_factory.mktemp("compose") / "secrets"
    proc = subprocess.run(
        [sys.executable, str(COMPOSE_DIR / "make_secrets.py"), "--dir", str(out)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def run_secrets(spec: dict[str, Any], made: Path) -> Path:
    """/run/secrets as a container sees it: each secret under its name (or target)."""
    view = made.parent / "run-secrets"
    view.mkdir()
    for name, secret in spec["secrets"].items():
        shutil.copy(made / Path(secret["file"]).name, view / name)
    return view


def test_docker_compose_accepts_the_stack(spec: dict[str, Any]) -> None:
    proc = compose_config(COMPOSE)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert set(resolved["services"]) == SERVICES
    exporter = resolved["services"]["backup-exporter"]
    assert exporter["build"]["dockerfile"] == "deploy/container/Dockerfile"
    assert Path(exporter["build"]["context"]) == ROOT
    assert "--web.config.file=/run/secrets/web_config" in exporter["command"]
    # Every secret a service uses is declared as a file.
    for name, service in resolved["services"].items():
        for item in service.get("secrets", []):
            source = item["source"] if isinstance(item, dict) else item
            assert source in resolved["secrets"], (name, source)
            assert "file" in resolved["secrets"][source]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d["services"]["grafana"].update(portz=["3000"]), "portz"),
        (lambda d: d["services"]["prometheus"].update(ports=[{"target": "x"}]), "ports"),
        (lambda d: d["services"]["prometheus"].update(depends_on=["ghost"]), "ghost"),
    ],
)
def test_docker_compose_rejects_a_broken_stack(
    tmp_path: Path, spec: dict[str, Any], change: Any, complaint: str
) -> None:
    broken = yaml.safe_load(yaml.safe_dump(spec))
    change(broken)
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    proc = compose_config(path)
    assert proc.returncode != 0
    assert complaint in proc.stderr, proc.stderr


def test_every_mounted_path_exists(spec: dict[str, Any]) -> None:
    build = spec["services"]["backup-exporter"]["build"]
    assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).is_file()
    named = set(spec.get("volumes", {}))
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source in named:
                continue
            assert source.startswith("."), (name, volume)
            assert (COMPOSE_DIR / source).exists(), (name, volume)


def test_make_secrets_makes_every_secret_file(spec: dict[str, Any], made: Path) -> None:
    files = {Path(s["file"]).name for s in spec["secrets"].values()}
    assert all(s["file"].startswith("./secrets/") for s in spec["secrets"].values())
    assert files <= {p.name for p in made.iterdir()}
    assert made.stat().st_mode & 0o777 == 0o700
    assert (made / "ca.key").stat().st_mode & 0o777 == 0o600
    # The committed folder holds nothing but its .gitignore.
    committed = subprocess.run(
        ["git", "ls-files", "deploy/compose/secrets"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert committed.stdout.split() in ([], ["deploy/compose/secrets/.gitignore"])


def test_make_secrets_never_overwrites(made: Path) -> None:
    before = {p.name: p.read_bytes() for p in made.iterdir()}
    proc = subprocess.run(
        [sys.executable, str(COMPOSE_DIR / "make_secrets.py"), "--dir", str(made)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "nothing missing" in proc.stdout
    assert {p.name: p.read_bytes() for p in made.iterdir()} == before


def test_the_scrape_password_matches_the_web_config(run_secrets: Path) -> None:
    web = yaml.safe_load((run_secrets / "web_config").read_text())
    assert web["tls_server_config"]["cert_file"] == "/run/secrets/exporter_tls_crt"
    assert web["tls_server_config"]["key_file"] == "/run/secrets/exporter_tls_key"
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "backup-exporter"]
    user = job["basic_auth"]["username"]
    password = (run_secrets / "scrape_password").read_bytes().strip()
    assert bcrypt.checkpw(password, web["basic_auth_users"][user].encode())
    assert not bcrypt.checkpw(b"wrong", web["basic_auth_users"][user].encode())


def test_the_certificate_verifies_for_the_scrape_target(run_secrets: Path) -> None:
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "backup-exporter"]
    server_name = job["tls_config"]["server_name"]
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(run_secrets / "exporter_tls_crt", run_secrets / "exporter_tls_key")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except ssl.SSLError:
                conn.close()

        for name, trusted in ((server_name, True), ("elsewhere.example", False)):
            thread = threading.Thread(target=serve)
            thread.start()
            client_ctx = ssl.create_default_context(cafile=run_secrets / "exporter_ca_crt")
            try:
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                    client_ctx.wrap_socket(raw, server_hostname=name) as tls,
                ):
                    assert trusted, f"{name} must not verify"
                    assert tls.recv(2) == b"ok"
            except ssl.SSLCertVerificationError:
                assert not trusted, f"{name} must verify"
            thread.join(timeout=10)


def test_promtool_accepts_the_prometheus_config(tmp_path: Path, run_secrets: Path) -> None:
    text = (COMPOSE_DIR / "prometheus.yml").read_text()
    assert "/run/secrets/" in text and "/etc/prometheus/rules/" in text
    local = text.replace("/run/secrets/", f"{run_secrets}/").replace(
        "/etc/prometheus/rules/", f"{ROOT / 'alerts'}/"
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(local)
    proc = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every rule file of alerts/ is loaded (the mount is ../../alerts -> /etc/prometheus/rules).
    for rules in (ROOT / "alerts").glob("*.rules.yml"):
        assert rules.name in proc.stdout


def test_the_exporter_config_is_valid(run_secrets: Path, tmp_path: Path) -> None:
    text = (COMPOSE_DIR / "config.yml").read_text()
    path = tmp_path / "config.yml"
    path.write_text(text.replace("/run/secrets/", f"{run_secrets}/"))
    config = load_config(path)
    assert set(config.sources) == {"pve1", "truenas", "b2"}
    # Each *_file it reads is a secret the exporter service mounts.
    spec = yaml.safe_load(COMPOSE.read_text())
    mounted = set(spec["services"]["backup-exporter"]["secrets"])
    read = set(re.findall(r"_file: /run/secrets/(\w+)", text))
    assert read
    assert read <= mounted


def test_the_alertmanager_mount_and_its_password_file(spec: dict[str, Any]) -> None:
    am = spec["services"]["alertmanager"]
    (mount,) = [v for v in am["volumes"] if v.endswith("alertmanager.yml:ro")]
    config = yaml.safe_load((COMPOSE_DIR / mount.split(":")[0]).read_text())
    password_file = config["global"]["smtp_auth_password_file"]
    assert password_file in [s["target"] for s in am["secrets"] if isinstance(s, dict)]


def test_grafana_provisions_the_datasource_and_the_dashboards(spec: dict[str, Any]) -> None:
    grafana = spec["services"]["grafana"]
    mounts = dict(v.removesuffix(":ro").split(":") for v in grafana["volumes"] if v.startswith("."))
    provisioning = COMPOSE_DIR / next(
        s for s, t in mounts.items() if t == "/etc/grafana/provisioning"
    )
    (ds_file,) = (provisioning / "datasources").glob("*.yml")
    (datasource,) = yaml.safe_load(ds_file.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"  # the service name and its port
    assert "prometheus" in spec["services"]
    (db_file,) = (provisioning / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(db_file.read_text())["providers"]
    dashboards_src = next(s for s, t in mounts.items() if t == provider["options"]["path"])
    dashboards = sorted((COMPOSE_DIR / dashboards_src).glob("*.json"))
    assert [p.name for p in dashboards] == sorted(
        p.name for p in (ROOT / "dashboards").glob("*.json")
    )
    assert dashboards
    for path in dashboards:
        board = json.loads(path.read_text())
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["query"] == datasource["type"], path.name
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.removeprefix(provider["options"]["path"] + "/") in [p.name for p in dashboards]
