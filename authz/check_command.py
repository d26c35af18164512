"""`mtls-authz check`: one certificate's OCSP status, verified exactly as the service does it.

The operator's replacement for `openssl ocsp -issuer … -cert … -url …`, with the same rules as
Check: the issuer must be proven by signature, the response fully verified, and the one SHA-1
rule applied (`--allow-sha1-signatures`, as `allow_sha1_signatures`). Exit codes: 0 good,
1 revoked, 2 unknown, 3 could not determine, 4 a SHA-1 signature the service would refuse
(weak_signature_algorithm; the status found, if any, is still printed), 5 blocked by the
emergency block list (said before any responder is asked).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography import x509

from authz.core.blocks import BlockList, leaf_keys
from authz.core.decision import weak_signature_message
from authz.core.names import display, issuer_text, name_key
from authz.core.revocation import (
    CertStatus,
    RevocationError,
    RevocationFailure,
    RevocationStatus,
)
from authz.core.trust import (
    TrustBundle,
    TrustBundleError,
    issued,
    signature_algorithm_name,
    weak_link,
)
from authz.revocation.fetch import HttpFetcher
from authz.revocation.ocsp import aia_ocsp_urls, build_query, verify_response

EXIT_CODES = {CertStatus.GOOD: 0, CertStatus.REVOKED: 1, CertStatus.UNKNOWN: 2}
EXIT_UNDETERMINED = 3
EXIT_WEAK_SIGNATURE = 4
EXIT_BLOCKED = 5


class CheckError(Exception):
    """The status could not be determined; the message says why."""


@dataclass(frozen=True)
class CheckArgs:
    cert: Path
    issuer: Path | None = None
    trust_bundle: Path | None = None
    url: str | None = None
    respin: Path | None = None
    at: dt.datetime | None = None
    hash_name: str = "sha1"
    nonce: bool = False
    timeout: float = 5.0
    allow_sha1: bool = False
    blocks: BlockList | None = None
    """The block list in force (file and store), when the command was given where it is."""


def read_certificates(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise CheckError(f"{path}: not a certificate ({e})") from None


def find_issuer(
    args: CheckArgs, leaf: x509.Certificate, rest: list[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """The path from the leaf's issuer up (each proven by signature, SHA-1 included: whether
    that is acceptable is said afterwards), the issuer first."""
    if args.issuer is not None:
        issuer = read_certificates(args.issuer)[0]
        check_issuer_name(leaf)
        if name_key(issuer.subject) != name_key(leaf.issuer):
            raise CheckError(
                f"{args.issuer}: its subject {display(issuer.subject)} is not the certificate's "
                f"issuer {display(leaf.issuer)}"
            )
        if not issued(leaf, issuer, sha1=True):
            raise CheckError(
                f"{args.issuer}: its key does not verify the certificate's "
                f"{signature_algorithm_name(leaf)} signature"
            )
        return (issuer,)
    if args.trust_bundle is not None:
        check_issuer_name(leaf)
        try:
            path = TrustBundle.load(args.trust_bundle).find_path(leaf, rest, sha1=True)
        except TrustBundleError as e:
            raise CheckError(str(e)) from None
        if not path:
            raise CheckError(f"no CA in {args.trust_bundle} signed the certificate")
        return path
    for candidate in rest:
        if issued(leaf, candidate, sha1=True):
            return (candidate,)
    raise CheckError("no issuer: give --issuer or --trust-bundle, or put the chain in the file")


def check_issuer_name(leaf: x509.Certificate) -> None:
    try:
        leaf.issuer  # noqa: B018 - decoding is the check
    except ValueError:
        raise CheckError(
            f"the certificate's issuer name {issuer_text(leaf)} cannot be decoded"
        ) from None


def read_response(path: Path) -> bytes:
    """A saved response, DER or base64 (as `openssl ocsp -respout` or a GET URL holds it)."""
    data = path.read_bytes()
    if data[:1] == b"\x30":
        return data
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except binascii.Error:
        raise CheckError(f"{path}: neither DER nor base64") from None


async def _fetch(url: str, der: bytes, seconds: float) -> bytes:
    async with aiohttp.ClientSession(trust_env=False) as session:
        return await HttpFetcher(session, seconds).fetch(url, der)


def determine(args: CheckArgs) -> tuple[RevocationStatus, str, tuple[x509.Certificate, ...]]:
    """The verified status, where it came from, and the issuer's path; raises CheckError or
    RevocationError."""
    leaf, *rest = read_certificates(args.cert)
    path = find_issuer(args, leaf, rest)
    issuer = path[0]
    query = build_query(leaf, issuer, args.hash_name, args.nonce and args.respin is None)
    if args.respin is not None:
        body, source = read_response(args.respin), str(args.respin)
    else:
        urls = [args.url] if args.url else aia_ocsp_urls(leaf)
        if not urls:
            raise CheckError("the certificate names no OCSP responder; give --url")
        source = urls[0]
        body = asyncio.run(_fetch(source, query.der, args.timeout))
    now = args.at or dt.datetime.now(dt.UTC)
    status = verify_response(body, query, issuer, now, allow_sha1=args.allow_sha1)
    return status, source, path


def run_check(args: CheckArgs) -> int:
    name = str(args.cert)
    if args.blocks is not None and args.blocks.entries:
        try:
            leaf = read_certificates(args.cert)[0]
        except (CheckError, OSError) as e:
            print(f"{name}: could not determine: {e}")
            return EXIT_UNDETERMINED
        entry = args.blocks.match(leaf_keys(leaf), dt.datetime.now(dt.UTC))
        if entry is not None:
            until = f", until {entry.to_mapping()['expires']}" if entry.expires else ""
            print(f"{name}: blocked ({entry.id}, from the {entry.source}{until}): {entry.reason}")
            return EXIT_BLOCKED
    try:
        status, source, path = determine(args)
    except RevocationError as e:
        print(f"{name}: could not determine: {e}")
        if e.failure is RevocationFailure.WEAK_SIGNATURE:
            return EXIT_WEAK_SIGNATURE
        return EXIT_UNDETERMINED
    except (CheckError, OSError) as e:
        print(f"{name}: could not determine: {e}")
        return EXIT_UNDETERMINED
    except ValueError as e:  # cryptography refusing a field of the certificate or the answer
        print(f"{name}: could not determine: a field cannot be decoded ({e})")
        return EXIT_UNDETERMINED
    print(f"{name}: {status.status.value}")
    print(f"\tThis Update: {status.this_update.isoformat()}")
    next_update = status.next_update.isoformat() if status.next_update else "(none)"
    print(f"\tNext Update: {next_update}")
    if status.revocation_time is not None:
        print(f"\tRevocation Time: {status.revocation_time.isoformat()}")
    if status.revocation_reason is not None:
        print(f"\tReason: {status.revocation_reason}")
    print(f"\tResponder: {source}")
    leaf = read_certificates(args.cert)[0]
    weak = weak_link(leaf, path)
    if weak is None:
        return EXIT_CODES[status.status]
    if args.allow_sha1:
        print(f"\tSignature: {signature_algorithm_name(weak[0])} (SHA-1, allowed)")
        return EXIT_CODES[status.status]
    # Like `openssl ocsp`, the status is reported; unlike it, the weak signature is said.
    print(f"\tSignature: weak_signature_algorithm: {weak_signature_message(leaf, *weak)}")
    return EXIT_WEAK_SIGNATURE
