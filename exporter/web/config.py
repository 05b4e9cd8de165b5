"""Read and validate a web config file in the exporter-toolkit format.

The keys, their defaults and the checks follow prometheus/exporter-toolkit
``web/tls_config.go`` (``getConfig``: strict YAML, ``min_version`` TLS12 and ``max_version``
TLS13 by default, relative paths joined to the file's folder; ``validateTLSPaths`` and
``ConfigToTLSConfig``: a cert and a key are both needed, client CAs need a client auth policy,
the client auth type names of Go's ``crypto/tls``) and ``web/handler.go`` (``validateUsers``:
every password is a bcrypt hash; ``validateHeaderConfig``: only five headers, two with fixed
values). Every problem is reported with its key path; the file is either valid as a whole or
refused as a whole.

Where Python's ``ssl`` cannot do what Go's ``crypto/tls`` does, the file is refused with the
reason rather than served differently (see ``client_auth_type`` and ``curve_preferences``).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.core.fields import parse_duration

__all__ = [
    "CLIENT_AUTH_TYPES",
    "HTTPServerConfig",
    "RateLimit",
    "TLSServerConfig",
    "WebConfig",
    "WebConfigError",
    "load_web_config",
    "parse_web_config",
]


class WebConfigError(Exception):
    """The web config file is unreadable or invalid; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


#: exporter-toolkit's ``client_auth_type`` names (Go's ``tls.ClientAuthType``); the empty
#: string is NoClientCert there too, and ``RequireClientCert`` is its old spelling of
#: RequireAnyClientCert.
CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

#: The names Go's ``tls.CipherSuites()`` returns, with their OpenSSL names. TLS 1.3 suites
#: are accepted and, as in Go, not configurable (both stacks always enable all three).
CIPHER_SUITES: Mapping[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}

#: exporter-toolkit's curve names (``web/tls_config.go`` ``curves``) with OpenSSL's.
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
          "X25519": "X25519"}  # fmt: skip

#: The response headers a web config may set, and the values allowed where the set is fixed
#: (exporter-toolkit ``web/handler.go`` ``extraHTTPHeaders``).
EXTRA_HEADERS: Mapping[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

# A bcrypt hash: $2a$/$2b$/$2x$/$2y$, a two-digit cost, 22 salt and 31 hash characters.
_BCRYPT = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")


@dataclass(frozen=True)
class TLSServerConfig:
    """``tls_server_config``; certificates are given as files or inline PEM."""

    cert_file: Path | None = None
    key_file: Path | None = None
    cert: str | None = None
    key: str | None = field(default=None, repr=False)
    client_ca_file: Path | None = None
    client_ca: str | None = None
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    @property
    def verifies_clients(self) -> bool:
        """Return whether client certificates are checked against the client CAs."""
        return self.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")

    @property
    def requires_client_cert(self) -> bool:
        """Return whether a connection without a verified client certificate is refused."""
        return self.client_auth_type == "RequireAndVerifyClientCert"


@dataclass(frozen=True)
class HTTPServerConfig:
    """``http_server_config``: ``http2`` (accepted; aiohttp speaks HTTP/1.1) and ``headers``."""

    http2: bool = True
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RateLimit:
    """``rate_limit``: one request per ``interval`` after a ``burst``; interval 0 disables."""

    interval: float = 0.0
    burst: int = 0


@dataclass(frozen=True)
class WebConfig:
    """A validated web config; ``tls`` is None when the file configures no TLS."""

    path: Path | None = None
    tls: TLSServerConfig | None = None
    http: HTTPServerConfig = HTTPServerConfig()
    users: Mapping[str, str] = field(default_factory=dict, repr=False)
    rate_limit: RateLimit = RateLimit()


_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_KEYS = (
    "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
    "client_allowed_sans", "min_version", "max_version", "cipher_suites",
    "prefer_server_cipher_suites", "curve_preferences",
)  # fmt: skip


class _Problems:
    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.found.append(f"{where}: {message}")


def _mapping(value: Any, where: str, allowed: tuple[str, ...], out: _Problems) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        out.add(where, f"must be a mapping, got {type(value).__name__}")
        return {}
    good: dict[str, Any] = {}
    for key, item in value.items():
        if key not in allowed:
            out.add(f"{where}.{key}" if where else str(key),
                    f"unknown key (allowed: {', '.join(allowed)})")  # fmt: skip
        else:
            good[key] = item
    return good


def _string(raw: Mapping[str, Any], key: str, where: str, out: _Problems) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        out.add(f"{where}.{key}", f"must be a string, got {type(value).__name__}")
        return None
    return value


def _strings(raw: Mapping[str, Any], key: str, where: str, out: _Problems) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        out.add(f"{where}.{key}", "must be a list of strings")
        return ()
    return tuple(value)


def _file(base: Path, raw: Mapping[str, Any], key: str, where: str, out: _Problems) -> Path | None:
    text = _string(raw, key, where, out)
    if not text:
        return None
    path = Path(text)
    # Relative paths are relative to the web config file (exporter-toolkit SetDirectory).
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        out.add(f"{where}.{key}", f"no such file: {path}")
    return path


def _version(raw: Mapping[str, Any], key: str, default: ssl.TLSVersion, out: _Problems) -> Any:
    value = raw.get(key)
    if value is None:
        return default
    if value not in TLS_VERSIONS:
        out.add(f"tls_server_config.{key}",
                f"unknown TLS version {value!r} (one of {', '.join(TLS_VERSIONS)})")  # fmt: skip
        return default
    return TLS_VERSIONS[value]


def _tls(raw: Mapping[str, Any], base: Path, out: _Problems) -> TLSServerConfig | None:
    where = "tls_server_config"
    tls = _mapping(raw.get(where), where, _TLS_KEYS, out)
    # exporter-toolkit TLSConfig.IsEnabled: any of these set means TLS is wanted.
    if not any(tls.get(k) for k in ("cert", "key", "client_ca", "cert_file", "key_file",
                                    "client_ca_file", "client_auth_type")):  # fmt: skip
        return None
    cert = _string(tls, "cert", where, out)
    key = _string(tls, "key", where, out)
    client_ca = _string(tls, "client_ca", where, out)
    cert_file = _file(base, tls, "cert_file", where, out)
    key_file = _file(base, tls, "key_file", where, out)
    ca_file = _file(base, tls, "client_ca_file", where, out)
    if cert and cert_file:
        out.add(where, "cert and cert_file are both set: give one")
    if key and key_file:
        out.add(where, "key and key_file are both set: give one")
    if client_ca and ca_file:
        out.add(where, "client_ca and client_ca_file are both set: give one")
    if not (cert or tls.get("cert_file")):
        out.add(where, "missing one of cert or cert_file")
    if not (key or tls.get("key_file")):
        out.add(where, "missing one of key or key_file")
    auth = _string(tls, "client_auth_type", where, out) or "NoClientCert"
    if auth == "RequireClientCert":  # exporter-toolkit keeps this old name of the next one
        auth = "RequireAnyClientCert"
    if auth not in CLIENT_AUTH_TYPES:
        out.add(f"{where}.client_auth_type",
                f"invalid ClientAuth {auth!r} (one of {', '.join(CLIENT_AUTH_TYPES)})")  # fmt: skip
    elif auth == "RequireAnyClientCert":
        # Go can demand a certificate without verifying it; OpenSSL through Python's ssl
        # verifies every certificate it demands. Refuse rather than serve something else.
        out.add(f"{where}.client_auth_type",
                "RequireAnyClientCert (a certificate demanded but never verified) is not "
                "supported here; use RequireAndVerifyClientCert with client_ca_file")  # fmt: skip
    has_ca = bool(client_ca or tls.get("client_ca_file"))
    if has_ca and auth == "NoClientCert":  # Go lets RequestClientCert carry an unused CA
        out.add(where, "client CA's have been configured without a Client Auth Policy "
                       "(set client_auth_type: RequireAndVerifyClientCert)")  # fmt: skip
    sans = tls.get("client_allowed_sans")
    allowed = _strings(tls, "client_allowed_sans", where, out) if sans is not None else None
    if allowed is not None and auth not in ("VerifyClientCertIfGiven",
                                            "RequireAndVerifyClientCert"):  # fmt: skip
        out.add(f"{where}.client_allowed_sans", "needs a client_auth_type that verifies")
    ciphers = _strings(tls, "cipher_suites", where, out)
    for name in ciphers:
        if name not in CIPHER_SUITES:
            out.add(f"{where}.cipher_suites", f"unknown cipher: {name}")
    curves = _strings(tls, "curve_preferences", where, out)
    for name in curves:
        if name not in CURVES:
            out.add(f"{where}.curve_preferences", f"unknown curve: {name}")
    if len(curves) > 1:
        # Python's ssl sets one ECDH group (SSLContext.set_ecdh_curve), not a preference list.
        out.add(f"{where}.curve_preferences",
                "give at most one curve: Python's ssl cannot order several")  # fmt: skip
    prefer = tls.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        out.add(f"{where}.prefer_server_cipher_suites", "must be true or false")
        prefer = True
    low = _version(tls, "min_version", ssl.TLSVersion.TLSv1_2, out)
    high = _version(tls, "max_version", ssl.TLSVersion.TLSv1_3, out)
    if low > high:
        out.add(where, "min_version is above max_version")
    return TLSServerConfig(
        cert_file=cert_file,
        key_file=key_file,
        cert=cert,
        key=key,
        client_ca_file=ca_file,
        client_ca=client_ca,
        client_auth_type=auth,
        client_allowed_sans=allowed,
        min_version=low,
        max_version=high,
        cipher_suites=ciphers,
        prefer_server_cipher_suites=prefer,
        curve_preferences=curves,
    )


def _http(raw: Mapping[str, Any], out: _Problems) -> HTTPServerConfig:
    where = "http_server_config"
    http = _mapping(raw.get(where), where, ("http2", "headers"), out)
    http2 = http.get("http2", True)
    if not isinstance(http2, bool):
        out.add(f"{where}.http2", "must be true or false")
        http2 = True
    headers = _mapping(http.get("headers"), f"{where}.headers", tuple(EXTRA_HEADERS), out)
    pairs = []
    for name, value in headers.items():
        text = str(value)  # YAML reads `X-XSS-Protection: 1` as a number; Go takes it as text
        allowed = EXTRA_HEADERS[name]
        if allowed and text not in allowed:
            out.add(f"{where}.headers.{name}",
                    f"invalid value {text!r}, expected one of: {', '.join(allowed)}")  # fmt: skip
        elif "\n" in text or "\r" in text:
            out.add(f"{where}.headers.{name}", "must be one line")
        else:
            pairs.append((name, text))
    return HTTPServerConfig(http2=http2, headers=tuple(pairs))


def _users(raw: Mapping[str, Any], out: _Problems) -> dict[str, str]:
    users = raw.get("basic_auth_users")
    if users is None:
        return {}
    if not isinstance(users, dict):
        out.add("basic_auth_users", "must be a mapping of user name to bcrypt hash")
        return {}
    good: dict[str, str] = {}
    for name, hashed in users.items():
        where = f"basic_auth_users.{name}"
        if not isinstance(name, str) or not name or ":" in name:
            out.add(where, "a user name is a non-empty string without ':'")
        elif not isinstance(hashed, str) or not _BCRYPT.match(hashed):
            # Never echo the value: it may be a plain password written by mistake.
            out.add(where, "not a bcrypt hash (make one with htpasswd -nBC 10 \"\" or "
                           "python -c 'import bcrypt; ...', see the README)")  # fmt: skip
        elif not 4 <= int(hashed[4:6]) <= 31:
            out.add(where, f"bcrypt cost {hashed[4:6]} is outside 4..31")
        else:
            good[name] = hashed
    return good


def _rate_limit(raw: Mapping[str, Any], out: _Problems) -> RateLimit:
    where = "rate_limit"
    limit = _mapping(raw.get(where), where, ("interval", "burst"), out)
    interval: float = 0.0
    value = limit.get("interval", 0)
    zero = value == 0 and not isinstance(value, bool)
    if zero or (isinstance(value, str) and value.strip() in ("0", "0s")):
        interval = 0.0
    elif isinstance(value, str):
        try:
            interval = parse_duration(value)
        except ValueError as exc:
            out.add(f"{where}.interval", str(exc))
    else:
        out.add(f"{where}.interval", "must be a duration such as 1s")
    burst = limit.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        out.add(f"{where}.burst", "must be a whole number >= 0")
        burst = 0
    return RateLimit(interval=interval, burst=burst)


def parse_web_config(raw: Any, *, base: Path, path: Path | None = None) -> WebConfig:
    """Validate the loaded YAML ``raw``; relative file names are under ``base``."""
    out = _Problems()
    if raw is None:
        raw = {}  # an empty file is valid: nothing is enabled (exporter-toolkit agrees)
    top = _mapping(raw, "", _TOP_KEYS, out)
    if not isinstance(raw, dict):
        raise WebConfigError([f"must be a mapping with keys {', '.join(_TOP_KEYS)}"])
    config = WebConfig(
        path=path,
        tls=_tls(top, base, out),
        http=_http(top, out),
        users=_users(top, out),
        rate_limit=_rate_limit(top, out),
    )
    if out.found:
        raise WebConfigError(out.found)
    return config


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate the web config file at ``path``; raise :class:`WebConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WebConfigError([f"cannot read: {exc}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WebConfigError([f"not valid YAML: {exc}"]) from None
    return parse_web_config(raw, base=path.resolve().parent, path=path)
