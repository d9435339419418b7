"""`.clusterfuzzlite/build.sh` run here as OSS-Fuzz runs it, without the container.

The environment is the one OSS-Fuzz's builder sets for an ASan build with libFuzzer (clang,
`-fsanitize=fuzzer-no-link,address,undefined` compile flags, `-fsanitize=fuzzer` as the engine,
$SRC holding the checkout as `mmiofilter`, $OUT empty). Every target it puts in $OUT then runs for
a couple of seconds from its own seed corpus zip and dictionary, as ClusterFuzzLite would.
The atheris targets are this script's local form (a zipapp package run by this Python, see
build.sh); inside the builder image they are PyInstaller packages with the same launcher.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
BUILD = ROOT / ".clusterfuzzlite" / "build.sh"
C_TARGETS = ["core_fuzz", "guard_fuzz"]
ATHERIS_TARGETS = sorted(p.stem for p in (FUZZ / "atheris").glob("*_fuzz.py"))
#: What OSS-Fuzz's builder exports for `--sanitizer address --engine libfuzzer` (its
#: base-builder image's CFLAGS plus the sanitizer's, and the engine's link flag).
SANITIZER_FLAGS = (
    "-O1 -fno-omit-frame-pointer -gline-tables-only "
    "-fsanitize=address -fsanitize-address-use-after-scope "
    "-fsanitize=fuzzer-no-link,address,undefined"
)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("clang") or not shutil.which("clang++"):
        pytest.skip("clang is not installed (apt-get install clang): build.sh needs clang")
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install -e '.[fuzz]'): build.sh packs it")
    base = tmp_path_factory.mktemp("ossfuzz")
    src, out = base / "src", base / "out"
    src.mkdir()
    out.mkdir()
    (src / "mmiofilter").symlink_to(ROOT)  # OSS-Fuzz's Dockerfile copies the checkout here
    env = dict(
        os.environ,
        CC="clang",
        CXX="clang++",
        CFLAGS=SANITIZER_FLAGS,
        CXXFLAGS=SANITIZER_FLAGS,
        LIB_FUZZING_ENGINE="-fsanitize=fuzzer",
        SANITIZER="address",
        FUZZING_ENGINE="libfuzzer",
        SRC=str(src),
        OUT=str(out),
        PYTHON=sys.executable,
    )
    run = subprocess.run(
        ["bash", str(BUILD)], cwd=src, env=env, capture_output=True, text=True, timeout=600
    )
    if run.returncode and "fuzzer" in run.stderr and "cannot find" in run.stderr:
        pytest.skip(f"clang cannot link libFuzzer here: {run.stderr.strip()[-300:]}")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return out


def test_out_has_every_target_with_seeds_and_dictionary(out: Path) -> None:
    for target in [*C_TARGETS, *ATHERIS_TARGETS]:
        binary = out / target
        assert binary.is_file() and os.access(binary, os.X_OK), f"{target} is not executable"
        harness = target.removesuffix("_fuzz")
        with zipfile.ZipFile(out / f"{target}_seed_corpus.zip") as z:
            names = sorted(Path(n).name for n in z.namelist())
        assert names == sorted(p.name for p in (FUZZ / "corpus" / harness).iterdir())
        shipped = (FUZZ / "dict" / f"{harness}.dict").read_text()
        assert (out / f"{target}.dict").read_text() == shipped
    for target in C_TARGETS:  # a real ELF fuzzer, linked with the engine
        assert (out / target).read_bytes()[:4] == b"\x7fELF"
        assert b"LLVMFuzzerTestOneInput" in (out / target).read_bytes()
    for target in ATHERIS_TARGETS:  # OSS-Fuzz's Python shape: launcher + non-executable .pkg
        launcher = (out / target).read_text()
        assert launcher.startswith("#!/bin/sh") and "LLVMFuzzerTestOneInput" in launcher
        assert f"{target}.pkg" in launcher
        assert not (out / f"{target}.pkg").stat().st_mode & stat.S_IXUSR


def _entries(dict_file: Path) -> int:
    lines = dict_file.read_text().splitlines()
    return sum(1 for line in lines if line.strip() and not line.startswith("#"))


@pytest.mark.parametrize("target", [*C_TARGETS, *ATHERIS_TARGETS])
def test_target_runs_from_its_seeds_with_its_dictionary(
    out: Path, target: str, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    with zipfile.ZipFile(out / f"{target}_seed_corpus.zip") as z:
        z.extractall(corpus)
    run = subprocess.run(
        [
            str(out / target),
            f"-dict={out / f'{target}.dict'}",
            "-max_total_time=3",
            "-timeout=10",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # libFuzzer read every entry of the dictionary (a syntax error stops it) ...
    m = re.search(r"Dictionary: (\d+) entries", run.stderr)
    assert m and int(m.group(1)) == _entries(out / f"{target}.dict"), run.stderr[-2000:]
    # ... loaded the seeds, and fuzzed.
    assert re.search(r"INITED .*corp: [1-9]", run.stderr), run.stderr[-2000:]
    assert re.search(r"Done \d+ runs", run.stderr), run.stderr[-2000:]


def test_dictionaries_are_current() -> None:
    """fuzz/dict/ is written by fuzz/make_dicts.py from the maps and the TOML key sets."""
    run = subprocess.run(
        [sys.executable, str(FUZZ / "make_dicts.py"), "--check"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
