"""Render `envoy/*.yaml` for a local run: same config, local ports and certificate paths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

# Certificate paths as they stand in the shipped configs.
SERVER_CERT = "/etc/envoy/tls/server.pem"
SERVER_KEY = "/etc/envoy/tls/server.key"
CLIENT_CA = "/etc/envoy/tls/client-ca.pem"
VERDICT_CACHE_LUA = "/etc/envoy/verdict-cache.lua"
# The shipped Envoy configs and verdict cache, inside the package (in a checkout a link to the
# top-level envoy/), so an installed `mtls-authz demo` finds them too.
SHIPPED_ENVOY_DIR = Path(__file__).resolve().parents[1] / "envoy_configs"
SHIPPED_LUA = SHIPPED_ENVOY_DIR / "verdict-cache.lua"


def render(
    template: Path,
    *,
    listener_ports: Mapping[str, int],
    admin_port: int,
    cluster_ports: Mapping[str, int | Sequence[int]],
    files: Mapping[str, Path],
) -> dict[str, Any]:
    """Load `template`, bind listeners and clusters to 127.0.0.1 by name, and swap file paths.

    The `envoy_admin` cluster follows `admin_port`. A cluster given several ports gets one
    endpoint on each (replicas). A listener or cluster not named keeps its port (so a config can
    be validated without choosing every port).
    """
    config: dict[str, Any] = yaml.safe_load(template.read_text())
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    for listener in config["static_resources"]["listeners"]:
        address = listener["address"]["socket_address"]
        address["address"] = "127.0.0.1"
        if listener["name"] in listener_ports:
            address["port_value"] = listener_ports[listener["name"]]
    ports = {**cluster_ports, "envoy_admin": admin_port}
    for cluster in config["static_resources"]["clusters"]:
        port = ports.get(cluster["name"])
        if port is None:
            continue
        cluster["type"] = "STATIC"
        each = [port] if isinstance(port, int) else list(port)
        (group,) = cluster["load_assignment"]["endpoints"]
        template_endpoint = group["lb_endpoints"][0]
        group["lb_endpoints"] = [
            {
                **template_endpoint,
                "endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}
                },
            }
            for p in each
        ]
    paths = {VERDICT_CACHE_LUA: str(SHIPPED_LUA), **{k: str(v) for k, v in files.items()}}
    replaced: dict[str, Any] = _replace_filenames(config, paths)
    return replaced


def _replace_filenames(node: Any, files: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: files.get(value, value) if key == "filename" else _replace_filenames(value, files)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_replace_filenames(item, files) for item in node]
    return node


def write(config: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
