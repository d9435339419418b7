"""cffi builder for the C core (API mode, out-of-line): `mmiofilter._core`.

It lives outside the package (as PyNaCl keeps `src/bindings/build.py`): it runs at build time
only, from setup.py's `cffi_modules`. What it compiles and with which flags comes from
`csrc/sources.mk`, the one build description that `csrc/Makefile` reads too.

The declarations come from the public header itself, so the binding cannot drift from the C
API: preprocessor lines are dropped, and `#define`d integer constants other than plain numbers
are left for the C compiler to evaluate (`#define NAME ...`). String and function-like macros
(the version string) are not constants cffi can declare: Python reads `mf_version()` instead.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def build_description(path: Path = CSRC / "sources.mk") -> dict[str, list[str]]:
    """`NAME = words` lines of csrc/sources.mk (comments and blank lines skipped)."""
    out: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        m = re.fullmatch(r"([A-Z_][A-Z0-9_]*)\s*=\s*(.*)", s)
        if not m:
            raise ValueError(f"{path}:{n}: not a plain `NAME = words` line: {line!r}")
        out[m.group(1)] = m.group(2).split()
    return out


BUILD = build_description()
# The KVM embedding needs Linux's KVM headers; elsewhere the core builds without it.
HAVE_KVM = sys.platform == "linux" and Path("/usr/include/linux/kvm.h").exists()
SOURCES = BUILD["MF_SOURCES"] + (BUILD["MF_KVM_SOURCES"] if HAVE_KVM else [])
COMPILE_ARGS = [*BUILD["MF_STD"], "-O2", *BUILD["MF_WARNINGS"]]
LIBRARIES = [flag.removeprefix("-l") for flag in BUILD["MF_LIBS"]]

# Python implementations of the callback backend (mmiofilter/backends.py).
PY_CALLBACKS = """
extern "Python" int mf_py_read(void *ctx, uint64_t offset, unsigned width, uint64_t *value);
extern "Python" int mf_py_write(void *ctx, uint64_t offset, unsigned width, uint64_t value);
"""


def _logical_lines(text: str) -> list[str]:
    """The header's lines with backslash continuations joined."""
    out: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def header_cdef(text: str) -> str:
    """The header's declarations in the subset of C that cffi's cdef parses."""
    out: list[str] = []
    skip = 0
    for line in _logical_lines(text):
        s = line.strip()
        if s.startswith("#ifdef __cplusplus"):
            skip = 1
            continue
        if skip:
            skip = 0 if s.startswith("#endif") else 1
            continue
        m = re.match(r"#define\s+(MF_\w+)(\(?)\s*(.*)", s)
        if m:
            name, function_like, value = m.groups()
            value = value.split("/*", 1)[0].strip()
            if function_like or '"' in value or re.search(r"\w\(", value):
                continue  # not an integer constant
            # plain numbers stay (cdef needs them for array sizes); the rest C evaluates
            out.append(f"#define {name} {value if value.isdigit() else '...'}")
        elif not s.startswith("#"):
            out.append(line)
    return "\n".join(out)


ffibuilder = FFI()
CDEF = header_cdef((CSRC / "mmiofilter.h").read_text()) + PY_CALLBACKS
PRELUDE = '#include "mmiofilter.h"\n'
if HAVE_KVM:
    CDEF += header_cdef((CSRC / "mmiofilter_kvm.h").read_text())
    PRELUDE += '#include "mmiofilter_kvm.h"\n'

ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "mmiofilter._core",
    PRELUDE,
    # Relative paths: setuptools builds from the project root and rejects absolute sources.
    sources=[f"csrc/{s}" for s in SOURCES],
    include_dirs=["csrc"],
    extra_compile_args=COMPILE_ARGS,
    libraries=LIBRARIES,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
