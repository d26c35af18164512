"""Configuration: one frozen Settings from a YAML file, environment variables and flags.

Precedence is flag > environment (`MTLS_AUTHZ_<KEY>`) > file > default. Every key is validated at
start and an error names the key, where the value came from and what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from authz.core.identity import IDENTITY_NAMES
from authz.core.modes import deny_status_problem
from authz.core.names import parse_dn
from authz.core.policies import PolicySpec, parse_policies
from authz.core.verdict import CertHeaderFormat

ENV_PREFIX = "MTLS_AUTHZ_"
MAX_CONFIG_BYTES = 1024 * 1024

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


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the key."""


def _check_listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "expected HOST:PORT, e.g. 127.0.0.1:9191"
    return None


def _check_optional_listen(value: str) -> str | None:
    return None if value == "" else _check_listen(value)


def _check_header(value: str) -> str | None:
    if not _HEADER_NAME.match(value):
        return "not a valid HTTP header name"
    if value.lower() in _FORBIDDEN_HEADERS or value.lower().startswith(":"):
        return f"{value!r} is reserved and cannot carry the client certificate"
    return None


def _check_issuers(values: list[str]) -> str | None:
    if not values:
        return "at least one issuer DN is required"
    for dn in values:
        try:
            parse_dn(dn)
        except ValueError as e:
            return str(e)
    return None


def _check_identity(values: list[str]) -> str | None:
    unknown = [v for v in values if v not in IDENTITY_NAMES]
    return (
        f"unknown identity headers {unknown}; known: {', '.join(IDENTITY_NAMES)}"
        if unknown
        else None
    )


def _check_deny_status(value: int) -> str | None:
    return deny_status_problem(value)


def _check_positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _check_not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def _check_required_path(value: str) -> str | None:
    return None if value else "is required"


def split_responder_override(text: str) -> tuple[str, str]:
    """`ISSUER_DN=URL` → (DN, URL). The DN holds `=` too, so split where the URL begins."""
    for scheme in ("=https://", "=http://"):
        dn, sep, rest = text.partition(scheme)
        if sep:
            return dn.strip(), scheme[1:] + rest.strip()
    raise ValueError(f"expected ISSUER_DN=http(s)://URL, got {text!r}")


def _check_hosts(values: list[str]) -> str | None:
    for value in values:
        if "/" in value:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                return f"{value!r} is not a CIDR network"
        elif not value or any(c in value for c in " :@?#"):
            return f"{value!r} is not a host name or address"
    return None


def _check_responders(values: list[str]) -> str | None:
    for value in values:
        try:
            dn, _ = split_responder_override(value)
            parse_dn(dn)
        except ValueError as e:
            return str(e)
    return None


@dataclass(frozen=True)
class Option:
    key: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    flag: str = ""
    check: Callable[[Any], str | None] | None = None

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.key.upper()


# fmt: off
OPTIONS: tuple[Option, ...] = (
    Option("listen", str, "127.0.0.1:9191", "gRPC listen address for Envoy's ext_authz calls.",
           check=_check_listen),
    Option("metrics_listen", str, "",
           "HTTP listen address for /metrics, /healthz and /readyz (empty: off).",
           check=_check_optional_listen),
    Option("trust_bundle", str, "",
           "PEM file of the CA certificates that may issue client certificates.",
           check=_check_required_path),
    Option("allowed_issuers", list, [],
           "Issuer DN allowed to issue client certificates (RFC 4514 or /slash/ form).",
           flag="--allowed-issuer", check=_check_issuers),
    Option("cert_header", str, "X-Client-Cert",
           "Upstream header that carries the client certificate.", check=_check_header),
    Option("cert_header_format", str, CertHeaderFormat.BASE64_DER.value,
           "Encoding of the certificate header.", choices=tuple(f.value for f in CertHeaderFormat)),
    Option("identity_headers", list, [],
           "Identity headers to send upstream: " + ", ".join(IDENTITY_NAMES) + ".",
           flag="--identity-header", check=_check_identity),
    Option("deny_status", int, 400, "HTTP status of a refused request.", check=_check_deny_status),
    Option("verdict_cache_ttl", float, 30.0,
           "Longest Envoy's verdict cache (envoy/envoy-cached.yaml) may replay a verdict; 0: off.",
           check=_check_not_negative),
    Option("mode", str, "enforce",
           "enforce: refuse; audit: let every request through, marking what would be refused.",
           choices=("enforce", "audit")),
    Option("policies", dict, {},
           "Named policies for routes (ext_authz context extension 'policy'): a YAML mapping.",
           flag="--policies"),
    Option("log_level", str, "info", "Log level.", choices=("debug", "info", "warning", "error")),
    Option("log_format", str, "json", "Log format.", choices=("json", "text")),
    Option("workers", int, 1,
           "Worker processes sharing the gRPC port (SO_REUSEPORT); more than 1 adds a supervisor.",
           check=_check_positive),
    Option("shutdown_grace", float, 5.0,
           "Seconds in-flight checks get to finish after SIGTERM.", check=_check_positive),
    Option("ocsp", str, "require",
           "Revocation checking: require (fail closed), soft-fail, or off.",
           choices=("require", "soft-fail", "off")),
    Option("revocation", str, "ocsp",
           "Revocation sources in order: ocsp, crl, ocsp-then-crl, crl-then-ocsp.",
           choices=("ocsp", "crl", "ocsp-then-crl", "crl-then-ocsp")),
    Option("crl_urls", list, [],
           "CRL for an issuer, overriding the certificate's distribution points: ISSUER_DN=URL.",
           flag="--crl-url", check=_check_responders),
    Option("crl_timeout", float, 4.0,
           "Seconds for one CRL download (keep it under Envoy's ext_authz timeout).",
           check=_check_positive),
    Option("crl_cache_max_age", float, 3600.0,
           "Longest a CRL is used before it is fetched again, whatever its nextUpdate.",
           check=_check_positive),
    Option("ocsp_timeout", float, 2.0,
           "Seconds for one OCSP request, connecting to last byte.", check=_check_positive),
    Option("ocsp_cache_max_age", float, 300.0,
           "Longest a good or unknown OCSP answer is served (bounds how long a revocation goes "
           "unseen).", check=_check_positive),
    Option("ocsp_failure_cache", float, 5.0,
           "Seconds a failed OCSP check is remembered, so a dead responder is not hammered.",
           check=_check_not_negative),
    Option("ocsp_cache_size", int, 100_000, "Most OCSP answers kept.", check=_check_positive),
    Option("ocsp_responders", list, [],
           "Responder for an issuer, overriding the certificate's AIA: ISSUER_DN=URL.",
           flag="--ocsp-responder", check=_check_responders),
    Option("ocsp_allowed_hosts", list, [],
           "Hosts a certificate's AIA OCSP URL or CRL distribution point may name: host names, "
           "IP addresses or CIDR networks (empty: any). Configured URLs are always allowed.",
           flag="--ocsp-allowed-host", check=_check_hosts),
    Option("ocsp_max_response_age", float, 0.0,
           "Oldest an OCSP answer's thisUpdate may be, in seconds, however far its nextUpdate "
           "(0: no bound but nextUpdate).", check=_check_not_negative),
    Option("ocsp_nonce", bool, False,
           "Send an RFC 8954 nonce (answers then cannot be cached by the responder)."),
    Option("ocsp_hash", str, "sha1", "CertID hash algorithm.", choices=("sha1", "sha256")),
    Option("ocsp_skew", float, 300.0,
           "Seconds of clock skew tolerated on thisUpdate and nextUpdate.",
           check=_check_not_negative),
    Option("prefetch_window", float, 300.0,
           "Answers used within this many seconds are refreshed before they are due (0: off).",
           check=_check_not_negative),
    Option("prefetch_rate", float, 10.0,
           "Most prefetch requests per second to one responder.", check=_check_positive),
    Option("ocsp_responder_concurrency", int, 32,
           "Most requests in flight to one responder.", check=_check_positive),
)
# fmt: on
OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}


@dataclass(frozen=True)
class Settings:
    listen: str
    metrics_listen: str
    trust_bundle: str
    allowed_issuers: tuple[str, ...]
    cert_header: str
    cert_header_format: CertHeaderFormat
    identity_headers: tuple[str, ...]
    deny_status: int
    verdict_cache_ttl: float
    mode: str
    policies: Mapping[str, Any]
    log_level: str
    log_format: str
    workers: int
    shutdown_grace: float
    ocsp: str
    revocation: str
    crl_urls: tuple[str, ...]
    crl_timeout: float
    crl_cache_max_age: float
    ocsp_timeout: float
    ocsp_cache_max_age: float
    ocsp_failure_cache: float
    ocsp_cache_size: int
    ocsp_responders: tuple[str, ...]
    ocsp_allowed_hosts: tuple[str, ...]
    ocsp_max_response_age: float
    ocsp_nonce: bool
    ocsp_hash: str
    ocsp_skew: float
    ocsp_responder_concurrency: int
    prefetch_window: float
    prefetch_rate: float

    def redacted(self) -> dict[str, Any]:
        """The effective configuration for the startup log line (it holds no secrets)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def load_settings(
    config_path: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
) -> Settings:
    """Merge the sources, validate every key, and return Settings or raise ConfigError."""
    raw: dict[str, tuple[Any, str]] = {o.key: (o.default, "default") for o in OPTIONS}
    if config_path is not None:
        for key, value in read_config_file(config_path).items():
            raw[key] = (value, str(config_path))
    for option in OPTIONS:
        if option.env_name in env:
            raw[option.key] = (env[option.env_name], option.env_name)
        flag_value = flags.get(option.key)
        if flag_value is not None:
            raw[option.key] = (flag_value, option.flag_name)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, (value, source) in raw.items():
        try:
            values[key] = _coerce(OPTIONS_BY_KEY[key], value, source)
        except ConfigError as e:
            problems.append(str(e))
    if not problems and values["policies"]:
        try:
            route_policies(values)
        except ValueError as e:
            problems.append(f"policies: {e}")
    if problems:
        raise ConfigError("; ".join(problems))
    values["allowed_issuers"] = tuple(values["allowed_issuers"])
    values["ocsp_responders"] = tuple(values["ocsp_responders"])
    values["ocsp_allowed_hosts"] = tuple(values["ocsp_allowed_hosts"])
    values["identity_headers"] = tuple(values["identity_headers"])
    values["crl_urls"] = tuple(values["crl_urls"])
    values["cert_header_format"] = CertHeaderFormat(values["cert_header_format"])
    return Settings(**values)


def route_policies(values: Mapping[str, Any]) -> dict[str, PolicySpec]:
    """Every policy, `default` being the top-level settings unless configured by that name."""
    defaults = PolicySpec(
        allowed_issuers=tuple(values["allowed_issuers"]),
        ocsp=values["ocsp"],
        deny_status=values["deny_status"],
        mode=values["mode"],
    )
    return parse_policies(values["policies"], defaults)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    for key in document:
        if key not in OPTIONS_BY_KEY:
            known = ", ".join(OPTIONS_BY_KEY)
            raise ConfigError(f"{path}: unknown key {key!r} (known keys: {known})")
    return document


def _coerce(option: Option, value: Any, source: str) -> Any:
    """Convert a value from any source to the option's type, then validate it."""
    try:
        converted = _convert(option.kind, value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{option.key} (from {source}): {e}") from None
    if option.choices and converted not in option.choices:
        raise ConfigError(
            f"{option.key} (from {source}): {converted!r} is not one of {', '.join(option.choices)}"
        )
    problem = option.check(converted) if option.check else None
    if problem:
        raise ConfigError(f"{option.key} (from {source}): {problem}")
    return converted


def _convert(kind: type, value: Any) -> Any:
    if kind is list:
        return _convert_list(value)
    if kind is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) or {}
            except yaml.YAMLError as e:
                raise ValueError(f"not a YAML mapping: {e}") from None
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {value!r}")
        return value
    if isinstance(value, str) and kind is not str:
        value = value.strip()
        if kind is bool:
            return _parse_bool(value)
        return kind(value)
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"expected a number, got {value!r}")
    if kind is int and isinstance(value, float):
        raise ValueError(f"expected a whole number, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return kind(value)


def _convert_list(value: Any) -> list[str]:
    """Lists come as YAML lists, repeated flags, or an env var: a YAML list or one item per line."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = yaml.safe_load(text) if text.startswith("[") else text.splitlines()
        except yaml.YAMLError as e:
            raise ValueError(f"not a YAML list: {e}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return [item.strip() for item in value if item.strip()]


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")
