"""vCPU threads in the core while another thread swaps policies 5,000 times.

Every policy k of the cycle names itself in everything an access can return: its fill byte, its
emulated value, the forced bits of its mask, and the page of a rule that moves with k (so its
layout and its rule names differ too). The reference model computes, for every k, what each
access returns and records; a batch's results must then equal the model's for exactly one k,
which is what "each batch sees one whole policy" means, and a single access must name exactly
one k. A result stitched from two policies, or from a table being freed, matches none.

Three threads access (`BarFilter.access_many`, the raw `mf_access_batch`, and single accesses
through both), one swaps policies, and one reads counters, the layout and the event ring the
whole time. The ring is small so it overflows; at the end every event the accesses caused is
drained, dropped or pending, and the counters of the rules every policy shares (carried across
5,000 updates) are exact.

cffi releases the GIL around each C call, so the accesses really overlap the updates in C.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmiofilter._core import ffi, lib

import mmiofilter as mf
from mmiofilter import Outcome, Rule
from mmiofilter._binding import OUTCOME_BY_CODE
from mmiofilter.testing import ModelDevice, ModelFilter, compute_layout

Access = tuple[int, int, bool, int]
Got = tuple[Outcome, int]
EventKey = tuple[int, int, bool, int, Outcome, str]  # an event without its seq and bar

UPDATES = 5000
DEADLINE_S = 20.0  # at most this long swapping policies (see updater)
PAUSE_S = 0.0002
#: Policies in the cycle. The fill is one byte, so at most 256 can be told apart by it.
K = 64
SIZE = 0x100000
PAGE = 4096
RING = 32
DENY, EMU, MASK = 0x0, 0x10, 0x20
MOVING = 0x1000  # policy k's moving rule sits on page 1 + k
MOVING_SIZE = 16
#: The guest's write to the mask register: its top byte is never one the mask forces.
MASK_WRITE = 0xFFABCDEF
PROBE_WRITE = 0x5A5A5A5A


def emulated(k: int) -> int:
    return 0xE0E0_0000_0000_0000 | k << 24 | k


def policy(k: int) -> mf.Policy:
    rules = [
        Rule("deny", DENY, 4, "deny"),
        Rule("emu", EMU, 8, "emulate", value=emulated(k)),
        Rule("mask", MASK, 4, "mask", mask=0xFF000000, value=k << 24),
        Rule(f"moving-{k}", MOVING + PAGE * k, MOVING_SIZE, "deny"),
    ]
    return mf.Policy(rules, fill=k, partial="split")


def moving_page(j: int) -> int:
    return MOVING + PAGE * j


#: Accesses that each name the policy on their own.
IDENTIFYING: list[Access] = [
    (DENY, 4, False, 0),  # the fill
    (DENY, 8, False, 0),  # split: fill, then device bytes
    (EMU, 8, False, 0),  # the emulated value
    (MASK, 4, True, MASK_WRITE),  # the forced bits
]
#: Probes of every page a moving rule can sit on: a read and a write (at different bytes, so
#: that the writes never change what the reads return). Exactly the pair of policy k's own
#: page is blocked.
PROBES: list[Access] = [
    acc
    for j in range(K)
    for acc in ((moving_page(j), 4, False, 0), (moving_page(j) + 8, 4, True, PROBE_WRITE))
]
#: A write every policy blocks alike (it names k only in counters and events, through the
#: batch around it).
BLOCKED_WRITE: Access = (EMU + 2, 2, True, 0xFFFF)
BATCH: list[Access] = [*IDENTIFYING, BLOCKED_WRITE, *PROBES]


def device_byte(offset: int) -> int:
    """What the BAR holds at the start: a pattern, so reads of device bytes are recognizable."""
    return (offset * 7 + 3) & 0xFF


@dataclass
class Expected:
    """What the model says each policy k of the cycle returns and records."""

    results: list[tuple[Got, ...]] = field(default_factory=list)  # per policy: the batch
    singles: list[list[Got]] = field(default_factory=list)  # per policy: each access alone
    events: set[EventKey] = field(default_factory=set)  # any policy
    batch_events: list[int] = field(default_factory=list)  # per policy: events of one batch
    batch_counts: list[Counter[str]] = field(default_factory=list)  # per policy: counters
    single_events: list[list[int]] = field(default_factory=list)  # per policy, per access
    single_counts: list[list[Counter[str]]] = field(default_factory=list)
    layouts: list[list[tuple[int, int]]] = field(default_factory=list)
    names: list[frozenset[str]] = field(default_factory=list)


def expected() -> Expected:
    out = Expected()
    # Only the bytes the accesses touch: a sparse model device is cheap to build per policy.
    init = {o + i: device_byte(o + i) for o, w, _, _ in BATCH for i in range(w)}
    for k in range(K):
        p = policy(k)
        m = ModelFilter(SIZE, p, ModelDevice(init), page_size=PAGE, ring_capacity=len(BATCH))
        got = tuple((r.outcome, r.value) for r in (m.access(*a) for a in BATCH))
        events = m.drain_events()
        out.results.append(got)
        out.singles.append(list(got[: len(IDENTIFYING)]))
        out.events |= {(e.offset, e.width, e.is_write, e.value, e.outcome, e.rule) for e in events}
        out.batch_events.append(len(events))
        out.batch_counts.append(Counter(m.counters()))
        per_event, per_count = [], []
        for acc in IDENTIFYING:
            one = ModelFilter(SIZE, p, ModelDevice(init), page_size=PAGE)
            one.access(*acc)
            per_event.append(len(one.drain_events()))
            per_count.append(Counter(one.counters()))
        out.single_events.append(per_event)
        out.single_counts.append(per_count)
        out.layouts.append(compute_layout(p.for_bar(0), SIZE, PAGE).direct)
        out.names.append(frozenset(r.name for r in p.rules))
    return out


def only(candidates: Sequence[int], what: str) -> int:
    assert len(candidates) == 1, f"{what} matches policies {list(candidates)}, not exactly one"
    return candidates[0]


class Tally:
    """What one thread's accesses should have left behind: events and counter increments."""

    def __init__(self) -> None:
        self.events = 0
        self.counts: Counter[str] = Counter()
        self.seen: set[int] = set()  # the policies this thread saw


def run_threads(
    targets: list[Callable[[threading.Event], None]], updater: Callable[[], None]
) -> None:
    """Run the `targets` until `updater` returns; re-raise the first failure of any thread.

    The updates start only once every thread is running, so that each one sees them.
    """
    stop = threading.Event()
    started = threading.Barrier(len(targets) + 1)
    failures: list[BaseException] = []

    def guarded(target: Callable[[threading.Event], None]) -> None:
        try:
            started.wait()
            target(stop)
        except BaseException as e:  # reported by the main thread, which fails the test
            failures.append(e)
            stop.set()

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    try:
        started.wait()
        updater()
    finally:
        stop.set()
        for t in threads:
            t.join()
    if failures:
        raise failures[0]


def test_every_result_and_batch_names_one_whole_policy() -> None:
    want = expected()
    # By construction every policy answers the batch, and each identifying access, differently;
    # checked here so that "matches" below really means "matches exactly one".
    by_batch = {r: k for k, r in enumerate(want.results)}
    assert len(by_batch) == K
    for i in range(len(IDENTIFYING)):
        assert len({want.singles[k][i] for k in range(K)}) == K
    by_layout = {tuple(d): k for k, d in enumerate(want.layouts)}
    by_names = {n: k for k, n in enumerate(want.names)}
    assert len(by_layout) == K and len(by_names) == K

    buf = bytearray(device_byte(i) for i in range(SIZE))
    f = mf.BarFilter(SIZE, policy(0), mf.MemoryBackend(buf), page_size=PAGE, ring_capacity=RING)
    tallies = [Tally() for _ in range(3)]

    def count_batch(tally: Tally, got: tuple[Got, ...]) -> None:
        k = by_batch.get(got)
        if k is None:
            # Say which accesses disagree with which policies: a torn batch shows as results
            # naming different policies.
            names = {
                BATCH[i]: ks
                for i, g in enumerate(got)
                if len(ks := [j for j in range(K) if want.results[j][i] == g]) <= 2
            }
            raise AssertionError(f"a batch matches no single policy; policies per access: {names}")
        tally.seen.add(k)
        tally.events += want.batch_events[k]
        tally.counts += want.batch_counts[k]

    def count_single(tally: Tally, i: int, got: Got) -> None:
        k = only([k for k in range(K) if want.singles[k][i] == got], f"{IDENTIFYING[i]} -> {got}")
        tally.seen.add(k)
        tally.events += want.single_events[k][i]
        tally.counts += want.single_counts[k][i]

    def python_batches(stop: threading.Event) -> None:
        while not stop.is_set():
            time.sleep(PAUSE_S)  # give the updater the GIL now and then (see updater)
            got = tuple((r.outcome, r.value) for r in f.access_many(BATCH))
            count_batch(tallies[0], got)

    def c_batch(accs: Sequence[Access]) -> tuple[Any, Any, int]:
        c_accs = ffi.new("struct mf_access[]", len(accs))
        for c, (offset, width, is_write, value) in zip(c_accs, accs, strict=True):
            c.offset, c.width, c.is_write, c.value = offset, width, is_write, value
        return c_accs, ffi.new("struct mf_result[]", len(accs)), len(accs)

    def raw(c_accs: Any, res: Any, n: int) -> tuple[Got, ...]:
        failed = lib.mf_access_batch(f._f, c_accs, res, n)
        assert failed == 0, f"{failed} accesses of a valid batch failed"
        return tuple((OUTCOME_BY_CODE[res[i].outcome], int(res[i].value)) for i in range(n))

    def raw_batches(stop: threading.Event) -> None:
        batch = c_batch(BATCH)
        while not stop.is_set():
            time.sleep(PAUSE_S)  # give the updater the GIL now and then (see updater)
            count_batch(tallies[1], raw(*batch))

    def singles(stop: threading.Event) -> None:
        one = [c_batch([acc]) for acc in IDENTIFYING]
        while not stop.is_set():
            time.sleep(PAUSE_S)  # give the updater the GIL now and then (see updater)
            for i, acc in enumerate(IDENTIFYING):
                (got,) = raw(*one[i])
                count_single(tallies[2], i, got)
                (res,) = f.access_many([acc])
                count_single(tallies[2], i, (res.outcome, res.value))

    drained: list[mf.Event] = []

    def observer(stop: threading.Event) -> None:
        shared = ("deny", "emu", "mask")
        last = dict.fromkeys(shared, 0)
        while not stop.is_set():
            time.sleep(PAUSE_S)  # give the updater the GIL now and then (see updater)
            counts = f.counters()
            assert frozenset(counts) in by_names, f"counters of no single policy: {counts}"
            for name in shared:  # carried across every update: they never go down
                assert counts[name] >= last[name], (name, counts[name], last[name])
                last[name] = counts[name]
            direct = tuple(f.layout.direct)
            assert direct in by_layout, f"a layout of no policy: {direct}"
            events = f.drain_events()
            assert len(events) <= RING
            drained.extend(events)

    done = 0

    def updater() -> None:
        # Four threads make GIL-releasing C calls as fast as they can, and CPython hands the
        # GIL back to a waiting thread only on its switch interval: on an idle two-core machine
        # the updater got 32 swaps in 20 s, on a loaded one 5,000 in 5 s. The readers pause for
        # PAUSE_S between rounds, and the swaps are bounded in time too.
        nonlocal done
        deadline = time.monotonic() + DEADLINE_S
        for i in range(1, UPDATES + 1):
            f.update(policy(i % K))
            done = i
            if time.monotonic() > deadline:
                break

    run_threads([python_batches, raw_batches, singles, observer], updater)
    assert done >= min(UPDATES, 500), f"only {done} updates in {DEADLINE_S} s"

    for t, name in zip(tallies, ("access_many", "mf_access_batch", "single accesses"), strict=True):
        assert len(t.seen) > 1, f"the {name} thread never ran across an update"
    drained.extend(f.drain_events())
    # Every event is one some policy records for one of these accesses...
    for e in drained:
        key = (e.offset, e.width, e.is_write, e.value, e.outcome, e.rule)
        assert key in want.events, f"an event no single policy records: {e}"
    # ...their seqs rise, the gaps in them are exactly the drops, and no event is lost.
    assert lib.mf_events_pending(f._f) == 0
    total = sum(t.events for t in tallies)
    seqs = [e.seq for e in drained]
    assert seqs == sorted(set(seqs)) and all(0 <= s < total for s in seqs)
    assert len(drained) + f.dropped_events == total, (len(drained), f.dropped_events, total)
    # The counters of the rules every policy has are exact across 5,000 updates.
    counts = f.counters()
    touched: Counter[str] = Counter()
    for t in tallies:
        touched += t.counts
    for name in ("deny", "emu", "mask"):
        assert counts[name] == touched[name], (name, counts[name], touched[name])
    # The probes' reads saw the device's own bytes: the probe writes went elsewhere.
    for j in range(K):
        at = moving_page(j)
        assert list(buf[at : at + 4]) == [device_byte(at + i) for i in range(4)]
