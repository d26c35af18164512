"""The store the operator already runs, from one URL (`revocation_cache_url`), for the shared
revocation cache and the block list alike:

    redis://[USER:PASSWORD@]HOST:PORT/DB     one node; rediss:// with TLS
    unix://PATH?db=N                         one node on a local socket
    redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]
                                             Redis Cluster (any nodes to start from; the client
                                             learns the rest and follows MOVED and ASK itself);
                                             rediss+cluster:// with TLS
    redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]
                                             the master Sentinel names MASTER, found again after
                                             a failover; rediss+sentinel:// with TLS to the data
                                             nodes; ?sentinel_password=… (and
                                             ?sentinel_username=…) for the sentinels' own user

`valkey://`, `valkeys://`, `valkey+cluster://` … are the same (Valkey speaks the protocol).
TLS forms take `?ssl_ca_certs=PATH` for a private CA. Credentials in the URL are for the data
nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
_SCHEMES = {
    "redis": ("node", False),
    "rediss": ("node", True),
    "unix": ("node", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
FORMS = (
    "redis://HOST:PORT/DB, rediss:// (TLS), unix://PATH, redis+cluster://HOST:PORT[,HOST:PORT], "
    "redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER[/DB] (valkey… the same)"
)

StoreClient = redis.Redis | RedisCluster


@dataclass(frozen=True)
class StoreUrl:
    kind: str
    """node, cluster or sentinel."""
    url: str
    """For a node: the URL redis-py reads (valkey schemes renamed)."""
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    master: str = ""
    db: int = 0
    options: dict[str, str] = field(default_factory=dict)


def parse_store_url(url: str) -> StoreUrl:
    """Raises ValueError saying what is wrong, in the URL forms' terms."""
    parts = urlsplit(url)
    scheme = (
        parts.scheme.replace("valkey", "redis", 1)
        if parts.scheme.startswith("valkey")
        else parts.scheme
    )
    if scheme not in _SCHEMES:
        raise ValueError(f"expected {FORMS}")
    kind, tls = _SCHEMES[scheme]
    if kind == "node":
        if scheme != "unix" and not parts.hostname:
            raise ValueError(f"expected {scheme}://HOST:PORT/DB: no host")
        return StoreUrl("node", scheme + url[len(parts.scheme) :], tls)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    default_port = DEFAULT_SENTINEL_PORT if kind == "sentinel" else DEFAULT_PORT
    hosts = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        host = host.strip("[]")
        if not host:
            raise ValueError(f"expected {scheme}://HOST:PORT[,HOST:PORT]: a host is missing")
        try:
            hosts.append((host, int(port) if port else default_port))
        except ValueError:
            raise ValueError(f"{item!r}: the port is not a number") from None
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    master, db = "", 0
    if kind == "sentinel":
        segments = [s for s in parts.path.split("/") if s]
        if not segments or len(segments) > 2:
            raise ValueError(f"expected {scheme}://HOST:PORT[,HOST:PORT]/MASTER[/DB]")
        master = unquote(segments[0])
        if len(segments) == 2:
            if not segments[1].isdigit():
                raise ValueError(f"{segments[1]!r}: the database is not a number")
            db = int(segments[1])
    elif parts.path.strip("/"):
        raise ValueError("a cluster has one database: no /DB after its nodes")
    return StoreUrl(
        kind,
        url,
        tls,
        tuple(hosts),
        unquote(username) or None,
        unquote(password) or None,
        master,
        db,
        options,
    )


def connect(url: str, timeout: float, **connection: Any) -> StoreClient:
    """A client for `url`; every operation and connection bounded by `timeout`. Nothing is
    contacted until the first command."""
    store = parse_store_url(url)
    bounds: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # No CLIENT SETINFO on connect: Redis before 7.2 has no such command, and the ACL line
        # the docs give (the commands mtls-authz uses, nothing more) fits every version.
        "driver_info": None,
        **connection,
    }
    if store.kind == "node":
        return redis.Redis.from_url(store.url, retry_on_timeout=False, **bounds)
    node: dict[str, Any] = {"username": store.username, "password": store.password, **bounds}
    if store.tls:
        node["ssl"] = True
        if "ssl_ca_certs" in store.options:
            node["ssl_ca_certs"] = store.options["ssl_ca_certs"]
    if store.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in store.hosts]
        return RedisCluster(startup_nodes=nodes, **node)
    sentinels: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "driver_info": None,
    }
    if "sentinel_password" in store.options:
        sentinels["password"] = store.options["sentinel_password"]
        sentinels["username"] = store.options.get("sentinel_username")
    sentinel = Sentinel(list(store.hosts), sentinel_kwargs=sentinels, **node)  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(store.master, db=store.db)
    return client
