"""What a device source gives the server: BARs, a config space, interrupts, DMA, reset.

A source is the device side only; the server puts a `BarFilter` in front of every BAR and
answers the protocol. Two sources exist: `simulated.SimulatedSource` (the project's simulated
GPUs) and `vfio.VfioSource` (a real device through the Linux VFIO API).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..backends import Backend


class SourceError(RuntimeError):
    """The device cannot be opened or used: the message says what and where."""


@dataclass(frozen=True)
class IrqInfo:
    count: int
    flags: int


class ConfigAccess(Protocol):
    """A config space: byte-exact reads and writes of any length inside it."""

    @property
    def size(self) -> int: ...

    def read_bytes(self, offset: int, count: int) -> bytes: ...

    def write_bytes(self, offset: int, data: bytes) -> None: ...


class DeviceSource(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def config(self) -> ConfigAccess: ...

    def bar_sizes(self) -> dict[int, int]:
        """Implemented BARs: index -> size."""
        ...

    def bar_backend(self, index: int) -> Backend:
        """The device behind BAR `index`, for the filter."""
        ...

    def config_target(self) -> Backend:
        """The `config` redirect target: the same config space as `config`."""
        ...

    @property
    def can_export(self) -> bool:
        """Whether `export` can hand the client an fd that maps only what it is given."""
        ...

    def export(self, index: int, areas: Sequence[tuple[int, int]]) -> int:
        """An fd the client may mmap for `areas` of BAR `index` (at their BAR offsets). The
        server still owns the fd."""
        ...

    def irqs(self) -> dict[int, IrqInfo]:
        """IRQ index -> count and VFIO_IRQ_INFO flags."""
        ...

    def set_irqs(self, index: int, start: int, fds: Sequence[int]) -> None:
        """Signal sub-indices start.. of `index` on these eventfds (-1: none)."""
        ...

    def irq_action(self, index: int, sub: int, action: int) -> None:
        """A client's MASK, UNMASK or TRIGGER (the VFIO_IRQ_SET_ACTION_* bit) of one
        sub-index, without data: a real device's INTx must be unmasked after each interrupt."""
        ...

    def dma_map(self, iova: int, size: int, vaddr: int, flags: int) -> None: ...

    def dma_unmap(self, iova: int, size: int) -> None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...
