"""Build the listener's server TLS context from ``tls_server_config``.

The mapping follows exporter-toolkit ``web/tls_config.go`` ``ConfigToTLSConfig``: the key
pair is loaded once to prove it is usable (a bad pair fails at start, not at the first
client), the client CAs form the verification pool, and the client auth type picks what a
client must show:

* ``NoClientCert``: nothing is asked;
* ``RequestClientCert``: Go asks and ignores the answer; OpenSSL cannot ask without
  verifying, and nothing here uses an unverified certificate, so this is served as
  NoClientCert (every client that passes one passes the other);
* ``VerifyClientCertIfGiven``: ``CERT_OPTIONAL`` (a certificate, if sent, must verify);
* ``RequireAndVerifyClientCert``: ``CERT_REQUIRED``. When health paths are exempt from
  authentication, the handshake asks with ``CERT_OPTIONAL`` and the middleware refuses every
  other path without a verified certificate, as exporter-toolkit's proposed
  ``auth_excluded_paths`` for mTLS does (commit d67c526, ``x509.go`` ``Authenticate``).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from exporter.web.config import CIPHER_SUITES, CURVES, TLSServerConfig, WebConfigError


@contextlib.contextmanager
def _pem_files(tls: TLSServerConfig) -> Iterator[tuple[str, str]]:
    """Yield the cert and key as file names; inline PEM goes to a private temporary file."""
    made: list[str] = []
    try:

        def path_of(inline: str | None, given: Path | None) -> str:
            if given is not None:
                return str(given)
            fd, name = tempfile.mkstemp(prefix="web-tls-", suffix=".pem")
            made.append(name)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(inline or "")
            return name

        yield path_of(tls.cert, tls.cert_file), path_of(tls.key, tls.key_file)
    finally:
        for name in made:
            with contextlib.suppress(OSError):
                os.unlink(name)


def server_context(tls: TLSServerConfig, *, exempt_paths: bool = False) -> ssl.SSLContext:
    """Return the server context for ``tls``; raise :class:`WebConfigError` if unusable.

    ``exempt_paths`` says that some paths skip authentication, so a required client
    certificate is enforced per request instead of at the handshake (see the module doc).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # TLS10/TLS11 are deprecated in Python; a file asking for them is obeyed, as in Go.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = tls.min_version
        context.maximum_version = tls.max_version
    if tls.min_version < ssl.TLSVersion.TLSv1_2 and not tls.cipher_suites:
        # OpenSSL 3 allows TLS < 1.2 only at security level 0.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with _pem_files(tls) as (cert, key):
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                [f"tls_server_config: failed to load the certificate and key: {exc}"]
            ) from None
    if tls.verifies_clients:
        try:
            if tls.client_ca_file is not None:
                context.load_verify_locations(cafile=str(tls.client_ca_file))
            elif tls.client_ca:
                context.load_verify_locations(cadata=tls.client_ca)
            else:
                # No client CA: Go verifies against the system roots (ClientCAs nil), and so
                # does this; exporter-toolkit's tests call such a file "blocking".
                context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise WebConfigError([f"tls_server_config: cannot load the client CA: {exc}"]) from None
        if (tls.client_ca_file or tls.client_ca) and not context.get_ca_certs():
            raise WebConfigError(["tls_server_config: the client CA holds no certificate"])
        strict = tls.requires_client_cert and not exempt_paths
        context.verify_mode = ssl.CERT_REQUIRED if strict else ssl.CERT_OPTIONAL
    suites = [CIPHER_SUITES[name] for name in tls.cipher_suites]
    names = [s for s in suites if s is not None]
    if names:
        try:
            context.set_ciphers(":".join(names))
        except ssl.SSLError:
            raise WebConfigError(
                ["tls_server_config.cipher_suites: none of these ciphers is available here"]
            ) from None
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        context.set_ecdh_curve(CURVES[tls.curve_preferences[0]])
    return context
