"""Every combination of the Kubernetes overlays, integrations and components — each component
alone, and every two in both orders — either renders into a deployment whose parts fit, or is
refused by kustomize, loudly, with a reason.

THE RULE, for a combination that renders:
  1. every ConfigMap and Secret a pod mounts or reads in its environment is in the rendered
     output, in the pod's namespace (or is one the operator provides: gateway-tls, mtls-ca,
     demo-ocsp, mtls-authz-redis), and every key mounted by subPath or read by key is in it;
  2. every Envoy's ext_authz filter reaches an mtls-authz that listens for it: the cluster's
     address and port are that mtls-authz's (beside it on 127.0.0.1, or behind its Service), and
     over the same protocol (gRPC: `listen`; HTTP: `http_listen`), as the mtls-authz container's
     configuration file and environment together say;
  3. an Envoy running the verdict cache has its script mounted, and its `mtls_authz_ops`
     cluster reaches that mtls-authz's `metrics_listen`.
Which combinations are refused is said once, in `refusal` below.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("servicemonitor", "verdict-cache", "http-transport", "verdict-cache-http",
              "redis-cache", "redis-single-node")  # fmt: skip
SIDECAR_ONLY = {"verdict-cache", "http-transport", "verdict-cache-http"}
SHARED_ONLY = {"redis-cache", "redis-single-node"}
ENVOY_VARIANTS = SIDECAR_ONLY
# Where a component goes: an overlay's kustomization, or an integration's mtls-authz/ one.
TARGETS = ("sidecar", "quick-try", "shared", "istio", "envoy-gateway", "contour", "traefik")
SIDECAR_TARGETS = {"sidecar", "quick-try"}
PROVIDED = {"gateway-tls", "mtls-ca", "demo-ocsp", "mtls-authz-redis"}
COMBINATIONS = [(c,) for c in COMPONENTS] + list(itertools.permutations(COMPONENTS, 2))


def refusal(target: str, components: tuple[str, ...]) -> list[str]:
    """What kustomize may say when it refuses the combination (any one of them, when several
    rules refuse it); empty when it must render."""
    reasons = []
    if len([c for c in components if c in ENVOY_VARIANTS]) > 1:
        reasons.append("mtls-authz-envoy-variant")
    wrong_side = SIDECAR_ONLY if target not in SIDECAR_TARGETS else SHARED_ONLY
    if set(components) & wrong_side:
        reasons.append("containers.[name=mtls-authz].image")
    return reasons


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/ to add components to, as an operator edits their own copy."""
    root = tmp_path_factory.mktemp("deploy")
    shutil.copytree(REPO / "deploy", root / "deploy")
    return root / "deploy"


def kustomization(tree: Path, target: str, components: tuple[str, ...], slot: Path) -> Path:
    """The target with the components added where the docs say: a kustomization over the
    overlay, or the integration's own mtls-authz/kustomization.yaml (in a copy of its own)."""
    slot.mkdir(parents=True)
    if target in ("sidecar", "quick-try", "shared"):
        base = tree / "k8s" / "overlays" / target
        (slot / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(base, slot)],
            "components": [os.path.relpath(tree / "k8s" / "components" / c, slot) for c in components],
        }))  # fmt: skip
        return slot
    integration = slot / "integrations" / target
    shutil.copytree(tree / "integrations" / target, integration)
    inner = integration / "mtls-authz" / "kustomization.yaml"
    document = yaml.safe_load(inner.read_text())
    document["resources"] = [
        os.path.relpath((tree / "integrations" / target / "mtls-authz" / r).resolve(), inner.parent)
        if r.startswith("..") else r
        for r in document["resources"]
    ]  # fmt: skip
    document["components"] = [
        os.path.relpath(tree / "k8s" / "components" / c, inner.parent) for c in components
    ]
    inner.write_text(yaml.safe_dump(document))
    return integration


def render(directory: Path) -> tuple[int, str, str]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def rendered(
    tree: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, tuple[str, ...]], tuple[int, str, str]]:
    """Every target × combination, rendered (in parallel: kubectl is slow to start)."""
    work = tmp_path_factory.mktemp("combinations")
    cases = [(t, c) for t in TARGETS for c in [(), *COMBINATIONS]]
    slots = [kustomization(tree, t, c, work / f"{n}") for n, (t, c) in enumerate(cases)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(cases, pool.map(render, slots), strict=True))


@pytest.mark.parametrize("target", TARGETS)
def test_every_combination_renders_consistently_or_is_refused_loudly(
    target: str, rendered: dict[tuple[str, tuple[str, ...]], tuple[int, str, str]]
) -> None:
    for combination in [(), *COMBINATIONS]:
        code, out, err = rendered[(target, combination)]
        expected = refusal(target, combination)
        where = f"{target} + {list(combination)}"
        if expected:
            assert code != 0, f"{where}: rendered, but must be refused ({expected})"
            assert any(e in err for e in expected), f"{where}: refused, but not why: {err[-400:]}"
            continue
        assert code == 0, f"{where}: refused: {err[-600:]}"
        objects = [d for d in yaml.safe_load_all(out) if d]
        try:
            consistent(objects)
        except AssertionError as e:
            raise AssertionError(f"{where}: {e}") from None


# -- the rule ---------------------------------------------------------------------------------


def consistent(objects: list[dict[str, Any]]) -> None:
    by_id = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        namespace = deployment["metadata"].get("namespace")
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for volume in volumes.values():
            for kind, name in _sources(volume):
                _exists(by_id, kind, namespace, name, f"volume {volume['name']}")
        for c in pod["containers"]:
            for mount in c.get("volumeMounts", []):
                if "subPath" in mount:
                    _has_key(by_id, volumes[mount["name"]], namespace, mount["subPath"])
            for env in c.get("env", []):
                for ref_kind, kind in (
                    ("configMapKeyRef", "ConfigMap"),
                    ("secretKeyRef", "Secret"),
                ):
                    ref = env.get("valueFrom", {}).get(ref_kind)
                    if ref is not None:
                        found = _exists(by_id, kind, namespace, ref["name"], f"env {env['name']}")
                        if found is not None:
                            assert ref["key"] in found.get("data", {}), (
                                f"env {env['name']}: no key {ref['key']} in {kind} {ref['name']}"
                            )
        envoy = next((c for c in pod["containers"] if c["name"] == "envoy"), None)
        if envoy is not None:
            _envoy_reaches_mtls_authz(objects, by_id, deployment, envoy, volumes)


def _sources(volume: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    if "configMap" in volume:
        found.append(("ConfigMap", volume["configMap"]["name"]))
    if "secret" in volume:
        found.append(("Secret", volume["secret"]["secretName"]))
    for source in volume.get("projected", {}).get("sources", []):
        if "secret" in source:
            found.append(("Secret", source["secret"]["name"]))
        if "configMap" in source:
            found.append(("ConfigMap", source["configMap"]["name"]))
    return found


def _exists(
    by_id: dict[Any, dict[str, Any]], kind: str, namespace: str | None, name: str, what: str
) -> dict[str, Any] | None:
    found = by_id.get((kind, namespace, name))
    if found is None and kind == "Secret" and name in PROVIDED:
        return None  # the operator's: created beside the manifests
    assert found is not None, f"{what}: {kind} {name} is not in namespace {namespace}"
    return found


def _has_key(
    by_id: dict[Any, dict[str, Any]], volume: dict[str, Any], namespace: str | None, key: str
) -> None:
    for kind, name in _sources(volume):
        found = by_id.get((kind, namespace, name))
        if found is not None:
            assert key in {**found.get("data", {}), **found.get("binaryData", {})}, (
                f"mount of {key} from {kind} {name}: no such key"
            )


def _config_map(
    by_id: dict[Any, dict[str, Any]],
    volumes: dict[str, Any],
    mounts: list[dict[str, Any]],
    path: str,
    namespace: str | None,
) -> str | None:
    """The text mounted at `path` from a ConfigMap."""
    for mount in mounts:
        sub = mount.get("subPath")
        if mount["mountPath"] == path or (not sub and path.startswith(mount["mountPath"] + "/")):
            key = sub or path.rsplit("/", 1)[1]
            for kind, name in _sources(volumes[mount["name"]]):
                found = by_id.get((kind, namespace, name))
                if kind == "ConfigMap" and found is not None and key in found.get("data", {}):
                    return str(found["data"][key])
    return None


def _listening(by_id: dict[Any, dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """What the mtls-authz container listens on: its config file, then its environment."""
    pod = deployment["spec"]["template"]["spec"]
    namespace = deployment["metadata"].get("namespace")
    authz = next(c for c in pod["containers"] if c["name"] == "mtls-authz")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    config = _config_map(
        by_id, volumes, authz.get("volumeMounts", []), "/etc/mtls-authz/config.yaml", namespace
    )
    settings = yaml.safe_load(config or "") or {}
    found = {key: str(settings.get(key, default)) for key, default in
             (("listen", "127.0.0.1:9191"), ("http_listen", ""), ("metrics_listen", ""))}  # fmt: skip
    for env in authz.get("env", []):
        key = env["name"].removeprefix("MTLS_AUTHZ_").lower()
        if key in found and "value" in env:
            found[key] = env["value"]
    return found


def _cluster(config: dict[str, Any], name: str) -> tuple[str, int]:
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == name)
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    return address["socket_address"]["address"], int(address["socket_address"]["port_value"])


def _envoy_reaches_mtls_authz(
    objects: list[dict[str, Any]], by_id: dict[Any, dict[str, Any]], deployment: dict[str, Any],
    envoy: dict[str, Any], volumes: dict[str, Any],
) -> None:  # fmt: skip
    namespace = deployment["metadata"].get("namespace")
    text = _config_map(
        by_id, volumes, envoy.get("volumeMounts", []), "/etc/envoy/envoy.yaml", namespace
    )
    assert text is not None, "Envoy's envoy.yaml is not mounted from a ConfigMap"
    config = yaml.safe_load(text)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    filters = {f["name"]: f.get("typed_config", {}) for f in hcm["http_filters"]}
    authz_filter = filters["envoy.filters.http.ext_authz"]
    grpc = "grpc_service" in authz_filter
    cluster = (authz_filter["grpc_service"]["envoy_grpc"]["cluster_name"] if grpc
               else authz_filter["http_service"]["server_uri"]["cluster"])  # fmt: skip
    host, port = _cluster(config, cluster)
    if host == "127.0.0.1":
        target, target_port = deployment, port
    else:  # a Service: its name (first label) in this or the named namespace
        name, _, rest = host.partition(".")
        service_namespace = rest.partition(".")[0] or namespace
        service = by_id.get(("Service", service_namespace, name))
        assert service is not None, f"Envoy's {cluster} names Service {host}, which is not rendered"
        (entry,) = [p for p in service["spec"]["ports"] if p["port"] == port]
        selector = service["spec"]["selector"]
        (target,) = [
            d for d in objects if d["kind"] == "Deployment"
            and d["metadata"].get("namespace") == service_namespace
            and all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]  # fmt: skip
        target_port = entry.get("targetPort", port)
        if isinstance(target_port, str):  # a named port of the pod's containers
            (target_port,) = [
                p["containerPort"] for c in target["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", []) if p.get("name") == target_port
            ]  # fmt: skip
    listening = _listening(by_id, target)
    wanted = "listen" if grpc else "http_listen"
    assert listening[wanted], (
        f"Envoy asks over {'gRPC' if grpc else 'HTTP'}, but mtls-authz's {wanted} is off"
    )
    assert int(listening[wanted].rpartition(":")[2]) == target_port, (
        f"Envoy calls port {target_port} over {'gRPC' if grpc else 'HTTP'}; mtls-authz's {wanted} is {listening[wanted]}"
    )
    lua = filters.get("envoy.filters.http.lua")
    if lua is not None:
        script = lua["default_source_code"]["filename"]
        assert _config_map(by_id, volumes, envoy.get("volumeMounts", []), script, namespace), (
            f"the verdict cache's {script} is not mounted"
        )
        ops_host, ops_port = _cluster(config, "mtls_authz_ops")
        assert ops_host == "127.0.0.1" and listening["metrics_listen"], "no metrics_listen to ask"
        assert int(listening["metrics_listen"].rpartition(":")[2]) == ops_port, (
            "mtls_authz_ops does not reach mtls-authz's metrics_listen"
        )


def test_the_components_carry_the_shipped_envoy_configs() -> None:
    components = REPO / "deploy" / "k8s" / "components"
    envoy = REPO / "envoy"
    pairs = {
        components / "verdict-cache" / "envoy.yaml": envoy / "envoy-cached.yaml",
        components / "http-transport" / "envoy.yaml": envoy / "envoy-http.yaml",
        components / "verdict-cache-http" / "envoy.yaml": envoy / "envoy-http-cached.yaml",
        components / "verdict-cache" / "verdict-cache.lua": envoy / "verdict-cache.lua",
        components / "verdict-cache-http" / "verdict-cache.lua": envoy / "verdict-cache.lua",
    }
    for copy, shipped in pairs.items():
        assert copy.read_text() == shipped.read_text(), f"{copy} differs from {shipped}"
