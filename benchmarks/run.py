"""`make bench`: mtls-authz side by side with its baselines, on this machine, in one run.

Every section is a module of `benchmarks/sections/` (see its docstring for what it measures);
`--only NAME` runs some of them. Servers run on core 0 and load generators on core 1 (taskset)
where the machine has two cores. Results print as a table and go to
benchmarks/results/<date>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from pathlib import Path

from authz.demo.pki import LabPki, make_ocsp_signer
from benchmarks.harness import RESULTS, TWO_CORES, Context, machine
from benchmarks.sections import discover
from tests.ocsp_responder import OcspResponder


def main() -> int:
    sections = discover()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="Measured seconds per load run.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds (direct, e2e).")
    parser.add_argument("--cold", type=int, default=500, help="Distinct certificates, cold path.")
    parser.add_argument("--memory-entries", type=int, default=100_000)
    parser.add_argument(
        "--crl-entries", type=int, default=1_000_000, help="Largest CRL of the big-crl section."
    )
    parser.add_argument("--only", choices=[s.name for s in sections], action="append")
    parser.add_argument("--no-write", action="store_true", help="Print only; no results file.")
    args = parser.parse_args()
    chosen = [s for s in sections if not args.only or s.name in args.only]
    pki = LabPki.create()
    results: list[list[str]] = []
    with (
        tempfile.TemporaryDirectory(prefix="mtls-authz-bench-") as tmp,
        OcspResponder(pki.issuing, make_ocsp_signer(pki.issuing)) as responder,
    ):
        context = Context(Path(tmp), pki, responder, args)
        for section in chosen:
            results.append(section.run(context))
    header = [
        f"# mtls-authz benchmarks, {dt.date.today().isoformat()}",
        "",
        f"Machine: {machine()}. Servers pinned to core 0, load generators to core 1"
        if TWO_CORES
        else f"Machine: {machine()} (one core: nothing pinned)",
        f"Command: `make bench` (`python -m benchmarks.run --seconds {args.seconds}`)",
        "",
    ]
    text = "\n".join(header + ["\n".join(lines) + "\n" for lines in results])
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{dt.date.today().isoformat()}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
