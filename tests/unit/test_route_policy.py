from __future__ import annotations

import pytest

from authz.core.policies import DEFAULT_POLICY, PolicySpec, parse_policies
from authz.demo.pki import LabPki
from tests.unit.test_identity import hostile_client

DEFAULTS = PolicySpec(allowed_issuers=(LabPki.ISSUING_DN,))


def spec(**raw: object) -> PolicySpec:
    return parse_policies({"p": raw}, DEFAULTS)["p"]


def test_unset_keys_come_from_the_top_level() -> None:
    policies = parse_policies({"p": {"deny_status": 403}}, DEFAULTS)
    assert policies[DEFAULT_POLICY] is DEFAULTS
    assert policies["p"].allowed_issuers == DEFAULTS.allowed_issuers
    assert (policies["p"].deny_status, policies["p"].revocation_mode, policies["p"].mode) == (
        403,
        "require",
        "enforce",
    )


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ({"subject_exact": "CN=admin,O=Lab"}, True),
        ({"subject_exact": "CN=admin"}, False),
        ({"subject_prefix": "CN=adm"}, True),
        ({"subject_regex": "CN=a.*,O=Lab"}, True),
        ({"subject_regex": "CN=a"}, False),  # the whole subject must match
        ({"san_exact": "admin.lab.example"}, False),
    ],
)
def test_subject_requirements(pki: LabPki, requirement: dict[str, str], expected: bool) -> None:
    assert spec(require=[requirement]).subject_allowed(pki.client("admin").cert) is expected


def test_san_requirements(pki: LabPki) -> None:
    leaf = hostile_client(pki).cert  # DNS a.example, b.example,evil; spiffe://lab.example/...
    assert spec(require=[{"san_exact": "a.example"}]).subject_allowed(leaf)
    assert spec(require=[{"san_prefix": "spiffe://lab."}]).subject_allowed(leaf)
    assert spec(require=[{"san_regex": r"[ab]\.example"}]).subject_allowed(leaf)
    assert spec(require=[{"spiffe_trust_domain": "lab.example"}]).subject_allowed(leaf)
    assert not spec(require=[{"spiffe_trust_domain": "lab"}]).subject_allowed(leaf)
    assert not spec(require=[{"spiffe_trust_domain": "other.example"}]).subject_allowed(leaf)


def test_no_requirements_means_any_subject(pki: LabPki) -> None:
    assert spec().subject_allowed(pki.client("anyone").cert)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"unknown": 1}, "unknown keys"),
        ({"allowed_issuers": []}, "non-empty list"),
        ({"allowed_issuers": ["CN"]}, "RFC 4514"),
        ({"require": [{"subject_regex": "("}]}, "not a regular expression"),
        ({"require": [{"bogus": "x"}]}, "a requirement is one of"),
        ({"require": [{"subject_exact": "a", "san_exact": "b"}]}, "a requirement is one of"),
        ({"revocation_mode": "maybe"}, "revocation_mode must be"),
        ({"mode": "shadow"}, "mode must be"),
        ({"deny_status": 200}, "deny_status"),
        ("not a mapping", "expected a mapping"),
    ],
)
def test_bad_policies_are_refused_with_a_reason(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_policies({"p": raw}, DEFAULTS)
