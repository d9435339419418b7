"""Hypothesis strategies for FSP mailbox traffic: what drivers send, and what a hostile guest
does to the mailbox registers in between (steps of `mmiofilter.testing.mailbox`).

Message payloads follow the public senders:
- COT (0x14): `NVDM_PAYLOAD_COT`, 860 packed bytes (open-gpu-kernel-modules
  kern_fsp_cot_payload.h; nouveau nvkm/subdev/fsp/gh100.c), sent on every boot.
- PRC (0x13): gpu-admin-tools `FspRpc` (nvidia_gpu_tools.py): dword 0 is the sub-message in
  bits 7:0, its scope in 15:8 (0x1 one-shot, 0x3 persistent, 0x2 for knobs), an argument in
  31:16: ECC 0x01 (`prc_ecc`), reset coupling 0x04 (`prc_couple_reset`), NVLink block mask
  0x0A with two more dwords (`prc_block_nvlinks`, a 64-bit link mask), knob read 0x0C and
  knob write 0x0D with the value in dword 1 (`prc_knob_read/write`; knob IDs gpu/prc.py).
- INFOROM (0x17): `inforom_read` packs `<BB3sHH`: 0x03, 0xFF, object name, size, offset.
- FIRMWARE_UPDATE (0x12): an opaque image, often several packets long.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

from hypothesis import strategies as st

from ..guards import FSP_EMEM_CHANNELS, NVDM_TYPES, FspGuard
from ..simulated.fsp import AINCR, AINCW, CHANNEL_BYTES, EOM, SOM, mctp_header, message_header
from .mailbox import Raw, Send, Step

COT, PRC, INFOROM, FIRMWARE_UPDATE = (
    NVDM_TYPES[n] for n in ("cot", "prc", "inforom", "firmware_update")
)
CAPS_QUERY = NVDM_TYPES["caps_query"]
#: sizeof(NVDM_PAYLOAD_COT): version, size, gspFmcSysmemOffset, frtsSysmemOffset,
#: frtsSysmemSize, frtsVidmemOffset, frtsVidmemSize, hash384[12], publicKey[96],
#: signature[96], gspBootArgsSysmemOffset.
COT_FORMAT = "<HHQQIQI12I96I96IQ"
COT_BYTES = struct.calcsize(COT_FORMAT)
#: PRC sub-messages (gpu-admin-tools FspRpc).
PRC_ECC, PRC_RESET_COUPLING, PRC_NVLINK, PRC_KNOB_READ, PRC_KNOB_WRITE = (
    0x01,
    0x04,
    0x0A,
    0x0C,
    0x0D,
)
PRC_ONE_SHOT, PRC_KNOB_SCOPE, PRC_PERSISTENT = 0x1, 0x2, 0x3
#: Knob IDs with a name in gpu-admin-tools gpu/prc.py (CCD, CCM, BAR0 decoupler, reset
#: coupling, vGPU, PPCIe, CECA and their ALLOW_INB companions).
PRC_KNOBS: tuple[int, ...] = (5, 6, 7, 8, 9, 10, 35, 36, 41, 44, 45, 46, 47)

_SEED = st.integers(0, 2**32 - 1)


def _bytes_from(seed: int, n: int) -> bytes:
    # One integer instead of n drawn bytes: cheap to generate, shrinks to seed 0.
    return random.Random(seed).randbytes(n)


def _u32s(*words: int) -> bytes:
    return b"".join((w & 0xFFFFFFFF).to_bytes(4, "little") for w in words)


@st.composite
def cot_payloads(draw: st.DrawFn) -> bytes:
    """An `NVDM_PAYLOAD_COT` as the driver fills it: sizes and sysmem/vidmem offsets, then the
    hash, key and signature (random bytes here)."""
    page = 4096
    head = struct.pack(
        "<HHQQIQI",
        draw(st.sampled_from((1, 2))),
        COT_BYTES,
        draw(st.integers(0, 2**40 // page)) * page,
        draw(st.integers(0, 2**40 // page)) * page,
        draw(st.sampled_from((0x100000, 0x200000))),
        draw(st.integers(0, 64)) * 0x100000,
        draw(st.sampled_from((0x100000, 0x200000))),
    )
    auth = _bytes_from(draw(_SEED), (12 + 96 + 96) * 4)
    tail = struct.pack("<Q", draw(st.integers(0, 2**40 // page)) * page)
    return head + auth + tail


@st.composite
def prc_payloads(draw: st.DrawFn, sub_messages: Sequence[int] | None = None) -> bytes:
    """A PRC request as gpu-admin-tools builds it; `sub_messages` limits which (e.g. only the
    knob read 0x0C that the open driver sends)."""
    subs = tuple(sub_messages) if sub_messages else (
        PRC_KNOB_READ, PRC_ECC, PRC_RESET_COUPLING, PRC_NVLINK, PRC_KNOB_WRITE,
    )  # fmt: skip
    sub = draw(st.sampled_from(subs))
    scope = draw(st.sampled_from((PRC_ONE_SHOT, PRC_PERSISTENT)))
    if sub == PRC_ECC:
        return _u32s(sub | scope << 8 | draw(st.integers(0, 1)) << 16)
    if sub == PRC_RESET_COUPLING:
        return _u32s(sub | PRC_ONE_SHOT << 8 | 1 << 16)
    if sub == PRC_NVLINK:
        mask = draw(st.integers(0, (1 << 18) - 1))  # 18 links on H100
        return _u32s(sub | scope << 8 | (mask & 0xFFFF) << 16, mask >> 16, mask >> 48)
    knob = draw(st.sampled_from(PRC_KNOBS))
    word = sub | PRC_KNOB_SCOPE << 8 | knob << 16
    if sub == PRC_KNOB_READ:
        return _u32s(word)
    return _u32s(word, draw(st.integers(0, 0xFFFF)))


@st.composite
def inforom_payloads(draw: st.DrawFn) -> bytes:
    """An InfoROM object read as gpu-admin-tools `inforom_read` packs it."""
    name = draw(st.sampled_from((b"OBD", b"ECC", b"PWR", b"RRL", b"BBX")))
    return struct.pack("<BB3sHH", 0x03, 0xFF, name, draw(st.integers(0, 4096)), 0)


def firmware_update_payloads() -> st.SearchStrategy[bytes]:
    """An opaque firmware image chunk: one packet or several."""
    sizes = st.sampled_from((8, 100, 1016, 1017, 3000, 5000))
    return st.builds(_bytes_from, _SEED, sizes)


def fsp_messages(*, types: Sequence[int] | None = None) -> st.SearchStrategy[tuple[int, bytes]]:
    """`(nvdm_type, payload)` of the messages a driver or admin tool sends: COT, PRC, INFOROM,
    CAPS_QUERY, FIRMWARE_UPDATE (or only `types` of them)."""
    by_type: dict[int, st.SearchStrategy[bytes]] = {
        COT: cot_payloads(),
        PRC: prc_payloads(),
        INFOROM: inforom_payloads(),
        CAPS_QUERY: st.just(b""),
        FIRMWARE_UPDATE: firmware_update_payloads(),
    }
    chosen = [t for t in by_type if types is None or t in types]
    return st.sampled_from(chosen).flatmap(lambda t: st.tuples(st.just(t), by_type[t]))


def driver_sends(
    *, channels: Sequence[int] = (0,), types: Sequence[int] | None = None
) -> st.SearchStrategy[Send]:
    """One message a well-behaved driver sends and whose reply it reads. The open driver
    uses channel 0; gpu-admin-tools channels 1 and 2."""
    return st.builds(
        lambda m, c: Send(m[0], m[1], channel=c),
        fsp_messages(types=types),
        st.sampled_from(tuple(channels)),
    )


def _guard_or_default(guard: FspGuard | None) -> FspGuard:
    return guard if guard is not None else FspGuard.at("fsp")


@st.composite
def mailbox_accesses(draw: st.DrawFn, guard: FspGuard | None = None) -> Raw:
    """A raw access by a hostile guest to the guard's registers: EMEMC with any address,
    auto-increment bits and stray bits; EMEMD with header words of any NVDM type; QUEUE_TAIL
    and QUEUE_HEAD (the doorbell) at any channel offset; MSGQ writes; and sometimes the wrong
    width or an unaligned offset, which the guard must refuse whole."""
    g = _guard_or_default(guard)
    port = draw(st.integers(0, g.channels - 1))
    block = draw(st.sampled_from(("ememc", "ememd", "queue", "msgq")))
    base = {"ememc": g.emem, "ememd": g.emem + 4, "queue": g.queue, "msgq": g.msgq}[block]
    reg = base + 8 * port + (draw(st.sampled_from((0, 4))) if block in ("queue", "msgq") else 0)
    is_write = draw(st.integers(0, 3)) > 0
    channel_at = draw(st.integers(0, FSP_EMEM_CHANNELS - 1)) * CHANNEL_BYTES
    if block == "ememc":
        value = channel_at + 4 * draw(st.integers(0, 255))
        value |= draw(st.sampled_from((AINCW, AINCR, 0, AINCW | AINCR, 1 << 31, 1)))
    elif block == "ememd":
        value = draw(
            st.one_of(
                st.sampled_from(
                    (
                        mctp_header(True, True, 0),
                        SOM,
                        EOM,
                        *(message_header(t) for t in sorted(NVDM_TYPES.values())),
                    )
                ),
                st.integers(0, 0xFFFFFFFF),
            )
        )
    else:
        value = channel_at + 4 * draw(st.integers(0, CHANNEL_BYTES // 4 - 1))
    width, offset = 4, reg
    if draw(st.integers(0, 7)) == 0:  # the wrong width or an unaligned offset
        width = draw(st.sampled_from((1, 2, 8)))
        offset = reg + draw(st.integers(-3, 3))
    value &= (1 << (8 * width)) - 1
    return Raw(offset, width, is_write, value if is_write else 0)


@st.composite
def hostile_sends(
    draw: st.DrawFn, guard: FspGuard | None = None, *, max_injections: int = 4
) -> Send:
    """A driver's send with raw accesses of another vCPU interleaved at random points of it
    (before any of its register accesses, or after the last)."""
    g = _guard_or_default(guard)
    send = draw(driver_sends(channels=tuple(range(min(3, g.channels)))))
    injections = draw(
        st.lists(st.tuples(st.integers(0, 40), mailbox_accesses(g)), max_size=max_injections)
    )
    return Send(
        send.nvdm_type,
        send.payload,
        channel=send.channel,
        read_reply=draw(st.integers(0, 7)) > 0,
        injections=tuple(sorted(injections, key=lambda x: x[0])),
    )


def mailbox_sequences(
    guard: FspGuard | None = None, *, max_steps: int = 6
) -> st.SearchStrategy[list[Step]]:
    """Scenarios for `run_mailbox`: driver sends, hostile sends and raw accesses, in any
    order. Whatever the order, the guard must hold (`assert_fsp_guarded`)."""
    step: st.SearchStrategy[Step] = st.one_of(
        driver_sends(), hostile_sends(guard), mailbox_accesses(guard)
    )
    return st.lists(step, max_size=max_steps)
