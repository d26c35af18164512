"""`mtls-authz k8s-demo-secrets`: a demo PKI as Kubernetes Secret manifests, for `kubectl apply`.

Prints the Secrets the manifests reference (gateway-tls, mtls-ca) and the demo OCSP responder's
(demo-ocsp: the issuing CA, a delegated responder certificate and key, the revoked serials), and
writes two client certificates — `client` (good) and `revoked` — their keys and the server CA to
a directory, for curl. Their AIA names the quick try's responder, `demo-ocsp` in the namespace,
unless `ocsp_url` says otherwise. Demo only: keys are unencrypted and the CA keys are thrown away.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from cryptography.x509.oid import ExtendedKeyUsageOID

from authz.demo.ocsp_responder import format_revoked
from authz.demo.pki import LabPki, make_leaf, make_ocsp_signer, pem_bundle


def responder_url(namespace: str) -> str:
    """The quick try's responder (deploy/k8s/overlays/quick-try, Service demo-ocsp)."""
    return f"http://demo-ocsp.{namespace}.svc:8080"


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
    namespace: str,
    gateway_hosts: list[str],
    client_dir: Path,
    ocsp_url: str | None = None,
    pki: LabPki | None = None,
) -> str:
    """The Secrets as a YAML stream; the clients' files go to `client_dir`."""
    pki = pki or LabPki.create()
    names = [*gateway_hosts, f"echo-gateway.{namespace}.svc", "localhost"]
    server = make_leaf(
        "echo-gateway",
        pki.root,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        dns_names=names,
        ips=["127.0.0.1"],
    )
    url = ocsp_url or responder_url(namespace)
    client = pki.client("demo-client", ocsp_url=url)
    client.write(client_dir, "client")
    revoked = pki.client("demo-revoked", ocsp_url=url)
    revoked.write(client_dir, "revoked")
    signer = make_ocsp_signer(pki.issuing, "Demo OCSP Responder")
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
        _secret(
            "demo-ocsp",
            namespace,
            "Opaque",
            {
                "issuer.pem": pki.issuing.cert_pem,
                "signer.pem": signer.cert_pem,
                "signer.key": signer.key_pem,
                "revoked.txt": format_revoked(
                    {revoked.cert.serial_number: revoked.cert.not_valid_before_utc}
                ).encode(),
            },
        ),
    ]
    return yaml.safe_dump_all(secrets, sort_keys=False)
