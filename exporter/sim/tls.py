"""A throw-away self-signed TLS certificate for the fake servers on 127.0.0.1.

Real clients (proxmoxer/requests, aiohttp) then verify the fake properly with the certificate
as their CA file, instead of turning verification off (which also warns, and warnings are
errors in the test suite).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["SelfSignedCert", "make_self_signed_cert"]


@dataclass(frozen=True)
class SelfSignedCert:
    """Paths of a PEM certificate and key, and a server context that uses them."""

    cert_file: Path
    key_file: Path
    server_context: ssl.SSLContext

    def client_context(self) -> ssl.SSLContext:
        """Return a client context that trusts exactly this certificate."""
        return ssl.create_default_context(cafile=str(self.cert_file))


def make_self_signed_cert(
    directory: str | Path | None = None, *, days: int = 2, common_name: str = "127.0.0.1"
) -> SelfSignedCert:
    """Generate a certificate for ``127.0.0.1``, ``::1`` and ``localhost`` into ``directory``.

    Without ``directory`` a fresh temporary folder is used, removed when the returned object
    is garbage-collected or the interpreter exits. The certificate is its own CA, so clients
    pass it as ``cafile``.
    """
    temporary = directory is None
    folder = Path(tempfile.mkdtemp(prefix="fake-tls-")) if directory is None else Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    # EC keys generate in milliseconds; RSA-2048 takes noticeably longer on slow CI cores.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # Key identifiers keep strict verifiers (Python 3.13's VERIFY_X509_STRICT) happy.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file = folder / "cert.pem"
    key_file = folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_file), str(key_file))
    made = SelfSignedCert(cert_file=cert_file, key_file=key_file, server_context=context)
    if temporary:
        weakref.finalize(made, shutil.rmtree, folder, ignore_errors=True)
    return made
