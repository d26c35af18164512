"""Configuration: one frozen Settings from a YAML file, environment variables and flags.

Every key is declared once, as a field of `Settings` (type, default, help, flag, check, old
names); the flags, environment variables and file keys are derived from it. Precedence is flag >
environment (`MTLS_AUTHZ_<KEY>`) > file > default. Every key is validated and parsed once at
start, and an error names the key, where the value came from and what is wrong with it. Old key
names are still read, with a deprecation warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml

from authz.client_cert.xfcc import PeerThenXfcc, XfccCertificate, XfccElement
from authz.core.identity import IDENTITY_NAMES
from authz.core.modes import (
    EnforcementMode,
    RevocationMode,
    RevocationSources,
    choice_text,
    deny_status_problem,
)
from authz.core.names import NameKey, name_key, parse_dn
from authz.core.policies import PolicySpec, parse_policies
from authz.core.source import PEER, CertificateSource
from authz.core.verdict import CertHeaderFormat
from authz.revocation.crl_source import CrlConfig
from authz.revocation.ocsp_source import OcspConfig

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


class CertificateSourceKind(StrEnum):
    PEER = "peer"
    XFCC = "xfcc"
    PEER_THEN_XFCC = "peer-then-xfcc"


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the key."""


def _check_listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "expected HOST:PORT, e.g. 127.0.0.1:9191"
    return None


def _check_optional_listen(value: str) -> str | None:
    return None if value == "" else _check_listen(value)


def _check_store_url(value: str) -> str | None:
    if value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "expected redis://HOST:PORT/DB, rediss:// (TLS) or unix://PATH"
    if parts.scheme != "unix" and not parts.hostname:
        return "expected redis://HOST:PORT/DB: no host"
    return None


# Query parameters redis-py reads credentials from (`?password=`, and the user name beside it).
_SECRET_PARAMETERS = frozenset({"password"})


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


def _check_choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"{value!r} is not one of {', '.join(choices)}"

    check.__name__ = f"_check_{name}"
    return check


_check_log_level = _check_choice("log_level", ("debug", "info", "warning", "error"))
_check_log_format = _check_choice("log_format", ("json", "text"))
_check_ocsp_hash = _check_choice("ocsp_hash", ("sha1", "sha256"))


@dataclass(frozen=True)
class Declared:
    """What a setting's declaration adds to its field: help, flag, check, old names."""

    help: str
    flag: str = ""
    check: Callable[[Any], str | None] | None = None
    aliases: tuple[str, ...] = ()


def setting(
    default: Any,
    help: str,
    *,
    flag: str = "",
    check: Callable[[Any], str | None] | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """Declare one configuration key as a field of Settings."""
    declared = {"setting": Declared(help, flag, check, aliases)}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=declared)
    return field(default=default, metadata=declared)


# fmt: off
@dataclass(frozen=True)
class Settings:
    listen: str = setting(
        "127.0.0.1:9191", "gRPC listen address for Envoy's ext_authz calls (empty: off).",
        check=_check_optional_listen)
    http_listen: str = setting(
        "", "HTTP listen address for Envoy's ext_authz in HTTP service mode (empty: off).",
        check=_check_optional_listen)
    http_request_timeout: float = setting(
        10.0, "Seconds a request to http_listen may take to arrive in full from its first byte; "
        "then 408 and the connection is closed.", check=_check_positive)
    http_idle_timeout: float = setting(
        300.0, "Seconds an http_listen connection may stay idle between requests (keep Envoy's "
        "cluster idle_timeout shorter: the shipped configs say 60 s).", check=_check_positive)
    metrics_listen: str = setting(
        "", "HTTP listen address for /metrics, /healthz and /readyz (empty: off).",
        check=_check_optional_listen)
    trust_bundle: str = setting(
        "", "PEM file of the CA certificates that may issue client certificates.",
        check=_check_required_path)
    allowed_issuers: tuple[str, ...] = setting(
        (), "Issuer DN allowed to issue client certificates (RFC 4514 or /slash/ form).",
        flag="--allowed-issuer", check=_check_issuers)
    certificate_source: CertificateSourceKind = setting(
        CertificateSourceKind.PEER,
        "Where the client certificate comes from: peer (Envoy's include_peer_certificate), "
        "xfcc (the x-forwarded-client-cert element the gateway added), or peer-then-xfcc.")
    xfcc_element: XfccElement = setting(
        XfccElement.FIRST,
        "Which XFCC element the gateway added: first (SANITIZE_SET), or last (APPEND_FORWARD "
        "behind trusted proxies; then no element may carry URI or DNS).")
    allow_sha1_signatures: bool = setting(
        False, "Accept SHA-1 signatures — on client and intermediate certificates, delegated OCSP "
        "responder certificates, OCSP responses and CRLs — verified with the signer's key like "
        "any other. Off: each is refused as weak_signature_algorithm, naming which.")
    cert_header: str = setting(
        "X-Client-Cert", "Upstream header that carries the client certificate.",
        check=_check_header)
    cert_header_format: CertHeaderFormat = setting(CertHeaderFormat.BASE64_DER,
                                                   "Encoding of the certificate header.")
    identity_headers: tuple[str, ...] = setting(
        (), "Identity headers to send upstream: " + ", ".join(IDENTITY_NAMES) + ".",
        flag="--identity-header", check=_check_identity)
    deny_status: int = setting(400, "HTTP status of a refused request.", check=deny_status_problem)
    verdict_cache_ttl: float = setting(
        30.0, "Longest Envoy's verdict cache (envoy/envoy-cached.yaml) may replay a verdict; "
        "0: off.", check=_check_not_negative)
    mode: EnforcementMode = setting(
        EnforcementMode.ENFORCE,
        "enforce: refuse; audit: let every request through, marking what would be refused.")
    policies: Mapping[str, Any] = setting(
        {}, "Named policies for routes (ext_authz context extension 'policy'): a YAML mapping.",
        flag="--policies")
    log_level: str = setting("info", "Log level: debug, info, warning or error.",
                             check=_check_log_level)
    log_format: str = setting("json", "Log format: json or text.", check=_check_log_format)
    workers: int = setting(
        1, "Worker processes sharing the gRPC port (SO_REUSEPORT); more than 1 adds a supervisor.",
        check=_check_positive)
    shutdown_grace: float = setting(5.0, "Seconds in-flight checks get to finish after SIGTERM.",
                                    check=_check_positive)
    revocation_mode: RevocationMode = setting(
        RevocationMode.REQUIRE, "Revocation checking: require (fail closed), soft-fail, or off.",
        aliases=("ocsp",))
    revocation: RevocationSources = setting(
        RevocationSources.OCSP,
        "Revocation sources in order: ocsp, crl, ocsp-then-crl, crl-then-ocsp.")
    revocation_skew: float = setting(
        300.0, "Seconds of clock skew tolerated on thisUpdate and nextUpdate (OCSP and CRLs).",
        check=_check_not_negative, aliases=("ocsp_skew",))
    revocation_failure_cache: float = setting(
        5.0, "Seconds a failed revocation check is remembered, so a dead source is not hammered.",
        check=_check_not_negative, aliases=("ocsp_failure_cache",))
    revocation_allowed_hosts: tuple[str, ...] = setting(
        (), "Hosts a certificate's AIA OCSP URL or CRL distribution point may name: host names, "
        "IP addresses or CIDR networks (empty: any). Configured URLs are always allowed.",
        flag="--revocation-allowed-host", check=_check_hosts, aliases=("ocsp_allowed_hosts",))
    crl_urls: IssuerUrls = setting(
        IssuerUrls(),
        "CRL for an issuer, overriding the certificate's distribution points: ISSUER_DN=URL.",
        flag="--crl-url")
    crl_timeout: float = setting(
        4.0, "Seconds for one CRL download (keep it under Envoy's ext_authz timeout).",
        check=_check_positive)
    crl_cache_max_age: float = setting(
        3600.0, "Longest a CRL is used before it is fetched again, whatever its nextUpdate.",
        check=_check_positive)
    ocsp_timeout: float = setting(2.0, "Seconds for one OCSP request, connecting to last byte.",
                                  check=_check_positive)
    ocsp_cache_max_age: float = setting(
        300.0, "Longest a good or unknown OCSP answer is served (bounds how long a revocation "
        "goes unseen).", check=_check_positive)
    ocsp_cache_size: int = setting(100_000, "Most OCSP answers kept.", check=_check_positive)
    ocsp_responders: IssuerUrls = setting(
        IssuerUrls(), "Responder for an issuer, overriding the certificate's AIA: ISSUER_DN=URL.",
        flag="--ocsp-responder")
    ocsp_max_response_age: float = setting(
        0.0, "Oldest an OCSP answer's thisUpdate may be, in seconds, however far its nextUpdate "
        "(0: no bound but nextUpdate).", check=_check_not_negative)
    ocsp_nonce: bool = setting(
        False, "Send an RFC 8954 nonce (answers then cannot be cached by the responder).")
    ocsp_hash: str = setting("sha1", "CertID hash algorithm: sha1 or sha256.",
                             check=_check_ocsp_hash)
    prefetch_window: float = setting(
        300.0, "Answers used within this many seconds are refreshed before they are due (0: off).",
        check=_check_not_negative)
    prefetch_rate: float = setting(10.0, "Most prefetch requests per second to one responder.",
                                   check=_check_positive)
    ocsp_responder_concurrency: int = setting(32, "Most requests in flight to one responder.",
                                              check=_check_positive)
    revocation_cache_url: str = setting(
        "", "Shared revocation cache for every replica: redis://[USER:PASSWORD@]HOST:PORT/DB, "
        "rediss:// for TLS (Redis or Valkey; empty: off). Read at start.",
        check=_check_store_url)
    revocation_deadline: float = setting(
        4.5, "Longest a Check spends on one revocation lookup with the shared cache, waiting for "
        "another replica's fetch included: keep it under Envoy's ext_authz timeout (5 s in the "
        "shipped configs).", check=_check_positive)
    revocation_cache_timeout: float = setting(
        0.25, "Seconds for one operation on the shared revocation cache before the responder is "
        "asked instead (counted on this process's event loop, so it includes its own queueing).",
        check=_check_positive)
    # Not keys: what loading found.
    route_specs: Mapping[str, PolicySpec] = field(default_factory=dict, compare=False)
    """Every policy, parsed once: `default` is the top-level settings unless named so."""
    deprecations: tuple[str, ...] = field(default=(), compare=False)
    """Old key names this configuration used, each with its new name."""
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """What the sources hold that is not a setting (misspelt variables)."""
# fmt: on

    def redacted(self) -> dict[str, Any]:
        """The effective configuration for the startup log line, without secrets (the shared
        cache's password)."""
        shown = {o.key: _shown(getattr(self, o.key)) for o in OPTIONS}
        for key in _SECRET_URLS:
            shown[key] = redact_url(shown[key])
        return shown

    @functools.cached_property
    def certificate(self) -> CertificateSource:
        """The certificate source this configuration names."""
        if self.certificate_source is CertificateSourceKind.XFCC:
            return XfccCertificate(self.xfcc_element)
        if self.certificate_source is CertificateSourceKind.PEER_THEN_XFCC:
            return PeerThenXfcc(self.xfcc_element)
        return PEER

    @functools.cached_property
    def ocsp_config(self) -> OcspConfig:
        return OcspConfig(
            hash_name=self.ocsp_hash,
            nonce=self.ocsp_nonce,
            skew=self.revocation_skew,
            max_age=self.ocsp_cache_max_age,
            failure_ttl=self.revocation_failure_cache,
            overrides=self.ocsp_responders.by_issuer,
            allowed_hosts=self.revocation_allowed_hosts,
            max_response_age=self.ocsp_max_response_age,
            timeout=self.ocsp_timeout,
            allow_sha1=self.allow_sha1_signatures,
        )

    @functools.cached_property
    def crl_config(self) -> CrlConfig:
        return CrlConfig(
            skew=self.revocation_skew,
            max_age=self.crl_cache_max_age,
            failure_ttl=self.revocation_failure_cache,
            overrides=self.crl_urls.by_issuer,
            allowed_hosts=self.revocation_allowed_hosts,
            timeout=self.crl_timeout,
            allow_sha1=self.allow_sha1_signatures,
        )


def _shown(value: Any) -> Any:
    return value.texts if isinstance(value, IssuerUrls) else value


_SECRET_URLS = frozenset({"revocation_cache_url"})


@dataclass(frozen=True)
class Option:
    """One key as the command line, the environment and the file see it (from its field)."""

    key: str
    kind: type
    """str, int, float, bool, list (of strings) or dict: what the raw value is converted to."""
    default: Any
    declared: Declared
    parse: Callable[[Any], Any] | None = None
    """Turns the converted value into the field's type (an enum, IssuerUrls)."""
    choices: tuple[str, ...] = ()

    @property
    def help(self) -> str:
        return self.declared.help

    @property
    def check(self) -> Callable[[Any], str | None] | None:
        return self.declared.check

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.declared.aliases

    @property
    def flag_name(self) -> str:
        return self.declared.flag or _flag(self.key)

    @property
    def alias_flags(self) -> tuple[str, ...]:
        return tuple(_flag(alias) for alias in self.aliases)

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.key.upper()


def _flag(key: str) -> str:
    flag = "--" + key.replace("_", "-")
    return flag[:-1] if key.endswith("_hosts") else flag  # --ocsp-allowed-host, repeated


def _option(name: str, hint: Any, default: Any, declared: Declared) -> Option:
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return Option(name, str, default.value, declared, hint, tuple(m.value for m in hint))
    if hint is IssuerUrls:
        return Option(name, list, [], declared, IssuerUrls.parse)
    origin = typing.get_origin(hint)
    if origin is tuple:
        return Option(name, list, list(default), declared, tuple)
    if origin in (Mapping, dict) or hint is dict:
        return Option(name, dict, {}, declared)
    return Option(name, hint, default, declared)


def _options() -> tuple[Option, ...]:
    hints = typing.get_type_hints(Settings)
    return tuple(
        _option(f.name, hints[f.name], _default(f), f.metadata["setting"])
        for f in fields(Settings)
        if "setting" in f.metadata
    )


def _default(declared: dataclasses.Field[Any]) -> Any:
    if declared.default_factory is not dataclasses.MISSING:
        return declared.default_factory()
    return declared.default


OPTIONS: tuple[Option, ...] = _options()
OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}
ALIASES = {alias: option.key for option in OPTIONS for alias in option.aliases}


# MTLS_AUTHZ_ variables that are not settings, set by the service for itself.
INTERNAL_ENV = frozenset({"MTLS_AUTHZ_WORKER_DIR"})


def load_settings(
    config_path: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
) -> Settings:
    """Merge the sources, validate and parse every key, and return Settings or raise ConfigError.

    `flags` is keyed by setting name (old names included). A setting given under its old name
    and under its new one, in any sources, is an error (which one was meant?); so is a key given
    twice in the file."""
    deprecated: list[str] = []
    raw: dict[str, tuple[Any, str]] = {o.key: (o.default, "default") for o in OPTIONS}
    named: dict[str, dict[str, list[str]]] = {o.key: {"new": [], "old": []} for o in OPTIONS}
    document = read_config_file(config_path) if config_path is not None else {}
    for key, value in document.items():
        current = _current(key, str(config_path), deprecated)
        raw[current] = (value, str(config_path))
        named[current]["old" if key in ALIASES else "new"].append(f"{key} in {config_path}")
    for option in OPTIONS:
        for alias in option.aliases:
            old_env = ENV_PREFIX + alias.upper()
            if old_env in env:
                raw[option.key] = (env[old_env], old_env)
                named[option.key]["old"].append(old_env)
                deprecated.append(f"{old_env} is deprecated; use {option.env_name}")
            if flags.get(alias) is not None:
                raw[option.key] = (flags[alias], _flag(alias))
                named[option.key]["old"].append(_flag(alias))
                deprecated.append(f"{_flag(alias)} is deprecated; use {option.flag_name}")
        if option.env_name in env:
            raw[option.key] = (env[option.env_name], option.env_name)
            named[option.key]["new"].append(option.env_name)
        flag_value = flags.get(option.key)
        if flag_value is not None:
            raw[option.key] = (flag_value, option.flag_name)
            named[option.key]["new"].append(option.flag_name)
    problems = [
        f"{key}: given as {', '.join(names['new'])} and by its old name as "
        f"{', '.join(names['old'])}; give {key} only"
        for key, names in named.items()
        if names["new"] and names["old"]
    ]
    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        try:
            values[key] = _coerce(OPTIONS_BY_KEY[key], value, source)
        except ConfigError as e:
            problems.append(str(e))
    if not problems:
        try:
            values["route_specs"] = route_policies(values, deprecated)
        except ValueError as e:
            problems.append(f"policies: {e}")
    if not problems and not values["listen"] and not values["http_listen"]:
        problems.append("listen, http_listen: at least one transport must listen")
    if problems:
        raise ConfigError("; ".join(problems))
    return Settings(
        **values, deprecations=tuple(deprecated), warnings=tuple(unknown_variables(env))
    )


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """`MTLS_AUTHZ_*` variables that name no setting (a misspelling is otherwise silent)."""
    known = {o.env_name for o in OPTIONS} | {ENV_PREFIX + a.upper() for a in ALIASES}
    found = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known and name not in INTERNAL_ENV:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            found.append(f"{name} is not a setting and is ignored{hint}")
    return found


def _current(key: str, source: str, deprecated: list[str]) -> str:
    """The key's current name; an old name is noted in `deprecated`."""
    if key in ALIASES:
        deprecated.append(f"{source}: {key} is deprecated; use {ALIASES[key]}")
        return ALIASES[key]
    return key


def route_policies(
    values: Mapping[str, Any], deprecated: list[str] | None = None
) -> dict[str, PolicySpec]:
    """Every policy, `default` being the top-level settings unless configured by that name."""
    defaults = PolicySpec(
        allowed_issuers=tuple(values["allowed_issuers"]),
        revocation_mode=values["revocation_mode"],
        deny_status=values["deny_status"],
        mode=values["mode"],
    )
    return parse_policies(values["policies"], defaults, deprecated)


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives a key twice (PyYAML keeps the last
    silently: `revocation_mode: require` then `revocation_mode: off` would mean off)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                first = seen[key]
                raise _DuplicateKey(f"line {line}: {key} is given twice (first on line {first})")
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        document = yaml.load(data, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    for key in document:
        if key in ALIASES and ALIASES[key] in document:
            raise ConfigError(f"{path}: give {ALIASES[key]} only ({key} is its old name)")
        if key not in OPTIONS_BY_KEY and key not in ALIASES:
            raise ConfigError(f"{path}: unknown key {key!r}{_did_you_mean(str(key))}")
    return document


def _did_you_mean(key: str) -> str:
    """A suggestion for a misspelt key, or where the list of keys is."""
    close = difflib.get_close_matches(key, [*OPTIONS_BY_KEY, *ALIASES], n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return " (`mtls-authz serve --help` lists every key)"


def _coerce(option: Option, value: Any, source: str) -> Any:
    """Convert a value from any source to the option's kind, validate it, parse it into the
    field's type."""
    try:
        converted = (
            choice_text(value, option.choices) if option.choices else _convert(option.kind, value)
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{option.key} (from {source}): {e}") from None
    if option.choices and converted not in option.choices:
        raise ConfigError(
            f"{option.key} (from {source}): {converted!r} is not one of {', '.join(option.choices)}"
        )
    problem = option.check(converted) if option.check else None
    if problem:
        raise ConfigError(f"{option.key} (from {source}): {problem}")
    if option.parse is None:
        return converted
    try:
        return option.parse(converted)
    except ValueError as e:
        raise ConfigError(f"{option.key} (from {source}): {e}") from None


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
