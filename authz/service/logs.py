"""Logging: one JSON object per line by default, or plain text for humans; the decision log."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from cryptography.hazmat.primitives import hashes

from authz.core.decision import Decision
from authz.core.names import issuer_text, subject_text
from authz.core.reasons import Reason
from authz.core.request import CheckInput

# Attributes every LogRecord has; anything else was passed with `extra=` and belongs in the line.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES:
                line[key] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _text_value(value: object) -> str:
    """A log field for people: strings (enums included) as they are, anything else as JSON."""
    if isinstance(value, str):
        return str.__str__(value)
    return json.dumps(value, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES}
        if extras:
            text += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
        return text


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


decisions = logging.getLogger("authz.check")


def request_fields(request: CheckInput) -> dict[str, Any]:
    return {"request_id": request.request_id, "path": request.path}


def log_decision(decision: Decision, request: CheckInput) -> None:
    """Denies at info, allows at debug: who, what, why. Never the certificate or other headers."""
    level = logging.DEBUG if decision.allowed else logging.INFO
    reason: Reason | None
    if decision.audit_reason is not None:
        level, verdict, reason = logging.INFO, "audit_deny", decision.audit_reason
    else:
        verdict = "allow" if decision.allowed else "deny"
        reason = decision.reason
    if not decisions.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "decision": verdict,
        "reason": reason.value if reason else None,
        **request_fields(request),
    }
    leaf = decision.leaf
    if leaf is not None:
        fields["subject"] = subject_text(leaf)
        fields["issuer"] = issuer_text(leaf)
        fields["serial"] = format(leaf.serial_number, "x")
        fields["sha256"] = leaf.fingerprint(hashes.SHA256()).hex()
    if decision.revocation is not None:
        fields["ocsp_outcome"] = decision.revocation
    if decision.block_id is not None:
        fields["block_id"] = decision.block_id
    if decision.revocation_from is not None:
        fields["revocation_from"] = decision.revocation_from
    if decision.ocsp_latency is not None:
        fields["ocsp_latency"] = round(decision.ocsp_latency, 6)
    decisions.log(level, decision.message or "allowed", extra=fields)
