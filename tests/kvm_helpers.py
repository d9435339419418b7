"""What the KVM guest tests (test_kvm.py, test_kvm_readdirect.py) share: why no guest can run
here, and the BAR their guests reach, in a memfd as a VMM would map it."""

from __future__ import annotations

import gc
import mmap
import os
import shutil
from collections.abc import Iterator


def guest_unavailable() -> str | None:
    """Why the project's KVM guests cannot run here (no usable /dev/kvm, no nasm), or None."""
    from mmiofilter import kvm

    return kvm.kvm_available() or (None if shutil.which("nasm") else "nasm is not installed")


def memfd_bar(name: str, size: int) -> Iterator[mmap.mmap]:
    """A `size`-byte BAR in a memfd named `name`, filled with a known pattern; a fixture yields
    from it, and it is released when the filters and machines holding it are gone."""
    fd = os.memfd_create(name)
    os.ftruncate(fd, size)
    buf = mmap.mmap(fd, size)
    buf[:] = bytes((i * 7 + 3) & 0xFF for i in range(size))
    yield buf
    gc.collect()  # filters and machines hold the mapping until they are gone
    buf.close()
    os.close(fd)
