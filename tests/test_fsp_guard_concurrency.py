"""The FSP guard under concurrent vCPUs and policy swaps.

Four driver threads, each on its own queue, port and EMEM channel, send boot and
firmware-update messages through one filter while another thread swaps the policy (the guard
stays on the same registers, its denied types change, FIRMWARE_UPDATE always among them).
Every boot message must reach the simulated FSP intact, and no firmware update may.
"""

from __future__ import annotations

import threading

import mmiofilter as mf
from mmiofilter.simulated.fsp import ERR_NOT_SUPPORTED, ERR_OK, FspDriver, SimFsp

BAR = 16 << 20
FW, COT, PRC, INFOROM = 0x12, 0x14, 0x13, 0x17
THREADS, ROUNDS = 4, 25


def policy(k: int) -> mf.Policy:
    deny = (FW, INFOROM) if k % 2 else (FW,)
    return mf.Policy(
        [
            mf.Rule("fsp-range", 0x8F0000, 0x4000, "audit"),
            mf.FspGuard.at(f"fsp{k % 3}", deny_types=deny, priority=1),
        ]
    )


def test_concurrent_drivers_and_swaps() -> None:
    fsp = SimFsp()
    f = mf.BarFilter(BAR, policy(0), fsp.backend(), page_size=4096, ring_capacity=64)
    errors: list[BaseException] = []
    sent: list[tuple[int, bytes]] = []
    stop = threading.Event()
    swaps = 0

    def driver(q: int) -> None:
        drv = FspDriver(f, channel=q, offset=1024 * q, polls=10_000)
        try:
            for i in range(ROUNDS):
                body = bytes([q, i]) * (50 + 37 * i % 400)
                nvdm = (COT, PRC, FW)[i % 3]
                resp = drv.transact(nvdm, body)
                want = ERR_NOT_SUPPORTED if nvdm == FW else ERR_OK
                assert (resp.command_type, resp.error_code) == (nvdm, want), (q, i, resp)
                if nvdm != FW:
                    sent.append((nvdm, body))
        except BaseException as e:
            errors.append(e)

    def swapper() -> None:
        nonlocal swaps
        k = 1
        try:
            while not stop.is_set():
                f.update(policy(k))
                swaps += 1
                k += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=driver, args=(q,)) for q in range(THREADS)]
    s = threading.Thread(target=swapper)
    s.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    s.join(30)
    assert errors == []
    assert swaps > 0
    got = sorted((m.nvdm_type, m.body) for m in fsp.messages)
    # bodies are padded to whole dwords on the way
    assert got == sorted((n, b + bytes(-(len(b) + 8) % 4)) for n, b in sent)
    assert FW not in fsp.types_received()
    assert fsp.odd_accesses == []
