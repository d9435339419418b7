"""Several vCPU threads in the core while another thread swaps policies.

Each policy k answers with values that name k (its fill byte and its emulated value), so a
result that mixes two policies, or a batch that straddles an update, is visible. The readers
run in C with the GIL released (cffi), so they really overlap with the updates.
"""

from __future__ import annotations

import threading

import mmiofilter as mf
from mmiofilter import Outcome, Rule

UPDATES = 2000


def policy(k: int) -> mf.Policy:
    rules = [
        Rule("deny", 0, 4, "deny"),
        Rule("emu", 0x10, 8, "emulate", value=0x0101010101010101 * k),
        # the layout changes with k, so tables really differ in shape
        Rule(f"extra{k % 7}", 0x1000 * (1 + k % 7), 4, "readonly"),
    ]
    return mf.Policy(rules, fill=k, partial="split")


def test_accesses_see_one_whole_policy_while_it_is_swapped() -> None:
    buf = bytearray(0x10000)
    buf[4:8] = b"\xaa\xbb\xcc\xdd"
    f = mf.BarFilter(0x10000, policy(1), mf.MemoryBackend(buf), page_size=4096, ring_capacity=16)
    stop = threading.Event()
    failures: list[str] = []
    seen: set[int] = set()

    def reader() -> None:
        batch = [(0, 8, False, 0), (0x10, 8, False, 0), (0x12, 2, True, 0)] * 50
        while not stop.is_set():
            for i in range(0, len(batch), 3):
                r = f.access_many(batch[i : i + 3])
                k = r[0].value & 0xFF
                want = [
                    (Outcome.PARTIAL, 0xDDCCBBAA_00000000 | (0x01010101 * k)),
                    (Outcome.EMULATED, 0x0101010101010101 * k),
                    (Outcome.BLOCKED, 0),
                ]
                got = [(x.outcome, x.value) for x in r]
                if got != want:
                    failures.append(f"torn batch: {got} for policy {k}")
                seen.add(k)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(UPDATES):
            f.update(policy(2 + i % 250))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert len(seen) > 1  # the readers really ran across updates
    # the ring stayed bounded and accounted for every event
    events = f.drain_events()
    assert len(events) <= 16
    total = events[-1].seq + 1 if events else 0
    assert f.dropped_events == total - len(events)
    # counters of rules present in every policy carried across all updates
    c = f.counters()
    assert c["deny"] >= 1 and c["emu"] >= 1


def test_update_publishes_a_new_layout() -> None:
    f = mf.BarFilter(0x4000, mf.Policy([]), mf.MemoryBackend(bytearray(0x4000)), page_size=4096)
    assert f.layout.direct == [(0, 0x4000)]
    f.update(mf.Policy([Rule("x", 0x1000, 4, "deny")]))
    assert f.layout.direct == [(0, 0x1000), (0x2000, 0x2000)]
    assert f.read(0x1000, 4) == 0xFFFFFFFF
    f.update(mf.Policy([Rule("x", 0x1000, 4, "allow")]))
    assert f.layout.direct == [(0, 0x4000)]
    assert f.counters() == {"x": 1}
