"""Replay every fuzz finding and every seed through its harness, in process, without atheris.

`fuzz/run` leaves crash inputs in fuzz/findings/<harness>/ (with a `.txt` traceback beside
each); a finding fails here until the bug is fixed, after which its input belongs in
fuzz/corpus/<harness>/ as a regression seed. The harness modules' `check(data)` is the very
function atheris runs, so a pass here means the campaign would not flag the input either. The
corpora and findings of the C harnesses (the core, the FSP guard) are replayed by their
libFuzzer binaries themselves (`-runs=0`).
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
ATHERIS = FUZZ / "atheris"
HARNESSES = sorted(p.name.removesuffix("_fuzz.py") for p in ATHERIS.glob("*_fuzz.py"))
#: A harness input that runs longer than this is a hang (fuzz/run uses 10 s under atheris).
HANG_SECONDS = 30


def _harness(name: str) -> ModuleType:
    if str(ATHERIS) not in sys.path:
        sys.path.insert(0, str(ATHERIS))  # the harnesses import their shared fuzzlib
    spec = importlib.util.spec_from_file_location(f"{name}_fuzz", ATHERIS / f"{name}_fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _inputs(kind: str) -> list[tuple[str, Path]]:
    out = []
    for name in HARNESSES:
        folder = FUZZ / kind / name
        if folder.is_dir():
            # `.txt` files beside findings are the tracebacks fuzz/run wrote, not inputs
            out += [(name, p) for p in sorted(folder.iterdir()) if p.suffix != ".txt"]
    return out


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def hang(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the input runs for more than {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _replay(name: str, path: Path) -> None:
    check: Callable[[bytes], None] = _harness(name).check
    with _deadline(HANG_SECONDS):
        check(path.read_bytes())


@pytest.mark.parametrize(
    ("harness", "path"), _inputs("corpus"), ids=lambda v: v.name if isinstance(v, Path) else v
)
def test_seed_corpus_passes(harness: str, path: Path) -> None:
    _replay(harness, path)


FINDINGS = _inputs("findings")


@pytest.mark.parametrize(
    ("harness", "path"),
    FINDINGS or [pytest.param("-", Path("-"), marks=pytest.mark.skip(reason="no findings"))],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_finding_is_fixed(harness: str, path: Path) -> None:
    """Fails while the bug a campaign found is there; the traceback is in `<input>.txt`."""
    _replay(harness, path)


def test_every_harness_has_seeds() -> None:
    for name in [*HARNESSES, *C_HARNESSES]:
        assert any((FUZZ / "corpus" / name).iterdir()), f"fuzz/corpus/{name} is empty"


#: The libFuzzer harnesses in C, by name: their binaries in fuzz/ (`make -C fuzz` builds them).
C_HARNESSES = {"core": "core_fuzz", "guard": "guard_fuzz"}


def _c_fuzz(harness: str) -> Path:
    if not shutil.which("clang") or not shutil.which("make"):
        pytest.skip("clang or make is not installed (apt-get install clang)")
    binary = C_HARNESSES[harness]
    build = subprocess.run(["make", "-C", str(FUZZ), "-s", binary], capture_output=True, text=True)
    if build.returncode != 0 and "fuzzer" in build.stderr:
        pytest.skip(f"clang cannot link libFuzzer here: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr
    return FUZZ / binary


@pytest.mark.parametrize("harness", sorted(C_HARNESSES))
def test_c_corpus_and_findings_replay(harness: str, tmp_path: Path) -> None:
    binary = _c_fuzz(harness)
    run = subprocess.run(
        [str(binary), "-runs=0", f"-artifact_prefix={tmp_path}/", str(FUZZ / "corpus" / harness)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    findings = FUZZ / "findings" / harness
    inputs = [p for p in findings.iterdir() if p.suffix != ".txt"] if findings.is_dir() else []
    for p in inputs:  # one at a time: libFuzzer stops at the first crashing file
        one = subprocess.run(
            [str(binary), f"-artifact_prefix={tmp_path}/", str(p)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert one.returncode == 0, f"{p}:\n{one.stderr[-3000:]}"
