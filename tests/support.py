"""Helpers shared by the tests: Envoy's escaping of certificates, as Envoy does it; legacy
certificates made by the openssl CLI; shipped Envoy configs with one thing changed; a throwaway
redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from authz.demo.pki import Identity, new_key
from authz.demo.processes import Process, free_port, tcp_open

# check_request_utils.cc escapes exactly these five characters.
_ENVOY_ESCAPES = {"\n": "%0A", " ": "%20", "+": "%2B", "/": "%2F", "=": "%3D"}


def envoy_escape(pem: str) -> str:
    return "".join(_ENVOY_ESCAPES.get(char, char) for char in pem)


def envoy_field(cert: x509.Certificate) -> str:
    """`attributes.source.certificate` as Envoy fills it."""
    return envoy_escape(cert.public_bytes(Encoding.PEM).decode())


def xfcc_with_chain(chain: Iterable[x509.Certificate], tail: str = "") -> str:
    """XFCC as Envoy writes it: Hash (SHA-256 of the leaf, the first certificate), then Chain."""
    certs = list(chain)
    pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)
    digest = certs[0].fingerprint(hashes.SHA256()).hex() if certs else "0"
    return f'Hash={digest};Chain="{envoy_escape(pem)}"{tail}'


def teletex_client(issuer: Identity, workdir: Path, common_name: str = "Société") -> Identity:
    """A client certificate whose subject CN is a TeletexString of Latin-1 bytes, made by
    `openssl req -utf8` with `string_mask = default` and signed by `openssl x509 -req`, as legacy
    CAs wrote "Société". cryptography cannot decode that subject; TLS stacks accept it."""
    workdir.mkdir(parents=True, exist_ok=True)
    leaf = Identity(issuer.cert, new_key())  # only for its key's PEM
    ca_cert, ca_key = issuer.write(workdir, "issuer")
    key_path = workdir / "legacy.key"
    key_path.write_bytes(leaf.key_pem)
    (workdir / "req.cnf").write_text(
        "[req]\ndistinguished_name = dn\nstring_mask = default\nprompt = no\n[dn]\n"
    )
    (workdir / "ext.cnf").write_text(
        "basicConstraints = critical,CA:FALSE\nextendedKeyUsage = clientAuth\n"
    )
    run = {"check": True, "capture_output": True, "timeout": 30}
    subprocess.run(
        ["openssl", "req", "-new", "-utf8", "-config", str(workdir / "req.cnf"),
         "-key", str(key_path), "-subj", f"/CN={common_name}", "-out", str(workdir / "legacy.csr")],
        **run,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(workdir / "legacy.csr"), "-CA", str(ca_cert),
         "-CAkey", str(ca_key), "-set_serial", str(x509.random_serial_number()), "-days", "2",
         "-extfile", str(workdir / "ext.cnf"), "-out", str(workdir / "legacy.pem")],
        **run,
    )  # fmt: skip
    cert = x509.load_pem_x509_certificate((workdir / "legacy.pem").read_bytes())
    chain = tuple(c for c in (issuer.cert, *issuer.chain) if c.issuer != c.subject)
    return Identity(cert, leaf.key, chain)


def gateway_hcm(config: dict[str, Any]) -> dict[str, Any]:
    """The mTLS listener's HTTP connection manager in a shipped Envoy config."""
    listener = config["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def http_filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The typed_config of the gateway's HTTP filter called `name`."""
    found: dict[str, Any] = next(
        f["typed_config"] for f in gateway_hcm(config)["http_filters"] if f["name"] == name
    )
    return found


def edited_template(template: Path, out: Path, edit: Any) -> Path:
    """A copy of a shipped Envoy config with `edit(config)` applied."""
    config = yaml.safe_load(template.read_text())
    edit(config)
    out.write_text(yaml.safe_dump(config))
    return out


# BoringSSL's X509_NAME_print_ex with XN_FLAG_RFC2253, as Envoy prints a subject (checked on
# 1.36.2 and 1.40.0: `a"b` → `a\"b`, `\` → `\\`, tab → `\09`, `é` → `\C3\A9`).
_RFC2253_SPECIAL = set('"\\,;+<>')
_ABBREVIATIONS = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
                  "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST"}  # fmt: skip


def rfc2253_value(text: str) -> str:
    out = []
    for index, char in enumerate(text):
        last = index == len(text) - 1
        if char in _RFC2253_SPECIAL or (index == 0 and char in "# ") or (last and char == " "):
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\{byte:02X}" for byte in char.encode())
    return "".join(out)


def envoy_subject(cert: x509.Certificate) -> str:
    """The Subject Envoy writes into XFCC for `cert` (RDNs last first, RFC 2253 escapes)."""
    parts = []
    for rdn in reversed(cert.subject.rdns):
        parts.append("+".join(
            f"{_ABBREVIATIONS.get(a.oid._name, a.oid.dotted_string)}={rfc2253_value(str(a.value))}"
            for a in rdn
        ))  # fmt: skip
    return ",".join(parts)


def envoy_xfcc_element(
    leaf: x509.Certificate,
    chain: Iterable[x509.Certificate] = (),
    *,
    subject: str | None = None,
    uri: str | None = None,
    dns: Iterable[str] = (),
    by: Iterable[str] = (),
) -> str:
    """One XFCC element as Envoy 1.36/1.40 write it: By (Envoy's own URI SANs), Hash, Cert,
    Chain, Subject (quoted), then URI and DNS unquoted (checked against both binaries)."""
    pem = leaf.public_bytes(Encoding.PEM).decode()
    fields = [f"By={value}" for value in by]
    fields += [f"Hash={leaf.fingerprint(hashes.SHA256()).hex()}", f'Cert="{envoy_escape(pem)}"']
    certs = [leaf, *chain]
    if len(certs) > 1:
        whole = "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)
        fields.append(f'Chain="{envoy_escape(whole)}"')
    if subject is not None:
        fields.append(f'Subject="{subject}"')
    if uri is not None:
        fields.append(f"URI={uri}")
    fields.extend(f"DNS={name}" for name in dns)
    return ";".join(fields)


def http_variant(template: Path, out: Path) -> Path:
    """A shipped gRPC-mode Envoy config in HTTP mode: envoy-http.yaml's ext_authz filter and
    cluster, and each route's context-extension policy moved to the route metadata that
    envoy-http.yaml sends as the policy header."""
    shipped = yaml.safe_load((template.parent / "envoy-http.yaml").read_text())
    http_authz = http_filter(shipped, "envoy.filters.http.ext_authz")
    http_cluster = next(
        c for c in shipped["static_resources"]["clusters"] if c["name"] == "mtls_authz"
    )

    def edit(config: dict[str, Any]) -> None:
        for entry in gateway_hcm(config)["http_filters"]:
            if entry["name"] == "envoy.filters.http.ext_authz":
                gate = entry["typed_config"].get("filter_enabled_metadata")  # the verdict cache's
                entry["typed_config"] = dict(http_authz)
                if gate is not None:
                    entry["typed_config"]["filter_enabled_metadata"] = gate
        clusters = config["static_resources"]["clusters"]
        config["static_resources"]["clusters"] = [
            http_cluster if c["name"] == "mtls_authz" else c for c in clusters
        ]
        for vhost in gateway_hcm(config)["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                per_filter = route.get("typed_per_filter_config", {})
                authz = per_filter.pop("envoy.filters.http.ext_authz", None)
                if authz is None:
                    continue
                policy = authz["check_settings"]["context_extensions"]["policy"]
                metadata = route.setdefault("metadata", {}).setdefault("filter_metadata", {})
                metadata.setdefault("envoy.filters.http.lua", {})["policy"] = policy
                if not per_filter:
                    route.pop("typed_per_filter_config")

    return edited_template(template, out, edit)


class RedisServer:
    """A throwaway `redis-server` on 127.0.0.1, no persistence; killed and restarted at will."""

    def __init__(
        self,
        workdir: Path,
        *options: str,
        tls: bool = False,
        port: int | None = None,
        name: str = "redis",
        binary: str = "redis-server",
    ) -> None:
        """`options`: more redis-server arguments; `tls`: serve TLS only on the port, with the
        certificate and key given in `options` (`--tls-cert-file`, `--tls-key-file`); `port`:
        a free one unless given; `binary`: redis-server or a compatible server (valkey-server)."""
        self.workdir, self.name, self.binary = workdir, name, binary
        self.port = port or free_port()
        self.tls = tls
        self.options = options
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        self.process: Process | None = None

    def start(self) -> RedisServer:
        ports = (
            ["--port", "0", "--tls-port", str(self.port)]
            if self.tls
            else ["--port", str(self.port)]
        )
        argv = [self.binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), *self.options]  # fmt: skip
        self.process = Process(self.name, argv, self.workdir / f"{self.name}.log").start()
        self.process.wait_until(lambda: tcp_open(self.port), 30, "listening")
        return self

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class Service:
    """One `mtls-authz serve` on 127.0.0.1: gRPC on `port`, /metrics (and the block list's
    generation) on `metrics_port`; `args` are the rest of its flags."""

    def __init__(self, name: str, workdir: Path, args: list[str]) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        argv = [
            sys.executable, "-m", "authz", "serve", "--listen", f"127.0.0.1:{self.port}",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *args,
        ]  # fmt: skip
        self.process = Process(name, argv, workdir / f"{name}.log")

    def start(self) -> Service:
        self.process.start()
        # gRPC binds its port before /metrics listens: wait for both.
        self.process.wait_until(lambda: tcp_open(self.port), 30, "listening")
        self.process.wait_until(lambda: tcp_open(self.metrics_port), 30, "serving /metrics")
        return self

    def metric(self, line_start: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as page:
            for line in page.read().decode().splitlines():
                if line.startswith(line_start + " "):
                    return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric {line_start}")
