"""Every key, declared once: the fields of `Settings` are the whole list of settings, with their
types, defaults, help, flags, checks and old names (`setting`). Adding a setting is adding a
field here; the flags, the environment variables and the file keys follow from it. What is
derived from the values (the certificate source, the revocation sources' configurations) is
worked out here too, once."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from authz.client_cert.xfcc import PeerThenXfcc, XfccCertificate, XfccElement
from authz.core.identity import IDENTITY_NAMES
from authz.core.modes import EnforcementMode, RevocationMode, RevocationSources, deny_status_problem
from authz.core.policies import PolicySpec
from authz.core.source import PEER, CertificateSource
from authz.core.verdict import CertHeaderFormat
from authz.revocation.crl_source import CrlConfig
from authz.revocation.ocsp_source import OcspConfig
from authz.service.settings.declare import setting
from authz.service.settings.values import (
    CertificateSourceKind,
    IssuerUrls,
    check_header,
    check_hosts,
    check_identity,
    check_issuers,
    check_log_format,
    check_log_level,
    check_not_negative,
    check_ocsp_hash,
    check_optional_listen,
    check_positive,
    check_required_path,
    check_store_url,
    redact_url,
)


# fmt: off
@dataclass(frozen=True)
class Settings:
    listen: str = setting(
        "127.0.0.1:9191", "gRPC address Envoy's ext_authz calls, HOST:PORT (empty: no gRPC).",
        check=check_optional_listen, restart=True)
    http_listen: str = setting(
        "", "Address for Envoy's ext_authz in HTTP service mode (empty: off). Either transport, or "
        "both, may listen.", check=check_optional_listen, restart=True)
    http_request_timeout: float = setting(
        10.0, "Seconds a request to http_listen may take to arrive in full from its first byte; "
        "then 408 and the connection is closed.", check=check_positive, restart=True, duration=True)
    http_idle_timeout: float = setting(
        300.0, "Seconds an http_listen connection may stay idle between requests (keep Envoy's "
        "cluster idle_timeout shorter, as the shipped envoy-http.yaml does with 60 s, so Envoy "
        "closes first and no request races the close).", check=check_positive, restart=True,
        duration=True)
    forward_auth_listen: str = setting(
        "", "Address for forward-auth from Traefik, Caddy or nginx (empty: off): "
        "/forward-auth/<traefik|caddy|nginx>[/<policy>]. A listener of its own, so no path Envoy "
        "forwards can reach it; keep it reachable from the proxy only.",
        check=check_optional_listen, restart=True)
    metrics_listen: str = setting(
        "", "HTTP address for /metrics, /healthz and /readyz (empty: off).",
        check=check_optional_listen, restart=True)
    trust_bundle: str = setting(
        "", "PEM file of the CA certificates that may issue client certificates (roots and/or "
        "issuing CAs; each must be a CA).",
        check=check_required_path)
    allowed_issuers: tuple[str, ...] = setting(
        (), "Issuer DNs allowed to issue client certificates, RFC 4514 (CN=Lab Issuing CA,O=Lab) "
        "or OpenSSL's slash form (/O=Lab/CN=Lab Issuing CA).",
        flag="--allowed-issuer", check=check_issuers)
    certificate_source: CertificateSourceKind = setting(
        CertificateSourceKind.PEER,
        "Where the client certificate comes from: peer (Envoy's include_peer_certificate), "
        "xfcc (the x-forwarded-client-cert element the gateway added: Istio, Envoy Gateway, "
        "Emissary, Gloo), or peer-then-xfcc (the peer certificate when Envoy sends one).")
    xfcc_element: XfccElement = setting(
        XfccElement.FIRST,
        "Which XFCC element the gateway added: first (SANITIZE_SET: safe with any XFCC fields), or "
        "last (APPEND_FORWARD behind proxies you trust: read from the end exactly as Envoy "
        "writes it; then no element may carry URI or DNS, which Envoy writes unquoted).")
    allow_sha1_signatures: bool = setting(
        False, "Accept SHA-1 signatures — on client and intermediate certificates, delegated OCSP "
        "responder certificates, OCSP responses and CRLs — verified with the signer's key like "
        "any other, nothing else relaxed. Off: each is refused as weak_signature_algorithm, naming "
        "which (a refused OCSP answer or CRL makes the Check revocation_check_failed).")
    cert_header: str = setting(
        "X-Client-Cert", "Upstream header that carries the client certificate (overwriting any "
        "client-sent copy).",
        check=check_header)
    cert_header_format: CertHeaderFormat = setting(
        CertHeaderFormat.BASE64_DER,
        "Encoding of the certificate header: base64-der (base64 of the DER, one line, as Azure "
        "Application Gateway), pem-url (URL-encoded PEM, as Envoy's XFCC and nginx's "
        "$ssl_client_escaped_cert), rfc9440 (:base64-DER:, RFC 9440 Client-Cert).")
    identity_headers: tuple[str, ...] = setting(
        (), "Identity headers to send upstream: " + ", ".join(IDENTITY_NAMES) + ".",
        flag="--identity-header", check=check_identity)
    deny_status: int = setting(
        400, "HTTP status of a refused request (400-599); revocation_check_failed keeps 503, "
        "unknown_policy, policy_mismatch and internal_error 500.", check=deny_status_problem)
    verdict_cache_ttl: float = setting(
        30.0, "Longest Envoy's verdict cache (envoy/envoy-cached.yaml) may replay a verdict; "
        "0: off.", check=check_not_negative, duration=True)
    mode: EnforcementMode = setting(
        EnforcementMode.ENFORCE,
        "enforce: refuse; audit: let every request through, with x-mtls-authz-would-deny: <reason> "
        "upstream for those enforcement would refuse.")
    policies: Mapping[str, Any] = setting(
        {}, "Named policies for routes (ext_authz context extension 'policy'): a YAML mapping.",
        flag="--policies")
    log_level: str = setting(
        "info", "Log level: debug, info, warning or error. Denies log at info, allows at debug.",
        check=check_log_level)
    log_format: str = setting("json", "Log format: json (one object per line) or text.",
                              check=check_log_format)
    workers: int = setting(
        1, "Worker processes sharing the listening ports (SO_REUSEPORT); more than 1 adds a "
        "supervisor that sums /metrics, restarts a worker that dies and drains all on SIGTERM. "
        "Each worker keeps its own caches.", check=check_positive, restart=True)
    shutdown_grace: float = setting(5.0, "Seconds in-flight checks get to finish after SIGTERM.",
                                    check=check_positive, restart=True, duration=True)
    revocation_mode: RevocationMode = setting(
        RevocationMode.REQUIRE,
        "Revocation checking: require (no verified answer, no entry), soft-fail (revoked and "
        "unknown are refused, a failed check lets the client in marked unchecked), or off.",
        aliases=("ocsp",))
    revocation: RevocationSources = setting(
        RevocationSources.OCSP,
        "Where revocation status comes from, in order: ocsp, crl, ocsp-then-crl, crl-then-ocsp. "
        "The first source with a verified answer decides.")
    revocation_skew: float = setting(
        300.0, "Seconds of clock skew tolerated on thisUpdate and nextUpdate (OCSP and CRLs).",
        check=check_not_negative, aliases=("ocsp_skew",), duration=True)
    revocation_failure_cache: float = setting(
        5.0, "Seconds a failed revocation check is remembered, so a dead source is not hammered.",
        check=check_not_negative, aliases=("ocsp_failure_cache",), duration=True)
    revocation_allowed_hosts: tuple[str, ...] = setting(
        (), "Hosts a certificate's AIA OCSP URL or CRL distribution point may name: host names, "
        "IP addresses or CIDR networks (networks match IP-literal URLs only; empty: any). "
        "Others are never contacted. Configured URLs are always allowed.",
        flag="--revocation-allowed-host", check=check_hosts, aliases=("ocsp_allowed_hosts",))
    crl_urls: IssuerUrls = setting(
        IssuerUrls(),
        "CRL for an issuer, overriding the certificate's distribution points: ISSUER_DN=URL.",
        flag="--crl-url")
    crl_timeout: float = setting(
        3.0, "Seconds for one CRL download (keep it under Envoy's ext_authz timeout; with a "
        "shared cache, under revocation_deadline less 2 × revocation_cache_timeout).",
        check=check_positive, duration=True)
    crl_cache_max_age: float = setting(
        3600.0, "Longest a CRL is used before it is fetched again, whatever its nextUpdate.",
        check=check_positive, duration=True)
    crl_max_bytes: int = setting(
        64 * 1024 * 1024, "Largest CRL downloaded, in bytes (streamed; larger fails as "
        "too_large). The default holds a CRL of over a million entries.", check=check_positive)
    ocsp_timeout: float = setting(2.0, "Seconds for one OCSP request, connecting to last byte.",
                                  check=check_positive, duration=True)
    ocsp_cache_max_age: float = setting(
        300.0, "Longest a good OCSP answer is served, whatever its nextUpdate (bounds how long a "
        "revocation goes unseen).", check=check_positive, duration=True)
    ocsp_unknown_cache: float = setting(
        5.0, "Longest an OCSP unknown is kept, here and in the shared cache (a responder says it "
        "for a certificate issued a moment ago, until its index catches up).",
        check=check_not_negative, duration=True)
    ocsp_cache_size: int = setting(
        100_000, "Most OCSP answers kept (least recently used evicted).", check=check_positive,
        restart=True)
    ocsp_responders: IssuerUrls = setting(
        IssuerUrls(), "Responder for an issuer, overriding the certificate's AIA: ISSUER_DN=URL "
        "(CN=Lab Issuing CA,O=Lab=http://ocsp.lab:8080).",
        flag="--ocsp-responder")
    ocsp_max_response_age: float = setting(
        0.0, "Oldest an OCSP answer's thisUpdate may be, in seconds, however far its nextUpdate "
        "(0: no bound but nextUpdate), as openssl ocsp -status_age: bounds how long an on-path "
        "replay of an old signed good can last without a nonce.", check=check_not_negative,
        duration=True)
    ocsp_nonce: bool = setting(
        False, "Send an RFC 8954 nonce and require it echoed (responders and their CDNs then "
        "cannot serve cached answers, and nothing is shared between replicas).")
    ocsp_hash: str = setting("sha1", "CertID hash: sha1 (what RFC 5019/9919 responders expect) "
                             "or sha256.",
                             check=check_ocsp_hash)
    prefetch_window: float = setting(
        300.0, "Answers (OCSP and CRL) used within this many seconds are refreshed in the "
        "background before they are due, so returning clients never wait (0: off).",
        check=check_not_negative, restart=True, duration=True)
    prefetch_rate: float = setting(10.0, "Most prefetch requests per second to one responder.",
                                   check=check_positive, restart=True)
    ocsp_responder_concurrency: int = setting(32, "Most requests in flight to one responder.",
                                              check=check_positive)
    revocation_cache_url: str = setting(
        "", "Shared revocation cache (and block list) for every replica: "
        "redis://[USER:PASSWORD@]HOST:PORT/DB, rediss:// for TLS, unix://PATH?db=N for a local "
        "socket, redis+cluster://HOST:PORT[,HOST:PORT] for Redis Cluster, "
        "redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER[/DB] through Sentinel (valkey… the same; "
        "empty: off). Logs show it without its passwords.",
        check=check_store_url, restart=True)
    block_list_file: str = setting(
        "", "Emergency block list, YAML or JSON (see docs/incidents.md): watched, a change in "
        "force within a second; a malformed file keeps the previous list. Blocks in the shared "
        "store (revocation_cache_url, written by mtls-authz block) apply too (empty: none).",
        restart=True)
    revocation_deadline: float = setting(
        4.5, "Longest a Check spends on one revocation lookup with the shared cache, waiting for "
        "another replica's fetch included: keep it under Envoy's ext_authz timeout (5 s in the "
        "shipped configs).", check=check_positive, restart=True, duration=True)
    revocation_cache_timeout: float = setting(
        0.25, "Seconds for one operation on the shared revocation cache before the responder is "
        "asked instead (counted on this process's event loop, so it includes its own queueing).",
        check=check_positive, restart=True, duration=True)
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
        shown = {f.name: _shown(getattr(self, f.name)) for f in fields(self) if f.metadata}
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
            unknown_ttl=self.ocsp_unknown_cache,
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
            max_bytes=self.crl_max_bytes,
        )



def _shown(value: Any) -> Any:
    return value.texts if isinstance(value, IssuerUrls) else value


# Keys whose value is a URL that may hold a password.
_SECRET_URLS = frozenset({"revocation_cache_url"})
