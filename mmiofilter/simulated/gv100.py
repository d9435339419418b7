"""A simulated GPU BAR0 and config space for tests and demos.

BAR0 is a memfd the size of the real BAR, holding a device-info table that places NVLink
(IOCTRL) units; `apply_gv100_isolation` applies the host's NVLink isolation as NVIDIA's 2019
linuxppc-dev patch does. The memfd is what a VMM would map (it can back KVM memory slots); `buf`
is its mmap, to hand to `MemoryBackend`. Registers are plain memory, except through `backend()`,
which also models the one register whose behaviour a driver waits on: the PRI ring master's
command register completes every command at once (CMD reads back NO_CMD), as nouveau's
gk104_privring_intr expects after it acks a ring interrupt.

`SimulatedConfig` is the device's PCI config space as a redirect target: the bytes a VMM's
config-space emulation would answer with, and a log of every write that reached it.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..backends import CallbackBackend
from ..devices.devinfo_encode import UnitSpec, table_words
from ..devices.pciconfig import EXP_CFG_SIZE
from ..devices.pciconfig_build import ExtCap, build_config, mem_bar, msi_cap, pcie_cap
from ..devices.regmap import RegisterMap, load_map

#: The link-disable field of 0xA00148 (bits 21:16, one per link) and the mask the linuxppc
#: patch computes from the links the host keeps (nvlinkgpu_get_disable_mask).
LINK_FIELD = 0x3F0000


@dataclass
class SimulatedBar:
    fd: int
    buf: mmap.mmap
    regmap: RegisterMap
    #: Every command the PRI ring master took through `backend()` or `device_write`, in order.
    ring_commands: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.buf)

    def read32(self, offset: int) -> int:
        return int.from_bytes(self.buf[offset : offset + 4], "little")

    def write32(self, offset: int, value: int) -> None:
        self.buf[offset : offset + 4] = value.to_bytes(4, "little")

    # -- the device's behaviour -------------------------------------------------------------

    def _ring_command(self) -> tuple[int, int] | None:
        try:
            r = self.regmap.find("NV_PPRIV_MASTER_RING_COMMAND")
        except KeyError:
            return None
        return r.offset, r.field("CMD").mask

    def device_read(self, offset: int, width: int) -> int:
        return int.from_bytes(self.buf[offset : offset + width], "little")

    def device_write(self, offset: int, width: int, value: int) -> None:
        self.buf[offset : offset + width] = value.to_bytes(width, "little")
        ring = self._ring_command()
        if ring is not None and offset <= ring[0] < offset + width:
            word = self.read32(ring[0])
            if word & ring[1]:
                # The ring takes the command and completes it: CMD reads NO_CMD again.
                self.ring_commands.append(word & ring[1])
                self.write32(ring[0], word & ~ring[1])

    def backend(self) -> CallbackBackend:
        """BAR0 with the device's behaviour, for a filter to stand in front of."""
        return CallbackBackend(self.device_read, self.device_write)

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


def isolation_mask(keep: int) -> int:
    """The link-disable bits the host sets: every link but those it keeps (bits 21:16)."""
    if keep & ~LINK_FIELD:
        raise ValueError(f"keep {keep:#x} has bits outside the link field {LINK_FIELD:#x}")
    return ~keep & LINK_FIELD


def apply_gv100_isolation(bar: SimulatedBar, keep: int = 0) -> int:
    """What the host does before attaching a V100, as pnv_try_isolate_nvidia_v100 does it
    (linuxppc-dev 2019): restart the PRI ring (0x4 to 0x12004C, 0x2 to 0x122204), set
    NV_PMC_ENABLE_NVLINK, OR the link-disable mask into 0xA00148. `keep` is the links the host
    keeps, as bits 21:16 (links to the CPU and to GPUs of the same group); the patch does
    nothing when it keeps every link. Returns the mask it set."""
    mask = isolation_mask(keep)
    if not mask:
        return 0
    m = bar.regmap
    ring = m.find("NV_PPRIV_MASTER_RING_COMMAND")
    decode = m.find("NV_PPRIV_SYS_DECODE_CONFIG")
    bar.device_write(ring.offset, 4, ring.value("ENUMERATE_AND_START_RING"))
    bar.device_write(decode.offset, 4, decode.value("ISOLATION_SEQUENCE"))
    pmc = m.find("NV_PMC_ENABLE")
    bar.device_write(pmc.offset, 4, bar.read32(pmc.offset) | pmc.field("NVLINK").mask)
    links = m.find("NVLINK_LINK_DISABLE")
    bar.device_write(links.offset, 4, bar.read32(links.offset) | mask)
    return mask


#: The host-side V100 the KVM demo and `serve --simulate` present: an NVLink (IOCTRL, device-info
#: type 18) unit at 0xA00000, links 0 and 1 (to the CPU) kept and links 2..5 isolated (0x3C0000),
#: and a made-up NV_PMC_BOOT_0 for the guest to read.
IOCTRL_TYPE, IOCTRL_BASE = 18, 0xA00000
KEEP_LINKS = 0x030000
CHIP_ID = 0x140000A1


def isolated_gv100_bar0() -> SimulatedBar:
    """The demo's V100 BAR0: the NVLink unit above, isolated as the host does, with CHIP_ID."""
    bar = simulated_bar0("gv100", [(IOCTRL_TYPE, IOCTRL_BASE)])
    apply_gv100_isolation(bar, keep=KEEP_LINKS)
    bar.write32(0x0, CHIP_ID)
    return bar


# -- config space ------------------------------------------------------------------------------

#: The BAR registers of a V100 as a host assigns them: BAR0 16 MiB registers, BAR1 the 64-bit
#: prefetchable framebuffer aperture, BAR3 the 64-bit prefetchable 32 MiB one (lspci of a Tesla
#: V100 SXM2: "Memory at ... (32-bit, non-prefetchable) [size=16M]", "(64-bit, prefetchable)
#: [size=16G]", "(64-bit, prefetchable) [size=32M]"). The addresses are made up.
V100_BARS = (
    *mem_bar(0xD2000000),
    *mem_bar(0x38_0000_0000, is_64bit=True, prefetchable=True),
    *mem_bar(0x38_4000_0000, is_64bit=True, prefetchable=True),
)
#: Where the open driver's published gm107 dev_nv_xve.h puts the registers the guest drivers
#: use through the mirror: NV_XVE_MSI_CTRL 0x68 (the MSI capability), NV_XVE_DEVICE_CONTROL_STATUS
#: 0x80 (PCI Express capability at 0x78, Device Control at +8), NV_XVE_VCCAP_HDR 0x100 (virtual
#: channel, extended capability 2), NV_XVE_AER_UNCORR_ERR 0x424 (AER at 0x420), NV_XVE_CYA_2
#: 0x704 (MSI re-arm). GM107's layout: no public GV100 document gives its config layout, and no
#: public source gives the V100 an MSI-X capability, so none is built.
MSI_CAP, PCIE_CAP, VC_CAP, AER_CAP = 0x68, 0x78, 0x100, 0x420
NV_XVE_CYA_2 = 0x704


def gv100_config_space(device: int = 0x1DB1) -> bytes:
    """A V100's 4 KiB config space: NVIDIA's IDs, class 0x0302 (3D controller, as
    NV_XVE_REV_ID_CLASS_CODE_3D), the BARs, MSI, PCI Express, VC and AER capabilities."""
    return build_config(
        0x10DE,
        device,
        revision=0xA1,
        class_code=0x030200,
        subsystem_vendor=0x10DE,
        subsystem_device=0x1212,
        bars=V100_BARS,
        caps=[msi_cap(offset=MSI_CAP), pcie_cap(offset=PCIE_CAP)],
        ext_caps=[
            ExtCap(0x02, 1, bytes(0x1C), offset=VC_CAP),
            ExtCap(0x01, 2, bytes(0x44), offset=AER_CAP),
        ],
        size=EXP_CFG_SIZE,
    )


@dataclass
class SimulatedConfig:
    """A config space as a redirect target: `data` is what reads see; every write lands in it
    and in `writes` as (offset, width, value)."""

    data: bytearray = field(default_factory=lambda: bytearray(gv100_config_space()))
    writes: list[tuple[int, int, int]] = field(default_factory=list)

    def read(self, offset: int, width: int) -> int:
        if offset + width > len(self.data):
            raise ValueError(f"config read of {width} at {offset:#x} is past the config space")
        return int.from_bytes(self.data[offset : offset + width], "little")

    def write(self, offset: int, width: int, value: int) -> None:
        if offset + width > len(self.data):
            raise ValueError(f"config write of {width} at {offset:#x} is past the config space")
        self.writes.append((offset, width, value))
        self.data[offset : offset + width] = value.to_bytes(width, "little")

    def backend(self) -> CallbackBackend:
        return CallbackBackend(self.read, self.write)
