"""OpenSSL's own OCSP responder (`openssl ocsp`) over an `openssl ca` database, for demo and tests.

`openssl ocsp` serves one connection at a time and blocks for good on a connection that sends
nothing, so readiness is read from its "Waiting for OCSP client connections" line, never by probing
its port. It reads the index at start: restart it after `revoke`.
"""

from __future__ import annotations

import datetime as dt
import random
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authz.demo.pki import Identity, make_ocsp_signer
from authz.demo.processes import Process, free_port

OPENSSL_TIMEOUT = 30
READY_LINE = "waiting for ocsp client connections"

_CA_CONFIG = """\
[ ca ]
default_ca = lab

[ lab ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = $dir/ca.pem
private_key = $dir/ca.key
serial = $dir/serial
default_md = sha256
default_days = 365
policy = policy_any
unique_subject = no

[ policy_any ]
commonName = supplied
"""


def _openssl(*args: str, timeout: float = OPENSSL_TIMEOUT) -> None:
    done = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr}")


class OpensslCa:
    """An `openssl ca` directory for `issuer`: index.txt records which certificates are valid."""

    def __init__(self, directory: Path, issuer: Identity) -> None:
        self.directory = directory
        self.issuer = issuer
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "newcerts").mkdir(exist_ok=True)
        issuer.write(directory, "ca")
        (directory / "ca.pem").write_bytes(issuer.cert_pem)  # the CA alone, not a chain
        (directory / "index.txt").write_text("")
        (directory / "index.txt.attr").write_text("unique_subject = no\n")
        (directory / "serial").write_text("1000\n")
        self.config = directory / "openssl.cnf"
        self.config.write_text(_CA_CONFIG.format(dir=directory))
        self.signer = make_ocsp_signer(issuer, "Lab OCSP Responder")
        self.signer.write(directory, "ocsp-signer")
        self._count = 0

    def _cert_file(self, identity: Identity) -> Path:
        self._count += 1
        path = self.directory / f"cert-{self._count}.pem"
        path.write_bytes(identity.cert_pem)
        return path

    def _ca(self, *args: str, timeout: float = OPENSSL_TIMEOUT) -> None:
        done = subprocess.run(
            ["openssl", "ca", "-config", str(self.config), "-batch", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"openssl ca {' '.join(args)} failed: {done.stderr}")

    def issue(
        self,
        name: str,
        *,
        md: str = "sha256",
        ocsp_url: str | None = None,
        crl_url: str | None = None,
        usage: str = "clientAuth",
        ca: bool = False,
    ) -> Identity:
        """A certificate for CN=`name` on a fresh P-256 key, signed by `openssl ca -md MD`
        (recorded as valid in the index): a TLS client by default, an OCSP responder with
        `usage="OCSPSigning"`, an intermediate CA with `ca=True`."""
        key, csr, cert = (self.directory / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        extensions = self.directory / f"{name}.ext"
        aia = f"authorityInfoAccess = OCSP;URI:{ocsp_url}\n" if ocsp_url else ""
        aia += f"crlDistributionPoints = URI:{crl_url}\n" if crl_url else ""
        role = (
            "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
            if ca
            else "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n"
            f"extendedKeyUsage = {usage}\n"
        )
        extensions.write_text(
            f"{role}subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n{aia}"
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-subj", f"/CN={name}", "-out", str(csr),
        )  # fmt: skip
        self._ca(
            "-md", md, "-notext", "-in", str(csr), "-out", str(cert), "-extfile", str(extensions)
        )
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        # The chain a client presents: the issuer and what is above it, without the root.
        chain = tuple(c for c in (self.issuer.cert, *self.issuer.chain) if c.issuer != c.subject)
        return Identity(leaf, private, chain)

    def respond(
        self, request_der: bytes, *, signer: Identity | None = None, md: str = "sha256"
    ) -> bytes:
        """The response `openssl ocsp` gives to a request, offline (`-reqin`/`-respout`), signed
        by `signer` (default: the CA's delegated responder) with digest `md` (`-rmd`)."""
        signer_cert, signer_key = (signer or self.signer).write(self.directory, "respond-signer")
        d = self.directory
        request, response = d / "request.der", d / "response.der"
        request.write_bytes(request_der)
        _openssl(
            "ocsp", "-index", str(d / "index.txt"), "-CA", str(d / "ca.pem"),
            "-rsigner", str(signer_cert), "-rkey", str(signer_key), "-rmd", md, "-nmin", "5",
            "-reqin", str(request), "-respout", str(response),
        )  # fmt: skip
        return response.read_bytes()

    def add_valid(self, identity: Identity) -> None:
        """Record the certificate as issued and valid (`openssl ca -valid`)."""
        self._ca("-valid", str(self._cert_file(identity)))

    def revoke(self, identity: Identity, reason: str = "keyCompromise") -> None:
        """Revoke the certificate (`openssl ca -revoke`); restart the responder to serve it."""
        self._ca("-revoke", str(self._cert_file(identity)), "-crl_reason", reason)

    def record_revoked(self, count: int, seed: int = 0) -> None:
        """Record `count` more revoked certificates in the index, as a CA of millions of
        clients has: random 159-bit serials, revoked in the past, with the reasons CAs give
        most (none, keyCompromise, superseded, cessationOfOperation) in turn. Nothing issued:
        only the database `-gencrl` reads."""
        rng = random.Random(seed)  # noqa: S311 - made-up serials, reproducible from the seed
        reasons = ("", ",keyCompromise", ",superseded", ",cessationOfOperation")
        revoked_at = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%y%m%d%H%M%SZ")
        with (self.directory / "index.txt").open("a") as index:
            for i in range(count):
                serial = rng.getrandbits(159) | (1 << 158)
                index.write(
                    f"R\t491231235959Z\t{revoked_at}{reasons[i % 4]}\t{serial:040X}\t"
                    f"unknown\t/CN=revoked-{seed}-{i}\n"
                )

    def gencrl(self, path: Path, days: int = 1, md: str = "sha256", *, der: bool = False) -> Path:
        """Write the CA's CRL (`openssl ca -gencrl -md MD`), PEM or, as CAs publish them, DER.
        A million entries take `openssl ca` some 10 s."""
        timeout = OPENSSL_TIMEOUT * 10
        if not der:
            self._ca("-gencrl", "-md", md, "-out", str(path), "-crldays", str(days),
                     timeout=timeout)  # fmt: skip
            return path
        pem = path.with_suffix(".pem")
        self._ca("-gencrl", "-md", md, "-out", str(pem), "-crldays", str(days), timeout=timeout)
        _openssl("crl", "-in", str(pem), "-outform", "DER", "-out", str(path), timeout=timeout)
        pem.unlink()
        return path


class OpensslResponder:
    """`openssl ocsp` on 127.0.0.1, signing with a delegated responder certificate."""

    def __init__(
        self,
        ca: OpensslCa,
        log_path: Path,
        next_update_minutes: int = 5,
        *,
        signer: Identity | None = None,
        md: str = "sha256",
    ) -> None:
        """`signer`: the responder's certificate (default: the CA's delegated responder);
        `md`: the digest it signs answers with (`-rmd`)."""
        self.ca = ca
        self.port = free_port()
        self.log_path = log_path
        self.next_update_minutes = next_update_minutes
        self.signer = signer
        self.md = md
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OpensslResponder:
        d = self.ca.directory
        signer, signer_key = d / "ocsp-signer.pem", d / "ocsp-signer.key"
        if self.signer is not None:
            signer, signer_key = self.signer.write(d, f"responder-{self.port}")
        argv = [
            "openssl", "ocsp", "-index", str(d / "index.txt"), "-port", str(self.port),
            "-rsigner", str(signer), "-rkey", str(signer_key), "-rmd", self.md,
            "-CA", str(d / "ca.pem"), "-nmin", str(self.next_update_minutes), "-ignore_err",
        ]  # fmt: skip
        self.log_path.write_text("")
        self.process = Process("openssl ocsp", argv, self.log_path).start()
        self.process.wait_until(
            lambda: READY_LINE in self.process.log_text().lower() if self.process else False,
            OPENSSL_TIMEOUT,
            "waiting for connections",
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=5)
            self.process = None

    def restart(self) -> None:
        """Stop and start on the same port, so a revocation in the index is served."""
        self.stop()
        self.start()

    def __enter__(self) -> OpensslResponder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
