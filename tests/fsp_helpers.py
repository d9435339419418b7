"""What the FSP guard tests (test_fsp_guard.py, test_fsp_guard_attacks.py,
test_fsp_guard_redteam.py) share: the GH100 mailbox registers under short names, a filter of the
guard alone or of the GH100 profile over the simulated FSP, and the steps of sending a packet."""

from __future__ import annotations

import mmiofilter as mf
from mmiofilter.devices import load_policy_file
from mmiofilter.guards import GH100_EMEMC0, GH100_MSGQ_HEAD0, GH100_QUEUE_HEAD0
from mmiofilter.simulated.fsp import AINCW, SimFsp

BAR = 16 << 20
FW, PRC, COT = 0x12, 0x13, 0x14
# EMEMD(i), QUEUE_TAIL(i), MSGQ_TAIL(i) sit 4 past EMEMC(i), QUEUE_HEAD(i), MSGQ_HEAD(i), and
# index i is 8 * i further (open-gpu-kernel-modules hopper/gh100/dev_fsp_pri.h).
EMEMC, EMEMD = GH100_EMEMC0, GH100_EMEMC0 + 4
QHEAD, QTAIL = GH100_QUEUE_HEAD0, GH100_QUEUE_HEAD0 + 4
MHEAD, MTAIL = GH100_MSGQ_HEAD0, GH100_MSGQ_HEAD0 + 4
ONE_SHOT, KNOB, PERSISTENT = 0x1, 0x2, 0x3
#: An audit rule over the FSP's registers, under the guard: what the guard leaves is counted.
AUDIT = mf.Rule("fsp-range", 0x8F0000, 0x4000, "audit")


def guarded(fsp: SimFsp, **kw: object) -> mf.BarFilter:
    """The simulated FSP behind `FspGuard.at("fsp", **kw)` over AUDIT, nothing else."""
    guard = mf.FspGuard.at("fsp", priority=1, **kw)  # type: ignore[arg-type]
    return mf.BarFilter(BAR, mf.Policy([AUDIT, guard]), fsp.backend(), page_size=4096)


def gh100_policy(options: str = "") -> mf.Policy:
    return load_policy_file(f'profile = "nvidia-gh100"\n[options]\n{options}\n').resolve(None)[0]


def gh100(backend: SimFsp | mf.Backend, options: str = "") -> mf.BarFilter:
    """A filter under the GH100 profile's policy (defaults: nvlink isolate, persistent_settings
    deny, firmware_update deny) over the simulated FSP (or a backend wrapping it)."""
    config = mf.MemoryBackend(bytearray(4096))  # the VMM's config space: the mirror's target
    be = backend.backend() if isinstance(backend, SimFsp) else backend
    return mf.BarFilter(BAR, gh100_policy(options), be, page_size=4096, targets={"config": config})


def words_of(packet: bytes) -> list[int]:
    padded = packet + bytes(-len(packet) % 4)
    return [int.from_bytes(padded[i : i + 4], "little") for i in range(0, len(padded), 4)]


def write_words(f: mf.BarFilter, port: int, at: int, words: list[int]) -> list[mf.Outcome]:
    f.write(EMEMC + 8 * port, 4, at | AINCW)
    return [f.write(EMEMD + 8 * port, 4, w) for w in words]


def ring(f: mf.BarFilter, queue: int, head: int, tail: int) -> mf.Outcome:
    f.write(QTAIL + 8 * queue, 4, tail)
    return f.write(QHEAD + 8 * queue, 4, head)


def firmware_update_taken(fsp: SimFsp) -> bool:
    return FW in fsp.types_received() or any(m.nvdm_type == FW for m in fsp.messages)


def prc(sub: int, scope: int, extra: bytes = b"") -> bytes:
    """A PRC payload as gpu-admin-tools builds it: sub-message, scope, then 16 bits of
    argument in the first dword (FspRpc.prc_*)."""
    return bytes([sub, scope, 0, 0]) + extra
