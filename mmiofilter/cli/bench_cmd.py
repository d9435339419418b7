"""`mmiofilter bench`: the benchmark (mmiofilter.bench)."""

from __future__ import annotations

import argparse

from .. import bench
from .base import register


def _run(args: argparse.Namespace) -> int:
    return bench.execute(args)


register(
    "bench",
    "measure the core and the Python API (figures, never a test)",
    bench.add_arguments,
    _run,
)
