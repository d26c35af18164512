"""Hostile and broken inputs for Check, each with the verdict it must get. Shared by the unit
tests (pure `decide`) and the end-to-end test (a real mtls-authz over gRPC)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from authz.demo.pki import Identity, LabPki, make_leaf, reissue
from tests.support import envoy_escape, envoy_field, xfcc_with_chain


@dataclass(frozen=True)
class Case:
    name: str
    certificate: str
    xfcc: str
    expected: str  # a reason code, or "allowed"


def _with_critical_unknown_extension(pki: LabPki) -> x509.Certificate:
    unknown = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.7"), b"\x05\x00")
    return reissue(pki.client("critical-ext"), pki.issuing, [(unknown, True)]).cert


def cases(pki: LabPki) -> list[Case]:
    now = dt.datetime.now(dt.UTC)
    good = pki.client("hostile-good")
    good_field = envoy_field(good.cert)
    pem = good.cert_pem.decode()
    server_only: Identity = make_leaf(
        "server-only", pki.issuing, usages=[ExtendedKeyUsageOID.SERVER_AUTH]
    )
    csr = (
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIBADCBpwIBADAO\n-----END CERTIFICATE REQUEST-----\n"
    )
    return [
        Case("empty", "", "", "missing_certificate"),
        Case("whitespace", " \n\t ", "", "missing_certificate"),
        Case("invalid URL-encoding", "%ZZ%G1%", "", "malformed_certificate"),
        Case("not UTF-8 once decoded", "%FF%FE%FD", "", "malformed_certificate"),
        Case("truncated PEM", envoy_escape(pem[: len(pem) // 2]), "", "malformed_certificate"),
        Case(
            "PEM of a private key", envoy_escape(good.key_pem.decode()), "", "malformed_certificate"
        ),
        Case("PEM of a CSR", envoy_escape(csr), "", "malformed_certificate"),
        Case(
            "DER garbage", "\x30\x82\x01\x0a\x02\x82\x01\x01\x00\xff", "", "malformed_certificate"
        ),
        Case("base64 without PEM armour", pem.split("\n", 1)[1], "", "malformed_certificate"),
        Case(
            "several certificates",
            envoy_escape(good.chain_pem.decode()),
            "",
            "malformed_certificate",
        ),
        Case(
            "1 MB certificate field", good_field + "A" * (1024 * 1024), "", "malformed_certificate"
        ),
        Case(
            "CA certificate as client", envoy_field(pki.other.cert), "", "not_a_client_certificate"
        ),
        Case("server-only EKU", envoy_field(server_only.cert), "", "not_a_client_certificate"),
        Case(
            "unknown critical extension",
            envoy_field(_with_critical_unknown_extension(pki)),
            "",
            "unsupported_critical_extension",
        ),
        Case(
            "expired",
            envoy_field(
                pki.client(
                    "expired",
                    not_before=now - dt.timedelta(days=9),
                    not_after=now - dt.timedelta(days=1),
                ).cert
            ),
            "",
            "certificate_expired",
        ),
        Case(
            "not yet valid",
            envoy_field(pki.client("future", not_before=now + dt.timedelta(days=1)).cert),
            "",
            "certificate_not_yet_valid",
        ),
        # XFCC is only ever a hint: absurd values must not change a good verdict or crash anything.
        Case("XFCC with unbalanced quotes", good_field, 'Hash=1;Chain="-----BEGIN', "allowed"),
        Case(
            "XFCC with 10 000 elements", good_field, ",".join(["By=x;Hash=y"] * 10_000), "allowed"
        ),
        Case("XFCC of 1 MB", good_field, "Chain=" + "A" * (1024 * 1024), "allowed"),
        Case(
            "XFCC with a foreign chain", good_field, xfcc_with_chain([pki.foreign.cert]), "allowed"
        ),
    ]
