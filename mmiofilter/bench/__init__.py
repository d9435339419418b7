"""The first benchmark of mmiofilter: a command, never a timed test (docs/benchmarks.md).

    python -m mmiofilter.bench [--json] [--quick]      (or: mmiofilter bench ...)

Everything is measured side by side in one run, so the ratios compare like with like on the
same machine at the same moment:

- **batch**: ns per trapped access through `mf_access_batch` with prebuilt C arrays and a
  memory backend, under 10 rules, 10,000 rules, and a dense policy (1,000 rules in one 64 KiB
  page). The repeats of all variants alternate, so a frequency change or a noisy neighbour
  hits them alike. Two references separate the filter from its fake device: the *floors* run
  the very same accesses under an empty policy (a bytearray standing for the BAR misses the
  TLB and caches on 2,000 random pages, not on 10; real MMIO is uncached and far slower), and
  a *control* runs the 10,000-rule table with accesses confined to 10 of its pages.
- **read**: `BarFilter.read` on an allowed register in a trapped page, from Python.
- **model**: the pure-Python reference model doing the same read (fewer iterations).
- **guard**: the FSP guard on mailbox accesses that are not a doorbell, beside a plain trapped
  rule on the same registers and no rules at all (`guard`).
- **compile**: a 64 GiB BAR with 1,000 and 10,000 rules, compiled by the C core alone and by
  `BarFilter(...)` (which adds the Python rule conversion and the layout queries).

Policies and accesses are generated with a fixed seed by one procedure for every variant, so
the mixes are comparable; the mix and the outcomes it produced are part of the report.

Layout of the package (each module imports only those listed above it, never the reverse):

- `params`: how much work a run does (`Params`, `FULL`, `QUICK`, `SEED`);
- `workload`: sizes, generated policies and accesses, their mix;
- `cbatch`: the batch group, the C core through its public API (`measure_batches`);
- `pyread`: the read and model group, from Python (`measure_python`);
- `compile_cost`: the compile group, compile time and footprint (`measure_compile`);
- `machine`: what the run was measured on;
- `run`: one run, every group in turn, and the issue's targets; its result is the `--json`
  contract;
- `report`: the table printed without `--json`;
- this file: the command line, shared by `python -m mmiofilter.bench` (`__main__`) and
  `mmiofilter bench` (`mmiofilter.cli` calls `add_arguments` and `execute`).

A new measurement group (KVM figures, say) is a module of its own beside `cbatch`, `pyread`
and `compile_cost`, holding a `measure_<group>(p, ..., progress) -> dict[str, Any]` that
returns its figures under keys of its own (prefixed with the group's name); then one
`r.update(measure_<group>(...))` line in `run.run`, its lines in `report.ROWS` (or a section of
`report.format_table`), its targets if any in `run.targets`, and its counts if any in
`params.Params` (with `FULL`, `QUICK` and `params_from` below).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .params import FULL, QUICK, SEED, Params
from .report import format_table
from .run import run

__all__ = [
    "FULL",
    "QUICK",
    "SEED",
    "Params",
    "add_arguments",
    "build_parser",
    "execute",
    "format_table",
    "main",
    "params_from",
    "run",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench options, shared by `python -m mmiofilter.bench` and `mmiofilter bench`."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run with small counts (not figures)"
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"generator seed ({SEED})")
    parser.add_argument(
        "--accesses", type=int, default=None, help="accesses per batch call (200000)"
    )


def params_from(args: argparse.Namespace) -> Params:
    p = QUICK if args.quick else FULL
    accesses = p.accesses if args.accesses is None else args.accesses
    if accesses < 1:
        raise ValueError("--accesses must be at least 1")
    return dataclasses.replace(p, accesses=accesses, seed=args.seed)


def execute(args: argparse.Namespace) -> int:
    """Run with parsed arguments; prints the report to stdout, progress to stderr."""
    p = params_from(args)

    def progress(msg: str) -> None:
        if not args.json:
            print(f"... {msg}", file=sys.stderr, flush=True)

    result = run(p, progress)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmiofilter.bench",
        description="Benchmark the mmiofilter core and Python API (figures, never a test).",
    )
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return execute(args)
    except ValueError as e:
        print(f"mmiofilter bench: error: {e}", file=sys.stderr)
        return 2
