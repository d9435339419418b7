"""cffi builder for the C core (API mode, out-of-line): `mmiofilter._core`.

The declarations come from the public header itself, so the binding cannot drift from the C
API: preprocessor lines are dropped, and `#define`d constants other than plain numbers are left
for the C compiler to evaluate (`#define NAME ...`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SOURCES = [
    "table.c",
    "layout.c",
    "access.c",
    "backend.c",
    "errors.c",
    "events.c",
    "hazard.c",
    "filter.c",
    "guard.c",
    "guard_fsp.c",
    "guard_fsp_emem.c",
    "guard_fsp_queue.c",
]
# The KVM embedding needs Linux's KVM headers; elsewhere the core builds without it.
HAVE_KVM = sys.platform == "linux" and Path("/usr/include/linux/kvm.h").exists()
if HAVE_KVM:
    SOURCES.append("kvm.c")

# Python implementations of the callback backend (mmiofilter/backends.py).
PY_CALLBACKS = """
extern "Python" int mf_py_read(void *ctx, uint64_t offset, unsigned width, uint64_t *value);
extern "Python" int mf_py_write(void *ctx, uint64_t offset, unsigned width, uint64_t value);
"""


def header_cdef(text: str) -> str:
    """The header's declarations in the subset of C that cffi's cdef parses."""
    out: list[str] = []
    skip = 0
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#ifdef __cplusplus"):
            skip = 1
            continue
        if skip:
            skip = 0 if s.startswith("#endif") else 1
            continue
        m = re.match(r"#define\s+(MF_\w+)\s+(\S+)", s)
        if m:
            # plain numbers stay (cdef needs them for array sizes); the rest C evaluates
            value = m.group(2) if m.group(2).isdigit() else "..."
            out.append(f"#define {m.group(1)} {value}")
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
    extra_compile_args=["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O2", "-Wall", "-Wextra"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
