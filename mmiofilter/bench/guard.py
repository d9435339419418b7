"""The guard group: what the FSP guard costs on the mailbox accesses that are not a doorbell.

The same access stream runs through three filters over a memory-backed 16 MiB BAR, side by
side, repeats alternating (`cbatch.run_batches`' discipline):

- **guard**: the GH100 profile's guard (`FspGuard.at`) owning the mailbox registers;
- **plain**: a plain trapped rule on the same registers (`mask` with mask 0: every read and
  write reaches the device with the same width, as through the guard);
- **floor**: no rules at all (the fake device alone).

The stream is what a driver does between doorbells: EMEMC = 0x100 | AINCW | AINCR on port 1,
then 250 EMEMD writes (1000 bytes) and reads of EMEMC, QUEUE_HEAD/TAIL and MSGQ_HEAD/TAIL of
queue 1, over and over. The issue's target: guard within 2x of the plain trapped access.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

from .. import _binding as cb
from .._core import ffi, lib
from ..backends import MemoryBackend
from ..filter import BarFilter
from ..guards import GH100_EMEMC0, GH100_MSGQ_HEAD0, GH100_QUEUE_HEAD0, FspGuard
from ..lint import PolicyWarning
from ..rules import Policy, Rule
from .params import Params

BAR = 16 << 20
AINCW, AINCR = 1 << 24, 1 << 25
PORT = 1


def _stream(n: int) -> list[tuple[int, bool, int]]:
    """(offset, is_write, value) for n accesses of the mailbox, no doorbell among them."""
    ememc, ememd = GH100_EMEMC0 + 8 * PORT, GH100_EMEMC0 + 8 * PORT + 4
    q, m = GH100_QUEUE_HEAD0 + 8 * PORT, GH100_MSGQ_HEAD0 + 8 * PORT
    round_ = [(ememc, True, 0x100 | AINCW | AINCR)]
    round_ += [(ememd, True, 0x01000000 + i) for i in range(250)]
    round_ += [
        (ememc, False, 0),
        (q, False, 0),
        (q + 4, False, 0),
        (m, False, 0),
        (m + 4, False, 0),
    ]
    out: list[tuple[int, bool, int]] = []
    while len(out) < n:
        out += round_
    return out[:n]


class _Variant:
    def __init__(self, label: str, policy: Policy, n: int) -> None:
        self.label = label
        self.memory = bytearray(BAR)
        self.filter = BarFilter(BAR, policy, MemoryBackend(self.memory), page_size=4096)
        stream = _stream(n)
        self.n = n
        self.acc: Any = ffi.new("struct mf_access[]", n)
        self.res: Any = ffi.new("struct mf_result[]", n)
        for c, (off, w, v) in zip(self.acc, stream, strict=True):
            c.offset, c.width, c.is_write, c.value = off, 4, w, v
        self.samples: list[float] = []
        self.outcomes: dict[int, int] = {}

    def run_once(self) -> None:
        f = self.filter._f  # the C filter: the batch entry point a C VMM calls
        t0 = time.perf_counter_ns()
        bad = lib.mf_access_batch(f, self.acc, self.res, self.n)
        elapsed = time.perf_counter_ns() - t0
        if bad:
            raise RuntimeError(f"{self.label}: {bad} accesses failed in the core")
        self.samples.append(elapsed / self.n)
        self.filter.drain_events()

    def tally(self) -> dict[str, float]:
        names = [o.value for o in cb.OUTCOME_BY_CODE]
        counts = [0] * len(names)
        for i in range(self.n):
            counts[self.res[i].outcome] += 1
        return {names[k]: c / self.n for k, c in enumerate(counts) if c}


def measure_guard(p: Params, progress: Callable[[str], None]) -> dict[str, Any]:
    """The guard group's figures (`guard_*` keys)."""
    progress("timing the FSP guard")
    guard = FspGuard.at("fsp")
    # A mask rule that forces nothing on the same registers: the plain trapped path, the
    # same accesses and outcomes (the warning that such a rule protects nothing is moot here).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolicyWarning)
        plain = Policy(
            [
                Rule(f"plain{i}", lo, hi - lo, "mask")
                for i, (lo, hi) in enumerate(guard.register_ranges())
            ]
        )
    variants = [
        _Variant("guard", Policy([guard]), p.accesses),
        _Variant("plain", plain, p.accesses),
        _Variant("floor", Policy([]), p.accesses),
    ]
    for v in variants:
        v.run_once()
        v.samples.clear()
    for _ in range(p.repeats):
        for v in variants:
            v.run_once()
    g, pl, fl = (statistics.median(v.samples) for v in variants)
    return {
        "guard_ns": g,
        "guard_plain_ns": pl,
        "guard_floor_ns": fl,
        "guard_over_plain": g / pl,
        "guard_outcomes": variants[0].tally(),
    }
