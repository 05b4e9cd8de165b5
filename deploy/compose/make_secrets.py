"""Make the secret files of the compose stack in deploy/compose/secrets/ (never overwrites).

Run once before ``docker compose -f deploy/compose/compose.yaml up -d``:

    python3 deploy/compose/make_secrets.py [--dir DIR]

It makes a private CA and the exporter's certificate (``openssl``; names ``backup-exporter``,
``localhost``, ``127.0.0.1``), a random scrape password and the exporter-toolkit web config
holding its bcrypt hash (the ``bcrypt`` package: the exporter's venv has it), a random Grafana
admin password, and placeholders for your backends' credentials (replace them). The folder is
0700; the files are 0644 because each container reads them as its own non-root user (compose
mounts file secrets as they are on the host).
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRAPE_USER = "prometheus"
CERT_NAMES = "DNS:backup-exporter,DNS:localhost,IP:127.0.0.1"
PLACEHOLDERS = ("pve_token_secret", "truenas_api_key", "b2_application_key", "smtp_password")
WEB_CONFIG = """\
# exporter-toolkit web config of the compose stack (made by make_secrets.py).
tls_server_config:
  cert_file: /run/secrets/exporter_tls_crt
  key_file: /run/secrets/exporter_tls_key
  min_version: TLS12
basic_auth_users:
  {user}: {hash}
"""


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)


def make_tls(out: Path) -> None:
    """Make a CA (ca.crt, ca.key) and exporter.crt/exporter.key signed by it (825 days)."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-days", "3650", "-subj", "/CN=backup-exporter compose CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(out / "ca.key"), "-out", str(out / "ca.crt"),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / "exporter.csr"
        ext = Path(tmp) / "ext.cnf"
        ext.write_text(
            f"subjectAltName={CERT_NAMES}\nextendedKeyUsage=serverAuth\n"
            "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n"
        )
        _openssl(
            "req", *ec, "-subj", "/CN=backup-exporter",
            "-keyout", str(out / "exporter.key"), "-out", str(csr),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(out / "ca.crt"),
            "-CAkey", str(out / "ca.key"), "-CAcreateserial", "-days", "825",
            "-extfile", str(ext), "-out", str(out / "exporter.crt"),
        )  # fmt: skip
    (out / "ca.key").chmod(0o600)  # signs certificates; no container mounts it
    (out / "ca.srl").unlink(missing_ok=True)
    for name in ("ca.crt", "exporter.crt", "exporter.key"):
        (out / name).chmod(0o644)


def make_auth(out: Path) -> None:
    """Make scrape_password and web-config.yml with its bcrypt hash."""
    try:
        import bcrypt  # noqa: PLC0415 (only this step needs it)
    except ImportError:
        sys.exit("make_secrets.py: needs the bcrypt package (pip install bcrypt), or run it "
                 "with the exporter's venv python")  # fmt: skip
    password = secrets.token_urlsafe(24)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    _write(out / "scrape_password", password)
    _write(out / "web-config.yml", WEB_CONFIG.format(user=SCRAPE_USER, hash=hashed))


def main(argv: list[str]) -> int:
    """Make whatever is missing in the secrets folder; print what was made."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=HERE / "secrets")
    args = parser.parse_args(argv)
    out: Path = args.dir
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    made = []
    if not (out / "exporter.crt").exists():
        make_tls(out)
        made += ["ca.crt", "exporter.crt", "exporter.key"]
    if not (out / "web-config.yml").exists() or not (out / "scrape_password").exists():
        make_auth(out)
        made += ["scrape_password", "web-config.yml"]
    if not (out / "grafana_admin_password").exists():
        _write(out / "grafana_admin_password", secrets.token_urlsafe(18))
        made.append("grafana_admin_password")
    for name in PLACEHOLDERS:
        if not (out / name).exists():
            _write(out / name, "replace-me\n")
            made.append(f"{name} (placeholder: put the real value in)")
    for item in made:
        print(f"made {out / item}")
    if not made:
        print(f"{out}: nothing missing")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
