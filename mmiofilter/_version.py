"""The package's version is the C core's: `mf_version()` of the library that was built, whose
one source is MF_VERSION_MAJOR/MINOR/PATCH in csrc/mmiofilter.h (setup.py reads the same
numbers for the distribution's version)."""

from ._core import ffi, lib

__version__: str = ffi.string(lib.mf_version()).decode("ascii")
