"""The Envoy-side verdict cache (envoy/envoy-cached.yaml + verdict-cache.lua) with the real Envoy."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from authz.demo import envoy_config
from authz.demo.ocsp_responder import Mode, OcspResponder
from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import LabPki
from authz.demo.stack import REPO_ENVOY_DIR, LocalStack

CACHED = REPO_ENVOY_DIR / "envoy-cached.yaml"


def ext_authz_stats(stack: LocalStack) -> dict[str, int]:
    url = f"http://127.0.0.1:{stack.ports['admin']}/stats?filter=http.gateway.ext_authz"
    with urllib.request.urlopen(url, timeout=5) as page:
        lines = page.read().decode().splitlines()
    return {line.split(":")[0].rsplit(".", 1)[1]: int(line.split(":")[1]) for line in lines}


@pytest.fixture
def cached_stack(
    envoy: str, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> Iterator[LocalStack]:
    args = ["--verdict-cache-ttl", "30", "--ocsp-failure-cache", "0.5"]
    with LocalStack(
        tmp_path, pki, envoy_binary=envoy, envoy_template=CACHED, authz_args=args,
        ocsp_override=fresh_responder.url,
    ) as stack:  # fmt: skip
        yield stack


def test_a_hit_forwards_what_a_miss_forwards_and_skips_ext_authz(
    cached_stack: LocalStack, pki: LabPki
) -> None:
    client = pki.client("vc-good")
    forged = ["X-Client-Cert: forged", "X-Mtls-Authz-Revocation: forged"]
    miss = cached_stack.curl(client, "/same", headers=forged)
    hit = cached_stack.curl(client, "/same", headers=forged)
    assert miss.status == hit.status == 200
    miss_headers, hit_headers = miss.json()["headers"], hit.json()["headers"]
    for headers in (miss_headers, hit_headers):
        headers.pop("x-request-id")
    assert hit_headers == miss_headers
    assert hit_headers["x-client-cert"] != ["forged"] and hit_headers[
        "x-mtls-authz-revocation"
    ] == ["good"]
    stats = ext_authz_stats(cached_stack)
    assert (stats["ok"], stats["disabled"]) == (1, 1)


def test_a_cached_refusal_is_replayed_exactly(
    cached_stack: LocalStack, pki: LabPki, fresh_responder: OcspResponder
) -> None:
    revoked = pki.client("vc-revoked")
    fresh_responder.revoke(revoked.cert.serial_number)
    first = cached_stack.curl(revoked, "/r1")
    again = cached_stack.curl(revoked, "/r2")
    assert first.status == again.status == 400
    assert first.body == again.body and json.loads(again.body)["error"] == "certificate_revoked"
    assert again.headers["x-mtls-authz-reason"] == "certificate_revoked"
    assert ext_authz_stats(cached_stack)["denied"] == 1  # the second never reached ext_authz


def test_a_transient_failure_is_never_cached(
    cached_stack: LocalStack, pki: LabPki, fresh_responder: OcspResponder
) -> None:
    client = pki.client("vc-transient")
    fresh_responder.mode = Mode.HTTP_500
    assert cached_stack.curl(client, "/t1").status == 503
    fresh_responder.mode = Mode.NORMAL
    time.sleep(1.0)  # past mtls-authz's own failure cache
    assert cached_stack.curl(client, "/t2").status == 200


def test_two_policies_get_separate_verdicts(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path: Path
) -> None:
    config = yaml.safe_load(CACHED.read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    admin_route = {
        "match": {"prefix": "/admin"},
        "route": {"cluster": "app"},
        "metadata": {"filter_metadata": {"envoy.filters.http.lua": {"policy": "admin"}}},
        "typed_per_filter_config": {
            "envoy.filters.http.ext_authz": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                "check_settings": {"context_extensions": {"policy": "admin"}},
            }
        },
    }
    hcm["route_config"]["virtual_hosts"][0]["routes"].insert(0, admin_route)
    template = tmp_path / "two-routes.yaml"
    template.write_text(yaml.safe_dump(config))
    policies = {"admin": {"require": [{"subject_prefix": "CN=admin-"}], "deny_status": 403}}
    with LocalStack(
        tmp_path, pki, envoy_binary=envoy, envoy_template=template,
        authz_args=["--policies", yaml.safe_dump(policies)], ocsp_override=responder.url,
    ) as stack:  # fmt: skip
        bob = pki.client("vc-bob")
        assert stack.curl(bob, "/home").status == 200  # cached for the default policy …
        assert stack.curl(bob, "/admin").status == 403  # … not for admin
        assert stack.curl(bob, "/admin").status == 403
        assert stack.curl(bob, "/home").status == 200


def test_a_revocation_at_the_ca_is_seen_within_both_ttls(
    envoy: str, pki: LabPki, tmp_path: Path
) -> None:
    ca = OpensslCa(tmp_path / "ca", pki.issuing)
    with OpensslResponder(ca, tmp_path / "ocsp.log") as openssl:
        client = pki.client("vc-later", ocsp_url=openssl.url)
        ca.add_valid(client)
        openssl.restart()
        args = ["--verdict-cache-ttl", "2", "--ocsp-cache-max-age", "2", "--prefetch-window", "0"]
        with LocalStack(
            tmp_path / "stack", pki, envoy_binary=envoy, envoy_template=CACHED, authz_args=args
        ) as stack:
            assert stack.curl(client, "/before").status == 200
            started = time.monotonic()
            ca.revoke(client)
            openssl.restart()
            time.sleep(max(0.0, started + 2 + 2 + 0.5 - time.monotonic()))
            refused = stack.curl(client, "/after")
    assert refused.status == 400 and refused.json()["error"] == "certificate_revoked"


def test_the_cache_stays_within_its_bound(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path: Path
) -> None:
    """A copy of the shipped script with room for 3 entries: the 4th client evicts the 1st."""
    lua = tmp_path / "verdict-cache.lua"
    source = envoy_config.SHIPPED_LUA.read_text()
    assert "local MAX_ENTRIES = 10000" in source
    lua.write_text(source.replace("local MAX_ENTRIES = 10000", "local MAX_ENTRIES = 3"))
    config = yaml.safe_load(CACHED.read_text())
    template = tmp_path / "small.yaml"
    template.write_text(yaml.safe_dump(config).replace(envoy_config.VERDICT_CACHE_LUA, str(lua)))
    with LocalStack(
        tmp_path, pki, envoy_binary=envoy, envoy_template=template, ocsp_override=responder.url
    ) as stack:
        clients = [pki.client(f"vc-bound-{i}") for i in range(4)]
        for client in clients:
            assert stack.curl(client, "/fill").status == 200
        assert ext_authz_stats(stack)["ok"] == 4
        assert stack.curl(clients[3], "/kept").status == 200  # still cached
        assert ext_authz_stats(stack)["ok"] == 4
        assert stack.curl(clients[0], "/evicted").status == 200  # evicted: asked again
        assert ext_authz_stats(stack)["ok"] == 5
