"""atheris fuzz target: Check's parsing and decision on arbitrary certificate and XFCC input.

    make fuzz                      # FUZZ_SECONDS (default 300) of coverage-guided fuzzing
    python tests/fuzz/fuzz_check.py -max_total_time=3600 CORPUS_DIR   # longer, keeping a corpus

Invariants: no exception escapes the decision, and nothing but the one genuine certificate is
ever allowed.
"""

from __future__ import annotations

import datetime as dt
import sys

import atheris

with atheris.instrument_imports(include=["authz"]):
    from authz.core.decision import State, decide
    from authz.core.issuers import IssuerPolicy
    from authz.core.request import CheckInput
    from authz.core.trust import TrustBundle
    from authz.demo.pki import LabPki

PKI = LabPki.create()
GOOD = PKI.client("fuzz-good")
STATE = State(
    TrustBundle.from_certificates([PKI.root.cert, PKI.issuing.cert]),
    IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
)
NOW = dt.datetime.now(dt.UTC)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    use_good = provider.ConsumeBool()
    field = provider.ConsumeUnicodeNoSurrogates(4096)
    if use_good:  # splice fuzz into a real certificate, where parsing gets interesting
        pem = GOOD.cert_pem.decode()
        cut = provider.ConsumeIntInRange(0, len(pem))
        field = pem[:cut] + field + pem[cut:]
    xfcc = provider.ConsumeUnicodeNoSurrogates(4096)
    decision = decide(CheckInput(field, xfcc), STATE, NOW)
    if decision.allowed:
        assert decision.leaf == GOOD.cert, "allowed a certificate that is not the genuine one"


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
