"""`mtls-authz k8s-demo-secrets`: a demo PKI as Kubernetes Secret manifests, for `kubectl apply`.

Prints the two Secrets the manifests reference (gateway-tls, mtls-ca) and writes a client
certificate, its key and the server CA to a directory, for curl. Demo only: keys are unencrypted
and the CA keys are thrown away.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from cryptography.x509.oid import ExtendedKeyUsageOID

from authz.demo.pki import LabPki, make_leaf, pem_bundle


def _secret(name: str, namespace: str, kind: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "mtls-authz"},
        },
        "type": kind,
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def demo_secrets(
    namespace: str, gateway_hosts: list[str], client_dir: Path, ocsp_url: str | None = None
) -> str:
    """The Secrets as a YAML stream; the client's files go to `client_dir`."""
    pki = LabPki.create()
    names = [*gateway_hosts, f"echo-gateway.{namespace}.svc", "localhost"]
    server = make_leaf(
        "echo-gateway",
        pki.root,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        dns_names=names,
        ips=["127.0.0.1"],
    )
    client = pki.client("demo-client", ocsp_url=ocsp_url)
    client.write(client_dir, "client")
    (client_dir / "server-ca.pem").write_bytes(pem_bundle(pki.root.cert))
    secrets = [
        _secret(
            "gateway-tls",
            namespace,
            "kubernetes.io/tls",
            {"tls.crt": server.chain_pem, "tls.key": server.key_pem},
        ),
        _secret(
            "mtls-ca",
            namespace,
            "Opaque",
            {
                "client-ca.pem": pem_bundle(pki.root.cert),
                "ca-bundle.pem": pem_bundle(pki.root.cert, pki.issuing.cert),
            },
        ),
    ]
    return yaml.safe_dump_all(secrets, sort_keys=False)
