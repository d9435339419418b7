"""DMA windows the client shared (vfio-user.rst "VFIO_USER_DMA_MAP" / "VFIO_USER_DMA_UNMAP").

A window with an fd is mapped into the server (the source programs the device's IOMMU context
from that address); one without is recorded only (the server would reach it with DMA_READ and
DMA_WRITE messages, which this server never sends). Overlaps are refused with EEXIST, as the
document says; an unmap must match a mapping exactly.
"""

from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass

from .protocol import DEFAULT_PGSIZE, DMA_FLAG_READ, DMA_FLAG_WRITE, ProtocolError, einval

#: Announced as max_dma_maps; the document's default is 65535.
MAX_DMA_MAPS = 1024


@dataclass
class Window:
    address: int
    size: int
    flags: int
    fd: int | None
    map: mmap.mmap | None


class DmaTable:
    def __init__(self) -> None:
        self.windows: dict[int, Window] = {}

    def check(self, flags: int, offset: int, address: int, size: int) -> None:
        if flags & ~(DMA_FLAG_READ | DMA_FLAG_WRITE):
            raise einval(f"DMA_MAP: unknown flags {flags:#x}")
        if size == 0 or address % DEFAULT_PGSIZE or size % DEFAULT_PGSIZE:
            raise einval(
                f"DMA_MAP: window {address:#x}+{size:#x} is not whole {DEFAULT_PGSIZE}-byte pages"
            )
        if address + size > 2**64 or offset + size > 2**63:
            raise einval(f"DMA_MAP: window {address:#x}+{size:#x} overflows")
        for w in self.windows.values():
            if address < w.address + w.size and w.address < address + size:
                raise ProtocolError(
                    errno.EEXIST, f"DMA_MAP: {address:#x}+{size:#x} overlaps a mapped window"
                )
        if len(self.windows) >= MAX_DMA_MAPS:
            raise ProtocolError(errno.ENOSPC, f"DMA_MAP: more than {MAX_DMA_MAPS} windows")

    def add(self, flags: int, offset: int, address: int, size: int, fd: int | None) -> Window:
        """Map the window (taking ownership of `fd`); the caller checked it first."""
        view = None
        if fd is not None:
            prot = (mmap.PROT_READ if flags & DMA_FLAG_READ else 0) | (
                mmap.PROT_WRITE if flags & DMA_FLAG_WRITE else 0
            )
            try:
                view = mmap.mmap(fd, size, mmap.MAP_SHARED, prot or mmap.PROT_READ, offset=offset)
            except (OSError, ValueError, OverflowError) as e:
                os.close(fd)
                raise einval(f"DMA_MAP: cannot map the window's fd at {offset:#x}: {e}") from None
        w = Window(address, size, flags, fd, view)
        self.windows[address] = w
        return w

    def remove(self, address: int, size: int) -> Window:
        w = self.windows.get(address)
        if w is None or w.size != size:
            raise einval(f"DMA_UNMAP: {address:#x}+{size:#x} is not a mapped window")
        del self.windows[address]
        _release(w)
        return w

    def clear(self) -> None:
        for w in self.windows.values():
            _release(w)
        self.windows.clear()


def _release(w: Window) -> None:
    if w.map is not None:
        w.map.close()
    if w.fd is not None:
        os.close(w.fd)
