"""The compile group: a 64 GiB BAR with 1,000 and 10,000 rules, compiled by the C core alone
and by `BarFilter(...)` (which adds the Python rule conversion and the layout queries), and
the compiled table's footprint."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from .. import _binding as cb
from .._core import lib
from ..backends import CallbackBackend
from ..filter import BarFilter
from .cbatch import compile_table
from .params import Params
from .workload import BIG_BAR_SIZE, PAGE_SIZE, make_workload


def _noop_read(offset: int, width: int) -> int:
    return 0


def _noop_write(offset: int, width: int, value: int) -> None:
    return None


def compile_figures(n_rules: int, p: Params) -> dict[str, float]:
    """A 64 GiB BAR (4 KiB pages) with `n_rules` registers spread over it: C compile time
    (median), BarFilter construction time and the table's footprint."""
    per_page = 1
    w = make_workload(f"big{n_rules}", n_rules, per_page, BIG_BAR_SIZE, PAGE_SIZE, p.seed)
    crules = cb.RuleArray(w.rules)
    times, stats = [], None
    for _ in range(p.compile_repeats):
        table, stats = compile_table(crules, w.bar_size, w.page_size)
        lib.mf_table_free(table)
        times.append(stats.compile_ns)
    assert stats is not None
    policy = w.policy
    backend = CallbackBackend(_noop_read, _noop_write)  # a 64 GiB buffer is impossible
    t0 = time.perf_counter_ns()
    f = BarFilter(w.bar_size, policy, backend, page_size=w.page_size)
    construct_ns = time.perf_counter_ns() - t0
    return {
        "compile_ms": statistics.median(times) / 1e6,
        "construct_ms": construct_ns / 1e6,
        "footprint_bytes": f.table_footprint(),
        "runs": stats.runs,
        "indexed_pages": stats.indexed_pages,
        "trapped_pages": f.layout.trapped_count,
        "direct_areas": len(f.layout.direct),
    }


def measure_compile(p: Params, progress: Callable[[str], None]) -> dict[str, Any]:
    """The compile group's figures (`compile_*`, `construct_*`, `footprint_*` and `big_bar`)."""
    progress("compiling 64 GiB BARs")
    big1k = compile_figures(1000, p)
    big10k = compile_figures(10_000, p)
    return {
        "compile_64g_1000_ms": big1k["compile_ms"],
        "construct_64g_1000_ms": big1k["construct_ms"],
        "footprint_64g_1000_bytes": big1k["footprint_bytes"],
        "compile_64g_10000_ms": big10k["compile_ms"],
        "construct_64g_10000_ms": big10k["construct_ms"],
        "footprint_64g_10000_bytes": big10k["footprint_bytes"],
        "big_bar": {"1000": big1k, "10000": big10k},
    }
