"""Fill the OCSP cache through its own API with N distinct answers and print the RSS before and
after, as JSON: the cache's own cost per answer, without the Checks that would bring them.

    .venv/bin/python -m benchmarks.memory_fill 1000000

Each answer is what a real one becomes: a good status with thisUpdate, nextUpdate and validity,
from one responder URL, for a random 159-bit serial under one issuer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import os
import random
import sys
from pathlib import Path

from authz.core.revocation import CertStatus, RevocationOutcome, RevocationStatus
from authz.demo.pki import LabPki
from authz.revocation.cache import Loaded
from authz.revocation.compact import cache_key
from authz.revocation.loading import issuer_fingerprint
from authz.revocation.ocsp_source import new_cache

URL = "http://ocsp.example:8080/"


def rss_bytes() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def fill(entries: int) -> dict[str, float]:
    fingerprint = issuer_fingerprint(LabPki.create().issuing.cert)
    cache = new_cache(entries)
    gc.collect()
    baseline = rss_bytes()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for _ in range(entries):
        status = RevocationStatus(
            CertStatus.GOOD, now, now + dt.timedelta(hours=1), now + dt.timedelta(minutes=5)
        )
        answer = Loaded(RevocationOutcome(URL, status=status, latency=0.0042), 300.0)

        async def load(answer: Loaded[RevocationOutcome] = answer) -> Loaded[RevocationOutcome]:
            return answer

        await cache.get(cache_key("sha1", fingerprint, random.getrandbits(159), URL), load)
    gc.collect()
    assert len(cache) == entries
    return {"entries": entries, "baseline": baseline, "filled": rss_bytes()}


def main() -> None:
    print(json.dumps(asyncio.run(fill(int(sys.argv[1])))))


if __name__ == "__main__":
    main()
