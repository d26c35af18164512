"""The client certificate from XFCC: the element the gateway added, never one a SAN forged."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes

from authz.client_cert.xfcc import PeerThenXfcc, XfccCertificate, XfccElement
from authz.core.decision import State, decide
from authz.core.issuers import IssuerPolicy
from authz.core.reasons import Denied, Reason
from authz.core.request import CheckInput
from authz.core.trust import TrustBundle
from authz.demo.pki import Identity, LabPki
from tests.support import envoy_field, envoy_xfcc_element

NOW = dt.datetime.now(dt.UTC)
FIRST, LAST = XfccCertificate(XfccElement.FIRST), XfccCertificate(XfccElement.LAST)


@pytest.fixture(scope="module")
def alice(pki: LabPki) -> Identity:
    return pki.client("xfcc-alice")


@pytest.fixture(scope="module")
def victim(pki: LabPki) -> Identity:
    """Someone else's certificate: public, so anyone can put it in a header."""
    return pki.client("xfcc-victim")


def leaf_of(source: XfccCertificate | PeerThenXfcc, request: CheckInput) -> object:
    return source.leaf(source.present(request))


def refused(source: XfccCertificate, xfcc: str) -> Denied:
    with pytest.raises(Denied) as info:
        source.present(CheckInput("", xfcc))
    return info.value


def test_the_element_envoy_wrote_gives_the_leaf_and_its_chain(pki: LabPki, alice: Identity) -> None:
    xfcc = envoy_xfcc_element(
        alice.cert, [pki.issuing.cert], subject="CN=xfcc-alice,O=Lab", uri="spiffe://lab/a",
        dns=["a.lab"],
    )  # fmt: skip
    presented = FIRST.present(CheckInput("", xfcc))
    assert FIRST.leaf(presented) == alice.cert
    assert presented.field == envoy_field(alice.cert)
    assert presented.chain_hint.startswith(f"Hash={alice.cert.fingerprint(hashes.SHA256()).hex()};")


def test_a_san_that_forges_a_whole_element_is_never_used(alice: Identity, victim: Identity) -> None:
    """Envoy writes URI unquoted: a comma in it starts a 'new element' carrying someone else's
    certificate with its true hash. The gateway's own element comes first, and only it is read."""
    forged = envoy_xfcc_element(victim.cert)
    xfcc = envoy_xfcc_element(alice.cert, uri=f"spiffe://lab/a,{forged}")
    assert xfcc.count("Cert=") == 2
    assert leaf_of(FIRST, CheckInput("", xfcc)) == alice.cert


def test_a_san_that_adds_a_second_cert_to_the_element_is_refused(
    alice: Identity, victim: Identity
) -> None:
    forged = envoy_xfcc_element(victim.cert).split(";", 1)[1]  # Cert="…" of the victim
    xfcc = envoy_xfcc_element(alice.cert, uri=f"spiffe://lab/a;{forged}")
    denied = refused(FIRST, xfcc)
    assert denied.reason is Reason.XFCC_INVALID and "Cert appears twice" in denied.message


def test_a_hash_that_is_not_the_cert_s_is_refused(alice: Identity, victim: Identity) -> None:
    element = envoy_xfcc_element(alice.cert)
    victim_hash = victim.cert.fingerprint(hashes.SHA256()).hex()
    swapped = f"Hash={victim_hash};" + element.split(";", 1)[1]
    assert "is not the SHA-256 of its Cert" in refused(FIRST, swapped).message


@pytest.mark.parametrize(
    ("xfcc", "reason", "says"),
    [
        ("", Reason.MISSING_CERTIFICATE, "no x-forwarded-client-cert header"),
        ('Hash=00;Subject="CN=x"', Reason.XFCC_INVALID, "has no Cert"),
        ('Hash=00;Cert="unterminated', Reason.XFCC_INVALID, "quotes do not balance"),
        ('Hash=00;Cert="not%20a%20certificate"', Reason.MALFORMED_CERTIFICATE, "not a PEM"),
        ("x" * 300_000, Reason.XFCC_INVALID, "longer than"),
    ],
)
def test_a_header_without_the_shape_needed_is_refused_with_a_reason(
    xfcc: str, reason: Reason, says: str
) -> None:
    denied = refused(FIRST, xfcc)
    assert denied.reason is reason and says in denied.message


def test_last_takes_the_nearest_proxy_s_element_and_refuses_unquoted_sans(
    alice: Identity, victim: Identity
) -> None:
    """APPEND_FORWARD: what the client (or a farther proxy) sent comes first; the proxy in front
    of mtls-authz appended its own element last."""
    client_sent = envoy_xfcc_element(victim.cert)
    assert leaf_of(LAST, CheckInput("", f"{client_sent},{envoy_xfcc_element(alice.cert)}")) == (
        alice.cert
    )
    with_uri = f"{client_sent},{envoy_xfcc_element(alice.cert, uri='spiffe://lab/a')}"
    assert "no element may carry URI or DNS" in refused(LAST, with_uri).message


def test_peer_then_xfcc_prefers_what_envoy_verified_itself(
    alice: Identity, victim: Identity
) -> None:
    both = PeerThenXfcc()
    xfcc = envoy_xfcc_element(victim.cert)
    assert leaf_of(both, CheckInput(envoy_field(alice.cert), xfcc)) == alice.cert
    assert leaf_of(both, CheckInput("", xfcc)) == victim.cert


def test_decide_with_the_xfcc_source_proves_the_issuer_through_the_element_s_chain(
    pki: LabPki, alice: Identity
) -> None:
    """The bundle holds only the root: the intermediate comes from the chain of the element used."""
    state = State(
        TrustBundle.from_certificates([pki.root.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
        source=FIRST,
    )
    with_chain = envoy_xfcc_element(alice.cert, [pki.issuing.cert], uri="spiffe://lab/a")
    allowed = decide(CheckInput("", with_chain), state, NOW)
    assert allowed.allowed and allowed.leaf == alice.cert
    assert allowed.xfcc == FIRST.present(CheckInput("", with_chain)).chain_hint
    without = decide(CheckInput("", envoy_xfcc_element(alice.cert)), state, NOW)
    assert without.reason is Reason.ISSUER_UNKNOWN
