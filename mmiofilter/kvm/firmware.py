"""The guest firmware image: firmware.asm, assembled with nasm the first time it is needed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

SIZE = 0x10000  # mapped at the top of 4 GiB, as a PC BIOS


class FirmwareError(RuntimeError):
    """The firmware cannot be built (nasm missing or failing)."""


def source() -> bytes:
    return resources.files(__package__).joinpath("firmware.asm").read_bytes()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmiofilter"


def image() -> bytes:
    """The assembled image, cached by the hash of its source."""
    src = source()
    digest = hashlib.sha256(src).hexdigest()[:16]
    cached = _cache_dir() / f"firmware-{digest}.bin"
    if cached.is_file() and cached.stat().st_size == SIZE:
        return cached.read_bytes()
    nasm = shutil.which("nasm")
    if nasm is None:
        raise FirmwareError("the guest firmware needs nasm to assemble (apt-get install nasm)")
    with tempfile.TemporaryDirectory() as tmp:
        asm, out = Path(tmp) / "firmware.asm", Path(tmp) / "firmware.bin"
        asm.write_bytes(src)
        r = subprocess.run([nasm, "-f", "bin", "-o", str(out), str(asm)], capture_output=True)
        if r.returncode != 0:
            raise FirmwareError(f"nasm failed: {r.stderr.decode(errors='replace').strip()}")
        data = out.read_bytes()
    if len(data) != SIZE:
        raise FirmwareError(f"firmware image is {len(data)} bytes, not {SIZE}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(data)
    except OSError:
        pass  # a read-only home: assemble again next time
    return data
