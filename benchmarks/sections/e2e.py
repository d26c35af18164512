"""e2e: wrk → a client Envoy that originates mTLS → the gateway → a direct response: Envoy alone,
Envoy with the floors and mtls-authz over gRPC and HTTP, the verdict cache, and nginx with
ssl_ocsp (with and without TLS session resumption); every gateway once per round."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from authz.demo import envoy_config
from authz.demo.pki import pem_bundle
from authz.demo.processes import Process, free_port, http_ok, tcp_open
from benchmarks.harness import (
    LOAD_CPU,
    REPO,
    SERVER_CPU,
    START_TIMEOUT,
    Context,
    Load,
    start_authz,
    start_floor,
    table,
    wrk,
    wrk_once,
)

NAME = "e2e"
ORDER = 60


Gateway = Callable[[int], list[Process]]


ALONE = "Envoy alone (no ext_authz)"


NGINX = "nginx, ssl_ocsp leaf"


NGINX_NO_RESUMPTION = "nginx, ssl_ocsp leaf, TLS session resumption off"


STALENESS = {
    ALONE: "never checked",
    "Envoy + gRPC floor servicer": "never checked",
    "Envoy + mtls-authz (gRPC)": "ocsp_cache_max_age = 300 s",
    "Envoy + HTTP floor": "never checked",
    "Envoy + mtls-authz (HTTP)": "ocsp_cache_max_age = 300 s",
    "Envoy + mtls-authz (gRPC) + verdict cache": "ocsp_cache_max_age + verdict_cache_ttl = 330 s",
    NGINX: "until the response's nextUpdate (1 h here)",
    NGINX_NO_RESUMPTION: "until the response's nextUpdate (1 h here)",
}


def run(context: Context) -> list[str]:
    """Every gateway once per round, rounds alternating; each row: the median round, and the
    ratio to Envoy alone within each round (min–max)."""
    workdir, pki, responder = context.workdir, context.pki, context.responder
    seconds, rounds = context.args.seconds, context.args.rounds
    client = pki.client("bench-e2e", ocsp_url=responder.url)
    tls = workdir / "tls"
    server_cert, server_key = pki.server.write(tls, "server")
    client_cert, client_key = client.write(tls, "client")
    (tls / "client-ca.pem").write_bytes(pem_bundle(pki.root.cert))
    (tls / "server-ca.pem").write_bytes(pem_bundle(pki.root.cert))
    files = {
        envoy_config.SERVER_CERT: server_cert,
        envoy_config.SERVER_KEY: server_key,
        envoy_config.CLIENT_CA: tls / "client-ca.pem",
    }

    def envoy(authz: Callable[[], tuple[Process, int]] | None, **kind: bool) -> Gateway:
        return lambda port: _gateway_envoy(
            workdir, port, files, authz() if authz else None, ops=ops, **kind
        )

    ops = free_port()  # the cached gateway's mtls-authz metrics_listen: the block list's generation
    gateways: dict[str, Gateway] = {
        ALONE: envoy(None),
        "Envoy + gRPC floor servicer": envoy(lambda: start_floor(workdir)),
        "Envoy + mtls-authz (gRPC)": envoy(lambda: start_authz(workdir, pki, responder)),
        "Envoy + HTTP floor": envoy(lambda: start_floor(workdir, http=True), http=True),
        "Envoy + mtls-authz (HTTP)": envoy(
            lambda: start_authz(workdir, pki, responder, http=True), http=True
        ),
        "Envoy + mtls-authz (gRPC) + verdict cache": envoy(
            lambda: start_authz(workdir, pki, responder, "--metrics-listen", f"127.0.0.1:{ops}"),
            cached=True,
        ),
        NGINX: lambda port: _gateway_nginx(workdir, port, tls, resumption=True),
        NGINX_NO_RESUMPTION: lambda port: _gateway_nginx(workdir, port, tls, resumption=False),
    }
    runs: dict[str, list[Load]] = {name: [] for name in gateways}
    ocsp_requests: dict[str, int] = dict.fromkeys(gateways, 0)
    for _ in range(rounds):
        for name, start in gateways.items():
            gateway_port = free_port()
            processes = start(gateway_port)
            try:
                client_port, client_envoy = _client_envoy(
                    workdir, gateway_port, client_cert, client_key, tls / "server-ca.pem"
                )
                processes.append(client_envoy)
                # One request first, as any client's first request: it also leaves a TLS
                # session the load's connections resume.
                warm = wrk_once(client_port, "/bench", "x-bench: warm")
                assert warm == "200", f"{name}: {warm}"
                before = responder.requests
                runs[name].append(wrk(client_port, seconds, connections=32))
                ocsp_requests[name] += responder.requests - before
            finally:
                for process in reversed(processes):
                    process.stop()
    lines = table(
        f"end to end (wrk → client Envoy → gateway; median of {rounds} rounds)",
        runs,
        ALONE,
        "/ Envoy alone",
    )
    lines.append("")
    lines.append("| gateway | OCSP requests during the load | worst-case revocation staleness |")
    lines.append("| --- | ---: | --- |")
    lines += [f"| {name} | {ocsp_requests[name]} | {STALENESS[name]} |" for name in gateways]
    return lines


def _gateway_envoy(
    workdir: Path,
    port: int,
    files: dict[str, Path],
    authz: tuple[Process, int] | None,
    cached: bool = False,
    http: bool = False,
    ops: int = 0,
) -> list[Process]:
    admin, ops = free_port(), free_port()
    shipped = "envoy-cached.yaml" if cached else "envoy-http.yaml" if http else "envoy.yaml"
    config = envoy_config.render(
        REPO / "envoy" / shipped,
        listener_ports={"mtls_gateway": port, "ops": ops},
        admin_port=admin,
        cluster_ports={
            "mtls_authz": authz[1] if authz else free_port(),
            "mtls_authz_ops": ops,
            "app": free_port(),
        },
        files=files,
    )
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
            # The route names its policy: the verdict cache serves only such routes.
            "metadata": {"filter_metadata": {"envoy.filters.http.lua": {"policy": "default"}}},
        }
    ]
    if authz is None:
        hcm["http_filters"] = [
            f
            for f in hcm["http_filters"]
            if f["name"] not in ("envoy.filters.http.ext_authz", "envoy.filters.http.lua")
        ]
    path = envoy_config.write(config, workdir / f"gateway-{port}.yaml")
    envoy = _start_envoy("gateway envoy", path, admin, SERVER_CPU)
    return [authz[0], envoy] if authz else [envoy]


def _start_envoy(name: str, config: Path, admin: int, cpu: list[str]) -> Process:
    argv = [*cpu, _envoy(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
            "--log-level", "error"]  # fmt: skip
    envoy = Process(name, argv, config.with_suffix(".log")).start()
    envoy.wait_until(lambda: http_ok(f"http://127.0.0.1:{admin}/ready"), START_TIMEOUT, "ready")
    return envoy


def _gateway_nginx(workdir: Path, port: int, tls: Path, resumption: bool) -> list[Process]:
    """nginx as its users run it with ssl_ocsp: with TLS session resumption (the default), or
    with it off. With ssl_ocsp on, nginx 1.22 closes a keep-alive connection after its first
    request when the client resumed the TLS session, so every request pays a handshake."""
    conf = workdir / f"nginx-{port}.conf"
    off = "" if resumption else "ssl_session_tickets off;\n        ssl_session_cache off;"
    conf.write_text(NGINX_CONF.format(port=port, tls=tls, dir=workdir, resumption=off))
    nginx = Process(
        "nginx",
        [*SERVER_CPU, "nginx", "-c", str(conf), "-g", "daemon off;"],
        workdir / f"nginx-{port}.log",
    ).start()
    nginx.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
    return [nginx]


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-tmp;
    proxy_temp_path {dir}/nginx-tmp;
    fastcgi_temp_path {dir}/nginx-tmp;
    uwsgi_temp_path {dir}/nginx-tmp;
    scgi_temp_path {dir}/nginx-tmp;
    ssl_ocsp_cache shared:OCSP:10m;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tls}/server.pem;
        ssl_certificate_key {tls}/server.key;
        ssl_client_certificate {tls}/client-ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 3;
        ssl_ocsp leaf;
        {resumption}
        keepalive_requests 100000;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def _envoy() -> str:
    return str(Path(sys.executable).parent / "envoy")


def _client_envoy(
    workdir: Path, gateway_port: int, cert: Path, key: Path, server_ca: Path
) -> tuple[int, Process]:
    port, admin = free_port(), free_port()
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "plain", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "client",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "gateway"}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                }}]}],
            }],
            "clusters": [{
                "name": "gateway", "type": "STATIC", "connect_timeout": "2s",
                "load_assignment": {"cluster_name": "gateway", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": gateway_port}}}}]}]},
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": "localhost",
                    "common_tls_context": {
                        "tls_certificates": [{"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}],
                        "validation_context": {"trusted_ca": {"filename": str(server_ca)}},
                    },
                }},
            }],
        },
    }  # fmt: skip
    path = workdir / f"client-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    return port, _start_envoy("client envoy", path, admin, LOAD_CPU)
