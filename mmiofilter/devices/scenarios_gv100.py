"""What public GV100 drivers do to BAR0, as access sequences: the driver-compatibility scenarios.

Each scenario is one driver function's register accesses, in order, with the file and function
it is taken from beside it. A profile that breaks one of them breaks the guest's driver. The
runner (`run`) plays a scenario through a filter the way the driver would: a read-modify-write
(`Mask`, nouveau's nvkm_mask) writes back what it read with the field changed; a `Poll` reads
until the driver's condition holds, as the driver's wait loop does, and fails if it never does.

Register offsets are the drivers' own literals or their headers' (named beside each step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..filter import BarFilter
    from ..results import Result

NV_PCFG = 0x88000  # open-gpu-doc gv100 dev_nv_xve3g_fn0.ref.txt; nouveau nv40_pci_rd32/wr32


@dataclass(frozen=True)
class Read:
    offset: int
    width: int = 4


@dataclass(frozen=True)
class Write:
    offset: int
    value: int
    width: int = 4


@dataclass(frozen=True)
class Mask:
    """Read, then write back `(value & ~clear) | set` (nouveau nvkm_mask; the open driver's
    read/FLD_SET_DRF/write)."""

    offset: int
    clear: int
    set: int
    width: int = 4


@dataclass(frozen=True)
class Poll:
    """Read until `value & mask == want`, at most `tries` reads."""

    offset: int
    mask: int
    want: int
    tries: int = 16
    width: int = 4


Step = Read | Write | Mask | Poll


@dataclass(frozen=True)
class Scenario:
    name: str
    driver: str
    source: str  # file in the driver's tree
    function: str
    steps: tuple[Step, ...]
    note: str = ""


NOUVEAU = "Linux nouveau (drivers/gpu/drm/nouveau)"
OGKM = "NVIDIA open-gpu-kernel-modules"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "privring interrupt ack",
        NOUVEAU,
        "nvkm/subdev/privring/gk104.c",
        "gk104_privring_intr",
        (
            Read(0x120058),  # intr0
            Read(0x12005C),  # intr1
            Read(0x120070),  # hub count
            Read(0x120074),  # rop count
            Read(0x120078),  # gpc count
            Read(0x122120),  # gk104_privring_intr_hub(0): addr, data, stat
            Read(0x122124),
            Read(0x122128),
            Mask(0x12004C, 0x0000003F, 0x00000002),  # ACK_INTERRUPT
            Poll(0x12004C, 0x0000003F, 0),  # nvkm_msec(2000, ...) until CMD is NO_CMD
        ),
        "GV100 gets gm200_privring, whose .intr is gk104_privring_intr (nvkm/engine/device/"
        "base.c nv140_chipset; nvkm/subdev/privring/gm200.c).",
    ),
    Scenario(
        "MSI re-arm",
        NOUVEAU,
        "nvkm/subdev/pci/gp100.c",
        "gp100_pci_msi_rearm",
        (Write(NV_PCFG + 0x704, 0x00000000),),  # nvkm_pci_wr32(pci, 0x0704, 0) via nv40_pci_wr32
        "GV100 gets gp100_pci (nv140_chipset); its wr32 is nv40_pci_wr32, BAR0 0x088000 + addr.",
    ),
    Scenario(
        "VBIOS read from PROM with ROM shadowing off",
        NOUVEAU,
        "nvkm/subdev/bios/shadowrom.c, nvkm/subdev/pci/base.c",
        "prom_init, prom_read, prom_fini (nvkm_pci_rom_shadow)",
        (
            Mask(NV_PCFG + 0x50, 0x00000001, 0),  # prom_init: nvkm_pci_rom_shadow(pci, false)
            *(Read(0x300000 + i) for i in range(0, 0x40, 4)),  # prom_read: nvkm_rd32 per word
            Mask(NV_PCFG + 0x50, 0, 0x00000001),  # prom_fini: nvkm_pci_rom_shadow(pci, true)
        ),
    ),
    Scenario(
        "engines on at init",
        NOUVEAU,
        "nvkm/subdev/mc/nv50.c",
        "nv50_mc_init",
        (Write(0x000200, 0xFFFFFFFF),),  # "everything on"; GV100's gp100_mc .init
    ),
    Scenario(
        "engine reset, disable, enable through NV_PMC_ENABLE",
        NOUVEAU,
        "nvkm/subdev/mc/base.c",
        "nvkm_mc_reset, nvkm_mc_disable, nvkm_mc_enable",
        (
            # nvkm_mc_reset(FIFO): mask 0x00000100 from gk104_mc_reset (GV100's gp100_mc .reset)
            Mask(0x000200, 0x00000100, 0),
            Mask(0x000200, 0x00000100, 0x00000100),
            Read(0x000200),
            # nvkm_mc_disable(PMU), then nvkm_mc_enable(PMU): 0x00002000 in gk104_mc_reset
            Mask(0x000200, 0x00002000, 0),
            Mask(0x000200, 0x00002000, 0x00002000),
            Read(0x000200),
        ),
    ),
    Scenario(
        "interrupt mask update and status",
        NOUVEAU,
        "nvkm/subdev/mc/gp100.c, nvkm/subdev/mc/gf100.c",
        "gp100_mc_intr_update, gf100_mc_intr_stat",
        (
            Write(0x000180, 0x80000000),  # NV_PMC_INTR_EN_CLEAR(0) = ~mask (mask 0x7fffffff)
            Write(0x000160, 0x7FFFFFFF),  # NV_PMC_INTR_EN_SET(0) = mask
            Write(0x000184, 0x80000000),
            Write(0x000164, 0x7FFFFFFF),
            Read(0x000100),  # NV_PMC_INTR(0)
            Read(0x000104),
        ),
    ),
    Scenario(
        "PTIMER read, alarm and interrupt",
        NOUVEAU,
        "nvkm/subdev/timer/nv04.c (GV100's gk20a_timer uses it), regsnv04.h",
        "nv04_timer_read, nv04_timer_alarm_init, nv04_timer_intr",
        (
            Read(0x009410),  # NV04_PTIMER_TIME_1
            Read(0x009400),  # NV04_PTIMER_TIME_0
            Read(0x009410),
            Write(0x009420, 0x00001000),  # NV04_PTIMER_ALARM_0
            Write(0x009140, 0x00000001),  # NV04_PTIMER_INTR_EN_0
            Read(0x009100),  # NV04_PTIMER_INTR_0
            Write(0x009100, 0x00000001),
        ),
    ),
    Scenario(
        "MSI re-arm",
        OGKM,
        "src/nvidia/src/kernel/gpu/bif/arch/maxwell/kernel_bif_gm107.c",
        "kbifRearmMSI_GM107",
        (Write(NV_PCFG + 0x704, 0),),  # DEVICE_BASE(NV_PCFG) + NV_XVE_CYA_2 (dev_nv_xve.h 0x704)
    ),
    Scenario(
        "no-snoop enable",
        OGKM,
        "src/nvidia/src/kernel/gpu/bif/arch/maxwell/kernel_bif_gm107.c",
        "kbifEnableNoSnoop_GM107",
        # DEVICE_BASE(NV_PCFG) + NV_XVE_DEVICE_CONTROL_STATUS (0x80), ENABLE_NO_SNOOP 11:11
        (Mask(NV_PCFG + 0x80, 1 << 11, 1 << 11),),
    ),
)


@dataclass(frozen=True)
class Played:
    """One access a scenario made, and what the filter did with it."""

    step: Step
    is_write: bool
    offset: int
    width: int
    value: int  # written, or read back
    result: Result


class ScenarioFailed(AssertionError):
    """The driver's own logic would fail here (a poll that never completes)."""


def run(scenario: Scenario, f: BarFilter) -> list[Played]:
    """Play `scenario` through `f` as its driver would; every access and its Result."""
    out: list[Played] = []

    def read(step: Step, offset: int, width: int) -> int:
        res = f.access(offset, width, False)
        out.append(Played(step, False, offset, width, res.value, res))
        return res.value

    def write(step: Step, offset: int, width: int, value: int) -> None:
        res = f.access(offset, width, True, value)
        out.append(Played(step, True, offset, width, value, res))

    for step in scenario.steps:
        if isinstance(step, Read):
            read(step, step.offset, step.width)
        elif isinstance(step, Write):
            write(step, step.offset, step.width, step.value)
        elif isinstance(step, Mask):
            old = read(step, step.offset, step.width)
            write(step, step.offset, step.width, (old & ~step.clear) | step.set)
        else:
            for _ in range(step.tries):
                if read(step, step.offset, step.width) & step.mask == step.want:
                    break
            else:
                raise ScenarioFailed(
                    f"{scenario.function}: {step.offset:#x} never read "
                    f"{step.want:#x} under mask {step.mask:#x}: the driver would time out"
                )
    return out
