from __future__ import annotations

import json
import logging

from authz.core.verdict import CertHeaderFormat
from authz.service.logs import JsonFormatter, TextFormatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("authz", logging.INFO, __file__, 1, "started", None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_text_logs_show_values_as_people_write_them_not_python_reprs() -> None:
    config = {"cert_header_format": CertHeaderFormat.BASE64_DER, "allowed_issuers": ("CN=A",)}
    line = TextFormatter().format(
        _record(format=CertHeaderFormat.PEM_URL, config=config, port=9191, reason="ok now")
    )
    assert "format=pem-url " in line
    assert 'config={"cert_header_format": "base64-der", "allowed_issuers": ["CN=A"]}' in line
    assert "port=9191" in line and line.endswith("reason=ok now")
    assert "<CertHeaderFormat" not in line and "'" not in line


def test_json_logs_carry_the_same_fields() -> None:
    line = json.loads(JsonFormatter().format(_record(format=CertHeaderFormat.PEM_URL)))
    assert line["format"] == "pem-url" and line["message"] == "started"
