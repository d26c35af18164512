"""The Kubernetes manifests, validated offline: rendered, schema-checked, cross-checked, and run.

No cluster here: `kubectl kustomize` renders, kubernetes-validate checks every object against the
OpenAPI schemas, the configs inside the ConfigMaps go through `envoy --mode validate` and
`mtls-authz validate-config`, and the sidecar pod is started as local processes with exactly the
rendered configs, its mounts recreated in a temporary directory.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from authz.demo import envoy_config
from authz.demo.pki import Identity, LabPki, pem_bundle
from authz.demo.processes import Process, free_port, http_ok, tcp_open
from authz.demo.stack import HttpResult, curl
from authz.revocation.ocsp import aia_ocsp_urls
from tests.e2e.conftest import ENVOYS, envoy_validate, newest_envoy
from tests.ocsp_responder import OcspResponder

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("sidecar", "shared", "quick-try")
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
AUTHZ_CONFIG_PATH = "/etc/mtls-authz/config.yaml"
REQUIRED_SECURITY = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
}


def kustomize(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def with_component(directory: Path, overlay: str, *components: Path) -> Path:
    """A kustomization in `directory`: the named overlay plus `components` (relative paths only,
    as kustomize takes them)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / overlay, directory)],
                "components": [os.path.relpath(c, directory) for c in components],
            }
        )
    )
    return directory


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize(K8S / "overlays" / request.param)


def find(objects: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    (found,) = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)
    ]
    return found


def configmap_file(objects: list[dict[str, Any]], name_prefix: str, key: str) -> str:
    return str(find(objects, "ConfigMap", name_prefix)["data"][key])


def deployments(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Deployment"]


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in deployments(objects):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def container(objects: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    (found,) = [(d, c) for d, c in containers(objects) if c["name"] == name]
    return found


# -- rendering and schemas --------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(
    overlay: tuple[str, list[dict[str, Any]]], version: str
) -> None:
    _, objects = overlay
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget"} <= {
        o["kind"] for o in objects
    }
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_shared_overlay_scales_out(tmp_path: Path) -> None:
    objects = kustomize(K8S / "overlays" / "shared")
    authz = find(objects, "Deployment", "mtls-authz")
    assert authz["spec"]["replicas"] >= 2
    assert "podAntiAffinity" in authz["spec"]["template"]["spec"]["affinity"]
    hpa = find(objects, "HorizontalPodAutoscaler", "mtls-authz")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "mtls-authz"
    assert hpa["spec"]["minReplicas"] >= 2
    policy = find(objects, "NetworkPolicy", "mtls-authz")
    grpc_rule = policy["spec"]["ingress"][0]
    assert grpc_rule["ports"] == [{"port": 9191, "protocol": "TCP"}]
    gateway = find(objects, "Deployment", "echo-gateway")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    for key, value in grpc_rule["from"][0]["podSelector"]["matchLabels"].items():
        assert labels[key] == value


def test_servicemonitor_component_renders_with_an_overlay(tmp_path: Path) -> None:
    objects = kustomize(with_component(tmp_path, "sidecar", K8S / "components" / "servicemonitor"))
    monitor = find(objects, "ServiceMonitor", "mtls-authz")
    service = find(objects, "Service", "echo-gateway")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert service["metadata"]["labels"][key] == value
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports


# -- the configs inside -------------------------------------------------------------------------


@pytest.mark.parametrize("envoy_version", sorted(ENVOYS))
def test_envoy_config_in_the_configmap_passes_envoy_validate(
    overlay: tuple[str, list[dict[str, Any]]], envoy_version: str, pki: LabPki, tmp_path: Path
) -> None:
    _, objects = overlay
    template = tmp_path / "envoy.yaml"
    template.write_text(configmap_file(objects, "envoy-config", "envoy.yaml"))
    done = envoy_validate(ENVOYS[envoy_version], template, pki, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mtls_authz_config_in_the_configmap_passes_validate_config(
    overlay: tuple[str, list[dict[str, Any]]], pki: LabPki, tmp_path: Path
) -> None:
    _, objects = overlay
    config = authz_of(objects)
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    config["trust_bundle"] = str(bundle)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "authz", "validate-config", str(tmp_path / "config.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ": ok (" in done.stdout


def test_kubernetes_envoy_config_is_the_shipped_one() -> None:
    assert (K8S / "base" / "envoy.yaml").read_text() == (REPO / "envoy" / "envoy.yaml").read_text()


def _without_authz_cluster(config: dict[str, Any]) -> dict[str, Any]:
    config["static_resources"]["clusters"] = [
        c for c in config["static_resources"]["clusters"] if c["name"] != "mtls_authz"
    ]
    return config


def test_shared_configs_differ_from_base_only_where_they_must() -> None:
    base_envoy = yaml.safe_load((K8S / "base" / "envoy.yaml").read_text())
    shared_envoy = yaml.safe_load((K8S / "overlays" / "shared" / "envoy.yaml").read_text())
    assert _without_authz_cluster(base_envoy) == _without_authz_cluster(shared_envoy)


def test_one_edit_of_base_config_configures_every_mode() -> None:
    """The shared overlay and the integrations mount base/config.yaml as it is; what differs
    (where mtls-authz listens, where the certificate comes from) is in the Deployment's env."""
    base = (K8S / "base" / "config.yaml").read_text()
    renders = {
        "sidecar": kustomize(K8S / "overlays" / "sidecar"),
        "shared": kustomize(K8S / "overlays" / "shared"),
        **{n: kustomize(REPO / "deploy" / "integrations" / n) for n in ("istio", "envoy-gateway", "contour")},
    }  # fmt: skip
    for name, objects in renders.items():
        assert configmap_file(objects, "mtls-authz-config", "config.yaml") == base, name
    assert authz_env(renders["sidecar"]) == {}
    assert authz_env(renders["shared"]) == {"MTLS_AUTHZ_LISTEN": "0.0.0.0:9191"}
    assert authz_env(renders["istio"]) == {
        "MTLS_AUTHZ_LISTEN": "0.0.0.0:9191",
        "MTLS_AUTHZ_CERTIFICATE_SOURCE": "xfcc",
    }


# -- cross-checks ---------------------------------------------------------------------------------


def envoy_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(yaml.safe_load(configmap_file(objects, "envoy-config", "envoy.yaml")))


def authz_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The MTLS_AUTHZ_* variables the mtls-authz container sets."""
    _, spec = container(objects, "mtls-authz")
    return {e["name"]: e["value"] for e in spec.get("env", []) if e["name"].startswith("MTLS_")}


def authz_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """What mtls-authz runs with: its config file, then the container's environment (which wins,
    as `MTLS_AUTHZ_<KEY>` does over the file)."""
    config = dict(yaml.safe_load(configmap_file(objects, "mtls-authz-config", "config.yaml")))
    for name, value in authz_env(objects).items():
        config[name.removeprefix("MTLS_AUTHZ_").lower()] = value
    return config


def cluster_address(envoy: dict[str, Any], name: str) -> dict[str, Any]:
    (cluster,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == name]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    return dict(endpoint["address"]["socket_address"])


def listener_port(envoy: dict[str, Any], name: str) -> int:
    (listener,) = [li for li in envoy["static_resources"]["listeners"] if li["name"] == name]
    return int(listener["address"]["socket_address"]["port_value"])


def port_number(container_spec: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (found,) = [p["containerPort"] for p in container_spec["ports"] if p["name"] == port]
    return int(found)


def test_envoy_reaches_mtls_authz_where_it_listens(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = overlay
    address = cluster_address(envoy_of(objects), "mtls_authz")
    host, _, port = authz_of(objects)["listen"].rpartition(":")
    assert address["port_value"] == int(port)
    if name != "shared":  # the sidecar, alone or in the quick try
        assert (address["address"], host) == ("127.0.0.1", "127.0.0.1")
    else:
        service = find(objects, "Service", "mtls-authz")
        assert address["address"] == service["metadata"]["name"]
        assert {p["port"] for p in service["spec"]["ports"]} >= {int(port)}


def mounted_files(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    """Every file path the named container sees from its volumes, mapped to its source."""
    deployment, spec = container(objects, name)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    files: dict[str, str] = {}
    for mount in spec.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        for path, source in _volume_files(volume, objects):
            if "subPath" in mount:
                if mount["subPath"] == path:
                    files[mount["mountPath"]] = source
            else:
                files[f"{mount['mountPath']}/{path}"] = source
    return files


def _volume_files(
    volume: dict[str, Any], objects: list[dict[str, Any]]
) -> Iterator[tuple[str, str, str]]:
    if "configMap" in volume:
        configmap = find(objects, "ConfigMap", volume["configMap"]["name"])
        for key in configmap["data"]:
            yield key, f"configmap {configmap['metadata']['name']}/{key}"
    sources = []
    if "secret" in volume:
        sources.append({"secret": {"name": volume["secret"]["secretName"], **volume["secret"]}})
    sources += volume.get("projected", {}).get("sources", [])
    for source in sources:
        secret = source["secret"]
        for item in secret.get("items", []):
            yield item["path"], f"secret {secret['name']}/{item['key']}"


def test_every_file_a_config_names_is_mounted(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    envoy_files = mounted_files(objects, "envoy")
    for path in (envoy_config.SERVER_CERT, envoy_config.SERVER_KEY, envoy_config.CLIENT_CA):
        assert path in envoy_files, f"Envoy reads {path}, which no volume provides"
    assert envoy_files[envoy_config.SERVER_CERT] == "secret gateway-tls/tls.crt"
    assert envoy_files[envoy_config.SERVER_KEY] == "secret gateway-tls/tls.key"
    assert envoy_files[envoy_config.CLIENT_CA] == "secret mtls-ca/client-ca.pem"
    assert envoy_files["/etc/envoy/envoy.yaml"].endswith("/envoy.yaml")
    _, envoy_spec = container(objects, "envoy")
    assert envoy_spec["args"][:2] == ["-c", "/etc/envoy/envoy.yaml"]

    authz_files = mounted_files(objects, "mtls-authz")
    assert authz_files[authz_of(objects)["trust_bundle"]] == "secret mtls-ca/ca-bundle.pem"
    assert authz_files[AUTHZ_CONFIG_PATH].endswith("/config.yaml")


def test_the_image_reads_the_mounted_config() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    (entrypoint,) = re.findall(r"^ENTRYPOINT (.+)$", dockerfile, re.MULTILINE)
    assert yaml.safe_load(entrypoint) == ["mtls-authz", "serve", "--config", AUTHZ_CONFIG_PATH]


def test_probes_and_services_point_at_real_ports(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    envoy, authz = envoy_of(objects), authz_of(objects)
    _, authz_spec = container(objects, "mtls-authz")
    metrics_port = int(authz["metrics_listen"].rpartition(":")[2])
    assert port_number(authz_spec, authz_spec["livenessProbe"]["httpGet"]["port"]) == metrics_port
    readiness = authz_spec["readinessProbe"]
    if "httpGet" in readiness:
        assert readiness["httpGet"]["path"] == "/readyz"
        assert port_number(authz_spec, readiness["httpGet"]["port"]) == metrics_port
    else:
        assert readiness["grpc"]["port"] == int(authz["listen"].rpartition(":")[2])
    _, envoy_spec = container(objects, "envoy")
    ready = envoy_spec["readinessProbe"]["httpGet"]
    assert ready["path"] == "/ready"
    assert port_number(envoy_spec, ready["port"]) == listener_port(envoy, "ops")
    assert port_number(envoy_spec, "https") == listener_port(envoy, "mtls_gateway")
    for service in (o for o in objects if o["kind"] == "Service"):
        selected = [
            d for d in deployments(objects)
            if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                   for k, v in service["spec"]["selector"].items())
        ]  # fmt: skip
        assert selected, service["metadata"]["name"]
        names = {
            p["name"] for d in selected for c in d["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }  # fmt: skip
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names


def test_every_container_is_hardened_pinned_and_probed(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = overlay
    assert_hardened(objects)


def assert_hardened(objects: list[dict[str, Any]]) -> None:
    newest = max(ENVOYS, key=lambda v: tuple(int(p) for p in v.split(".")))
    for deployment, spec in containers(objects):
        where = f"{deployment['metadata']['name']}/{spec['name']}"
        security = spec["securityContext"]
        for key, value in REQUIRED_SECURITY.items():
            assert security.get(key) == value, f"{where}: {key}"
        assert security["capabilities"]["drop"] == ["ALL"], where
        assert security["seccompProfile"]["type"] == "RuntimeDefault", where
        assert {"cpu", "memory"} <= set(spec["resources"]["requests"]), where
        assert {"cpu", "memory"} <= set(spec["resources"]["limits"]), where
        assert "readinessProbe" in spec and "livenessProbe" in spec, where
        image = spec["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), where
        if spec["name"] == "envoy":
            assert image == f"envoyproxy/envoy:v{newest}", where
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False


# -- the pod as processes ---------------------------------------------------------------------


def test_sidecar_pod_runs_as_processes_with_the_rendered_configs(
    pki: LabPki, responder: OcspResponder, tmp_path: Path
) -> None:
    """Envoy and mtls-authz from the rendered sidecar overlay, mounts recreated under tmp_path."""
    objects = kustomize(K8S / "overlays" / "sidecar")
    root = tmp_path / "pod"
    secrets = {
        "secret gateway-tls/tls.crt": pki.server.chain_pem,
        "secret gateway-tls/tls.key": pki.server.key_pem,
        "secret mtls-ca/client-ca.pem": pem_bundle(pki.root.cert),
        "secret mtls-ca/ca-bundle.pem": pem_bundle(pki.root.cert, pki.issuing.cert),
    }
    for name in ("envoy", "mtls-authz"):
        for path, source in mounted_files(objects, name).items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.startswith("configmap "):
                cm_name, key = source.removeprefix("configmap ").split("/")
                target.write_text(configmap_file(objects, cm_name, key))
            else:
                target.write_bytes(secrets[source])

    ports = {name: free_port() for name in ("gateway", "ops", "admin", "authz", "metrics", "app")}
    authz_config = root / AUTHZ_CONFIG_PATH.lstrip("/")
    config = yaml.safe_load(authz_config.read_text())
    config.update(
        listen=f"127.0.0.1:{ports['authz']}",
        metrics_listen=f"127.0.0.1:{ports['metrics']}",
        trust_bundle=str(root / config["trust_bundle"].lstrip("/")),
    )
    authz_config.write_text(yaml.safe_dump(config))
    envoy_yaml = envoy_config.render(
        root / "etc/envoy/envoy.yaml",
        listener_ports={"mtls_gateway": ports["gateway"], "ops": ports["ops"]},
        admin_port=ports["admin"],
        cluster_ports={"mtls_authz": ports["authz"], "app": ports["app"]},
        files={
            p: root / p.lstrip("/")
            for p in (envoy_config.SERVER_CERT, envoy_config.SERVER_KEY, envoy_config.CLIENT_CA)
        },
    )
    envoy_path = envoy_config.write(envoy_yaml, tmp_path / "envoy-remapped.yaml")
    _, envoy_spec = container(objects, "envoy")
    envoy_args = [
        a if a != "/etc/envoy/envoy.yaml" else str(envoy_path) for a in envoy_spec["args"]
    ]

    processes = [
        Process("echo", [sys.executable, "-m", "authz.demo.echo", "--port", str(ports["app"])], tmp_path / "echo.log"),
        Process("mtls-authz", [sys.executable, "-m", "authz", "serve", "--config", str(authz_config)], tmp_path / "authz.log"),
        Process("envoy", [newest_envoy(), *envoy_args], tmp_path / "envoy.log"),
    ]  # fmt: skip
    try:
        for process in processes:
            process.start()
        processes[0].wait_until(lambda: tcp_open(ports["app"]), 30, "listening")
        readyz = f"http://127.0.0.1:{ports['metrics']}/readyz"
        processes[1].wait_until(lambda: http_ok(readyz), 30, "ready")
        ready = f"http://127.0.0.1:{ports['ops']}/ready"
        processes[2].wait_until(lambda: http_ok(ready), 30, "ready")

        client = _Client(tmp_path, pki, ports["gateway"])
        good = pki.client("pod-good", ocsp_url=responder.url)
        revoked = pki.client("pod-revoked", ocsp_url=responder.url)
        responder.revoke(revoked.cert.serial_number)
        assert client.get(good).status == 200
        assert client.get(good).json()["headers"]["x-client-cert"]
        assert client.get(revoked).headers["x-mtls-authz-reason"] == "certificate_revoked"
        other = pki.client("pod-other", pki.other, ocsp_url=responder.url)
        assert client.get(other).headers["x-mtls-authz-reason"] == "issuer_not_allowed"
    finally:
        for process in reversed(processes):
            process.stop()


class _Client:
    """curl against the pod's Envoy port, as a client of the lab PKI."""

    def __init__(self, workdir: Path, pki: LabPki, port: int) -> None:
        self.workdir = workdir
        self.url = f"https://127.0.0.1:{port}/pod"
        self.server_ca = workdir / "server-ca.pem"
        self.server_ca.write_bytes(pem_bundle(pki.root.cert))

    def get(self, identity: Identity) -> HttpResult:
        files = identity.write(self.workdir / "clients", format(identity.cert.serial_number, "x"))
        return curl(self.url, self.workdir, self.server_ca, files)


def test_demo_secrets_fit_the_manifests(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "authz", "k8s-demo-secrets", "--namespace", "demo",
         "--client-dir", str(tmp_path / "client")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    secrets = {s["metadata"]["name"]: s for s in yaml.safe_load_all(done.stdout) if s}
    for version in KUBERNETES_VERSIONS:
        for secret in secrets.values():
            kubernetes_validate.validate(secret, version, strict=True)
    objects = kustomize(K8S / "overlays" / "sidecar")
    sources = [
        *mounted_files(objects, "envoy").values(),
        *mounted_files(objects, "mtls-authz").values(),
    ]
    for source in sources:
        if source.startswith("secret "):
            name, key = source.removeprefix("secret ").split("/")
            assert key in secrets[name]["data"], source
    assert (tmp_path / "client" / "client.pem").exists()
    # The quick try's responder: its Secret has what it reads, and the clients' AIA names its
    # Service in the namespace.
    quick = kustomize(K8S / "overlays" / "quick-try")
    responder = find(quick, "Deployment", "demo-ocsp")
    (volume,) = responder["spec"]["template"]["spec"]["volumes"]
    assert set(secrets[volume["secret"]["secretName"]]["data"]) == {
        "issuer.pem", "signer.pem", "signer.key", "revoked.txt",
    }  # fmt: skip
    service = find(quick, "Service", "demo-ocsp")
    (port,) = service["spec"]["ports"]
    expected = f"http://{service['metadata']['name']}.demo.svc:{port['port']}"
    for name in ("client", "revoked"):
        cert = x509.load_pem_x509_certificate((tmp_path / "client" / f"{name}.pem").read_bytes())
        assert aia_ocsp_urls(cert) == [expected]


def test_verdict_cache_component(pki: LabPki, tmp_path: Path) -> None:
    component = K8S / "components" / "verdict-cache"
    assert (component / "envoy.yaml").read_text() == (
        REPO / "envoy" / "envoy-cached.yaml"
    ).read_text()
    assert (component / "verdict-cache.lua").read_text() == (
        REPO / "envoy" / "verdict-cache.lua"
    ).read_text()
    objects = kustomize(with_component(tmp_path, "sidecar", component))
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
    envoy_files = mounted_files(objects, "envoy")
    assert envoy_files["/etc/envoy/verdict-cache.lua"].endswith("/verdict-cache.lua")
    template = tmp_path / "envoy.yaml"
    template.write_text(configmap_file(objects, "envoy-config", "envoy.yaml"))
    done = envoy_validate(newest_envoy(), template, pki, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "marker"),
    [("verdict-cache", "verdict-cache-beside"), ("http-transport", "http-transport-beside")],
)
def test_sidecar_only_components_refuse_the_shared_overlay(
    name: str, marker: str, tmp_path: Path
) -> None:
    """Their Envoy config calls mtls-authz at 127.0.0.1, true only beside the sidecar: rendered
    with the shared overlay (no mtls-authz container in the gateway's pod), kustomize stops."""
    component = K8S / "components" / name
    sidecar = kustomize(with_component(tmp_path / "sidecar", "sidecar", component))
    (gateway,) = [d for d in sidecar if d["kind"] == "Deployment"]
    assert gateway["metadata"]["annotations"][f"mtls-authz.io/{marker}"]
    done = subprocess.run(
        ["kubectl", "kustomize", str(with_component(tmp_path / "shared", "shared", component))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "containers.[name=mtls-authz].image` is missing" in done.stderr


def test_http_transport_component(pki: LabPki, tmp_path: Path) -> None:
    """The sidecar in Envoy's HTTP mode: the shipped envoy-http.yaml, and mtls-authz with the base
    configuration as it is, http_listen instead of listen set in its environment, on the port
    that Envoy's cluster calls."""
    component = K8S / "components" / "http-transport"
    assert (component / "envoy.yaml").read_text() == (
        REPO / "envoy" / "envoy-http.yaml"
    ).read_text()
    objects = kustomize(with_component(tmp_path, "sidecar", component))
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
    assert (
        configmap_file(objects, "mtls-authz-config", "config.yaml")
        == (K8S / "base" / "config.yaml").read_text()
    )
    assert authz_env(objects) == {
        "MTLS_AUTHZ_LISTEN": "",
        "MTLS_AUTHZ_HTTP_LISTEN": "127.0.0.1:9192",
    }
    rendered = yaml.safe_load(configmap_file(objects, "envoy-config", "envoy.yaml"))
    address = cluster_address(rendered, "mtls_authz")
    assert f"{address['address']}:{address['port_value']}" == authz_of(objects)["http_listen"]
    template = tmp_path / "envoy.yaml"
    template.write_text(configmap_file(objects, "envoy-config", "envoy.yaml"))
    done = envoy_validate(newest_envoy(), template, pki, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_redis_cache_components_point_every_replica_at_one_store(tmp_path: Path) -> None:
    """The shared overlay with redis-cache (URL from a Secret) and the single-node Redis for
    trying it: every mtls-authz replica gets the Secret's URL, which names that Redis's Service
    and port; the Redis admits only mtls-authz's pods and is hardened like the rest."""
    components = K8S / "components"
    objects = kustomize(
        with_component(
            tmp_path, "shared", components / "redis-cache", components / "redis-single-node"
        )
    )
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
    assert_hardened(objects)
    _, spec = container(objects, "mtls-authz")
    (url_env,) = [e for e in spec["env"] if e["name"] == "MTLS_AUTHZ_REVOCATION_CACHE_URL"]
    ref = url_env["valueFrom"]["secretKeyRef"]
    secret = find(objects, "Secret", "mtls-authz-redis")
    assert ref["name"] == secret["metadata"]["name"]
    url = urlsplit(base64.b64decode(secret["data"][ref["key"]]).decode())
    service = find(objects, "Service", "mtls-authz-redis")
    assert (url.scheme, url.hostname) == ("redis", service["metadata"]["name"])
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    policy = find(objects, "NetworkPolicy", "mtls-authz-redis")
    (rule,) = policy["spec"]["ingress"]
    authz, _ = container(objects, "mtls-authz")
    labels = authz["spec"]["template"]["metadata"]["labels"]
    for key, value in rule["from"][0]["podSelector"]["matchLabels"].items():
        assert labels[key] == value
