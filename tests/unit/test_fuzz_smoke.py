"""A short, bounded run of the fuzz target, so `make test` proves it runs (make fuzz goes longer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_check.py"


def test_fuzz_target_runs_clean_for_a_bounded_time(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(TARGET), "-runs=3000", "-max_total_time=30", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 3000 runs" in done.stderr or "DONE" in done.stderr
