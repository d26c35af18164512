"""Every store URL form read as documented, and each wrong one refused with words that say why."""

from __future__ import annotations

import pytest

from authz.redis_client import StoreUrl, connect, parse_store_url
from authz.service.settings.values import check_store_url, redact_url


@pytest.mark.parametrize(
    ("url", "kind", "tls", "redis_url"),
    [
        ("redis://cache:6379/2", "node", False, "redis://cache:6379/2"),
        ("rediss://u:p@cache:6380/0", "node", True, "rediss://u:p@cache:6380/0"),
        ("unix:///run/redis.sock?db=1", "node", False, "unix:///run/redis.sock?db=1"),
        ("valkey://cache/0", "node", False, "redis://cache/0"),
        ("valkeys://cache:6380", "node", True, "rediss://cache:6380"),
    ],
)
def test_one_node(url: str, kind: str, tls: bool, redis_url: str) -> None:
    parsed = parse_store_url(url)
    assert (parsed.kind, parsed.tls, parsed.url) == (kind, tls, redis_url)


def test_a_cluster_from_any_of_its_nodes() -> None:
    parsed = parse_store_url("rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert parsed == StoreUrl(
        "cluster",
        "rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002",
        True,
        (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002)),
        "app",
        "s@cret",
    )
    assert parse_store_url("valkey+cluster://n1:7000").kind == "cluster"


def test_sentinel_names_the_master_and_the_database() -> None:
    parsed = parse_store_url(
        "redis+sentinel://app:pw@s1:26379,s2:26380,s3/mymaster/3?sentinel_password=sp"
    )
    assert (parsed.kind, parsed.hosts, parsed.master, parsed.db) == (
        "sentinel", (("s1", 26379), ("s2", 26380), ("s3", 26379)), "mymaster", 3,
    )  # fmt: skip
    assert (parsed.username, parsed.password, parsed.options) == (
        "app", "pw", {"sentinel_password": "sp"},
    )  # fmt: skip
    assert parse_store_url("redis+sentinel://s1/mymaster").db == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://cache:6379", "expected redis://"),
        ("redis:///0", "no host"),
        ("redis+cluster://a:1,:2", "a host is missing"),
        ("redis+cluster://a:x", "the port is not a number"),
        ("redis+cluster://a:7000/1", "a cluster has one database"),
        ("redis+sentinel://s1:26379", "/MASTER[/DB]"),
        ("redis+sentinel://s1:26379/m/zero", "the database is not a number"),
        ("redis+sentinel://s1:26379/m/1/2", "/MASTER[/DB]"),
    ],
)
def test_a_wrong_url_says_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=r".*") as info:
        parse_store_url(url)
    assert says in str(info.value)
    assert check_store_url(url) == str(info.value)  # the setting says the same


def test_no_password_reaches_a_log() -> None:
    for url in ("redis+cluster://app:secret@n1:7000,n2:7001",
                "redis+sentinel://app:secret@s1,s2/m/0?sentinel_password=other"):  # fmt: skip
        shown = redact_url(url)
        assert "secret" not in shown and "other" not in shown, shown


async def test_connecting_contacts_nothing_until_the_first_command() -> None:
    for url in (
        "redis+cluster://127.0.0.1:1",
        "redis+sentinel://127.0.0.1:1/m",
        "redis://127.0.0.1:1",
    ):
        client = connect(url, 0.1)
        await client.aclose()
