"""The Envoy-side verdict cache (envoy/envoy-cached.yaml + verdict-cache.lua) with the real Envoy."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from authz.demo import envoy_config
from authz.demo.envoy_config import SHIPPED_ENVOY_DIR
from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import Identity, LabPki
from authz.demo.stack import LocalStack
from tests.ocsp_responder import Mode, OcspResponder
from tests.support import edited_template, envoy_xfcc_element, gateway_hcm

CACHED = SHIPPED_ENVOY_DIR / "envoy-cached.yaml"


def der(identity: Identity) -> str:
    return base64.b64encode(identity.cert.public_bytes(Encoding.DER)).decode()


def ext_authz_stats(stack: LocalStack) -> dict[str, int]:
    url = f"http://127.0.0.1:{stack.ports['admin']}/stats?filter=http.gateway.ext_authz"
    with urllib.request.urlopen(url, timeout=5) as page:
        lines = page.read().decode().splitlines()
    return {line.split(":")[0].rsplit(".", 1)[1]: int(line.split(":")[1]) for line in lines}


@pytest.fixture
def cached_stack(
    envoy: str, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> Iterator[LocalStack]:
    args = ["--verdict-cache-ttl", "30", "--revocation-failure-cache", "0.5"]
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


PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
ADMIN_ONLY = {"admin": {"require": [{"subject_prefix": "CN=admin-"}], "deny_status": 403}}


def admin_extension() -> dict[str, object]:
    return {
        "envoy.filters.http.ext_authz": {
            "@type": PER_ROUTE,
            "check_settings": {"context_extensions": {"policy": "admin"}},
        }
    }


def test_an_allow_is_never_replayed_where_another_policy_applies(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path: Path
) -> None:
    def strict_places(config: dict[str, object]) -> None:
        vhosts = gateway_hcm(config)["route_config"]["virtual_hosts"]
        # As envoy-policies.yaml wires it: the policy in the context extension only.
        vhosts[0]["routes"].insert(
            0, {"match": {"prefix": "/admin"}, "route": {"cluster": "app"},
                "typed_per_filter_config": admin_extension()},
        )  # fmt: skip
        # Both names, different: a misconfiguration mtls-authz refuses.
        vhosts[0]["routes"].insert(
            0, {"match": {"prefix": "/contradiction"}, "route": {"cluster": "app"},
                "metadata": {"filter_metadata": {"envoy.filters.http.lua": {"policy": "default"}}},
                "typed_per_filter_config": admin_extension()},
        )  # fmt: skip
        # A virtual host whose every route gets the admin policy.
        vhosts.insert(
            0, {"name": "strict", "domains": ["strict.example"],
                "typed_per_filter_config": admin_extension(),
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]},
        )  # fmt: skip

    template = edited_template(CACHED, tmp_path / "strict.yaml", strict_places)
    with LocalStack(
        tmp_path, pki, envoy_binary=envoy, envoy_template=template, ocsp_override=responder.url,
        authz_args=["--policies", yaml.safe_dump(ADMIN_ONLY), "--verdict-cache-ttl", "30"],
    ) as stack:  # fmt: skip
        bob = pki.client("vc-lenient-bob")
        assert stack.curl(bob, "/home").status == 200
        assert stack.curl(bob, "/home").status == 200
        assert ext_authz_stats(stack)["ok"] == 1  # the second was a replay: bob is cached
        admin = stack.curl(bob, "/admin/panel")
        assert admin.status == 403 and admin.headers["x-mtls-authz-reason"] == "subject_not_allowed"
        vhost = stack.curl(bob, "/anything", headers=["Host: strict.example"])
        assert vhost.status == 403
        assert ext_authz_stats(stack)["denied"] == 2
        carol = pki.client("vc-lenient-carol")
        mismatch = stack.curl(carol, "/contradiction")
        assert mismatch.status == 500 and mismatch.json()["error"] == "policy_mismatch"
        assert stack.curl(carol, "/home").status == 200  # the refusal was not cached


def test_a_broken_script_or_a_route_without_it_still_checks_every_request(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.lua"
    source = envoy_config.SHIPPED_LUA.read_text()
    marker = "function envoy_on_request(handle)\n"
    assert marker in source
    broken.write_text(source.replace(marker, marker + '  error("broken on purpose")\n'))

    def without_lua(config: dict[str, object]) -> None:
        routes = gateway_hcm(config)["route_config"]["virtual_hosts"][0]["routes"]
        lua_off = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
            "disabled": True,
        }
        routes.insert(
            0, {"match": {"prefix": "/nolua"}, "route": {"cluster": "app"},
                "typed_per_filter_config": {"envoy.filters.http.lua": lua_off}},
        )  # fmt: skip

    for script in (broken, envoy_config.SHIPPED_LUA):
        template = edited_template(CACHED, tmp_path / f"{script.stem}.yaml", without_lua)
        template.write_text(
            template.read_text().replace(envoy_config.VERDICT_CACHE_LUA, str(script))
        )
        path = "/home" if script == broken else "/nolua"
        with LocalStack(
            tmp_path / script.stem, pki, envoy_binary=envoy, envoy_template=template,
            ocsp_override=responder.url,
        ) as stack:  # fmt: skip
            refused = stack.curl(pki.client("vc-broken-other", pki.other), path)
            assert refused.status == 400, script
            assert refused.headers["x-mtls-authz-reason"] == "issuer_not_allowed"
            good = pki.client("vc-broken-good")
            forged = ["X-Client-Cert: forged"]
            for _ in range(2):
                allowed = stack.curl(good, path, headers=forged)
                assert allowed.status == 200
                assert allowed.json()["headers"]["x-client-cert"] != ["forged"]
            assert ext_authz_stats(stack)["ok"] == 2, script  # both asked mtls-authz


def test_an_entry_stored_again_after_expiry_is_not_evicted_early(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path: Path
) -> None:
    """Room for 3: A expires while B is live; A is stored again and C is added. Three live
    entries fit, so A must stay — its expired first slot must not count against it."""
    lua = tmp_path / "verdict-cache.lua"
    lua.write_text(
        envoy_config.SHIPPED_LUA.read_text().replace(
            "local MAX_ENTRIES = 10000", "local MAX_ENTRIES = 3"
        )
    )
    template = tmp_path / "small.yaml"
    template.write_text(CACHED.read_text().replace(envoy_config.VERDICT_CACHE_LUA, str(lua)))
    with LocalStack(
        tmp_path, pki, envoy_binary=envoy, envoy_template=template, ocsp_override=responder.url,
        authz_args=["--verdict-cache-ttl", "4"],
    ) as stack:  # fmt: skip
        a, b, c = (pki.client(f"vc-expiry-{name}") for name in "abc")
        started = time.monotonic()
        assert stack.curl(a, "/a").status == 200
        time.sleep(2.5)
        assert stack.curl(b, "/b").status == 200
        time.sleep(max(0.0, started + 5.2 - time.monotonic()))  # A expired (4 s), B not
        assert stack.curl(a, "/a-again").status == 200  # asked again, stored again
        assert stack.curl(c, "/c").status == 200
        assert ext_authz_stats(stack)["ok"] == 4
        assert stack.curl(a, "/a-kept").status == 200
        assert ext_authz_stats(stack)["ok"] == 4  # A was still cached


def test_the_cache_replays_verdicts_decided_over_http_too(
    envoy: str, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """ext_authz in HTTP mode (the shipped envoy-http-cached.yaml): the verdict reaches the Lua as
    x-mtls-authz-cache-* strings."""
    with LocalStack(
        tmp_path, pki, envoy_binary=envoy, envoy_template=SHIPPED_ENVOY_DIR / "envoy-http-cached.yaml",
        transport="http",
        authz_args=["--verdict-cache-ttl", "30"], ocsp_override=fresh_responder.url,
    ) as stack:  # fmt: skip
        client = pki.client("vc-http-good")
        forged = ["X-Client-Cert: forged", "X-Mtls-Authz-Revocation: forged"]
        miss = stack.curl(client, "/http-same", headers=forged)
        hit = stack.curl(client, "/http-same", headers=forged)
        assert miss.status == hit.status == 200
        miss_headers, hit_headers = miss.json()["headers"], hit.json()["headers"]
        for headers in (miss_headers, hit_headers):
            headers.pop("x-request-id")
        assert hit_headers == miss_headers
        assert hit_headers["x-mtls-authz-revocation"] == ["good"]
        assert (ext_authz_stats(stack)["ok"], ext_authz_stats(stack)["disabled"]) == (1, 1)
        revoked = pki.client("vc-http-revoked")
        fresh_responder.revoke(revoked.cert.serial_number)
        first, again = stack.curl(revoked, "/http-r1"), stack.curl(revoked, "/http-r2")
        assert first.status == again.status == 400 and first.body == again.body
        assert again.headers["x-mtls-authz-reason"] == "certificate_revoked"
        assert ext_authz_stats(stack)["denied"] == 1  # the second was answered by the Lua


# -- upgrades and combinations that must not fail open ----------------------------------------


def first_published_gate(config: dict[str, object]) -> None:
    """envoy-cached.yaml as first published: ext_authz ran only on requests the script marked
    `check`; today's config runs it on every request not marked `replayed`."""
    for entry in gateway_hcm(config)["http_filters"]:
        if entry["name"] == "envoy.filters.http.ext_authz":
            entry["typed_config"]["filter_enabled_metadata"] = {
                "filter": "mtls_authz.verdict_cache",
                "path": [{"key": "check"}],
                "value": {"bool_match": True},
            }


def test_todays_script_under_the_first_config_still_checks_every_request(
    envoy: str, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """An operator who upgrades the script before the config: the revoked client is refused,
    a returning good client is replayed, a fresh one is checked."""
    template = edited_template(CACHED, tmp_path / "first.yaml", first_published_gate)
    revoked, good = pki.client("vc-old-revoked"), pki.client("vc-old-good")
    fresh_responder.revoke(revoked.cert.serial_number)
    with LocalStack(
        tmp_path / "stack", pki, envoy_binary=envoy, envoy_template=template,
        ocsp_override=fresh_responder.url,
    ) as stack:  # fmt: skip
        refused = stack.curl(revoked, "/old/revoked")
        assert refused.status == 400 and refused.json()["error"] == "certificate_revoked"
        assert stack.curl(good, "/old/good").status == 200
        assert stack.curl(good, "/old/good").status == 200
        stats = ext_authz_stats(stack)
    assert (stats["denied"], stats["ok"], stats["disabled"]) == (1, 1, 1)


def forward_proxys_xfcc(config: dict[str, object]) -> None:
    """The gateway behind a trusted proxy: the proxy is the TLS peer and sends its clients'
    XFCC, which the gateway forwards as it is."""
    gateway_hcm(config)["forward_client_cert_details"] = "ALWAYS_FORWARD_ONLY"


def test_behind_a_proxy_one_client_s_verdict_is_never_replayed_for_another(
    envoy: str, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """certificate_source: xfcc with the verdict cache, where the TLS peer is a proxy (curl here,
    with the proxy's certificate): the script keys on the proxy's certificate, so mtls-authz
    gives no verdict a ttl unless it decided on the TLS peer's own certificate."""
    template = edited_template(CACHED, tmp_path / "proxied.yaml", forward_proxys_xfcc)
    proxy, alice, mallory = (pki.client(f"vc-{n}") for n in ("proxy", "alice", "mallory"))
    fresh_responder.revoke(mallory.cert.serial_number)
    with LocalStack(
        tmp_path / "stack", pki, envoy_binary=envoy, envoy_template=template,
        ocsp_override=fresh_responder.url,
        authz_args=["--certificate-source", "xfcc", "--verdict-cache-ttl", "30"],
    ) as stack:  # fmt: skip
        for client in (alice, mallory, alice, mallory):
            header = f"X-Forwarded-Client-Cert: {envoy_xfcc_element(client.cert)}"
            result = stack.curl(proxy, f"/proxied/{client.cert.serial_number}", headers=[header])
            if client is alice:
                assert result.status == 200
                assert result.json()["headers"]["x-client-cert"] == [der(alice)]
            else:
                assert result.status == 400 and result.json()["error"] == "certificate_revoked"
        stats = ext_authz_stats(stack)
    assert (stats["ok"], stats["denied"], stats.get("disabled", 0)) == (2, 2, 0)


def test_with_xfcc_from_envoy_itself_the_tls_peer_s_verdict_is_replayed(
    envoy: str, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """The sidecar: the XFCC element is Envoy's own for its TLS peer (and Envoy sends its peer
    certificate too): the same certificate, so the verdict cache works as with `peer`."""
    client = pki.client("vc-xfcc-self")
    with LocalStack(
        tmp_path, pki, envoy_binary=envoy, envoy_template=CACHED,
        ocsp_override=fresh_responder.url,
        authz_args=["--certificate-source", "xfcc", "--verdict-cache-ttl", "30"],
    ) as stack:  # fmt: skip
        assert stack.curl(client, "/self").status == stack.curl(client, "/self").status == 200
        stats = ext_authz_stats(stack)
    assert (stats["ok"], stats["disabled"]) == (1, 1)
