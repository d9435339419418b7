"""The read group: `BarFilter.read` on an allowed register in a trapped page, from Python, and
the pure-Python reference model doing the same read (fewer iterations)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from ..backends import MemoryBackend
from ..filter import BarFilter
from .params import Params
from .workload import REG, Workload


def allowed_offset(w: Workload) -> int:
    """A 4-byte register no rule owns, in the first trapped page and next to no rule."""
    page = w.pages[0]
    for slot in range(w.page_size // 8):
        base = page * w.page_size + slot * 8
        if base not in w.rule_slots and base + REG not in w.rule_slots:
            return base
    raise RuntimeError("no allowed register in the first trapped page")


def time_reads(read: Callable[[int, int], int], offset: int, iters: int, repeats: int) -> float:
    """Median ns per `read(offset, 4)` over a Python loop, loop overhead included (it is part
    of what a Python caller pays)."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(iters):
            read(offset, REG)
        samples.append((time.perf_counter_ns() - t0) / iters)
    return statistics.median(samples)


def bar_filter_read_ns(w: Workload, p: Params) -> float:
    f = BarFilter(w.bar_size, w.policy, MemoryBackend(bytearray(w.bar_size)), page_size=w.page_size)
    offset = allowed_offset(w)
    if offset // w.page_size not in set(f.layout.trapped_pages):
        raise RuntimeError("the measured register is not in a trapped page")
    f.read(offset, REG)  # warm-up: thread-local buffers, caches
    return time_reads(f.read, offset, p.read_iters, p.read_repeats)


def model_read_ns(w: Workload, iters: int) -> tuple[float | None, str | None]:
    """The reference model reading the same register, or (None, why) when it is not usable."""
    try:
        from ..testing.model import ModelDevice, ModelFilter
    except ImportError as e:  # it needs hypothesis (a test dependency) through mmiofilter.testing
        return None, f"reference model not importable: {e}"
    try:
        m = ModelFilter(w.bar_size, w.policy, ModelDevice(), page_size=w.page_size)
        offset = allowed_offset(w)
        m.read(offset, REG)
        return time_reads(m.read, offset, iters, 1), None
    except Exception as e:  # a model under development must not cost the other figures
        return None, f"reference model failed: {e!r}"


def measure_python(
    p: Params, w10: Workload, w10k: Workload, progress: Callable[[str], None]
) -> dict[str, Any]:
    """The read group's figures (`read_*` and `model_*` keys)."""
    progress("timing BarFilter.read")
    out: dict[str, Any] = {
        "read_ns_10": bar_filter_read_ns(w10, p),
        "read_ns_10000": bar_filter_read_ns(w10k, p),
    }
    progress("timing the reference model")
    out["model_read_ns"], out["model_note"] = model_read_ns(w10, p.model_iters_10)
    out["model_read_ns_10000"] = None
    if out["model_read_ns"] is not None:
        out["model_read_ns_10000"], _ = model_read_ns(w10k, p.model_iters_10000)
    return out
