"""One build description: csrc/sources.mk says which C sources make the core and with which
flags, and both builds of it (csrc/Makefile and the cffi build, build_cffi.py) read it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_cffi", ROOT / "build_cffi.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_c_file_is_in_the_build_description() -> None:
    desc = _builder().build_description()
    listed = desc["MF_SOURCES"] + desc["MF_KVM_SOURCES"]
    assert len(listed) == len(set(listed)), "a source is listed twice"
    assert sorted(listed) == sorted(p.name for p in CSRC.glob("*.c"))


@pytest.mark.skipif(not shutil.which("make"), reason="make is not installed")
def test_makefile_and_cffi_build_compile_the_same_sources_with_the_same_flags() -> None:
    out = subprocess.run(
        ["make", "-s", "-C", str(CSRC), "print-build"], capture_output=True, text=True, check=True
    ).stdout
    made = dict(line.split(": ", 1) for line in out.splitlines())
    builder = _builder()
    assert made["sources"].split() == builder.SOURCES
    assert made["flags"].split() == [f for f in builder.COMPILE_ARGS if f != "-O2"]


def test_the_builder_lives_outside_the_package() -> None:
    assert not (ROOT / "mmiofilter/_cffi_build.py").exists()
    assert "build_cffi.py:ffibuilder" in (ROOT / "setup.py").read_text()


def test_a_malformed_description_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "sources.mk"
    bad.write_text("MF_SOURCES = a.c\nifeq ($(X),1)\n")
    with pytest.raises(ValueError, match=r"sources.mk:2: not a plain `NAME = words` line"):
        _builder().build_description(bad)


def test_header_cdef_skips_string_and_function_like_macros() -> None:
    cdef = _builder().header_cdef(
        "#define MF_A 3 /* three */\n#define MF_B (-1)\n#define MF_S_(x) #x\n"
        '#define MF_S \\\n    MF_S_(MF_A) "." \\\n    MF_S_(MF_A)\nint mf_f(void);\n'
    )
    assert cdef.splitlines() == ["#define MF_A 3", "#define MF_B ...", "int mf_f(void);"]


def test_the_core_was_built_from_the_description() -> None:
    """The module this test suite imports carries every source (a function from each)."""
    from mmiofilter._core import lib

    assert lib.mf_version  # version.c
    if sys.platform == "linux" and _builder().HAVE_KVM:
        assert lib.mf_kvm_open  # kvm.c
