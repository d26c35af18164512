"""The emergency block list, pure: what an entry names and how it is written, matching a leaf
by each kind, expiry, the content-derived generation, the file's format with the line at fault,
and the Check: refused before any responder is asked, in audit mode too, never replayed."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes

from authz.blocklist.file_source import BlockFileError, parse_block_text
from authz.core.authorizer import Authorizer
from authz.core.blocks import (
    BlockEntry,
    BlockKind,
    BlockList,
    Blocks,
    entry_from_mapping,
    leaf_keys,
    selector,
    spki_of,
)
from authz.core.check import Runtime, check
from authz.core.decision import State
from authz.core.issuers import IssuerPolicy
from authz.core.modes import RevocationMode
from authz.core.reasons import Reason
from authz.core.request import CheckInput
from authz.core.trust import TrustBundle
from authz.core.verdict import CertHeaderFormat, VerdictRules
from authz.demo.pki import Identity, LabPki, reissue
from tests.support import envoy_field

NOW = dt.datetime.now(dt.UTC)


def entry(kind: str, value: object, **more: object) -> BlockEntry:
    return entry_from_mapping({kind: value, "reason": "leaked (INC-1)", **more}, "test")


@pytest.fixture(scope="module")
def client(pki: LabPki) -> Identity:
    return pki.client("blocked-client")


def by_every_kind(client: Identity) -> dict[BlockKind, BlockEntry]:
    cert = client.cert
    return {
        BlockKind.FINGERPRINT: entry(
            "fingerprint", cert.fingerprint(hashes.SHA256()).hex().upper()
        ),
        BlockKind.SERIAL: entry(
            "serial", {"issuer": "cn=LAB issuing CA,o=Lab", "serial": f"{cert.serial_number:X}"}
        ),
        BlockKind.SPKI: entry("spki", spki_of(cert)),
        BlockKind.SUBJECT: entry("subject", "CN=blocked-client,O=Lab"),
    }


def test_each_kind_matches_the_certificate_it_names_and_no_other(
    pki: LabPki, client: Identity
) -> None:
    other = pki.client("not-blocked")
    for kind, found in by_every_kind(client).items():
        blocks = BlockList.of([found])
        assert blocks.match(leaf_keys(client.cert), NOW) == found, kind
        assert blocks.match(leaf_keys(other.cert), NOW) is None, kind


def test_a_key_stays_blocked_when_the_ca_reissues_a_certificate_for_it(
    pki: LabPki, client: Identity
) -> None:
    again = reissue(client, pki.issuing)  # same key, new serial and fingerprint
    by_key = BlockList.of([entry("spki", spki_of(client.cert))])
    by_certificate = BlockList.of(
        [entry("fingerprint", client.cert.fingerprint(hashes.SHA256()).hex())]
    )
    assert by_key.match(leaf_keys(again.cert), NOW) is not None
    assert by_certificate.match(leaf_keys(again.cert), NOW) is None


def test_a_uri_san_names_a_workload(pki: LabPki) -> None:
    from authz.demo.pki import make_leaf

    workload = make_leaf("w", pki.issuing, uris=["spiffe://lab/ns/a/sa/b"])
    blocks = BlockList.of([entry("uri", "spiffe://lab/ns/a/sa/b")])
    assert blocks.match(leaf_keys(workload.cert), NOW) is not None


def test_an_expired_entry_no_longer_blocks_and_leaves_the_list(client: Identity) -> None:
    soon = entry("spki", spki_of(client.cert), expires=(NOW + dt.timedelta(seconds=5)).isoformat())
    blocks = BlockList.of([soon])
    assert blocks.match(leaf_keys(client.cert), NOW) is not None
    later = NOW + dt.timedelta(seconds=6)
    assert blocks.match(leaf_keys(client.cert), later) is None
    assert len(blocks.active(later)) == 0 and blocks.active(NOW) is blocks


def test_the_generation_is_the_content_s_whatever_the_order_or_source(client: Identity) -> None:
    kinds = list(by_every_kind(client).values())
    assert BlockList.of(kinds).generation == BlockList.of(reversed(kinds)).generation
    assert BlockList.of(kinds).generation != BlockList.of(kinds[1:]).generation
    assert BlockList.of([]).generation == "0"
    # An entry given by two sources is one entry.
    assert len(BlockList.of([kinds[0], entry_from_mapping(kinds[0].to_mapping(), "store")])) == 1


def test_the_same_selector_has_the_same_id_however_it_is_written(client: Identity) -> None:
    hexed = client.cert.fingerprint(hashes.SHA256()).hex()
    colons = ":".join(hexed[i : i + 2] for i in range(0, 64, 2)).upper()
    assert (
        selector("fingerprint", hexed).id
        == selector("fingerprint", f"sha256 Fingerprint={colons}").id
    )
    assert selector("subject", "CN=a,O=b").id == selector("subject", "cn=A,o=B").id


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ({"reason": "x"}, "exactly one of"),
        ({"fingerprint": "ab", "spki": "cd", "reason": "x"}, "exactly one of"),
        ({"fingerprint": "ab", "reason": "x"}, "64 hex digits"),
        ({"fingerprint": "a" * 64}, "needs a reason"),
        ({"fingerprint": "a" * 64, "reason": "x" * 201}, "at most 200"),
        ({"fingerprint": "a" * 64, "reason": "two\nlines"}, "one line"),
        ({"fingerprint": "a" * 64, "reason": "x", "expires": "soon"}, "ISO 8601"),
        ({"fingerprint": "a" * 64, "reason": "x", "color": "red"}, "unknown field 'color'"),
        ({"serial": {"issuer": "CN=x", "serial": "zz"}, "reason": "x"}, "serial must be hex"),
        ({"subject": "not a dn", "reason": "x"}, "not a valid"),
    ],
)
def test_a_bad_entry_says_what_is_wrong(item: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        entry_from_mapping(item)


def test_the_file_names_the_line_at_fault() -> None:
    good = "- fingerprint: " + "a" * 64 + "\n  reason: leaked\n"
    assert len(parse_block_text(good, "blocks.yaml")) == 1
    assert (
        len(
            parse_block_text(
                "blocks:\n" + good.replace("- ", "  - ").replace("\n  r", "\n    r"), "b"
            )
        )
        == 1
    )
    assert parse_block_text("", "b") == []
    assert (
        len(parse_block_text('[{"spki": "' + "b" * 64 + '", "reason": "json too"}]', "b.json")) == 1
    )
    with pytest.raises(BlockFileError, match=r"blocks.yaml: line 3: .*64 hex digits"):
        parse_block_text(good + "- fingerprint: abc\n  reason: x\n", "blocks.yaml")
    with pytest.raises(BlockFileError, match=r"line 2: not valid YAML"):
        parse_block_text("- a: [\n- b: ]]\n", "blocks.yaml")
    with pytest.raises(BlockFileError, match="expected a list of entries"):
        parse_block_text("fingerprint: x\n", "blocks.yaml")


# -- the Check ------------------------------------------------------------------------------


class AskedSource:
    """A revocation source that records being asked (a block must be said before)."""

    names = "OCSP responder"

    def __init__(self) -> None:
        self.asked = 0

    def source_url(self, leaf: object) -> str:
        return "http://ocsp.test"

    async def check(self, leaf: object, issuer: object, url: str) -> object:
        self.asked += 1
        raise AssertionError("a blocked certificate made a revocation source be asked")


def runtime(pki: LabPki, blocks: Blocks, source: AskedSource, audit: bool = False) -> Runtime:
    state = State(
        TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )
    authorizer = Authorizer(state, source, RevocationMode.REQUIRE, blocks=blocks)  # type: ignore[arg-type]
    rules = VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400, verdict_cache_ttl=30)
    return Runtime(authorizer, rules, audit=audit)


@pytest.mark.parametrize("audit", [False, True], ids=["enforce", "audit"])
async def test_a_blocked_certificate_is_refused_before_any_responder_is_asked(
    pki: LabPki, client: Identity, audit: bool
) -> None:
    """In audit mode too: an operator who blocks means it. Never replayed by Envoy's verdict
    cache (ttl 0), so an unblock takes effect at once."""
    found = by_every_kind(client)[BlockKind.SPKI]
    source = AskedSource()
    checked = await check(
        runtime(pki, Blocks(BlockList.of([found])), source, audit),
        CheckInput(envoy_field(client.cert)),
        NOW,
    )
    assert checked.decision.reason is Reason.CERTIFICATE_BLOCKED and not checked.verdict.allowed
    assert checked.decision.block_id == found.id
    assert checked.verdict.status == 400 and checked.verdict.ttl == 0
    assert '"message": "The client certificate is blocked: leaked (INC-1)"' in checked.verdict.body
    assert "by" not in checked.verdict.body and source.asked == 0
