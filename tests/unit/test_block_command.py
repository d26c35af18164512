"""`mtls-authz block`, `unblock`, `blocks` on a block list file (the store form runs against a
real redis-server in tests/e2e/test_blocks.py), and `check` saying a block before asking any
responder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from authz.cli import main
from authz.core.blocks import spki_of
from authz.demo.pki import LabPki


@pytest.fixture
def files(pki: LabPki, tmp_path: Path) -> tuple[Path, Path, Path]:
    client = pki.client("cli-blocked")  # no AIA: without a block, check has no responder to ask
    cert, issuer = tmp_path / "client.pem", tmp_path / "issuer.pem"
    cert.write_bytes(client.cert_pem)
    issuer.write_bytes(pki.issuing.cert_pem)
    return cert, issuer, tmp_path / "blocks.yaml"


def test_block_list_unblock_a_key_in_a_file(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cert, issuer, blocks = files
    code = main(["block", "--cert", str(cert), "--match", "spki", "--reason", "leaked",
                 "--for", "2h", "--by", "oncall", "--file", str(blocks)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("blocked spki-")
    block_id = out.split()[1].rstrip(":")
    (written,) = yaml.safe_load(blocks.read_text())
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    assert written["spki"] == spki_of(leaf) and written["by"] == "oncall"
    expires = dt.datetime.fromisoformat(written["expires"])
    assert dt.timedelta(hours=1.9) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=2)
    assert main(["blocks", "--file", str(blocks)]) == 0
    assert block_id in capsys.readouterr().out
    # check says the block first, with exit 5, before looking for a responder
    assert main(["check", str(cert), "--issuer", str(issuer), "--blocks", str(blocks)]) == 5
    assert f"blocked ({block_id}, from the file, until " in capsys.readouterr().out
    assert main(["unblock", block_id, "--file", str(blocks)]) == 0
    assert yaml.safe_load(blocks.read_text()) == []
    assert main(["check", str(cert), "--issuer", str(issuer), "--blocks", str(blocks)]) == 3
    assert "names no OCSP responder" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["block", "--fingerprint", "abc", "--reason", "x"], "64 hex digits"),
        (["block", "--subject", "CN=x", "--reason", "two\nlines"], "one line"),
        (["unblock"], "name the blocks to remove"),
    ],
)
def test_a_bad_block_command_says_why_and_exits_2(
    args: list[str], says: str, files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--file", str(files[2])]) == 2
    assert says in capsys.readouterr().err


def test_without_a_store_or_file_the_command_says_where_to_look(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MTLS_AUTHZ_REVOCATION_CACHE_URL", raising=False)
    monkeypatch.delenv("MTLS_AUTHZ_BLOCK_LIST_FILE", raising=False)
    assert main(["blocks"]) == 2
    assert "give --store URL or --file PATH" in capsys.readouterr().err
