"""The guest firmware image: firmware.asm, assembled with nasm the first time it is needed.

`assemble` is also the PCI guest's (mmiofilter/vfiouser/guest.py); both guests include
guest_ops.inc, which `load` splices in."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

SIZE = 0x10000  # mapped at the top of 4 GiB, as a PC BIOS

# the one include the guests use; spliced in here so that the cache key covers it and nasm
# needs no include path into an installed package
_INCLUDE = re.compile(rb'^%include "guest_ops\.inc"[ \t]*$', re.MULTILINE)


class FirmwareError(RuntimeError):
    """The firmware cannot be built (nasm missing or failing)."""


def load(package: str, name: str) -> bytes:
    """The assembly source `name` of `package`, with guest_ops.inc spliced in where included."""
    src = resources.files(package).joinpath(name).read_bytes()
    shared = resources.files(__package__).joinpath("guest_ops.inc").read_bytes()
    return _INCLUDE.sub(lambda _: shared.rstrip(b"\n"), src)


def source() -> bytes:
    return load(__package__, "firmware.asm")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmiofilter"


def assemble(src: bytes, name: str, size: int) -> bytes:
    """`src` assembled by nasm into a flat image of `size` bytes, cached by the hash of `src`
    as `<name>-<hash>.bin`; `name` also names the image in errors."""
    digest = hashlib.sha256(src).hexdigest()[:16]
    cached = _cache_dir() / f"{name}-{digest}.bin"
    if cached.is_file() and cached.stat().st_size == size:
        return cached.read_bytes()
    nasm = shutil.which("nasm")
    if nasm is None:
        raise FirmwareError(f"the guest image {name} needs nasm to assemble (apt-get install nasm)")
    with tempfile.TemporaryDirectory() as tmp:
        asm, out = Path(tmp) / f"{name}.asm", Path(tmp) / f"{name}.bin"
        asm.write_bytes(src)
        r = subprocess.run([nasm, "-f", "bin", "-o", str(out), str(asm)], capture_output=True)
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace").strip()
            raise FirmwareError(f"nasm failed on {name}: {err}")
        data = out.read_bytes()
    if len(data) != size:
        raise FirmwareError(f"the guest image {name} is {len(data)} bytes, not {size}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(data)
    except OSError:
        pass  # a read-only home: assemble again next time
    return data


def image() -> bytes:
    """The assembled image, cached by the hash of its source."""
    return assemble(source(), "firmware", SIZE)
