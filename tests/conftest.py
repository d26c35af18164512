from __future__ import annotations

import pytest

from authz.demo.pki import LabPki


@pytest.fixture(scope="session")
def pki() -> LabPki:
    return LabPki.create()
