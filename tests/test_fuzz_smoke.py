"""Short fuzz runs on every test run: the libFuzzer harnesses in C (the core, the FSP guard)
where clang can build them, and each atheris harness on the Python parsers where atheris is
installed.

The core harness checks the C core against its own independent model, the guard harness the
FSP mailbox guard against a simulated FSP (see fuzz/README.md); the atheris harnesses check that
the parsers fail only with their documented errors. Each run replays the committed seed corpus
and then explores for a few seconds (about a minute in all). A finding fails the test and
leaves its input in the test's temporary directory.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"


#: The libFuzzer harnesses in C: name, binary in fuzz/, seconds per smoke run.
C_HARNESSES = [("core", "core_fuzz", 10), ("guard", "guard_fuzz", 8)]


@pytest.mark.parametrize(("harness", "binary", "seconds"), C_HARNESSES, ids=lambda v: str(v))
def test_c_fuzz_smoke(harness: str, binary: str, seconds: int, tmp_path: Path) -> None:
    if not shutil.which("clang") or not shutil.which("make"):
        pytest.skip("clang or make is not installed (apt-get install clang)")
    build = subprocess.run(["make", "-C", str(FUZZ), "-s", binary], capture_output=True, text=True)
    if build.returncode != 0 and "fuzzer" in build.stderr:
        pytest.skip(f"clang cannot link libFuzzer here: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    run = subprocess.run(
        [
            str(FUZZ / binary),
            f"-max_total_time={seconds}",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
            str(FUZZ / "corpus" / harness),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done" in run.stderr


ATHERIS_HARNESSES = sorted(p.name.removesuffix("_fuzz.py") for p in FUZZ.glob("atheris/*_fuzz.py"))


@pytest.mark.parametrize("harness", ATHERIS_HARNESSES)
def test_atheris_smoke(harness: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install atheris)")
    run = subprocess.run(
        [sys.executable, str(FUZZ / "run"), "--time", "8", "--findings", str(tmp_path), harness],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
