"""The batch group: ns per trapped access through `mf_access_batch`, the C core driven through
its public API as a C VMM would (prebuilt C arrays, a memory backend).

Variants: 10 rules, 10,000 rules, and a dense policy (1,000 rules in one 64 KiB page). The
repeats of all variants alternate, so a frequency change or a noisy neighbour hits them alike.
Two references separate the filter from its fake device: the *floors* run the very same
accesses under an empty policy (a bytearray standing for the BAR misses the TLB and caches on
2,000 random pages, not on 10; real MMIO is uncached and far slower), and a *control* runs the
10,000-rule table with accesses confined to 10 of its pages.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _binding as cb
from .._core import ffi, lib
from ..rules import Rule
from .params import Params
from .workload import (
    BAR_SIZE,
    DENSE_PAGE_SIZE,
    Access,
    KiB,
    Workload,
    describe_mix,
    make_accesses,
    make_workload,
)

OUTCOME_NAMES = tuple(o.value for o in cb.OUTCOME_BY_CODE)


@dataclass(frozen=True)
class TableStats:
    compile_ns: int
    footprint: int
    runs: int
    indexed_pages: int


def compile_table(crules: cb.RuleArray, bar_size: int, page_size: int) -> tuple[Any, TableStats]:
    """Compile with `mf_table_compile`, timing only the C call."""
    cfg = cb.make_config(bar_size, page_size, 0xFF, "deny", "allow")
    err = ffi.new("struct mf_error *")
    t0 = time.perf_counter_ns()
    table = lib.mf_table_compile(crules.array, crules.n, cfg, err)
    elapsed = time.perf_counter_ns() - t0
    if table == ffi.NULL:
        raise RuntimeError(cb.error_text(err))
    stats = TableStats(
        elapsed,
        int(lib.mf_table_footprint(table)),
        int(lib.mf_table_runs(table)),
        int(lib.mf_table_indexed_pages(table)),
    )
    return table, stats


class CFilter:
    """A filter made with the C API alone, as a C VMM would, over a bytearray BAR."""

    def __init__(self, w: Workload, rules: Sequence[Rule]) -> None:
        table, self.stats = compile_table(cb.RuleArray(rules), w.bar_size, w.page_size)
        self.memory = bytearray(w.bar_size)
        # Touch every page now, so no page fault (first write to a zero page) is timed.
        self.memory[:: 4 * KiB] = b"\x01" * len(range(0, w.bar_size, 4 * KiB))
        self._base = ffi.from_buffer(self.memory, require_writable=True)
        be = ffi.new("struct mf_backend *")
        be.kind, be.base, be.length = lib.MF_BACKEND_MEMORY, self._base, w.bar_size
        f = cb.new_filter(be, [], 0, 1024, table)  # the filter owns the table from here
        self.ptr: Any = ffi.gc(f, lib.mf_filter_free)

    def events_recorded(self) -> int:
        """Events pushed so far (the ring is never drained here): pending + dropped."""
        return int(lib.mf_events_pending(self.ptr) + lib.mf_events_dropped(self.ptr))


class Batch:
    """One batch variant: a filter, its prebuilt access and result arrays, its timings."""

    def __init__(
        self, label: str, w: Workload, accesses: Sequence[Access], *, no_rules: bool = False
    ) -> None:
        self.label = label
        self.workload = w
        self.rules = [] if no_rules else w.rules
        self.filter = CFilter(w, self.rules)
        self.n = len(accesses)
        self.acc: Any = ffi.new("struct mf_access[]", self.n)
        self.res: Any = ffi.new("struct mf_result[]", self.n)
        for c, a in zip(self.acc, accesses, strict=True):
            c.offset, c.width, c.is_write, c.value = a.offset, a.width, a.is_write, a.value
        self.mix = describe_mix(accesses, w)
        self.samples: list[float] = []
        self.outcomes: dict[str, float] = {}
        self.events_per_access = 0.0

    def run_once(self) -> None:
        """One timed `mf_access_batch` call (only the C call is inside the clock)."""
        events_before = self.filter.events_recorded()
        t0 = time.perf_counter_ns()
        bad = lib.mf_access_batch(self.filter.ptr, self.acc, self.res, self.n)
        elapsed = time.perf_counter_ns() - t0
        if bad:
            raise RuntimeError(f"{self.label}: {bad} accesses failed in the core")
        self.samples.append(elapsed / self.n)
        self.events_per_access = (self.filter.events_recorded() - events_before) / self.n

    def tally(self) -> None:
        """Outcome shares of the last run (after timing: this loop is slow Python)."""
        counts = [0] * len(OUTCOME_NAMES)
        for i in range(self.n):
            counts[self.res[i].outcome] += 1
        self.outcomes = {name: c / self.n for name, c in zip(OUTCOME_NAMES, counts, strict=True)}

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)


def run_batches(batches: Sequence[Batch], repeats: int) -> None:
    """Warm every variant up once, then time them round-robin."""
    for b in batches:
        b.run_once()
        b.samples.clear()
    for _ in range(repeats):
        for b in batches:
            b.run_once()
    for b in batches:
        b.tally()


def _variant(b: Batch) -> dict[str, Any]:
    return {
        "rules": len(b.rules),
        "page_size": b.workload.page_size,
        "runs": b.filter.stats.runs,
        "indexed_pages": b.filter.stats.indexed_pages,
        "footprint_bytes": b.filter.stats.footprint,
        "median_ns": b.median,
        "best_ns": b.best,
        "mix": b.mix,
        "outcomes": b.outcomes,
        "events_per_access": b.events_per_access,
        "samples_ns": b.samples,
    }


def measure_batches(
    p: Params, w10: Workload, w10k: Workload, progress: Callable[[str], None]
) -> dict[str, Any]:
    """The batch group's figures (`batch_*` keys and `variants`)."""
    progress("generating accesses")
    dense = make_workload("dense", 1000, 1000, BAR_SIZE, DENSE_PAGE_SIZE, p.seed)
    acc10 = make_accesses(w10, p.accesses, p.seed)
    acc10k = make_accesses(w10k, p.accesses, p.seed)
    b10 = Batch("10 rules", w10, acc10)
    b10k = Batch("10,000 rules", w10k, acc10k)
    # Floors: the very same accesses under an empty policy. What is left is the fake device
    # (a bytearray: 2,000 random pages miss the TLB and the caches, 10 pages do not; real MMIO
    # is uncached and far slower) and the fixed part of the access path.
    f10 = Batch("floor: no rules, accesses of 10 rules", w10, acc10, no_rules=True)
    f10k = Batch("floor: no rules, accesses of 10,000 rules", w10k, acc10k, no_rules=True)
    # Control: the 10,000-rule table with accesses confined to 10 of its pages, as many as
    # the 10-rule policy has, so the fake device is as cache-warm as there.
    hot = Batch(
        "10,000 rules, accesses on 10 pages",
        w10k,
        make_accesses(w10k, p.accesses, p.seed, w10k.pages[:10]),
    )
    bdense = Batch("dense: 1,000 rules in one 64 KiB page", dense,
                   make_accesses(dense, p.accesses, p.seed))  # fmt: skip
    progress("timing batches")
    batches = [b10, b10k, f10, f10k, hot, bdense]
    run_batches(batches, p.repeats)
    over10, over10k = b10.median - f10.median, b10k.median - f10k.median
    return {
        "batch_ns_10": b10.median,
        "batch_ns_10000": b10k.median,
        "batch_ratio": b10k.median / b10.median,
        "batch_dense_ns": bdense.median,
        "batch_ns_10000_hot10": hot.median,
        "batch_ratio_hot10": hot.median / b10.median,
        "batch_floor_ns_10": f10.median,
        "batch_floor_ns_10000": f10k.median,
        "batch_filter_ns_10": over10,
        "batch_filter_ns_10000": over10k,
        # meaningless when the differences drown in noise (either near zero)
        "batch_filter_ratio": over10k / over10 if over10 > 0 and over10k > 0 else None,
        "batch_best_ns_10": b10.best,
        "batch_best_ns_10000": b10k.best,
        "batch_best_dense_ns": bdense.best,
        "variants": {b.label: _variant(b) for b in batches},
    }
