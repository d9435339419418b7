"""`--simulate PROFILE`: the project's simulated GPU as a vfio-user device.

BAR0 is the simulated V100's memfd (`mmiofilter.simulated.gv100`) with an NVLink (IOCTRL) unit
in its device-info table and the host's isolation sequence applied, the KVM demo's
(`isolated_gv100_bar0`); the config space is the V100's (`gv100_config_space`) with BAR0
only, since only BAR0 is simulated.

The fd the client maps is not BAR0's memfd: a client holding that fd could mmap every page of
the BAR, sparse areas or not. The pages the server exports live in a second memfd, mapped over
the same offsets of the device's own view of BAR0 (MAP_FIXED), so the device and the client
share exactly those pages; the rest of the exported memfd is never seen by the device.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Sequence

from ..backends import Backend
from ..simulated.gv100 import gv100_config_space, isolated_gv100_bar0
from .config import EmulatedConfig
from .protocol import (
    IRQ_INFO_EVENTFD,
    IRQ_INFO_NORESIZE,
    IRQ_SET_ACTION_MASK,
    IRQ_SET_ACTION_UNMASK,
    MSI_IRQ,
)
from .source import IrqInfo, SourceError

#: Profiles with a simulated device.
SIMULATED = ("nvidia-gv100",)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long,
]  # fmt: skip
_MAP_FIXED = 0x10  # <asm-generic/mman-common.h>
_MAP_FAILED = ctypes.c_void_p(-1).value


def _address(buf: mmap.mmap) -> int:
    view = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(view)
    finally:
        del view


class SimulatedSource:
    def __init__(self, profile: str = "nvidia-gv100") -> None:
        if profile not in SIMULATED:
            raise SourceError(
                f"--simulate {profile!r}: no simulated device for that profile "
                f"(simulated: {', '.join(SIMULATED)})"
            )
        self.name = f"simulated {profile}"
        self.bar = isolated_gv100_bar0()
        self.config = EmulatedConfig(gv100_config_space(), {0: self.bar.size})
        self._export_fd = os.memfd_create("gv100-bar0-exported", os.MFD_CLOEXEC)
        os.ftruncate(self._export_fd, self.bar.size)
        self._exported: set[int] = set()  # page offsets living in the exported memfd
        self.irq_fds: dict[int, list[int]] = {}
        self.irq_actions: list[tuple[int, int, int]] = []
        self.irq_masked: set[tuple[int, int]] = set()
        self.dma: list[tuple[int, int, int, int]] = []
        self.resets = 0

    def bar_sizes(self) -> dict[int, int]:
        return {0: self.bar.size}

    def bar_backend(self, index: int) -> Backend:
        return self.bar.backend()

    def config_target(self) -> Backend:
        return self.config.backend()

    can_export = True

    def export(self, index: int, areas: Sequence[tuple[int, int]]) -> int:
        page = mmap.PAGESIZE
        base = _address(self.bar.buf)
        for offset, length in areas:
            for at in range(offset, offset + length, page):
                if at in self._exported:
                    continue
                # the page's current contents move with it, then the device's view follows
                os.pwrite(self._export_fd, self.bar.buf[at : at + page], at)
                got = _libc.mmap(
                    base + at, page, mmap.PROT_READ | mmap.PROT_WRITE,
                    mmap.MAP_SHARED | _MAP_FIXED, self._export_fd, at,
                )  # fmt: skip
                if got == _MAP_FAILED or got != base + at:
                    err = ctypes.get_errno()
                    raise SourceError(f"BAR0: cannot map exported page {at:#x}: {os.strerror(err)}")
                self._exported.add(at)
        return self._export_fd

    def irqs(self) -> dict[int, IrqInfo]:
        # The V100 config space has one MSI vector (gv100_config_space) and no INTx pin.
        return {MSI_IRQ: IrqInfo(1, IRQ_INFO_EVENTFD | IRQ_INFO_NORESIZE)}

    def set_irqs(self, index: int, start: int, fds: Sequence[int]) -> None:
        slots = self.irq_fds.setdefault(index, [])
        while len(slots) < start + len(fds):
            slots.append(-1)
        slots[start : start + len(fds)] = list(fds)

    def irq_action(self, index: int, sub: int, action: int) -> None:
        """A client-triggered interrupt fires the vector's eventfd unless it is masked."""
        self.irq_actions.append((index, sub, action))
        if action == IRQ_SET_ACTION_MASK:
            self.irq_masked.add((index, sub))
        elif action == IRQ_SET_ACTION_UNMASK:
            self.irq_masked.discard((index, sub))
        elif (index, sub) not in self.irq_masked:
            fds = self.irq_fds.get(index, [])
            if sub < len(fds) and fds[sub] >= 0:
                os.eventfd_write(fds[sub], 1)

    def dma_map(self, iova: int, size: int, vaddr: int, flags: int) -> None:
        self.dma.append((iova, size, vaddr, flags))

    def dma_unmap(self, iova: int, size: int) -> None:
        self.dma = [d for d in self.dma if (d[0], d[1]) != (iova, size)]

    def reset(self) -> None:
        # A simulated function-level reset: the command register's enables clear, as after
        # FLR (PCIe base spec: the function returns to its power-on config state).
        self.config.data[0x04:0x06] = (
            int.from_bytes(self.config.data[0x04:0x06], "little") & ~0x7
        ).to_bytes(2, "little")
        self.resets += 1

    def close(self) -> None:
        try:
            self.bar.close()
        finally:
            os.close(self._export_fd)
