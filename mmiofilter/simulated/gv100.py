"""A simulated GPU BAR0 for tests and demos: a memfd the size of the real BAR, holding a
device-info table that places NVLink (IOCTRL) units, with a host's isolation sequence applied.

The memfd is what a VMM would map (it can back KVM memory slots); `buf` is its mmap, to hand
to `MemoryBackend`. Nothing here is a model of the GPU's behaviour: registers are plain memory,
which is all a filter test needs to see whether a guest's write reached them.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..devices.devinfo_encode import UnitSpec, table_words
from ..devices.regmap import RegisterMap, load_map


@dataclass
class SimulatedBar:
    fd: int
    buf: mmap.mmap
    regmap: RegisterMap

    @property
    def size(self) -> int:
        return len(self.buf)

    def read32(self, offset: int) -> int:
        return int.from_bytes(self.buf[offset : offset + 4], "little")

    def write32(self, offset: int, value: int) -> None:
        self.buf[offset : offset + 4] = value.to_bytes(4, "little")

    def close(self) -> None:
        """Release the memfd. Filters over `buf` must be gone first (they hold its memory)."""
        self.buf.close()
        os.close(self.fd)

    def __enter__(self) -> SimulatedBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def simulated_bar0(family: str, units: Sequence[UnitSpec] = ()) -> SimulatedBar:
    """BAR0 of `family` ("gv100", "gh100") as the map sizes it, with `units` in its table."""
    regmap = load_map(family)
    size = regmap.bar(0).size
    fd = os.memfd_create(f"{family}-bar0")
    os.ftruncate(fd, size)
    bar = SimulatedBar(fd, mmap.mmap(fd, size), regmap)
    if regmap.device_info is not None:
        for offset, word in table_words(regmap.device_info, units).items():
            bar.write32(offset, word)
    return bar


def apply_gv100_isolation(bar: SimulatedBar) -> None:
    """What the host does before attaching a V100 (NVIDIA's 2019 linuxppc-dev patch, "Isolate
    NVLinks between GV100GL on Witherspoon"): the values a guest must not undo."""
    m = bar.regmap
    for name in ("NVLINK_ISOLATE_12004C", "NVLINK_ISOLATE_122204"):
        r = m.find(name)
        bar.write32(r.offset, r.value("ISOLATED"))
    pmc = m.find("NV_PMC_ENABLE")
    bar.write32(pmc.offset, bar.read32(pmc.offset) | pmc.field("NVLINK").mask)
    links = m.find("NVLINK_LINK_DISABLE")
    bar.write32(links.offset, bar.read32(links.offset) | links.field("LINK_DISABLE").mask)
