from __future__ import annotations

from collections.abc import Iterator

import pytest

from authz.demo.pki import LabPki, make_ocsp_signer
from tests.ocsp_responder import OcspResponder


@pytest.fixture(scope="session")
def pki() -> LabPki:
    return LabPki.create()


@pytest.fixture(scope="session")
def responder(pki: LabPki) -> Iterator[OcspResponder]:
    """The project's test responder for the issuing CA: every certificate good unless revoked."""
    with OcspResponder(pki.issuing, make_ocsp_signer(pki.issuing)) as running:
        yield running


@pytest.fixture
def fresh_responder(pki: LabPki) -> Iterator[OcspResponder]:
    """A test responder of the test's own, free to be broken, slowed or counted."""
    with OcspResponder(pki.issuing, make_ocsp_signer(pki.issuing)) as running:
        yield running
