"""Real mTLS traffic from Python threads (faster than one curl per request), for fault tests and
the soak: each result records what the gateway answered and what the backend saw."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from authz.demo.pki import Identity


@dataclass(frozen=True)
class Result:
    client: str
    status: int  # 0: no HTTP answer (connection failed)
    reason: str  # x-mtls-authz-reason, or ""
    forwarded_cert: str  # X-Client-Cert as the backend saw it, or ""


class Client:
    """One keep-alive mTLS connection as `identity`, reconnecting after errors."""

    def __init__(self, name: str, identity: Identity, port: int, server_ca: Path, workdir: Path):
        cert, key = identity.write(workdir, f"traffic-{name}")
        self.context = ssl.create_default_context(cafile=str(server_ca))
        self.context.load_cert_chain(str(cert), str(key))
        self.name, self.port = name, port
        self.connection: http.client.HTTPSConnection | None = None

    def get(self, path: str) -> Result:
        try:
            if self.connection is None:
                self.connection = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=self.context, timeout=10
                )
            self.connection.request("GET", path, headers={"X-Client-Cert": "forged"})
            response = self.connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            return Result(self.name, 0, "", "")
        forwarded = ""
        if response.status == 200:
            forwarded = json.loads(body)["headers"].get("x-client-cert", [""])[0]
        if response.getheader("connection", "").lower() == "close":
            self.connection.close()
            self.connection = None
        return Result(
            self.name, response.status, response.getheader("x-mtls-authz-reason") or "", forwarded
        )


def run_traffic(
    clients: list[Client], seconds: float, stop: threading.Event | None = None
) -> list[Result]:
    """Every client in its own thread, requests back to back, for `seconds` (or until `stop`)."""
    results: list[Result] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop(client: Client) -> None:
        n = 0
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            result = client.get(f"/traffic/{client.name}/{n}")
            n += 1
            with lock:
                results.append(result)
            if result.status == 0:
                time.sleep(0.05)

    threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return results
