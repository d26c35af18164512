from __future__ import annotations

from pathlib import Path

import pytest

from authz.cli import main
from authz.core.verdict import CertHeaderFormat
from authz.demo.pki import LabPki, pem_bundle
from authz.service.settings import (
    OPTIONS,
    OPTIONS_BY_KEY,
    ConfigError,
    load_settings,
    split_responder_override,
)

ISSUER = "CN=Lab Issuing CA,O=Lab"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_with_only_the_required_keys() -> None:
    settings = load_settings(None, {}, {"trust_bundle": "/b.pem", "allowed_issuers": [ISSUER]})
    assert settings.listen == "127.0.0.1:9191"
    assert settings.cert_header == "X-Client-Cert"
    assert settings.cert_header_format is CertHeaderFormat.BASE64_DER
    assert settings.deny_status == 400
    assert settings.allowed_issuers == (ISSUER,)


def test_precedence_is_flag_then_env_then_file_then_default(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"trust_bundle: /file.pem\nallowed_issuers: ['{ISSUER}']\n"
        "cert_header: X-From-File\ndeny_status: 401\nlisten: 127.0.0.1:1\n",
    )
    env = {"MTLS_AUTHZ_CERT_HEADER": "X-From-Env", "MTLS_AUTHZ_DENY_STATUS": "403"}
    flags = {"cert_header": "X-From-Flag"}
    settings = load_settings(config, env, flags)
    assert settings.cert_header == "X-From-Flag"
    assert settings.deny_status == 403
    assert settings.listen == "127.0.0.1:1"
    assert settings.shutdown_grace == 5.0


def test_env_lists_take_yaml_or_one_item_per_line() -> None:
    base = {"trust_bundle": "/b.pem"}
    env_yaml = {"MTLS_AUTHZ_ALLOWED_ISSUERS": f'["{ISSUER}", "/O=Lab/CN=Other"]'}
    assert load_settings(None, env_yaml, base).allowed_issuers == (ISSUER, "/O=Lab/CN=Other")
    env_lines = {"MTLS_AUTHZ_ALLOWED_ISSUERS": f"{ISSUER}\n/O=Lab/CN=Other\n"}
    assert load_settings(None, env_lines, base).allowed_issuers == (ISSUER, "/O=Lab/CN=Other")


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"allowed_issuers": [ISSUER]}, {}, "trust_bundle (from default): is required"),
        ({"trust_bundle": "/b"}, {}, "allowed_issuers (from default): at least one"),
        ({"trust_bundle": "/b", "allowed_issuers": ["CN"]}, {}, "allowed_issuers (from --allowed-issuer)"),
        ({"trust_bundle": "/b", "allowed_issuers": [ISSUER], "listen": "nope"}, {}, "listen (from --listen): expected HOST:PORT"),
        ({"trust_bundle": "/b", "allowed_issuers": [ISSUER]}, {"MTLS_AUTHZ_DENY_STATUS": "200"}, "deny_status (from MTLS_AUTHZ_DENY_STATUS)"),
        ({"trust_bundle": "/b", "allowed_issuers": [ISSUER]}, {"MTLS_AUTHZ_DENY_STATUS": "abc"}, "deny_status (from MTLS_AUTHZ_DENY_STATUS)"),
        ({"trust_bundle": "/b", "allowed_issuers": [ISSUER], "cert_header": "Host"}, {}, "cert_header (from --cert-header): 'Host' is reserved"),
        ({"trust_bundle": "/b", "allowed_issuers": [ISSUER], "cert_header": "Bad Header"}, {}, "not a valid HTTP header"),
        ({"trust_bundle": "/b", "allowed_issuers": [ISSUER], "cert_header_format": "der"}, {}, "cert_header_format (from --cert-header-format): 'der' is not one of"),
        ({"trust_bundle": "/b", "allowed_issuers": [ISSUER], "shutdown_grace": "-1"}, {}, "shutdown_grace"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key_and_the_source(
    flags: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env, flags)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unknown_key: 1\n", "unknown key 'unknown_key'"),
        ("- a\n- b\n", "expected a mapping"),
        ("deny_status: [1]\n", "deny_status"),
        ("deny_status: true\n", "expected a number"),
        ("cert_header: 5\n", "expected a string"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_files_are_reported(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_settings(write_config(tmp_path, text), {}, {})


def test_validate_config_command(
    tmp_path: Path, pki: LabPki, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    good = write_config(tmp_path, f"trust_bundle: {bundle}\nallowed_issuers: ['{ISSUER}']\n")
    assert main(["validate-config", str(good)]) == 0
    assert "ok (2 CA certificates, 1 allowed issuers)" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"trust_bundle: {tmp_path / 'missing.pem'}\nallowed_issuers: ['{ISSUER}']\n")
    assert main(["validate-config", str(bad)]) == 2
    assert "invalid: trust_bundle: " in capsys.readouterr().err  # the key, then the file


def test_validate_config_warns_of_allowed_issuers_no_bundle_ca_has(
    tmp_path: Path, pki: LabPki, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    # The YAML slip: an unquoted DN in a flow list is two issuers.
    split = write_config(tmp_path, f"trust_bundle: {bundle}\nallowed_issuers: [{ISSUER}]\n")
    assert main(["validate-config", str(split)]) == 0
    out, err = capsys.readouterr()
    assert "2 allowed issuers, 2 warnings" in out
    assert f"allowed issuer 'CN=Lab Issuing CA' is part of '{ISSUER}', split at its commas" in err
    assert f"allowed issuer 'O=Lab' is part of '{ISSUER}'" in err
    # A typo, in a named policy: the closest DN of the bundle is named.
    typo = write_config(
        tmp_path,
        f"trust_bundle: {bundle}\nallowed_issuers: ['{ISSUER}']\n"
        "policies:\n  admin:\n    allowed_issuers: ['CN=Lab Issueing CA,O=Lab']\n",
    )
    assert main(["validate-config", str(typo)]) == 0
    err = capsys.readouterr().err
    assert (
        "policies.admin.allowed_issuers: allowed issuer 'CN=Lab Issueing CA,O=Lab' matches no CA"
        f" certificate in the trust bundle; closest in the bundle: '{ISSUER}'"
    ) in err
    assert "warning: allowed_issuers:" not in err  # the top-level issuer is in the bundle


@pytest.mark.parametrize("word", ["off", "no", "false", "Off"])
def test_an_unquoted_off_in_yaml_is_the_mode_off(tmp_path: Path, word: str) -> None:
    config = write_config(
        tmp_path,
        f"trust_bundle: /b\nallowed_issuers: ['{ISSUER}']\nrevocation_mode: {word}\n"
        f"policies:\n  open:\n    revocation_mode: {word}\n",
    )
    settings = load_settings(config, {}, {})
    assert settings.revocation_mode == "off"
    assert settings.route_specs["open"].revocation_mode == "off"


def test_an_unquoted_on_in_yaml_says_how_to_write_the_mode(tmp_path: Path) -> None:
    base = f"trust_bundle: /b\nallowed_issuers: ['{ISSUER}']\n"
    with pytest.raises(
        ConfigError,
        match=r"revocation_mode \(from .*\): YAML read an unquoted"
        r" on/yes/true as a boolean; write one of require, soft-fail, off",
    ):
        load_settings(write_config(tmp_path, base + "revocation_mode: on\n"), {}, {})
    with pytest.raises(ConfigError, match=r"policy 'p': mode: YAML read an unquoted off/no/false"):
        load_settings(write_config(tmp_path, base + "policies:\n  p:\n    mode: off\n"), {}, {})


def test_ocsp_defaults() -> None:
    settings = load_settings(None, {}, {"trust_bundle": "/b.pem", "allowed_issuers": [ISSUER]})
    assert settings.revocation_mode == "require"
    assert settings.ocsp_timeout == 2.0
    assert settings.ocsp_cache_max_age == 300.0
    assert settings.revocation_failure_cache == 5.0
    assert settings.ocsp_cache_size == 100_000
    assert settings.ocsp_nonce is False
    assert settings.ocsp_hash == "sha1"


def test_responder_overrides_split_where_the_url_begins() -> None:
    assert split_responder_override("CN=Lab Issuing CA,O=Lab=http://ocsp.lab:8080/x") == (
        "CN=Lab Issuing CA,O=Lab",
        "http://ocsp.lab:8080/x",
    )
    assert split_responder_override("/O=Lab/CN=A=https://o/") == ("/O=Lab/CN=A", "https://o/")
    with pytest.raises(ValueError):
        split_responder_override("CN=A=ldap://x")


def test_bad_responder_override_names_the_key() -> None:
    flags = {"trust_bundle": "/b", "allowed_issuers": [ISSUER], "ocsp_responders": ["CN=A"]}
    with pytest.raises(ConfigError, match=r"ocsp_responders \(from --ocsp-responder\)"):
        load_settings(None, {}, flags)


def test_boolean_from_env_and_flag() -> None:
    base = {"trust_bundle": "/b", "allowed_issuers": [ISSUER]}
    assert load_settings(None, {"MTLS_AUTHZ_OCSP_NONCE": "yes"}, base).ocsp_nonce is True
    flags = {**base, "ocsp_nonce": False}
    assert load_settings(None, {"MTLS_AUTHZ_OCSP_NONCE": "yes"}, flags).ocsp_nonce is False
    with pytest.raises(ConfigError, match="ocsp_nonce"):
        load_settings(None, {"MTLS_AUTHZ_OCSP_NONCE": "maybe"}, base)


def test_policies_are_validated_at_start_naming_the_key(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"trust_bundle: /b.pem\nallowed_issuers: ['{ISSUER}']\npolicies:\n  admin:\n    mode: shadow\n",
    )
    with pytest.raises(ConfigError, match=r"policies: policy 'admin': mode must be"):
        load_settings(config, {}, {})
    good = write_config(
        tmp_path,
        f"trust_bundle: /b.pem\nallowed_issuers: ['{ISSUER}']\npolicies:\n  admin:\n    deny_status: 403\n",
    )
    assert load_settings(good, {}, {}).policies == {"admin": {"deny_status": 403}}


@pytest.mark.parametrize(
    ("where", "old"),
    [("file", "ocsp"), ("env", "MTLS_AUTHZ_OCSP"), ("flag", "--ocsp")],
)
def test_old_names_still_work_with_a_deprecation(tmp_path: Path, where: str, old: str) -> None:
    base: dict[str, object] = {"trust_bundle": "/b", "allowed_issuers": [ISSUER]}
    config, env, flags = None, {}, dict(base)
    if where == "file":
        config = write_config(tmp_path, "ocsp: soft-fail\nocsp_skew: 60\n")
    elif where == "env":
        env = {"MTLS_AUTHZ_OCSP": "soft-fail", "MTLS_AUTHZ_OCSP_SKEW": "60"}
    else:
        flags |= {"ocsp": "soft-fail", "ocsp_skew": "60"}
    settings = load_settings(config, env, flags)
    assert settings.revocation_mode == "soft-fail" and settings.revocation_skew == 60
    new = {
        "file": "revocation_mode",
        "env": "MTLS_AUTHZ_REVOCATION_MODE",
        "flag": "--revocation-mode",
    }
    assert f"{old} is deprecated; use {new[where]}" in "\n".join(settings.deprecations)


@pytest.mark.parametrize(
    ("file", "env", "flags"),
    [
        ("ocsp: off\nrevocation_mode: require\n", {}, {}),
        ("", {"MTLS_AUTHZ_OCSP": "off", "MTLS_AUTHZ_REVOCATION_MODE": "soft-fail"}, {}),
        ("", {}, {"ocsp": "off", "revocation_mode": "soft-fail"}),
        ("revocation_mode: require\n", {"MTLS_AUTHZ_OCSP": "off"}, {}),
        ("ocsp: off\n", {}, {"revocation_mode": "require"}),
    ],
    ids=["file", "env", "flags", "old-env-new-file", "old-file-new-flag"],
)
def test_an_old_and_a_new_name_together_are_an_error_wherever_they_come_from(
    tmp_path: Path, file: str, env: dict[str, str], flags: dict[str, str]
) -> None:
    """An old-name variable left in the environment once turned revocation off under a file that
    said `require`, with a deprecation warning only."""
    base = {"trust_bundle": "/b", "allowed_issuers": [ISSUER], **flags}
    config = write_config(tmp_path, file) if file else None
    with pytest.raises(ConfigError, match="revocation_mode") as info:
        load_settings(config, env, base)
    assert "give revocation_mode only" in str(info.value)


def test_a_key_given_twice_in_the_file_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"trust_bundle: /b\nallowed_issuers: ['{ISSUER}']\nrevocation_mode: require\n"
        "revocation_mode: off\n",
    )
    with pytest.raises(
        ConfigError, match=r"line 4: revocation_mode is given twice \(first on line 3\)"
    ):
        load_settings(config, {}, {})
    nested = write_config(tmp_path, "policies:\n  a: {mode: audit, mode: enforce}\n")
    with pytest.raises(ConfigError, match="mode is given twice"):
        load_settings(nested, {}, {})


def test_a_misspelt_variable_is_named_with_what_was_meant() -> None:
    base = {"trust_bundle": "/b", "allowed_issuers": [ISSUER]}
    env = {"MTLS_AUTHZ_OCSP_TIMOUT": "1", "MTLS_AUTHZ_WORKER_DIR": "/x", "OTHER": "y"}
    settings = load_settings(None, env, base)
    assert settings.warnings == (
        "MTLS_AUTHZ_OCSP_TIMOUT is not a setting and is ignored "
        "(did you mean MTLS_AUTHZ_OCSP_TIMEOUT?)",
    )


def test_an_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    config = write_config(tmp_path, "ocsp_timout: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'ocsp_timout'; did you mean 'ocsp_timeout'"):
        load_settings(config, {}, {})


def test_a_policy_s_old_revocation_key_is_read_and_deprecated() -> None:
    policies = {"p": {"ocsp": "off"}}
    settings = load_settings(
        None, {}, {"trust_bundle": "/b", "allowed_issuers": [ISSUER], "policies": policies}
    )
    assert settings.route_specs["p"].revocation_mode == "off"
    assert settings.deprecations == ("policies.p.ocsp is deprecated; use revocation_mode",)


def test_every_key_is_declared_once_with_its_flag_and_env_name() -> None:
    keys = [option.key for option in OPTIONS]
    assert len(keys) == len(set(keys)) == len(OPTIONS_BY_KEY)
    assert OPTIONS_BY_KEY["revocation_allowed_hosts"].flag_name == "--revocation-allowed-host"
    assert OPTIONS_BY_KEY["revocation_allowed_hosts"].alias_flags == ("--ocsp-allowed-host",)
    assert OPTIONS_BY_KEY["revocation_mode"].env_name == "MTLS_AUTHZ_REVOCATION_MODE"
    assert OPTIONS_BY_KEY["revocation_mode"].choices == ("require", "soft-fail", "off")


@pytest.mark.parametrize(
    "url",
    [
        "rediss://mtls-authz:s3cret@redis.cache.svc:6380/2",
        "redis://redis.cache.svc:6379/0?password=s3cret",
        "redis://user@redis.cache.svc:6379/0?username=user&PASSWORD=s3cret",
        "unix://:s3cret@/run/redis.sock?db=1",
        "unix:///run/redis.sock?db=1&password=s3cret",
    ],
)
def test_the_shared_cache_url_is_checked_and_its_password_never_logged(url: str) -> None:
    """Every URL form redis-py takes a password from: none reaches the startup log line."""
    base = {"trust_bundle": "/b.pem", "allowed_issuers": [ISSUER]}
    settings = load_settings(None, {"MTLS_AUTHZ_REVOCATION_CACHE_URL": url}, base)
    assert settings.revocation_cache_url == url
    shown = settings.redacted()["revocation_cache_url"]
    assert "s3cret" not in shown and "***" in shown
    assert "s3cret" not in str(settings.redacted())
    with pytest.raises(ConfigError, match=r"revocation_cache_url .*expected redis://") as info:
        load_settings(None, {}, {**base, "revocation_cache_url": "http" + url[url.index(":") :]})
    assert "s3cret" not in str(info.value)
    assert load_settings(None, {}, base).redacted()["revocation_cache_url"] == ""


def test_durations_take_the_units_people_write(tmp_path: Path) -> None:
    base = {"trust_bundle": "/b", "allowed_issuers": [ISSUER]}
    config = write_config(
        tmp_path, "ocsp_timeout: 2s\ncrl_cache_max_age: 1h\nverdict_cache_ttl: 30\n"
    )
    settings = load_settings(
        config, {"MTLS_AUTHZ_REVOCATION_CACHE_TIMEOUT": "250ms"}, {**base, "shutdown_grace": "1m"}
    )
    assert (settings.ocsp_timeout, settings.crl_cache_max_age, settings.verdict_cache_ttl) == (
        2.0, 3600.0, 30.0,
    )  # fmt: skip
    assert (settings.revocation_cache_timeout, settings.shutdown_grace) == (0.25, 60.0)
    with pytest.raises(
        ConfigError, match=r"ocsp_timeout \(from --ocsp-timeout\): not a duration: '2 minutes'"
    ):
        load_settings(None, {}, {**base, "ocsp_timeout": "2 minutes"})


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("O = Lab, CN = Lab Issuing CA", "looks like `openssl x509 -issuer` output"),
        ("O=Lab,CN=Lab Issuing CA", "in reverse order: RFC 4514 writes the most specific RDN"),
    ],
)
def test_an_issuer_dn_written_the_wrong_way_round_says_what_was_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pki: LabPki, written: str, says: str
) -> None:
    """Copied from `openssl x509 -issuer`, or reversed: refused with the DN to write, not
    started to refuse every client."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    config = write_config(tmp_path, f"trust_bundle: {bundle}\nallowed_issuers: ['{written}']\n")
    assert main(["validate-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert says in err and "CN=Lab Issuing CA,O=Lab" in err


def test_check_s_usage_errors_are_not_its_status_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """2 means unknown to `check`: a command line it cannot read exits 64 (EX_USAGE)."""
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 64
    with pytest.raises(SystemExit) as info:
        main(["check", "c.pem", "--at", "yesterday"])
    assert info.value.code == 64
    err = capsys.readouterr().err
    assert "not an ISO 8601 time: 'yesterday'" in err and "_timestamp" not in err


def test_timeouts_that_leave_no_time_to_wait_for_another_replica_are_said() -> None:
    base = {"trust_bundle": "/b.pem", "allowed_issuers": [ISSUER]}
    shared = {**base, "revocation_cache_url": "redis://cache:6379/0"}
    assert load_settings(None, {}, shared).warnings == ()  # the defaults agree
    assert load_settings(None, {}, {**base, "ocsp_timeout": 5.0}).warnings == ()  # no store
    (warning,) = load_settings(None, {}, {**shared, "ocsp_timeout": 5.0}).warnings
    assert "another replica's OCSP answer" in warning and "ocsp_timeout (5 s)" in warning
    (warning,) = load_settings(
        None, {}, {**shared, "crl_timeout": 3.0, "revocation_deadline": 3.5}
    ).warnings
    assert "another replica's CRL" in warning and "is 3.5 s" in warning
