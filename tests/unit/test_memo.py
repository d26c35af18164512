from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from authz.core.memo import ByIdentity
from authz.demo.pki import LabPki


def test_the_same_object_hits_an_equal_copy_misses(pki: LabPki) -> None:
    memo: ByIdentity[object, str] = ByIdentity(4)
    leaf = pki.client("memo").cert
    memo.put(leaf, "url")
    assert memo.get(leaf) == "url"
    same_content = x509.load_pem_x509_certificate(leaf.public_bytes(Encoding.PEM))
    assert same_content == leaf and memo.get(same_content) is None


def test_it_stays_within_its_bound_and_keeps_keys_alive() -> None:
    memo: ByIdentity[object, int] = ByIdentity(3)
    keys = [object() for _ in range(10)]
    for number, key in enumerate(keys):
        memo.put(key, number)
        assert len(memo) <= 3
    assert memo.get(keys[-1]) == 9
