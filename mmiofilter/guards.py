"""Guards: stateful rules for protocols carried over MMIO (docs/fsp-guard.md).

A guard is a rule whose action is "guard": it owns a fixed set of registers and the C core
hands it every access to them, in order, to decide from the protocol state it keeps. The first
guard follows NVIDIA's FSP mailbox and refuses firmware-update messages (docs/fsp-guard.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._core import ffi, lib
from .errors import PolicyError, is_int, shown
from .rules import Rule

#: NV_PFSP registers of GH100 (open-gpu-kernel-modules, hopper/gh100/dev_fsp_pri.h).
GH100_EMEMC0 = 0x8F2AC0
GH100_QUEUE_HEAD0 = 0x8F2C00
GH100_MSGQ_HEAD0 = 0x8F2C80
#: GH100's EMEM has eight channels (FSP_EMEM_CHANNEL_MAX, gh100 dev_fsp_addendum.h); the
#: driver's is channel 0 (FSP_EMEM_CHANNEL_RM), gpu-admin-tools uses 1 and 2, and the PMU and
#: SOE use channel 4 (FSP_EMEM_CHANNEL_PMU_SOE, at 4096). The guest gets 0..3 by default:
#: never channel 4, whose packets and replies are the GPU's own.
FSP_EMEM_CHANNELS = 8
FSP_CHANNEL_PMU_SOE = 4
FSP_CHANNELS = FSP_CHANNEL_PMU_SOE
#: FSP_EMEM_CHANNEL_RM_SIZE (fsp_emem_channels.h): the largest packet the driver sends.
FSP_MAX_PACKET = 1024
#: NVDM types (open-gpu-kernel-modules fsp_nvdm_format.h).
NVDM_TYPES: dict[str, int] = {
    "reset": 0x04,
    "hulk": 0x11,
    "firmware_update": 0x12,
    "prc": 0x13,
    "cot": 0x14,
    "fsp_response": 0x15,
    "caps_query": 0x16,
    "inforom": 0x17,
    "smbpbi": 0x18,
    "romread": 0x1A,
    "uefi_rm": 0x1C,
    "uefi_xtl_debug_intr": 0x1D,
    "tnvl": 0x1F,
    "clock_boost": 0x20,
    "fsp_gsp_comm": 0x21,
}
NVDM_FIRMWARE_UPDATE = NVDM_TYPES["firmware_update"]
NVDM_COT = NVDM_TYPES["cot"]
NVDM_PRC = NVDM_TYPES["prc"]
#: PRC sub-messages, packet byte 8 of a PRC message (byte 9 is the scope: 0x1 one-shot, 0x2
#: for knobs, 0x3 persistent), as NVIDIA's gpu-admin-tools sends them (nvidia_gpu_tools.py
#: FspRpc.prc_ecc, prc_block_nvlinks, prc_couple_reset, prc_knob_read, prc_knob_write).
PRC_SUBMESSAGES: dict[str, int] = {
    "ecc": 0x01,
    "reset_coupling": 0x04,
    "nvlink_mask": 0x0A,
    "knob_read": 0x0C,
    "knob_write": 0x0D,
}
#: The core's limits, from the header (mmiofilter.h).
_MAX_CHANNELS = int(lib.MF_FSP_MAX_CHANNELS)
_PORTS = int(lib.MF_FSP_PORTS)
_EMEM_BYTES = int(lib.MF_FSP_EMEM_BYTES)
#: The smallest FSP reply: MCTP and message headers, taskId, commandNvdmType, errorCode.
_REPLY_BYTES = 20


def _named_byte(v: object, names: Mapping[str, int], what: str) -> int:
    if isinstance(v, str) and v.lower() in names:
        return names[v.lower()]
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFF:
        return v
    raise PolicyError(f"{what} {shown(v)} is neither 0..255 nor one of {', '.join(sorted(names))}")


def nvdm_type(v: object) -> int:
    """An NVDM type given as a number or one of the NVDM_TYPES names."""
    return _named_byte(v, NVDM_TYPES, "NVDM type")


def prc_submessage(v: object) -> int:
    """A PRC sub-message given as a number or one of the PRC_SUBMESSAGES names."""
    return _named_byte(v, PRC_SUBMESSAGES, "PRC sub-message")


def _bitmap(values: Iterable[int]) -> bytes:
    """A 256-bit set as the core takes it: bit n % 8 of byte n // 8."""
    bits = bytearray(32)
    for n in values:
        bits[n // 8] |= 1 << (n % 8)
    return bytes(bits)


@dataclass(frozen=True)
class Guard(Rule):
    """A guard rule: each kind knows its `struct mf_guard_spec` (the binding asks it to fill
    one, whatever the kind)."""

    allowed_actions: ClassVar[tuple[str, ...]] = ("guard",)
    kind: ClassVar[str] = ""

    def fill_spec(self, spec: Any) -> None:
        """Write the guard's kind and parameters into a cffi `struct mf_guard_spec *`."""
        raise NotImplementedError


@dataclass(frozen=True)
class FspGuard(Guard):
    """The FSP mailbox guard. Build it with `FspGuard.at(name, ...)`, which derives the
    rule's range from the registers; `deny_types` are the NVDM types whose messages never
    reach the FSP, `deny_prc` the PRC sub-messages (packet byte 8 of an NVDM 0x13 message).
    The guard owns the registers of all eight ports; `channels` says how many the guest may
    use (channel q is EMEM [q * max_packet, (q + 1) * max_packet)); every access to the others
    is refused. The default, 4, keeps channel 4 (the PMU's and SOE's on GH100) from the guest."""

    emem: int = field(default=GH100_EMEMC0, kw_only=True)
    queue: int = field(default=GH100_QUEUE_HEAD0, kw_only=True)
    msgq: int = field(default=GH100_MSGQ_HEAD0, kw_only=True)
    channels: int = field(default=FSP_CHANNELS, kw_only=True)
    max_packet: int = field(default=FSP_MAX_PACKET, kw_only=True)
    deny_types: frozenset[int] = field(default=frozenset({NVDM_FIRMWARE_UPDATE}), kw_only=True)
    deny_prc: frozenset[int] = field(default=frozenset(), kw_only=True)

    kind: ClassVar[str] = "fsp"

    @classmethod
    def at(
        cls,
        name: str,
        *,
        emem: int = GH100_EMEMC0,
        queue: int = GH100_QUEUE_HEAD0,
        msgq: int = GH100_MSGQ_HEAD0,
        channels: int = FSP_CHANNELS,
        max_packet: int = FSP_MAX_PACKET,
        deny_types: Iterable[int | str] = (NVDM_FIRMWARE_UPDATE,),
        deny_prc: Iterable[int | str] = (),
        priority: int = 0,
        bar: int = 0,
    ) -> FspGuard:
        where = f"guard {name!r}"
        for fname, v in (("emem", emem), ("queue", queue), ("msgq", msgq)):
            if not is_int(v) or v < 0 or v % 4:
                raise PolicyError(f"{where}: {fname} must be a 4-aligned offset, not {shown(v)}")
        if not is_int(channels) or not 1 <= channels <= _MAX_CHANNELS:
            raise PolicyError(
                f"{where}: channels must be 1..{_MAX_CHANNELS}, not {shown(channels)}"
            )
        if isinstance(deny_types, (str, bytes)) or not isinstance(deny_types, Iterable):
            raise PolicyError(f"{where}: deny_types must be a list of NVDM types")
        try:
            denied = frozenset(nvdm_type(t) for t in deny_types)
        except PolicyError as e:
            raise PolicyError(f"{where}: deny_types: {e}") from None
        if isinstance(deny_prc, (str, bytes)) or not isinstance(deny_prc, Iterable):
            raise PolicyError(f"{where}: deny_prc must be a list of PRC sub-messages")
        try:
            prc = frozenset(prc_submessage(t) for t in deny_prc)
        except PolicyError as e:
            raise PolicyError(f"{where}: deny_prc: {e}") from None
        lo = min(emem, queue, msgq)
        hi = max(emem, queue, msgq) + 8 * _PORTS
        return cls(
            name,
            lo,
            hi - lo,
            "guard",
            emem=emem,
            queue=queue,
            msgq=msgq,
            channels=channels,
            max_packet=max_packet,
            deny_types=denied,
            deny_prc=prc,
            priority=priority,
            bar=bar,
        )

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"guard {self.name!r}"
        if not is_int(self.max_packet) or not (
            _REPLY_BYTES <= self.max_packet <= _EMEM_BYTES and self.max_packet % 4 == 0
        ):
            raise PolicyError(
                f"{where}: max_packet must be a multiple of 4 in {_REPLY_BYTES}..{_EMEM_BYTES} "
                "(a channel holds a packet and the FSP's reply), "
                f"not {shown(self.max_packet)}"
            )
        if not is_int(self.channels) or not 1 <= self.channels <= _MAX_CHANNELS:
            raise PolicyError(
                f"{where}: channels must be 1..{_MAX_CHANNELS}, not {shown(self.channels)}"
            )
        if self.channels * self.max_packet > _EMEM_BYTES:
            raise PolicyError(
                f"{where}: {self.channels} channels of {self.max_packet} bytes exceed the "
                f"{_EMEM_BYTES}-byte EMEM"
            )
        blocks = self.register_ranges()
        for (_, end), (start, _) in itertools.pairwise(blocks):
            if start < end:
                raise PolicyError(f"{where}: the EMEM, queue and message-queue blocks overlap")
        if (self.start, self.end) != (blocks[0][0], blocks[-1][1]):
            raise PolicyError(
                f"{where}: range [{self.start:#x}, {self.end:#x}) is not the registers' span "
                f"[{blocks[0][0]:#x}, {blocks[-1][1]:#x}): build it with FspGuard.at()"
            )
        for name, values in (("deny_types", self.deny_types), ("deny_prc", self.deny_prc)):
            if not isinstance(values, frozenset) or not all(
                is_int(t) and 0 <= t <= 0xFF for t in values
            ):
                raise PolicyError(f"{where}: {name} must be a frozenset of 0..255")

    def weaknesses(self) -> list[str]:
        if self.channels <= FSP_CHANNEL_PMU_SOE:
            return []
        return [
            f"guard {self.name!r}: channels = {self.channels} gives the guest channel "
            f"{FSP_CHANNEL_PMU_SOE}, which GH100's PMU and SOE use to talk to the FSP "
            "(open-gpu-kernel-modules gh100 dev_fsp_addendum.h): the guest could rewrite "
            f"their packets and consume their replies (use channels <= {FSP_CHANNEL_PMU_SOE})"
        ]

    def registers_bases(self) -> tuple[int, int, int]:
        return (self.emem, self.queue, self.msgq)

    def register_ranges(self) -> list[tuple[int, int]]:
        """The byte ranges the guard owns: [start, end) per register block, all 8 ports."""
        return sorted((b, b + 8 * _PORTS) for b in self.registers_bases())

    def deny_bitmap(self) -> bytes:
        """`struct mf_fsp_params.deny`: bit t % 8 of byte t // 8 for each refused type."""
        return _bitmap(self.deny_types)

    def prc_bitmap(self) -> bytes:
        """`struct mf_fsp_params.prc_deny`: the refused PRC sub-messages, likewise."""
        return _bitmap(self.deny_prc)

    def fill_spec(self, spec: Any) -> None:
        spec.kind = lib.MF_GUARD_FSP
        p = spec.fsp
        p.emem, p.queue, p.msgq = self.emem, self.queue, self.msgq
        p.channels, p.max_packet = self.channels, self.max_packet
        ffi.memmove(p.deny, self.deny_bitmap(), 32)
        ffi.memmove(p.prc_deny, self.prc_bitmap(), 32)
