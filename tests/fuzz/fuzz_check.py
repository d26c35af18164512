"""atheris fuzz target: Check's parsing and decision on arbitrary certificate and XFCC input.

    make fuzz                      # FUZZ_SECONDS (default 300) of coverage-guided fuzzing
    python tests/fuzz/fuzz_check.py -max_total_time=3600 CORPUS_DIR   # longer, keeping a corpus

Invariants: no exception escapes the decision, and nothing but the one genuine certificate is
ever allowed; with `xfcc_element: last`, whatever a client writes in front of the element Envoy
appended (APPEND_FORWARD), the element chosen has the Hash Envoy wrote, or the header is refused.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.support, from any directory

with atheris.instrument_imports(include=["authz"]):
    from authz.client_cert.xfcc import XfccCertificate, XfccElement
    from authz.core.decision import State, decide
    from authz.core.issuers import IssuerPolicy
    from authz.core.reasons import Denied, Reason
    from authz.core.request import CheckInput
    from authz.core.trust import TrustBundle
    from authz.demo.pki import LabPki
    from tests.support import envoy_xfcc_element, rfc2253_value

PKI = LabPki.create()
GOOD = PKI.client("fuzz-good")
STATE = State(
    TrustBundle.from_certificates([PKI.root.cert, PKI.issuing.cert]),
    IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
)
NOW = dt.datetime.now(dt.UTC)
LAST = XfccCertificate(XfccElement.LAST)
VICTIM = PKI.client("fuzz-victim")
VICTIM_ELEMENT = envoy_xfcc_element(VICTIM.cert)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    if provider.ConsumeBool():
        xfcc_last(provider)
    else:
        check(provider)


def xfcc_last(provider: atheris.FuzzedDataProvider) -> None:
    """The client's own XFCC (fuzz, with the victim's element spliced in), then the element Envoy
    appends for GOOD with a fuzzed subject CN."""
    written = provider.ConsumeUnicodeNoSurrogates(512)
    if provider.ConsumeBool():
        cut = provider.ConsumeIntInRange(0, len(written))
        written = written[:cut] + VICTIM_ELEMENT + written[cut:]
    cn = provider.ConsumeUnicodeNoSurrogates(64)
    own = envoy_xfcc_element(GOOD.cert, subject=f"CN={rfc2253_value(cn)},O=Lab")
    try:
        presented = LAST.present(CheckInput("", f"{written},{own}"))
    except Denied as denied:
        assert denied.reason is Reason.XFCC_INVALID, denied.reason
        return
    assert LAST.leaf(presented) == GOOD.cert, "chose an element Envoy did not write"


def check(provider: atheris.FuzzedDataProvider) -> None:
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
