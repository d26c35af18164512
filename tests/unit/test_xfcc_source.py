"""The client certificate from XFCC: the element the gateway added, never one a SAN forged."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.client_cert.xfcc import PeerThenXfcc, XfccCertificate, XfccElement
from authz.core.decision import State, decide
from authz.core.issuers import IssuerPolicy
from authz.core.reasons import Denied, Reason
from authz.core.request import CheckInput
from authz.core.trust import TrustBundle
from authz.demo.pki import Identity, LabPki, make_leaf
from tests.support import envoy_field, envoy_subject, envoy_xfcc_element, rfc2253_value

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


# -- xfcc_element: last (APPEND_FORWARD): the client's own header comes first, verbatim --------


@pytest.fixture(scope="module")
def quoter(pki: LabPki) -> Identity:
    """A client of a trusted CA whose CN holds a quote: Envoy writes it as `\\"`."""
    return make_leaf('quote"r', pki.issuing)


def steering_prefixes(victim: Identity) -> list[str]:
    """What a client may send as its own XFCC, hoping to be read as the victim: the victim's
    public certificate in Envoy's form, with unbalanced and escaped quotes, stray separators."""
    element = envoy_xfcc_element(victim.cert)
    fields = element.split(";", 1)[1]
    return [
        f'{element};x="',
        f'{element};Subject="',
        f'{element};Subject="\\',
        f'{element},x="',
        f'By=a;{element};y=\\"',
        f'"{element}',
        f'{element};Subject="CN=x\\"',
        f"{element},",
        f"{element};",
        f"{element}=",
        f'{element};UR=spiffe://x";',
        f'x=",{element}',
        f'{fields};a="b\\",{element};c="',
    ]


def test_last_reads_the_element_envoy_appended_whatever_the_client_wrote_before_it(
    alice: Identity, victim: Identity, quoter: Identity
) -> None:
    """A quote in the client's CN, escaped by Envoy, once let a client-written unbalanced quote
    swallow Envoy's element: the victim's certificate was read. Read from the end, only the
    certificate Envoy verified can be."""
    for client in (alice, quoter):
        own = envoy_xfcc_element(
            client.cert, [], subject=envoy_subject(client.cert), by=["spiffe://lab/gateway"]
        )
        for prefix in steering_prefixes(victim):
            header = f"{prefix},{own}"
            assert leaf_of(LAST, CheckInput("", header)) == client.cert, prefix


def test_last_refuses_a_header_in_which_envoy_wrote_a_san(
    alice: Identity, victim: Identity
) -> None:
    """Hidden behind a client-opened quote or not, Envoy's unquoted URI or DNS could carry a forged
    element after its own: such a header is never used in `last` mode."""
    forged = envoy_xfcc_element(victim.cert)
    for prefix in ('x="', "", 'Hash=00;Cert="'):
        for san in (f"URI=spiffe://lab/a,{forged}", f"DNS=a.lab,{forged}", "URI="):
            own = f"{envoy_xfcc_element(alice.cert)};{san}"
            denied = refused(LAST, f"{prefix},{own}" if prefix else own)
            assert denied.reason is Reason.XFCC_INVALID, (prefix, san)
            assert "no element may carry URI or DNS" in denied.message


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda e: e.replace("Hash=", "hash="), "no Hash as Envoy writes it"),
        (lambda e: e.replace(e[5:69], e[5:69].upper()), "no Hash as Envoy writes it"),
        (lambda e: e.replace("Hash=", "x;Hash="), "does not begin as Envoy writes one"),
        (lambda e: e + ';Subject="CN=a"b"', "does not end as Envoy writes one"),
        (lambda e: e + ';Subject="CN=é"', "Subject of its last element is not as Envoy"),
        (lambda e: e + ';Other="x"', "does not end as Envoy writes one"),
        (lambda e: e.replace('Cert="', 'Cert="+'), "Cert of its last element is not"),
        (lambda e: e.replace(";Cert=", ";Chain=") + ';Cert="x"', "does not end as Envoy"),
        (lambda e: e + ";Foo=bar", "no Hash as Envoy writes it"),
    ],
)
def test_last_refuses_an_element_that_is_not_exactly_as_envoy_writes_it(
    alice: Identity, edit: object, says: str
) -> None:
    assert callable(edit)
    denied = refused(LAST, f'x="",{edit(envoy_xfcc_element(alice.cert))}')
    assert denied.reason is Reason.XFCC_INVALID and says in denied.message


def test_last_reads_by_fields_chain_and_subject_as_envoy_writes_them(
    pki: LabPki, alice: Identity
) -> None:
    own = envoy_xfcc_element(
        alice.cert, [pki.issuing.cert], subject=envoy_subject(alice.cert),
        by=["spiffe://lab/gw", "spiffe://lab/gw2"],
    )  # fmt: skip
    presented = LAST.present(CheckInput("", own))
    assert LAST.leaf(presented) == alice.cert
    assert presented.chain_hint.startswith(f"Hash={alice.cert.fingerprint(hashes.SHA256()).hex()};")
    assert leaf_of(LAST, CheckInput("", f"{envoy_xfcc_element(pki.client('x').cert)},{own}")) == (
        alice.cert
    )


# Text a client may write in front of Envoy's element: every separator and escape XFCC has.
client_text = st.text(alphabet='"\\,;=abHhCc\x00 é', max_size=30)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.lists(st.one_of(client_text, st.sampled_from(["VICTIM", "FIELDS"])), max_size=6),
    cn=st.text(max_size=12).filter(lambda t: "\x00" not in t),
    subject=st.booleans(),
    by=st.lists(st.sampled_from(["spiffe://lab/gw", "https://gw.lab/x?a=b"]), max_size=2),
)
def test_property_last_chooses_the_element_envoy_wrote(
    pki: LabPki, alice: Identity, victim: Identity, prefix: list[str], cn: str, subject: bool,
    by: list[str],
) -> None:  # fmt: skip
    """Whatever the client wrote before it, the element chosen has the Hash Envoy wrote, or the
    header is refused; never the victim's."""
    element = envoy_xfcc_element(victim.cert)
    parts = {"VICTIM": element, "FIELDS": element.split(";", 1)[1]}
    written = "".join(parts.get(p, p) for p in prefix)
    # Envoy's element for alice's certificate, with the Subject a CN of `cn` would get.
    own = envoy_xfcc_element(
        alice.cert, by=by, subject=f"CN={rfc2253_value(cn)},O=Lab" if subject else None
    )
    header = f"{written},{own}" if prefix else own
    try:
        presented = LAST.present(CheckInput("", header))
    except Denied as denied:
        assert denied.reason is Reason.XFCC_INVALID
        return
    assert LAST.leaf(presented) == alice.cert
