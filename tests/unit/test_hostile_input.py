from __future__ import annotations

import datetime as dt

import pytest

from authz.core.decision import State, decide
from authz.core.issuers import IssuerPolicy
from authz.core.request import CheckInput
from authz.core.trust import TrustBundle
from authz.demo.pki import LabPki
from tests.hostile import Case, cases

PKI = LabPki.create()
CASES = cases(PKI)


@pytest.fixture(scope="module")
def state() -> State:
    return State(
        TrustBundle.from_certificates([PKI.root.cert, PKI.issuing.cert, PKI.other.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_each_hostile_input_gets_its_verdict(case: Case, state: State) -> None:
    decision = decide(CheckInput(case.certificate, case.xfcc), state, dt.datetime.now(dt.UTC))
    got = "allowed" if decision.allowed else decision.reason and decision.reason.value
    assert got == case.expected
    assert "Traceback" not in decision.message
