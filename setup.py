# What pyproject.toml cannot say: build the C core with cffi (build_cffi.py), take the version
# from the C header (its one source, csrc/mmiofilter.h), and tag the wheel abi3: the core is
# built for the limited API, so one wheel serves every CPython from 3.11 on.
import re
from pathlib import Path

from setuptools import setup


def header_version() -> str:
    header = (Path(__file__).resolve().parent / "csrc" / "mmiofilter.h").read_text()
    parts = [
        re.search(rf"^#define MF_VERSION_{part} (\d+)$", header, re.M)
        for part in ("MAJOR", "MINOR", "PATCH")
    ]
    if not all(parts):
        raise RuntimeError("csrc/mmiofilter.h lacks MF_VERSION_MAJOR/MINOR/PATCH")
    return ".".join(m.group(1) for m in parts if m)


setup(
    version=header_version(),
    cffi_modules=["build_cffi.py:ffibuilder"],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
