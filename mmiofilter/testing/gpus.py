"""Simulated GPUs for tests, in plain Python: a spec (data) and a context manager that opens it.

A `GpuSpec` says which GPU (`gv100`, `gh100`), which units its device-info table lists, whether
the host applied NVIDIA's NVLink isolation sequence (GV100) and whether an FSP answers the
mailbox (GH100). It is plain data, so a hypothesis strategy can draw it and print it
(`mmiofilter.testing.device_strategies.gpu_specs`); `simulated_gpu(spec)` builds the device:
BAR0 as the register map sizes it, in a fake device (a memfd: `mmiofilter.testing.devices`),
the table written, and for GH100 a `SimFsp` behind the NV_PFSP mailbox registers. `attach()`
puts a filter in front of it the way a VMM does (`mmiofilter.devices.attach`: discovery reads
the table through the backend).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..backends import Backend, CallbackBackend
from ..devices import attach, load_policy_file
from ..devices.devinfo_encode import UnitSpec, table_words
from ..devices.pciconfig_build import build_config
from ..devices.policyfile import PolicyFile
from ..devices.profile import Resolved
from ..devices.regmap import RegisterMap, load_map
from ..filter import BarFilter
from ..simulated.fsp import SimFsp
from ..simulated.gv100 import (
    SimulatedBar,
    SimulatedConfig,
    apply_gv100_isolation,
    gv100_config_space,
)
from .devices import FakeDevice
from .filters import DEFAULT_PAGE_SIZE, _devices_of, backend_of

#: The families a `GpuSpec` can name: those with a simulated BAR0.
FAMILIES: tuple[str, ...] = ("gv100", "gh100")


@dataclass(frozen=True)
class GpuSpec:
    """What `simulated_gpu` builds. `units` are `(type_enum, base)` or `(type_enum, base,
    instance)` entries of the device-info table (type 18 is IOCTRL, an NVLink unit, on both
    chips: the maps' `device_info.ioctrl_type`)."""

    family: str
    units: tuple[UnitSpec, ...] = ()
    #: GV100: the host applied the NVLink isolation sequence before attaching the GPU.
    isolated: bool = True
    #: GH100: a simulated FSP answers the mailbox (else the mailbox is plain memory).
    fsp: bool = True

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"GPU family {self.family!r} is not one of {FAMILIES}")

    @property
    def policy_profile(self) -> str:
        """The name of the profile made for this GPU."""
        return f"nvidia-{self.family}"


class SimulatedGpu:
    """An open simulated GPU: `device` (the BAR0 memfd), `bar` (its `SimulatedBar` view, with
    the register map), `fsp` (GH100 with `spec.fsp`, else None), `config` (its PCI config space,
    as the VMM's config-space emulation would hold it: the target of the config mirror)."""

    def __init__(self, spec: GpuSpec) -> None:
        self.spec = spec
        self.regmap: RegisterMap = _map(spec.family)
        self.size = self.regmap.bar(0).size
        self.device = FakeDevice(self.size)
        self.config = SimulatedConfig(bytearray(_config_space(spec.family)))
        try:
            # A view, not an owner: the fake device keeps the memory alive for its filters.
            self.bar = SimulatedBar(self.device.fd, self.device.buf, self.regmap)
            if self.regmap.device_info is not None:
                for offset, word in table_words(self.regmap.device_info, spec.units).items():
                    self.bar.write32(offset, word)
            if spec.family == "gv100" and spec.isolated:
                apply_gv100_isolation(self.bar)
            self.fsp: SimFsp | None = (
                SimFsp(size=self.size) if spec.family == "gh100" and spec.fsp else None
            )
        except BaseException:
            self.device.close(warn=False)
            raise

    def __repr__(self) -> str:
        return f"SimulatedGpu({self.spec!r})"

    def read32(self, offset: int) -> int:
        return self.device.read32(offset)

    def write32(self, offset: int, value: int) -> None:
        self.device.write32(offset, value)

    def backend(self, kind: str = "memory") -> Backend:
        """How a filter reaches BAR0: "memory", "fd" or "callback" over the memfd. With an FSP,
        always a callback backend: mailbox registers go to the FSP, the rest to the memfd."""
        fsp = self.fsp
        if fsp is None:
            return backend_of(self.device, kind)
        plain = self.device.callback_backend()

        def read(offset: int, width: int) -> int:
            if fsp.touches_mailbox(offset, width):
                return fsp.read(offset, width)
            return plain.read(offset, width)

        def write(offset: int, width: int, value: int) -> None:
            if fsp.touches_mailbox(offset, width):
                fsp.write(offset, width, value)
            else:
                plain.write(offset, width, value)

        return self.device.adopt(CallbackBackend(read, write))

    def attach(
        self,
        policy: str | PolicyFile | None = None,
        *,
        backend: str = "memory",
        page_size: int | None = DEFAULT_PAGE_SIZE,
        ring_capacity: int = 1024,
        targets: Mapping[str, Backend] | None = None,
    ) -> tuple[BarFilter, Resolved]:
        """The filter of `policy` (a policy file's text or a `PolicyFile`; default: this GPU's
        profile with its defaults) over BAR0, with every rule resolved against this device;
        `targets` are redirect targets by name (default: `config`, this GPU's config space,
        which `config_mirror = "virtualize"` redirects the BAR0 mirror to)."""
        if policy is None:
            policy = f'profile = "{self.spec.policy_profile}"\n'
        pf = load_policy_file(policy) if isinstance(policy, str) else policy
        given = {"config": self.config.backend()} if targets is None else dict(targets)
        extra: dict[str, Any] = {"targets": given} if given else {}
        f, resolved = attach(
            pf,
            self.backend(backend),
            self.size,
            page_size=page_size,
            ring_capacity=ring_capacity,
            **extra,  # given only when there are some
        )
        _devices_of[f] = self.device
        return f, resolved

    def close(self) -> None:
        """Release BAR0 (now, or when the last filter over it goes)."""
        self.device.close(warn=False)

    def __enter__(self) -> SimulatedGpu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _config_space(family: str) -> bytes:
    """The 4 KiB config space of the family's first board (GH100: 10de:2330, H100 SXM5, a 3D
    controller as the V100; its capabilities are not modelled)."""
    if family == "gv100":
        return gv100_config_space()
    return build_config(0x10DE, 0x2330, class_code=0x030200, size=4096)


@cache
def _map(family: str) -> RegisterMap:
    """The shipped map of `family`, parsed once (a RegisterMap is immutable)."""
    return load_map(family)


@contextmanager
def simulated_gpu(spec: GpuSpec | str) -> Iterator[SimulatedGpu]:
    """The GPU `spec` describes (or a family name, with its defaults), released at the end of
    the block (or when the last filter over it goes)."""
    gpu = SimulatedGpu(GpuSpec(spec) if isinstance(spec, str) else spec)
    try:
        yield gpu
    finally:
        gpu.close()
