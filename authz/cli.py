"""Command line: `mtls-authz serve | validate-config | demo`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from authz import __version__
from authz.block_command import Where
from authz.core.blocks import BlockKind, BlockList
from authz.core.trust import TrustBundleError
from authz.service import logs
from authz.service.settings import (
    ALIASES,
    OPTIONS,
    OPTIONS_BY_KEY,
    ConfigError,
    Settings,
    load_settings,
    read_config_file,
)
from authz.service.settings.values import parse_duration

log = logging.getLogger("authz")


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


EXIT_CONFIG_ERROR = 2
# A command line that cannot be read (sysexits' EX_USAGE): never a code a command gives meaning
# to (`check` exits 2 for unknown).
EXIT_USAGE = 64


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mtls-authz",
        description="Envoy ext_authz service for mutual TLS client certificates.",
    )
    parser.add_argument("--version", action="version", version=f"mtls-authz {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser(
        "serve", help="Serve Envoy's ext_authz Check over gRPC (listen) and/or HTTP (http_listen)."
    )
    serve.add_argument("--config", type=Path, help="YAML configuration file.")
    for option in OPTIONS:
        kwargs: dict[str, Any] = {"default": None}
        if option.kind is list:
            kwargs["action"] = "append"
        elif option.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        if option.choices:
            kwargs["choices"] = option.choices
        serve.add_argument(option.flag_name, dest=option.key, help=option.help, **kwargs)
        for alias, flag in zip(option.aliases, option.alias_flags, strict=True):
            serve.add_argument(flag, dest=alias, help=argparse.SUPPRESS, **kwargs)

    validate = commands.add_parser(
        "validate-config", help="Check a configuration file (and the files it names) and exit."
    )
    validate.add_argument("config", type=Path)

    check = commands.add_parser(
        "check",
        help="Print one certificate's OCSP status (exit 0 good, 1 revoked, 2 unknown, 3 error, "
        "4 a SHA-1 signature refused, 5 blocked, 64 a command line it cannot read).",
    )
    check.add_argument(
        "cert", type=Path, help="Certificate (PEM, optionally followed by its chain, or DER)."
    )
    source = check.add_mutually_exclusive_group()
    source.add_argument(
        "--issuer", type=Path, help="The issuer's certificate; it must have signed CERT."
    )
    source.add_argument("--trust-bundle", type=Path, help="Find the issuer among these CAs.")
    check.add_argument("--url", help="Responder URL (default: the certificate's AIA).")
    check.add_argument(
        "--respin", type=Path, help="Verify this saved response (DER or base64) instead."
    )
    check.add_argument("--at", type=_timestamp, help="Verify as of this time (ISO 8601).")
    check.add_argument("--hash", choices=("sha1", "sha256"), default="sha1", help="CertID hash.")
    check.add_argument("--nonce", action="store_true", help="Send a nonce.")
    check.add_argument("--timeout", type=duration, default=5.0, help="For the request (5s).")
    check.add_argument(
        "--allow-sha1-signatures", action="store_true",
        help="Accept SHA-1 signatures, as the service's allow_sha1_signatures does.",
    )  # fmt: skip
    blocks = check.add_argument_group("the block list (checked first; none given: not checked)")
    blocks.add_argument("--config", type=Path, help="The service's configuration file.")
    blocks.add_argument(
        "--store",
        help="The shared store's URL (as revocation_cache_url: redis://, "
        "rediss://, redis+cluster://, redis+sentinel://).",
    )
    blocks.add_argument("--blocks", type=Path, help="A block list file.")

    _block_parsers(commands)

    secrets = commands.add_parser(
        "k8s-demo-secrets",
        help="Print demo Secrets (gateway-tls, mtls-ca, demo-ocsp) for the Kubernetes manifests.",
    )
    secrets.add_argument("--namespace", default="default")
    secrets.add_argument(
        "--gateway-host", action="append", default=[], help="Extra DNS name for Envoy's cert."
    )
    secrets.add_argument(
        "--client-dir",
        type=Path,
        default=Path("demo-client"),
        help="Where to write client.pem/key.",
    )
    secrets.add_argument(
        "--ocsp-url",
        help="OCSP responder to name in the client certificates (default: the quick try's, "
        "http://demo-ocsp.NAMESPACE.svc:8080).",
    )

    responder = commands.add_parser(
        "demo-ocsp-responder",
        help="Answer OCSP for one demo CA (the Kubernetes quick try's responder).",
    )
    responder.add_argument(
        "--dir", type=Path, required=True,
        help="issuer.pem, signer.pem, signer.key and revoked.txt (the demo-ocsp Secret).",
    )  # fmt: skip
    responder.add_argument("--host", default="0.0.0.0")
    responder.add_argument("--port", type=int, default=8080)

    demo = commands.add_parser("demo", help="Run the local demo stack (PKI, Envoy, backend).")
    demo.add_argument("--once", action="store_true", help="Run the checks once and exit.")
    demo.add_argument("--http", action="store_true", help="Envoy asks over HTTP, not gRPC.")
    demo.add_argument("--replicas", type=int, default=1, help="mtls-authz processes (default 1).")
    demo.add_argument("--shared-cache", action="store_true",
                      help="A redis-server from PATH as the replicas' shared cache.")  # fmt: skip
    demo.add_argument("--keep", type=Path, metavar="DIR",
                      help="Write the PKI, configs and logs to DIR and keep them.")  # fmt: skip
    return parser


BLOCK_KINDS = {
    "fingerprint": "SHA-256 of the certificate, hex (openssl x509 -fingerprint -sha256).",
    "spki": "SHA-256 of its SubjectPublicKeyInfo, hex: the key, whatever certificate has it.",
    "subject": "The subject DN.",
    "uri": "A URI SAN, exactly (a SPIFFE ID).",
}


def _where(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group(
        "where the list is (default: the store and the file "
        "--config names, or MTLS_AUTHZ_* variables)"
    )
    where.add_argument("--config", type=Path, help="The service's configuration file.")
    where.add_argument(
        "--store",
        help="The shared store's URL (as revocation_cache_url: redis://, "
        "rediss://, redis+cluster://, redis+sentinel://).",
    )
    where.add_argument("--file", type=Path, help="A block list file, instead of the store.")


def _block_parsers(commands: Any) -> None:
    block = commands.add_parser(
        "block",
        help="Refuse a certificate now, on every replica within a second (certificate_blocked).",
    )
    what = block.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--cert", type=Path, help="The certificate (PEM or DER): block it by --match."
    )
    for kind in ("fingerprint", "spki", "subject", "uri"):
        what.add_argument(f"--{kind}", help=BlockKind(kind).__doc__)
    what.add_argument("--serial", nargs=2, metavar=("ISSUER_DN", "SERIAL"),
                      help="The issuer's DN and the serial number (hex).")  # fmt: skip
    block.add_argument(
        "--match", choices=[k.value for k in BlockKind], default="fingerprint",
        help="With --cert: what to block it by (spki: its key, whatever certificate carries it).",
    )  # fmt: skip
    block.add_argument("--reason", required=True, help="Shown to the refused client (one line).")
    block.add_argument("--for", dest="lasting", type=duration, help="Expire after (2h, 30m).")
    block.add_argument("--by", dest="who", default="", help="Who blocks (default: your login).")
    _where(block)
    unblock = commands.add_parser("unblock", help="Remove blocks by id (see `blocks`), or --all.")
    unblock.add_argument("ids", nargs="*", metavar="ID")
    unblock.add_argument("--all", action="store_true", help="Remove every block.")
    _where(unblock)
    listing = commands.add_parser("blocks", help="List the block list: id, what, source, expiry.")
    listing.add_argument("--json", action="store_true")
    _where(listing)


def _configured_where(config: Path | None) -> Where:
    """The store and file the service would use: its environment over its file (only these two
    keys are read: a command run beside the service needs nothing else of its configuration)."""
    document = read_config_file(config) if config is not None else {}
    url = os.environ.get("MTLS_AUTHZ_REVOCATION_CACHE_URL") or document.get(
        "revocation_cache_url", ""
    )
    file = os.environ.get("MTLS_AUTHZ_BLOCK_LIST_FILE") or document.get("block_list_file", "")
    return Where(str(url or ""), Path(file) if file else None)


def _block_where(args: argparse.Namespace) -> Where:
    """The store and file named, else those of the configuration (file, environment)."""
    if args.store or args.file:
        return Where(args.store or "", args.file)
    where = _configured_where(args.config)
    if args.command != "blocks" and where.store:
        return Where(where.store, None)  # writes go to the store, the fast path, when there is one
    return where


def _blocks(args: argparse.Namespace) -> int:
    from authz.block_command import BlockError, block, listing, selector_from_args, unblock

    try:
        where = _block_where(args)
        if not where.store and where.file is None:
            raise BlockError("no block list: give --store URL or --file PATH, or a --config with "
                             "revocation_cache_url or block_list_file")  # fmt: skip
        if args.command == "block":
            value = next((getattr(args, k) for k in ("fingerprint", "spki", "subject", "uri")
                          if getattr(args, k)), None)  # fmt: skip
            kind = next((k for k in ("fingerprint", "spki", "subject", "uri")
                         if getattr(args, k)), None)  # fmt: skip
            chosen = selector_from_args(kind, value, args.serial, args.cert, args.match)
            return block(where, chosen, args.reason, args.who, args.lasting)
        if args.command == "unblock":
            if not args.ids and not args.all:
                raise BlockError(
                    "name the blocks to remove (ids from `mtls-authz blocks`) or --all"
                )
            return unblock(where, args.ids, args.all)
        return listing(where, args.json)
    except (BlockError, ConfigError, ValueError, OSError) as e:
        print(f"mtls-authz {args.command}: {e}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except Exception as e:  # the store: unreachable, refused, timed out
        print(
            f"mtls-authz {args.command}: the store failed: {type(e).__name__}: {e}", file=sys.stderr
        )
        return 1


def _check_blocks(args: argparse.Namespace) -> BlockList | None:
    """The block list `check` was told where to find (a store it cannot read is said, and the
    rest is used)."""
    from authz.block_command import BlockError, read_list

    if not (args.config or args.store or args.blocks):
        return None
    try:
        if args.store or args.blocks:
            where = Where(args.store or "", args.blocks)
        else:
            where = _configured_where(args.config)
        return read_list(where)
    except (BlockError, ConfigError) as e:
        print(f"{args.cert}: warning: the block list cannot be read: {e}")
        return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args, argv)
    if args.command == "validate-config":
        return _validate_config(args.config)
    if args.command == "check":
        from authz.check_command import CheckArgs, run_check

        return run_check(
            CheckArgs(
                cert=args.cert, issuer=args.issuer, trust_bundle=args.trust_bundle, url=args.url,
                respin=args.respin, at=args.at, hash_name=args.hash, nonce=args.nonce,
                timeout=args.timeout, allow_sha1=args.allow_sha1_signatures,
                blocks=_check_blocks(args),
            )
        )  # fmt: skip
    if args.command in ("block", "unblock", "blocks"):
        return _blocks(args)
    if args.command == "k8s-demo-secrets":
        from authz.demo.k8s_secrets import demo_secrets

        print(demo_secrets(args.namespace, args.gateway_host, args.client_dir, args.ocsp_url))
        print(
            f"# client certificates and keys written to {args.client_dir}/: "
            "client.pem (good), revoked.pem (revoked)",
            file=sys.stderr,
        )
        return 0
    if args.command == "demo-ocsp-responder":
        from authz.demo.ocsp_responder import serve

        return serve(args.dir, args.host, args.port)
    if args.command == "demo":
        from authz.demo.run import DemoError, DemoOptions, run_demo

        options = DemoOptions(args.once, args.http, args.replicas, args.shared_cache, args.keep)
        try:
            return run_demo(options)
        except DemoError as e:
            print(f"mtls-authz demo: {e}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
    raise AssertionError(args.command)


def _timestamp(text: str) -> datetime:
    """ISO 8601; a time without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (say 2026-12-04T10:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _load(config: Path | None, flags: dict[str, Any]) -> Settings:
    return load_settings(config, os.environ, flags)


def _serve(args: argparse.Namespace, argv: list[str]) -> int:
    from authz.service.app import Sources, serve

    flags = {key: getattr(args, key) for key in (*OPTIONS_BY_KEY, *ALIASES)}
    sources = Sources(args.config, dict(os.environ), flags)
    try:
        settings = sources.load()
    except ConfigError as e:
        print(f"mtls-authz: configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    logs.configure(settings.log_level, settings.log_format)
    for warning in settings.deprecations:
        log.warning("deprecated configuration: %s", warning)
    for warning in settings.warnings:
        log.warning("configuration: %s", warning)
    if settings.workers > 1:
        from authz.service.app import load_state
        from authz.service.workers import Supervisor

        try:
            load_state(settings)  # refuse a bad bundle here, not in a loop of worker restarts
        except (TrustBundleError, ValueError) as e:
            log.error("cannot start: %s", e)
            return EXIT_CONFIG_ERROR
        return asyncio.run(Supervisor(settings, argv, settings.workers).run())
    try:
        return asyncio.run(serve(sources, settings))
    except (TrustBundleError, ValueError) as e:
        log.error("cannot start: %s", e)
        return EXIT_CONFIG_ERROR
    except (RuntimeError, OSError) as e:  # failed to bind (grpc raises RuntimeError)
        log.error("cannot start: %s", e)
        return 1


async def _store_warnings(settings: Settings) -> list[str]:
    """The shared store named, asked whether it answers (the service would ask responders in its
    place, and say so; a configuration that names one nobody answers at deserves a word)."""
    if not settings.revocation_cache_url:
        return []
    from authz.revocation.redis_store import RedisStore
    from authz.service.settings import redact_url

    store = RedisStore(settings.revocation_cache_url, settings.revocation_cache_timeout * 4)
    try:
        await asyncio.wait_for(store.ping(), settings.revocation_cache_timeout * 8)
    except Exception as e:
        where = redact_url(settings.revocation_cache_url)
        return [f"revocation_cache_url: {where} does not answer ({type(e).__name__}); the "
                "service will ask the responders directly until it does"]  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            await store.close()
    return []


def _validate_config(path: Path) -> int:
    from authz.service.app import issuer_warnings, load_state

    try:
        settings = _load(path, {})
        state = load_state(settings)
    except (ConfigError, TrustBundleError, ValueError) as e:
        print(f"{path}: invalid: {e}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    warnings = (
        *settings.deprecations,
        *settings.warnings,
        *issuer_warnings(settings, state),
        *asyncio.run(_store_warnings(settings)),
    )
    for warning in warnings:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    count = len(state.trust.certificates)
    noted = f", {len(warnings)} warnings" if warnings else ""
    print(
        f"{path}: ok ({count} CA certificates, {len(settings.allowed_issuers)} allowed issuers"
        f"{noted})"
    )
    return 0
