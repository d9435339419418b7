"""A short libFuzzer run of fuzz/core_fuzz.c on every test run where clang can build it.

The harness checks the C core against its own independent model (see fuzz/README.md); here it
replays the committed seed corpus and then explores for a few seconds. A finding fails the
test and leaves its input in the test's temporary directory.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"


def test_core_fuzz_smoke(tmp_path: Path) -> None:
    if not shutil.which("clang") or not shutil.which("make"):
        pytest.skip("clang or make is not installed (apt-get install clang)")
    build = subprocess.run(["make", "-C", str(FUZZ), "-s"], capture_output=True, text=True)
    if build.returncode != 0 and "fuzzer" in build.stderr:
        pytest.skip(f"clang cannot link libFuzzer here: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    run = subprocess.run(
        [
            str(FUZZ / "core_fuzz"),
            "-max_total_time=10",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
            str(FUZZ / "corpus" / "core"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done" in run.stderr
