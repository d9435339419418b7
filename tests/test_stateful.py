"""A long life of one filter: the C core and the reference model side by side, step by step.

The differential test checks short, fixed access sequences. A filter in a VMM lives long:
accesses (valid, invalid, single, batched), policy updates (accepted and rejected), layout
queries, counter reads and event drains interleave for the lifetime of the guest, and state
carries across all of them: the event ring and its sequence numbers, the drop counter, the
per-rule counters that follow a rule's name across updates. A hypothesis state machine drives
that life and checks after every step that

- the core and the model return the same results and make the same device accesses, and the
  same accesses to the two redirect targets the filter has;
- every device access respects the policy in force, checked without the model
  (`assert_security`);
- the ring never holds more than its capacity, and every event the accesses caused is either
  drained, dropped or pending (counted independently of both implementations, from the
  outcomes and the `audit` bytes), with sequence numbers whose gaps are exactly the drops;
- a guest hammering a blocked register fills the ring to capacity, drops exactly the excess,
  and grows no memory.

Ring capacities are tiny (1, 2, 8) so that overflow is the common case, not a corner.
"""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from mmiofilter._core import ffi, lib

import mmiofilter as mf
from mmiofilter._binding import OUTCOME_BY_CODE
from mmiofilter.testing import (
    ModelDevice,
    ModelFilter,
    accesses,
    action_of,
    bar_sizes,
    invalid_accesses,
    owner,
    page_sizes,
    policies,
)
from mmiofilter.testing.security import assert_security

Access = tuple[int, int, bool, int]

RING_CAPACITIES = (1, 2, 8)
#: Accesses of one hammering burst: far more than any ring here holds.
HAMMER = 5000
#: Warm-up before the memory baseline, so the ring (and the model's deque) is already full and
#: per-thread result buffers exist: what follows is the steady state.
HAMMER_WARMUP = 200
#: Python heap growth tolerated over a burst. A leak of a single small object per access would
#: grow by well over 5000 * 16 bytes; this leaves room for allocator noise only.
HAMMER_GROWTH_LIMIT = 32 * 1024
#: Compare page lists only when they are short: a 64 GiB BAR has 2**24 pages.
MAX_LISTED_PAGES = 4096
TOP_PRIORITY = 2**31 - 1
U64 = 2**64
#: The redirect targets of every filter here, and the salt of each one's byte pattern.
TARGETS = {"config": 0x5A, "window": 0xC3}


def pattern_byte(offset: int) -> int:
    """A fixed, offset-dependent byte: a read returning the wrong bytes cannot go unnoticed."""
    return ((offset * 0x9E3779B1) >> 11) & 0xFF


class PatternDevice(ModelDevice):
    """A `ModelDevice` whose never-written bytes read as `pattern_byte` of their offset (xor a
    salt: a target's bytes differ from the device's at the same offset).

    BARs reach 64 GiB, so the pattern is computed, not stored.
    """

    def __init__(self, salt: int = 0) -> None:
        super().__init__()
        self.salt = salt

    def byte(self, offset: int) -> int:
        return self._bytes.get(offset, pattern_byte(offset) ^ self.salt)


def raw_batch(f: mf.BarFilter, accs: list[Access]) -> list[tuple[int, int, int]]:
    """The accesses through `mf_access_batch` itself, as `(status, outcome, value)`: the C VMM's
    path, where invalid accesses are not filtered out by Python first."""
    n = len(accs)
    c_accs = ffi.new("struct mf_access[]", max(n, 1))
    for c, (offset, width, is_write, value) in zip(c_accs, accs, strict=False):
        c.offset, c.width, c.is_write, c.value = offset, width, is_write, value
    res = ffi.new("struct mf_result[]", max(n, 1))
    lib.mf_access_batch(f._f, c_accs, res, n)
    return [(res[i].status, res[i].outcome, res[i].value) for i in range(n)]


def c_invalid_accesses(bar_size: int) -> st.SearchStrategy[Access]:
    """Invalid accesses that `struct mf_access` can carry (uint64 offset and value, uint8
    width), so that they reach the core's own validation: a bad width, an end past the BAR
    or past 2**64, a value too wide for its width."""
    width = st.sampled_from((1, 2, 4, 8))
    in_bar = st.integers(0, bar_size - 1)
    bad_width = st.tuples(in_bar, st.sampled_from((0, 3, 5, 7, 16, 255)), st.booleans(), st.just(0))
    past_end = width.flatmap(
        lambda w: st.tuples(
            st.integers(max(0, bar_size - w + 1), bar_size + 16),
            st.just(w),
            st.booleans(),
            st.just(0),
        )
    )
    wrapping = st.tuples(st.integers(U64 - 16, U64 - 1), width, st.booleans(), st.just(0))
    too_wide = st.sampled_from((1, 2, 4)).flatmap(
        lambda w: st.tuples(
            st.integers(0, bar_size - w),
            st.just(w),
            st.just(True),
            st.integers(1 << (8 * w), U64 - 1),
        )
    )
    return st.one_of(bad_width, past_end, wrapping, too_wide)


class FilterLife(RuleBasedStateMachine):
    """One BAR, one filter in C and one in the model, over two identical devices."""

    size: int
    page: int
    capacity: int
    policy: mf.Policy
    cdev: PatternDevice
    mdev: PatternDevice
    f: mf.BarFilter
    m: ModelFilter

    def __init__(self) -> None:
        super().__init__()
        self.emitted = 0  # events the accesses should have caused, counted here
        self.drained = 0
        self.next_seq = 0  # the seq the next drained event has, unless events were dropped
        self.dropped_at_drain = 0
        self.hammered = False

    # ---- setup ---------------------------------------------------------------------------

    @initialize(page=page_sizes(), capacity=st.sampled_from(RING_CAPACITIES), data=st.data())
    def start(self, page: int, capacity: int, data: st.DataObject) -> None:
        self.page, self.capacity = page, capacity
        self.size = data.draw(bar_sizes(page), label="size")
        self.policy = data.draw(policies(self.size, targets=tuple(TARGETS)), label="policy")
        self.cdev, self.mdev = PatternDevice(), PatternDevice()
        self.ctargets = {n: PatternDevice(salt) for n, salt in TARGETS.items()}
        self.mtargets = {n: PatternDevice(salt) for n, salt in TARGETS.items()}
        backend = mf.CallbackBackend(self.cdev.read, self.cdev.write)
        self.f = mf.BarFilter(
            self.size,
            self.policy,
            backend,
            page_size=page,
            ring_capacity=capacity,
            targets={n: mf.CallbackBackend(d.read, d.write) for n, d in self.ctargets.items()},
        )
        self.m = ModelFilter(
            self.size,
            self.policy,
            self.mdev,
            page_size=page,
            ring_capacity=capacity,
            targets=dict(self.mtargets),
        )

    # ---- helpers -------------------------------------------------------------------------

    def causes_event(self, acc: Access, outcome: mf.Outcome) -> bool:
        """contract-details 6, from the outcome and the policy alone: not PASS (nor REDIRECTED,
        contract-details 17), or an audited PASS."""
        if outcome is mf.Outcome.REDIRECTED:
            return False
        if outcome is not mf.Outcome.PASS:
            return True
        rules = self.policy.for_bar(0)
        offset, width = acc[0], acc[1]
        return any(action_of(owner(rules, offset + i)) == "audit" for i in range(width))

    def check_device(self, before: int, marks: list[int], results: list[mf.Result]) -> None:
        """The device accesses since `before`: the same on both sides, and all allowed.

        `marks[i]` is where the model's log stood after access `i`: the core's log is the
        same, so it says which device accesses each access of a batch turned into.
        """
        new = self.cdev.log[before:]
        assert new == self.mdev.log[before:], "core and model touched the device differently"
        for n in TARGETS:
            assert self.ctargets[n].log == self.mtargets[n].log, f"target {n} accesses differ"
        assert_security(self.policy, new)
        starts = [before, *marks][: len(marks)]
        for begin, end, result in zip(starts, marks, results, strict=True):
            if result.outcome is mf.Outcome.PARTIAL:
                for offset, width, _, _ in self.cdev.log[begin:end]:
                    assert offset % width == 0, "split chunk not naturally aligned"

    def fresh_name(self, prefix: str) -> str:
        """A rule name the current policy does not use (policy rule names are random)."""
        names = {r.name for r in self.policy.rules}
        return next(n for n in (f"{prefix}-{i}" for i in range(len(names) + 1)) if n not in names)

    def traceless(self) -> tuple[int, int, int, dict[str, int]]:
        """What an invalid access must leave unchanged."""
        return len(self.cdev.log), self.pending(), self.f.dropped_events, self.f.counters()

    def pending(self) -> int:
        return int(lib.mf_events_pending(self.f._f))

    # ---- accesses ------------------------------------------------------------------------

    @rule(data=st.data())
    def access(self, data: st.DataObject) -> None:
        acc = data.draw(accesses(self.size, self.policy), label="access")
        before = len(self.cdev.log)
        want = self.m.access(*acc)
        got = self.f.access(*acc)
        assert got == want, f"{acc}: core {got}, model {want}"
        self.check_device(before, [len(self.mdev.log)], [got])
        self.emitted += self.causes_event(acc, got.outcome)

    @rule(data=st.data())
    def access_many(self, data: st.DataObject) -> None:
        accs = data.draw(
            st.lists(accesses(self.size, self.policy), min_size=1, max_size=8), label="batch"
        )
        before = len(self.cdev.log)
        want, marks = [], []
        for a in accs:
            want.append(self.m.access(*a))
            marks.append(len(self.mdev.log))
        got = self.f.access_many(accs)
        assert got == want
        self.check_device(before, marks, got)
        self.emitted += sum(self.causes_event(a, r.outcome) for a, r in zip(accs, got, strict=True))

    @rule(data=st.data())
    def raw_batch_with_invalid(self, data: st.DataObject) -> None:
        """The C batch entry point with invalid accesses among valid ones: each invalid one
        fails alone and leaves no trace; the others are decided as the model decides them."""
        valid = accesses(self.size, self.policy)
        accs = data.draw(
            st.lists(st.one_of(valid, c_invalid_accesses(self.size)), min_size=1, max_size=8),
            label="raw batch",
        )
        before = len(self.cdev.log)
        got = raw_batch(self.f, accs)
        marks: list[int] = []
        results: list[mf.Result] = []
        for acc, (status, outcome, value) in zip(accs, got, strict=True):
            try:
                want = self.m.access(*acc)
            except mf.AccessError:
                assert status != 0, f"the core accepted invalid access {acc}"
                continue
            assert status == 0, f"the core refused valid access {acc} (status {status})"
            results.append(mf.Result(OUTCOME_BY_CODE[outcome], value))
            marks.append(len(self.mdev.log))
            assert results[-1] == want, f"{acc}: core {results[-1]}, model {want}"
            self.emitted += self.causes_event(acc, want.outcome)
        self.check_device(before, marks, results)

    @rule(data=st.data())
    def invalid_access(self, data: st.DataObject) -> None:
        acc = data.draw(invalid_accesses(self.size), label="invalid")
        trace = self.traceless()
        with pytest.raises(mf.AccessError):
            self.m.access(*acc)
        with pytest.raises(mf.AccessError):
            self.f.access(*acc)
        assert self.traceless() == trace, f"invalid access {acc} left a trace"

    @precondition(lambda self: not self.hammered)
    @rule(data=st.data())
    def hammer(self, data: st.DataObject) -> None:
        """A guest in a loop on a register the admin denied (the highest priority, so it owns
        the bytes whatever else the policy says): every access is an event."""
        offset, width, _, _ = data.draw(accesses(self.size, self.policy), label="register")
        name = self.fresh_name("hammered")
        target = mf.Rule(name, offset, width, "deny", priority=TOP_PRIORITY)
        self.update_both(
            mf.Policy(
                [*self.policy.rules, target],
                fill=self.policy.fill,
                partial=self.policy.partial,
                unaligned=self.policy.unaligned,
            )
        )
        pending, dropped, logged = self.pending(), self.f.dropped_events, len(self.cdev.log)
        fill = int.from_bytes(bytes([self.policy.fill]) * width, "little")
        want_read = mf.Result(mf.Outcome.BLOCKED, fill)
        want_write = mf.Result(mf.Outcome.BLOCKED, 0)

        def burst(first: int, stop: int) -> None:
            for i in range(first, stop):
                is_write = bool(i & 1)
                want = want_write if is_write else want_read
                assert self.f.access(offset, width, is_write, i & 0xFF) == want

        # Only the filter is host memory: the model is the test's oracle, so it runs outside
        # the traced window (it would also slow tracing down fivefold).
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        try:
            burst(0, HAMMER_WARMUP)
            baseline = tracemalloc.take_snapshot()
            burst(HAMMER_WARMUP, HAMMER)
            after = tracemalloc.take_snapshot()
        finally:
            if not was_tracing:
                tracemalloc.stop()
        growth = sum(s.size_diff for s in after.compare_to(baseline, "filename"))
        assert growth < HAMMER_GROWTH_LIMIT, f"the heap grew by {growth} bytes while hammering"
        for i in range(HAMMER):
            is_write = bool(i & 1)
            want = want_write if is_write else want_read
            assert self.m.access(offset, width, is_write, i & 0xFF) == want
        # Nothing reached the device, the ring is exactly full and the drops are exact.
        assert len(self.cdev.log) == len(self.mdev.log) == logged
        assert self.pending() == self.capacity
        assert self.f.dropped_events == dropped + pending + HAMMER - self.capacity
        assert self.f.counters()[name] == HAMMER
        self.emitted += HAMMER
        self.hammered = True

    # ---- policy --------------------------------------------------------------------------

    def update_both(self, policy: mf.Policy) -> None:
        self.f.update(policy)
        self.m.update(policy)
        self.policy = policy

    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        new = data.draw(policies(self.size, targets=tuple(TARGETS)), label="new policy")
        self.update_both(new)

    @rule(data=st.data())
    def update_rejected_target(self, data: st.DataObject) -> None:
        """A policy redirecting to a target the filter was not given is refused whole."""
        offset, width, _, _ = data.draw(accesses(self.size, self.policy), label="register")
        name = self.fresh_name("elsewhere")
        stray = mf.Rule(name, offset, width, "redirect", target="elsewhere")
        bad = mf.Policy([*self.policy.rules, stray])
        with pytest.raises(mf.PolicyError, match=f"{name}.*elsewhere"):
            self.m.update(bad)
        with pytest.raises(mf.PolicyError, match=f"{name}.*elsewhere"):
            self.f.update(bad)
        assert self.f.policy == self.policy == self.m.policy

    @rule(data=st.data())
    def update_rejected(self, data: st.DataObject) -> None:
        """A policy with a rule past the BAR's end is refused whole; the old one stays."""
        start = data.draw(st.integers(max(0, self.size - 16), self.size), label="start")
        length = data.draw(st.integers(self.size - start + 1, self.size - start + 16))
        past = mf.Rule(self.fresh_name("past-the-end"), start, length, "deny")
        bad = mf.Policy([*self.policy.rules, past])
        layout = self.f.layout
        with pytest.raises(mf.PolicyError):
            self.m.update(bad)
        with pytest.raises(mf.PolicyError):
            self.f.update(bad)
        assert self.f.policy == self.policy == self.m.policy
        assert self.f.layout == layout

    @rule()
    def layout(self) -> None:
        got, want = self.f.layout, self.m.layout
        assert got.direct == want.direct
        assert got.collateral == want.collateral
        assert got.trapped_count == want.trapped_count
        if want.trapped_count <= MAX_LISTED_PAGES:
            assert got.trapped_pages == want.trapped_pages

    # ---- events and counters -------------------------------------------------------------

    @rule()
    def drain(self) -> None:
        got, want = self.f.drain_events(), self.m.drain_events()
        assert got == want
        assert len(got) <= self.capacity
        dropped = self.f.dropped_events
        lost = dropped - self.dropped_at_drain  # dropped since the last drain
        if got:
            # The ring drops only its oldest events: what is left is contiguous, and starts
            # exactly `lost` events after the last one drained.
            seqs = [e.seq for e in got]
            assert seqs == list(range(seqs[0], seqs[0] + len(got))), seqs
            assert seqs[0] == self.next_seq + lost, (seqs[0], self.next_seq, lost)
            self.next_seq = seqs[-1] + 1
        else:
            # A drop only happens when the ring is full, and then it is not empty.
            assert lost == 0
        self.drained += len(got)
        self.dropped_at_drain = dropped
        assert self.pending() == 0

    @rule()
    def counters(self) -> None:
        got = self.f.counters()
        assert got == self.m.counters()
        assert set(got) == {r.name for r in self.policy.for_bar(0)}

    # ---- after every step ----------------------------------------------------------------

    @invariant()
    def ring_is_bounded_and_accounts_for_every_event(self) -> None:
        if not hasattr(self, "f"):  # before `start`
            return
        pending = self.pending()
        assert 0 <= pending <= self.capacity
        assert self.f.dropped_events == self.m.dropped_events
        assert self.emitted == self.drained + self.f.dropped_events + pending, (
            self.emitted,
            self.drained,
            self.f.dropped_events,
            pending,
        )

    @invariant()
    def devices_agree(self) -> None:
        if hasattr(self, "f"):
            assert len(self.cdev.log) == len(self.mdev.log)
            for n in TARGETS:
                assert len(self.ctargets[n].log) == len(self.mtargets[n].log)


FilterLife.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestFilterLife = FilterLife.TestCase
