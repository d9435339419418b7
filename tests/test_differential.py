"""The C core against the reference model: same outcome, value, device accesses, events,
counters and layout, for random policies and access sequences (contract §2-4). Redirect rules
name two targets, devices of their own whose accesses and bytes are compared too.

The device log comparison is the strongest check: the C core and the model must turn each
MMIO access into exactly the same sequence of device accesses (offsets, widths, values), which
also pins down split-mode chunking. The security property is then checked again on its own
(`mmiofilter.testing.security.assert_security`, against `owner()`), so that a bug shared by
the model and the core would still be caught.
"""

from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmiofilter as mf
from mmiofilter.testing import (
    ModelDevice,
    ModelFilter,
    accesses,
    action_of,
    bar_sizes,
    elementary_intervals,
    invalid_accesses,
    page_sizes,
    policies,
)
from mmiofilter.testing.model import READ_CLEAN_ACTIONS, compute_read_direct
from mmiofilter.testing.security import assert_security

Access = tuple[int, int, bool, int]
#: The redirect targets every scenario's filters get (rules name them at random).
TARGETS = ("config", "window")


def pattern(offsets: set[int]) -> dict[int, int]:
    """Distinct, reproducible device contents at the bytes a test will touch."""
    return {o: hashlib.blake2b(o.to_bytes(9, "little"), digest_size=1).digest()[0] for o in offsets}


def run_both(
    size: int,
    page: int,
    policy: mf.Policy,
    steps: list[Access | mf.Policy],
    ring: int,
) -> None:
    touched = {o + i for s in steps if isinstance(s, tuple) for o, w in [s[:2]] for i in range(w)}
    init = pattern({o for o in touched if 0 <= o < size})
    cdev, mdev = ModelDevice(init), ModelDevice(init)
    # targets read as a pattern of their own (sparse: a rule may land anywhere in them)
    ctargets = {n: PatternDevice(n) for n in TARGETS}
    mtargets = {n: PatternDevice(n) for n in TARGETS}
    f = mf.BarFilter(
        size,
        policy,
        mf.CallbackBackend(cdev.read, cdev.write),
        page_size=page,
        ring_capacity=ring,
        targets={n: mf.CallbackBackend(d.read, d.write) for n, d in ctargets.items()},
    )
    m = ModelFilter(size, policy, mdev, page_size=page, ring_capacity=ring, targets=mtargets)
    current = policy
    for step in steps:
        if isinstance(step, mf.Policy):
            f.update(step)
            m.update(step)
            current = step
            continue
        before = len(cdev.log)
        try:
            want = m.access(*step)
        except mf.AccessError:
            try:
                f.access(*step)
            except mf.AccessError:
                continue
            raise AssertionError(f"core accepted invalid access {step}") from None
        got = f.access(*step)
        assert got == want, f"{step}: core {got}, model {want}"
        assert cdev.log == mdev.log, f"{step}: device accesses differ"
        for n in TARGETS:
            assert ctargets[n].log == mtargets[n].log, f"{step}: accesses to target {n} differ"
        if got.outcome is mf.Outcome.PARTIAL:
            for off, width, _, _ in cdev.log[before:]:
                assert off % width == 0, "split chunk not naturally aligned"
        assert_security(current, cdev.log[before:])
    assert f.drain_events() == m.drain_events()
    assert f.dropped_events == m.dropped_events
    assert f.counters() == m.counters()
    assert [cdev.byte(o) for o in sorted(touched)] == [mdev.byte(o) for o in sorted(touched)]
    for n in TARGETS:
        written = sorted({o + i for o, w, wr, _ in ctargets[n].log if wr for i in range(w)})
        assert [ctargets[n].byte(o) for o in written] == [mtargets[n].byte(o) for o in written]


class PatternDevice(ModelDevice):
    """A target whose bytes never written read as a reproducible pattern of its name and the
    offset, computed on demand (a redirect rule may land anywhere in a 2**64-byte target)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def byte(self, offset: int) -> int:
        if offset in self._bytes:
            return self._bytes[offset]
        return hashlib.blake2b(f"{self.name}{offset}".encode(), digest_size=1).digest()[0]


@st.composite
def scenario(draw: st.DrawFn) -> tuple[int, int, mf.Policy, list[Access | mf.Policy], int]:
    page = draw(page_sizes())
    size = draw(bar_sizes(page))
    policy = draw(policies(size, targets=TARGETS))
    steps: list[Access | mf.Policy] = []
    current = policy
    for _ in range(draw(st.integers(1, 24))):
        kind = draw(st.integers(0, 19))
        if kind == 0:
            current = draw(policies(size, targets=TARGETS))
            steps.append(current)
        elif kind == 1:
            steps.append(draw(invalid_accesses(size)))
        else:
            steps.append(draw(accesses(size, current)))
    return size, page, policy, steps, draw(st.sampled_from([2, 8, 1024]))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_core_matches_model(s: tuple[int, int, mf.Policy, list[Access | mf.Policy], int]) -> None:
    run_both(*s)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_layout_matches_model_and_is_sound(data: st.DataObject) -> None:
    page = data.draw(page_sizes())
    size = data.draw(bar_sizes(page))
    policy = data.draw(policies(size, targets=TARGETS))
    nothing = mf.CallbackBackend(lambda o, w: 0, lambda o, w, v: None)
    f = mf.BarFilter(size, policy, nothing, page_size=page, targets=dict.fromkeys(TARGETS, nothing))
    m = ModelFilter(
        size, policy, ModelDevice(), page_size=page, targets={n: ModelDevice() for n in TARGETS}
    )
    got, want = f.layout, m.layout
    want_rd = compute_read_direct(policy.for_bar(0), size, page)
    assert got.direct == want.direct
    assert got.read_direct == want_rd.areas
    assert got.collateral == got.collateral_write_bytes == want.collateral
    assert got.collateral_read_bytes == want_rd.collateral_read
    assert got.trapped_count == sum(-(-length // page) for _, length in want.trapped)
    assert got.read_direct_count == sum(length for _, length in want_rd.areas) // page
    # read-direct areas: page-aligned, maximal, disjoint from the direct ones, and holding no
    # byte whose read the filter must see
    end = -1
    for off, length in got.read_direct:
        assert off % page == 0 and length % page == 0 and length > 0 and off > end
        end = off + length
        assert end <= size - size % page
        assert all(off + length <= d or d + n <= off for d, n in got.direct)
    for a, b, r in elementary_intervals(policy.for_bar(0), size):
        if action_of(r) not in READ_CLEAN_ACTIONS:
            assert all(b <= off or off + length <= a for off, length in got.read_direct)
    # sorted, page-aligned, non-empty, maximal (never touching), inside the BAR
    end = -1
    for off, length in got.direct:
        assert off % page == 0 and length % page == 0 and length > 0
        assert off > end  # strictly after the previous area's end: maximal
        end = off + length
        assert end <= size
    # no direct area holds a byte that is not `allow`
    for a, b, r in elementary_intervals(policy.for_bar(0), size):
        if action_of(r) != "allow":
            assert all(b <= off or off + length <= a for off, length in got.direct)
    # the vfio capability carries the same areas
    raw = got.sparse_mmap
    assert int.from_bytes(raw[8:12], "little") == len(got.direct)
    areas = [
        (
            int.from_bytes(raw[16 + 16 * i : 24 + 16 * i], "little"),
            int.from_bytes(raw[24 + 16 * i : 32 + 16 * i], "little"),
        )
        for i in range(len(got.direct))
    ]
    assert areas == got.direct


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_memory_backend_matches_model(data: st.DataObject) -> None:
    """The exact-width volatile path over real buffers (the BAR and two memory targets) ends
    with the model's bytes."""
    page = 4096
    size = data.draw(st.sampled_from([0x400, 0x1000, 0x1800, 0x4000]))
    tsize = 0x2000
    policy = data.draw(policies(size, targets=TARGETS, target_size=tsize))
    init = data.draw(st.binary(min_size=size, max_size=size))
    # the targets' contents need not be drawn: any pattern distinct from the BAR's will do
    tinit = {
        n: bytes((i * 7 + k * 0x55) & 0xFF for i in range(tsize)) for k, n in enumerate(TARGETS)
    }
    buf = bytearray(init)
    tbufs = {n: bytearray(b) for n, b in tinit.items()}
    f = mf.BarFilter(
        size,
        policy,
        mf.MemoryBackend(buf),
        page_size=page,
        targets={n: mf.MemoryBackend(b) for n, b in tbufs.items()},
    )
    mdev = ModelDevice(init)
    mtargets = {n: ModelDevice(b) for n, b in tinit.items()}
    m = ModelFilter(size, policy, mdev, page_size=page, targets=mtargets)
    for acc in data.draw(st.lists(accesses(size, policy), max_size=30)):
        assert f.access(*acc) == m.access(*acc)
    assert bytes(buf) == bytes(mdev.byte(i) for i in range(size))
    for n in TARGETS:
        assert bytes(tbufs[n]) == bytes(mtargets[n].byte(i) for i in range(tsize))
    assert f.drain_events() == m.drain_events()
