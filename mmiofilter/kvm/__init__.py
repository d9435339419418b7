"""Embedding the filter in a KVM virtual machine monitor (Linux, x86).

`Machine` creates a VM with RAM and the guest firmware (`firmware.asm`, assembled with nasm),
places filtered BARs at guest-physical addresses — direct areas as memory slots, trapped pages as
MMIO exits answered by the C vCPU loop — and runs one thread per vCPU. `Program` is what the
guest does: MMIO reads, writes and timed read loops, reported on an I/O port.
"""

from .firmware import FirmwareError
from .machine import BarWindow, GuestError, KvmUnavailable, Machine, RunResult, kvm_available
from .program import Line, Program, parse_transcript

__all__ = [
    "BarWindow",
    "FirmwareError",
    "GuestError",
    "KvmUnavailable",
    "Line",
    "Machine",
    "Program",
    "RunResult",
    "kvm_available",
    "parse_transcript",
]
