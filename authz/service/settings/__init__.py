"""Configuration: one frozen `Settings` from a YAML file, environment variables and flags.

In named parts, each with one reason to change:

- `table`: every key, declared once as a field of `Settings` (type, default, help, flag, check,
  old names) — adding a setting is adding a field there;
- `declare`: how a key is declared (`setting`); `values`: what one value may be (the checks and
  the value types);
- `options`: each key's name in each source and the conversion of a raw value;
- `sources`: the file (YAML, no key twice), `MTLS_AUTHZ_<KEY>` variables, flags;
- `checks`: what holds across keys; `load`: precedence (flag > environment > file > default)
  and one error naming every key at fault.

Old key names are still read, with a deprecation warning; never beside their new name.
"""

from authz.service.settings.declare import ConfigError, setting
from authz.service.settings.load import load_settings
from authz.service.settings.options import (
    ALIASES,
    ENV_PREFIX,
    OPTIONS,
    OPTIONS_BY_KEY,
    RESTART_ONLY,
    Option,
)
from authz.service.settings.sources import read_config_file
from authz.service.settings.table import Settings
from authz.service.settings.values import (
    CertificateSourceKind,
    IssuerUrls,
    redact_url,
    split_responder_override,
)

__all__ = [
    "ALIASES",
    "ENV_PREFIX",
    "OPTIONS",
    "OPTIONS_BY_KEY",
    "RESTART_ONLY",
    "CertificateSourceKind",
    "ConfigError",
    "IssuerUrls",
    "Option",
    "Settings",
    "load_settings",
    "read_config_file",
    "redact_url",
    "setting",
    "split_responder_override",
]
