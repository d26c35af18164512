"""What holds across keys, checked once every value is read: one name per setting, one
listener at least, the policies. Each problem names the keys it is about."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from authz.core.policies import PolicySpec, parse_policies
from authz.service.settings.sources import Given


def names_agree(given: Sequence[Given]) -> list[str]:
    """A setting given under its old name and under its current one, in one source or across
    them, is refused: which one was meant? (An old variable left in the environment once
    overrode a new key in the file.)"""
    problems = []
    for key in dict.fromkeys(g.key for g in given):
        new = [g.source for g in given if g.key == key and not g.old_name]
        old = [g.old_name for g in given if g.key == key and g.old_name]
        if new and old:
            problems.append(
                f"{key}: given as {', '.join(new)} and by its old name as {', '.join(old)}; "
                f"give {key} only"
            )
    return problems


def a_listener(values: Mapping[str, Any]) -> list[str]:
    if not values["listen"] and not values["http_listen"] and not values["forward_auth_listen"]:
        return ["listen, http_listen, forward_auth_listen: at least one transport must listen"]
    return []


def route_policies(
    values: Mapping[str, Any], deprecated: list[str] | None = None
) -> dict[str, PolicySpec]:
    """Every policy, `default` being the top-level settings unless configured by that name."""
    defaults = PolicySpec(
        allowed_issuers=tuple(values["allowed_issuers"]),
        revocation_mode=values["revocation_mode"],
        deny_status=values["deny_status"],
        mode=values["mode"],
    )
    return parse_policies(values["policies"], defaults, deprecated)


def replicas_can_wait(values: Mapping[str, Any]) -> list[str]:
    """With a shared cache, a replica waits for another's fetch only while it could still fetch
    itself within revocation_deadline (its timeout plus two store operations): timeouts that
    leave no such time make every replica ask the source itself, which nothing else says."""
    if not values["revocation_cache_url"]:
        return []
    found = []
    for key, what in (("ocsp_timeout", "OCSP answer"), ("crl_timeout", "CRL")):
        reserve = values[key] + 2 * values["revocation_cache_timeout"]
        if values["revocation_deadline"] <= reserve:
            found.append(
                f"revocation_deadline ({values['revocation_deadline']:g} s) leaves no time to wait "
                f"for another replica's {what}: {key} ({values[key]:g} s) + 2 × "
                f"revocation_cache_timeout is {reserve:g} s, so each replica fetches it itself "
                f"when they need it at once; lower {key} or raise revocation_deadline (under "
                "Envoy's ext_authz timeout)"
            )
    return found
