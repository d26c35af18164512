"""forward-auth: wrk → a client Envoy that originates mTLS → Traefik, Caddy or nginx (each from
its recipe in deploy/integrations) → an app that answers at once; each proxy alone, and asking
mtls-authz before every request (no cache in the proxy: every request is a Check; mtls-authz's
own OCSP answer is warm). Rounds alternate; the proxy and mtls-authz on core 0, wrk, the client
Envoy and the app (nginx, `return 200`) on core 1."""

from __future__ import annotations

import os
from pathlib import Path

from authz.demo.pki import LabPki
from authz.demo.processes import Process, free_port, http_ok
from benchmarks.harness import LOAD_CPU, SERVER_CPU, START_TIMEOUT, Context, Load, table, wrk
from benchmarks.sections.e2e import _client_envoy
from tests.forward_auth_stack import PROXIES, ProxyStack, proxy_binary

NAME = "forward-auth"
ORDER = 62
APP_CONF = """
{user}
worker_processes 1;
pid {dir}/app.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{ listen 127.0.0.1:{port}; keepalive_requests 100000; return 200 "ok\\n"; }}
}}
"""


def run(context: Context) -> list[str]:
    workdir, pki, responder = context.workdir / "forward-auth", context.pki, context.responder
    workdir.mkdir()
    seconds, rounds = context.args.seconds, context.args.rounds
    client = pki.client("bench-forward-auth")
    cert, key = client.write(workdir / "client", "client")
    app, app_port = _app(workdir)
    authz_args = ["--allowed-issuer", LabPki.ISSUING_DN, "--ocsp-responder",
                  f"{LabPki.ISSUING_DN}={responder.url}", "--log-level", "warning"]  # fmt: skip
    lines: list[str] = []
    try:
        for proxy in PROXIES:
            if proxy_binary(proxy) is None:
                lines.append(f"| {proxy}: not installed | | | | | | |")
                continue
            alone, guarded = f"{proxy} alone", f"{proxy} + mtls-authz"
            runs: dict[str, list[Load]] = {alone: [], guarded: []}
            for n in range(rounds):
                for name, with_authz in ((alone, False), (guarded, True)):
                    stack = ProxyStack(
                        proxy, workdir / f"{proxy}-{n}-{with_authz}", pki, authz_args,
                        guarded=with_authz, app_port=app_port, pin=SERVER_CPU, authz_pin=SERVER_CPU,
                    )  # fmt: skip
                    with stack:
                        port, client_envoy = _client_envoy(
                            workdir, stack.ports["listen"], cert, key,
                            stack.workdir / "tls" / "server-ca.pem",
                        )  # fmt: skip
                        try:
                            runs[name].append(
                                wrk(port, seconds, connections=32, headers=("Host: localhost",))
                            )
                        finally:
                            client_envoy.stop()
            if lines:
                lines.append("")
            lines += table(
                f"forward-auth, {proxy} (wrk → client Envoy → proxy → app; median of {rounds})",
                runs,
                alone,
                f"ratio to {proxy} alone",
            )
    finally:
        app.stop()
    return lines


def _app(workdir: Path) -> tuple[Process, int]:
    port = free_port()
    (workdir / "tmp").mkdir()
    conf = workdir / "app.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(APP_CONF.format(dir=workdir, port=port, user=user))
    argv = [*LOAD_CPU, "nginx", "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]
    app = Process("app", argv, workdir / "app.log").start()
    app.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"), START_TIMEOUT, "serving")
    return app, port
