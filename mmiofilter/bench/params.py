"""How much work a run does: the full counts, the `--quick` smoke counts, the default seed."""

from __future__ import annotations

from dataclasses import dataclass

SEED = 20240611


@dataclass(frozen=True)
class Params:
    """How much work each measurement does."""

    accesses: int  # per batch call
    repeats: int  # batch calls per variant
    read_iters: int  # BarFilter.read calls per timing
    read_repeats: int
    model_iters_10: int
    model_iters_10000: int
    compile_repeats: int
    seed: int
    kvm_reads: int = 5_000  # guest MMIO reads per timed loop
    kvm_repeats: int = 3


FULL = Params(200_000, 9, 200_000, 3, 20_000, 20, 5, SEED)
QUICK = Params(4_000, 2, 2_000, 1, 200, 2, 1, SEED, kvm_reads=200, kvm_repeats=1)
