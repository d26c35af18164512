"""The emergency block list through the real Envoy (1.36.2 and 1.40.0) with the verdict cache and
two workers, two mtls-authz replicas sharing a real redis-server: a client with a cached allow
in every Envoy worker, requesting every 50 ms, is refused within one second of the command
returning (or of the file's rename), by every way of naming it; allowed again within one second
of the unblock; still refused with Redis killed; restored when Redis comes back empty; and a
malformed file never loses a block."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz.core.blocks import spki_of
from authz.demo.pki import Identity, LabPki, reissue
from tests.blocks_fleet import Fleet, time_to_effect
from tests.e2e.test_ocsp_behaviour import check_request
from tests.support import envoy_field

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
BOUND = 1.0  # seconds, from the command's return (or the rename) to effect


@pytest.fixture(scope="module")
def fleet(envoy: str, pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    running = Fleet(tmp_path_factory.mktemp("blocks"), envoy, pki).start()
    try:
        yield running
    finally:
        running.stop()


def pem(fleet: Fleet, identity: Identity, name: str) -> str:
    path = fleet.workdir / f"{name}.pem"
    path.write_bytes(identity.cert_pem)
    return str(path)


def within_bound(first: float, last: float) -> None:
    assert first <= BOUND, f"first request in the new state {first:.3f} s after"
    assert last <= BOUND, f"last request in the old state {last:.3f} s after"


def replica_verdict(port: int, identity: Identity) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(
            check_request(envoy_field(identity.cert)), timeout=10
        )
    if response.HasField("ok_response"):
        return "allow"
    return next(
        o.header.value for o in response.denied_response.headers
        if o.header.key == "x-mtls-authz-reason"
    )  # fmt: skip


@pytest.mark.parametrize("how", ["fingerprint", "serial", "spki"])
def test_a_block_written_with_the_command_is_in_force_within_a_second(
    fleet: Fleet, pki: LabPki, how: str
) -> None:
    original = pki.client(f"block-{how}")
    # By key: the client uses a certificate the CA re-issued for the same key.
    identity = reissue(original, pki.issuing) if how == "spki" else original
    if how == "serial":
        what = ["--serial", LabPki.ISSUING_DN, f"{identity.cert.serial_number:x}"]
    else:
        what = ["--cert", pem(fleet, original, how), "--match", how]
    with fleet.client(identity) as client:
        fleet.warm(client)
        returned, out = fleet.cli("block", *what, "--reason", f"leaked ({how})")
        within_bound(*time_to_effect(client, returned, blocked=True))
        block_id = out.split()[1].rstrip(":")
        returned, _ = fleet.cli("unblock", block_id)
        within_bound(*time_to_effect(client, returned, blocked=False))


def test_a_block_in_the_file_is_in_force_within_a_second_of_its_rename(
    fleet: Fleet, pki: LabPki
) -> None:
    identity = pki.client("block-file")
    fingerprint = identity.cert.fingerprint(hashes.SHA256()).hex()
    with fleet.client(identity) as client:
        fleet.warm(client)
        renamed = fleet.write_file([{"fingerprint": fingerprint, "reason": "by GitOps"}])
        within_bound(*time_to_effect(client, renamed, blocked=True))
        # Malformed, written in place: the previous list stays, and it says so.
        fleet.block_file.write_text("- fingerprint: not-hex\n  reason: broken\n")
        time.sleep(1.0)
        assert all(s.status == 400 for s in client.samples[-10:])
        for replica in fleet.replicas:
            assert replica.metric('mtls_authz_blocks_source_up{source="file"}') == 0
            assert replica.metric('mtls_authz_blocks{kind="fingerprint"}') == 1
        renamed = fleet.write_file([])
        within_bound(*time_to_effect(client, renamed, blocked=False))
    for replica in fleet.replicas:
        assert replica.metric('mtls_authz_blocks_source_up{source="file"}') == 1
    log = (fleet.workdir / "replica-1.log").read_text()
    assert "line 1: fingerprint must be 64 hex digits" in log
    assert log.count("block list file refused") == 1  # once, not once per poll


def test_redis_killed_keeps_every_block_and_redis_back_empty_gets_them_written_back(
    fleet: Fleet, pki: LabPki
) -> None:
    identity = pki.client("block-outage")
    key_file = pem(fleet, identity, "outage")
    _, out = fleet.cli("block", "--cert", key_file, "--match", "spki", "--reason", "outage")
    block_id = out.split()[1].rstrip(":")
    time.sleep(0.5)
    fleet.redis.kill()
    time.sleep(2.5)  # past a check of the store: both replicas know it is gone
    for replica in fleet.replicas:
        assert replica_verdict(replica.port, identity) == "certificate_blocked"
        assert replica.metric('mtls_authz_blocks_source_up{source="store"}') == 0
    fleet.redis.start()  # the same port, empty: no persistence
    deadline = time.monotonic() + 10
    listed = ""
    while time.monotonic() < deadline and block_id not in listed:
        time.sleep(0.5)
        _, listed = fleet.cli("blocks")
    assert block_id in listed and spki_of(identity.cert) in listed
    for replica in fleet.replicas:
        assert replica_verdict(replica.port, identity) == "certificate_blocked"
    fleet.cli("unblock", block_id)
    time.sleep(1.0)
    for replica in fleet.replicas:
        assert replica_verdict(replica.port, identity) == "allow"


def test_blocks_lists_what_is_in_force_with_its_source_and_expiry(
    fleet: Fleet, pki: LabPki, tmp_path: Path
) -> None:
    identity = pki.client("block-listed")
    _, out = fleet.cli(
        "block", "--cert", pem(fleet, identity, "listed"), "--reason", "listed", "--for", "2h",
        "--by", "oncall",
    )  # fmt: skip
    block_id = out.split()[1].rstrip(":")
    _, listed = fleet.cli("blocks")
    line = next(line for line in listed.splitlines() if line.startswith(block_id))
    assert "[store, until " in line and "'listed' by oncall" in listed
    fleet.cli("unblock", block_id)
