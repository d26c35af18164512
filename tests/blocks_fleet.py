"""A fleet for the emergency block list, with real processes: Envoy with the verdict cache and
two workers, two mtls-authz replicas behind it sharing a real `redis-server` and a block list
file, an echo backend; and a client that makes a request every 50 ms on a new connection (so both
Envoy workers answer it), recording when each started and how it ended. Shared by the end-to-end
test and `make bench`."""

from __future__ import annotations

import http.client
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from authz.demo import envoy_config
from authz.demo.pki import Identity, LabPki, make_ocsp_signer, pem_bundle
from authz.demo.processes import Process, free_port, http_ok, tcp_open
from tests.ocsp_responder import OcspResponder
from tests.support import RedisServer, Service

START_TIMEOUT = 30
CLIENT_PERIOD = 0.05


@dataclass(frozen=True)
class Sample:
    started: float
    status: int
    reason: str


@dataclass
class Client:
    """Requests every CLIENT_PERIOD seconds, each on a new TLS connection."""

    port: int
    identity: Identity
    files: tuple[Path, Path]
    server_ca: Path
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Client:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)

    def _run(self) -> None:
        context = ssl.create_default_context(cafile=str(self.server_ca))
        context.load_cert_chain(str(self.files[0]), str(self.files[1]))
        while not self._stop.is_set():
            started = time.monotonic()
            connection = http.client.HTTPSConnection(
                "localhost", self.port, context=context, timeout=5
            )
            try:
                connection.request("GET", "/blocks-trial")
                response = connection.getresponse()
                response.read()
                sample = Sample(
                    started, response.status, response.getheader("x-mtls-authz-reason", "")
                )
            except OSError as e:
                sample = Sample(started, 0, type(e).__name__)
            finally:
                connection.close()
            self.samples.append(sample)
            self._stop.wait(max(0.0, CLIENT_PERIOD - (time.monotonic() - started)))

    def after(self, moment: float) -> list[Sample]:
        return [s for s in self.samples if s.started >= moment]

    def wait_for(self, moment: float, blocked: bool, timeout: float = 5.0) -> None:
        """Until three requests in a row started after `moment` got the state asked for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recent = self.after(moment)[-3:]
            if len(recent) == 3 and all(_blocked(s) == blocked for s in recent):
                return
            time.sleep(0.02)
        raise AssertionError(
            f"not {'refused' if blocked else 'allowed'}: {self.after(moment)[-5:]}"
        )


def _blocked(sample: Sample) -> bool:
    return sample.status == 400 and sample.reason == "certificate_blocked"


def time_to_effect(
    client: Client, moment: float, blocked: bool, window: float = 1.5
) -> tuple[float, float]:
    """(first request in the new state, last request in the old state), seconds after `moment`,
    by when each request started, over `window` seconds after it (so a replica or an Envoy
    worker late to change is seen); every other outcome is a failure."""
    client.wait_for(moment, blocked)
    while time.monotonic() < moment + window:
        time.sleep(0.02)
    after = client.after(moment)
    for sample in after:
        assert sample.status in (200, 400), sample
        assert sample.status == 200 or _blocked(sample), sample
    first = next(s.started for s in after if _blocked(s) == blocked)
    old = [s.started for s in after if _blocked(s) != blocked]
    return first - moment, (max(old) - moment) if old else 0.0


class Fleet:
    def __init__(self, workdir: Path, envoy: str, pki: LabPki) -> None:
        self.workdir, self.envoy_binary, self.pki = workdir, envoy, pki
        self.block_file = workdir / "blocks.yaml"
        self.processes: list[Process] = []

    def start(self) -> Fleet:
        self.block_file.write_text("[]\n")
        self.redis = RedisServer(self.workdir).start()
        self.responder = OcspResponder(self.pki.issuing, make_ocsp_signer(self.pki.issuing)).start()
        bundle = self.workdir / "bundle.pem"
        bundle.write_bytes(pem_bundle(self.pki.root.cert, self.pki.issuing.cert))
        args = [
            "--trust-bundle", str(bundle), "--allowed-issuer", LabPki.ISSUING_DN,
            "--ocsp-responder", f"{LabPki.ISSUING_DN}={self.responder.url}",
            "--revocation-cache-url", self.redis.url, "--block-list-file", str(self.block_file),
            "--prefetch-window", "0", "--verdict-cache-ttl", "30",
        ]  # fmt: skip
        self.replicas = [Service(f"replica-{n}", self.workdir, args).start() for n in (1, 2)]
        self.processes += [r.process for r in self.replicas]
        self._start_echo()
        self._start_envoy()
        return self

    def _start_echo(self) -> None:
        self.app = free_port()
        echo = Process(
            "echo", [sys.executable, "-m", "authz.demo.echo", "--port", str(self.app)],
            self.workdir / "echo.log",
        ).start()  # fmt: skip
        self.processes.append(echo)
        echo.wait_until(lambda: tcp_open(self.app), START_TIMEOUT, "listening")

    def _start_envoy(self) -> None:
        tls = self.workdir / "tls"
        server_cert, server_key = self.pki.server.write(tls, "server")
        (tls / "client-ca.pem").write_bytes(pem_bundle(self.pki.root.cert))
        self.server_ca = tls / "server-ca.pem"
        self.server_ca.write_bytes(pem_bundle(self.pki.root.cert))
        self.port, self.admin = free_port(), free_port()
        config = envoy_config.render(
            envoy_config.SHIPPED_ENVOY_DIR / "envoy-cached.yaml",
            listener_ports={"mtls_gateway": self.port, "ops": free_port()},
            admin_port=self.admin,
            cluster_ports={"app": self.app},
            files={
                envoy_config.SERVER_CERT: server_cert,
                envoy_config.SERVER_KEY: server_key,
                envoy_config.CLIENT_CA: tls / "client-ca.pem",
            },
        )
        for cluster in config["static_resources"]["clusters"]:
            ports = {
                "mtls_authz": [r.port for r in self.replicas],
                "mtls_authz_ops": [r.metrics_port for r in self.replicas],
            }.get(cluster["name"])
            if ports:
                cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
                    {
                        "endpoint": {
                            "address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}
                        }
                    }
                    for p in ports
                ]
        path = self.workdir / "envoy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        envoy = Process(
            "envoy",
            [self.envoy_binary, "-c", str(path), "--concurrency", "2", "--disable-hot-restart",
             "--log-level", "warn"],
            self.workdir / "envoy.log",
        ).start()  # fmt: skip
        self.processes.append(envoy)
        envoy.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{self.admin}/ready"), START_TIMEOUT, "ready"
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.responder.stop()
        self.redis.stop()

    def client(self, identity: Identity) -> Client:
        files = identity.write(self.workdir / "clients", format(identity.cert.serial_number, "x"))
        return Client(self.port, identity, files, self.server_ca)

    def ext_authz(self) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.admin}/stats?filter=http.gateway.ext_authz"
        with urllib.request.urlopen(url, timeout=5) as page:
            lines = page.read().decode().splitlines()
        return {line.split(":")[0].rsplit(".", 1)[1]: int(line.split(":")[1]) for line in lines}

    def warm(self, client: Client, run: int = 16) -> None:
        """Until the client's allow is cached in both Envoy workers: `run` requests in a row
        answered by the cache (no ext_authz call among them). Each lands on either worker, so
        all of them on one is a chance of 1 in 2 ** (run - 1)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            before, count = self.ext_authz(), len(client.samples)
            while len(client.samples) < count + run and time.monotonic() < deadline:
                time.sleep(0.02)
            now = self.ext_authz()
            fresh = client.samples[count:]
            hits = now.get("disabled", 0) - before.get("disabled", 0)
            if (
                now.get("ok", 0) == before.get("ok", 0)
                and hits >= run
                and all(s.status == 200 for s in fresh)
            ):
                return
        raise AssertionError(f"not cached in both workers: {self.ext_authz()}")

    def cli(self, *args: str) -> tuple[float, str]:
        """Run `mtls-authz ARGS` against the fleet's store; (when it returned, its output)."""
        done = subprocess.run(
            [sys.executable, "-m", "authz", *args, "--store", self.redis.url],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return time.monotonic(), done.stdout

    def write_file(self, entries: list[dict[str, Any]]) -> float:
        """Replace the block list file atomically (write beside it, rename); when it was."""
        temporary = self.block_file.with_name(".blocks.new")
        temporary.write_text(yaml.safe_dump(entries))
        temporary.replace(self.block_file)
        return time.monotonic()
