"""What one value may be: the checks a declaration names, and the types a value is parsed into.
Each check returns None, or what is wrong in words that follow the key's name."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from authz.core.identity import IDENTITY_NAMES
from authz.core.modes import deny_status_problem
from authz.core.names import NameKey, name_key, parse_dn
from authz.redis_client import parse_store_url

# RFC 9110 token characters; header names are sent lower-case by Envoy over HTTP/2 anyway.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers whose meaning belongs to HTTP itself or to Envoy: overwriting them would break requests.
_FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "content-type",
        "x-forwarded-client-cert",
        "x-request-id",
        "x-mtls-authz-reason",
    }
)


class CertificateSourceKind(StrEnum):
    PEER = "peer"
    XFCC = "xfcc"
    PEER_THEN_XFCC = "peer-then-xfcc"


def check_listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "expected HOST:PORT, e.g. 127.0.0.1:9191"
    return None


def check_optional_listen(value: str) -> str | None:
    return None if value == "" else check_listen(value)


def check_store_url(value: str) -> str | None:
    if value == "":
        return None
    try:
        parse_store_url(value)
    except ValueError as error:
        return str(error)
    return None


# Query parameters that carry credentials (`?password=` redis-py reads, the sentinels' own).
_SECRET_PARAMETERS = frozenset({"password", "sentinel_password"})


def redact_url(value: str) -> str:
    """A URL as logs may show it: without its password, wherever the URL form puts it (before
    the host, or as a `password` query parameter)."""
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:  # not a URL we can take apart: show none of it
        return "***"
    if password is not None:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    if parts.query:
        query = [
            (name, "***" if name.lower() in _SECRET_PARAMETERS else item)
            for name, item in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


def check_header(value: str) -> str | None:
    if not _HEADER_NAME.match(value):
        return "not a valid HTTP header name"
    if value.lower() in _FORBIDDEN_HEADERS or value.lower().startswith(":"):
        return f"{value!r} is reserved and cannot carry the client certificate"
    return None


def check_issuers(values: list[str]) -> str | None:
    if not values:
        return "at least one issuer DN is required"
    for dn in values:
        try:
            parse_dn(dn)
        except ValueError as e:
            return str(e)
    return None


def check_identity(values: list[str]) -> str | None:
    unknown = [v for v in values if v not in IDENTITY_NAMES]
    return (
        f"unknown identity headers {unknown}; known: {', '.join(IDENTITY_NAMES)}"
        if unknown
        else None
    )


def check_deny_status(value: int) -> str | None:
    return deny_status_problem(value)


def check_positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def check_not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def check_required_path(value: str) -> str | None:
    return None if value else "is required"


def split_responder_override(text: str) -> tuple[str, str]:
    """`ISSUER_DN=URL` → (DN, URL). The DN holds `=` too, so split where the URL begins."""
    for scheme in ("=https://", "=http://"):
        dn, sep, rest = text.partition(scheme)
        if sep:
            return dn.strip(), scheme[1:] + rest.strip()
    raise ValueError(f"expected ISSUER_DN=http(s)://URL, got {text!r}")


def check_hosts(values: list[str]) -> str | None:
    for value in values:
        if "/" in value:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                return f"{value!r} is not a CIDR network"
        elif not value or any(c in value for c in " :@?#"):
            return f"{value!r} is not a host name or address"
    return None


@dataclass(frozen=True)
class IssuerUrls:
    """`ISSUER_DN=URL` settings: as written (for logs), and by normalised issuer name."""

    texts: tuple[str, ...] = ()
    by_issuer: Mapping[NameKey, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, texts: list[str]) -> IssuerUrls:
        """Raises ValueError naming the entry that is not `ISSUER_DN=http(s)://URL`."""
        by_issuer = {}
        for text in texts:
            dn, url = split_responder_override(text)
            by_issuer[name_key(parse_dn(dn))] = url
        return cls(tuple(texts), by_issuer)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds from `500ms`, `2s`, `5m`, `2h`, `1d` or a plain number of seconds."""
    found = _DURATION.match(text.strip())
    if not found:
        raise ValueError(
            f"not a duration: {text!r} (a number of seconds, or 500ms, 90s, 15m, 2h, 1d)"
        )
    return float(found.group(1)) * _UNITS[found.group(2)]


def check_choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"{value!r} is not one of {', '.join(choices)}"

    check.__name__ = f"check_{name}"
    return check


check_log_level = check_choice("log_level", ("debug", "info", "warning", "error"))
check_log_format = check_choice("log_format", ("json", "text"))
check_ocsp_hash = check_choice("ocsp_hash", ("sha1", "sha256"))
