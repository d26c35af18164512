"""stores: the shared revocation cache on one redis-server, on a Redis Cluster (three masters
with a replica each, `redis+cluster://`) and through Sentinel (a master, a replica, three
sentinels, `redis+sentinel://`), side by side: responder requests, the first Checks' latency,
and a restarted replica reading what the others stored."""

from __future__ import annotations

from benchmarks.harness import Context, start_responder
from benchmarks.sections.shared import (
    CERTIFICATES,
    DELAY,
    HEADER,
    responder_counter,
    three_replicas,
)
from tests.store_topologies import Cluster, Node, Sentinels, cluster_port

NAME = "stores"
ORDER = 42


def run(context: Context) -> list[str]:
    workdir, pki = context.workdir, context.pki
    responder, port = start_responder(workdir, pki, DELAY, "stores")
    url = f"http://127.0.0.1:{port}/ocsp"
    asked = responder_counter(port)
    rows = [
        f"The shared cache on each store: three replicas, {CERTIFICATES} never-seen certificates "
        f"checked through all three at once (50 at a time each); responder answering in "
        f"{DELAY * 1000:.0f} ms; every server on the same 2 cores.",
        "",
        *HEADER,
    ]
    try:
        for name in ("one node (redis://)", "cluster, 3 masters + 3 replicas", "sentinel"):
            store_dir = workdir / f"store-{len(rows)}"
            store_dir.mkdir()
            if name.startswith("one node"):
                node = Node(store_dir, "bench-node", cluster_port()).start()
                store_url, stop = f"redis://127.0.0.1:{node.port}/0", node.stop
            elif name.startswith("cluster"):
                cluster = Cluster(store_dir).start()
                store_url, stop = cluster.url, cluster.stop
            else:
                sentinels = Sentinels(store_dir).start()
                store_url, stop = sentinels.url, sentinels.stop
            try:
                figures = three_replicas(
                    workdir, pki, url, asked, "--revocation-cache-url", store_url
                )
            finally:
                stop()
            rows.append(figures.row(name, CERTIFICATES))
    finally:
        responder.stop()
    return rows
