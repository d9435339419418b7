"""`mmiofilter replay POLICY TRACE`: check a policy against a real driver's trace before use.

`register_replay(register)` adds the subcommand through the CLI's `register`. This module does
not import the CLI package, so the CLI can import it from anywhere without an import cycle.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

from ..rules import NUM_BARS, Policy
from .engine import replay
from .items import U64_MAX
from .source import FORMATS, open_trace

HELP = "replay a driver's MMIO trace through a policy: what each rule would have done"

Register = Callable[
    [str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]],
    None,
]


def load_policy(path: Path) -> Policy:
    """The policy the trace is replayed against (a plain policy file for now)."""
    return Policy.from_toml(path)


_SIZE = re.compile(r"(0[xX][0-9a-fA-F]{1,16}|[0-9]{1,20})\s*(?:([KMGT])(?:i?B)?)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    """A byte count as the other subcommands take it: 65536, 0x10000, 64K, 16M, 64GiB."""
    m = _SIZE.fullmatch(text.strip())
    value = 0
    if m:
        digits = m[1]
        number = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits)
        value = number * _UNITS[(m[2] or "").upper()]
    if not 1 <= value <= U64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 0x10000, 64K, 16M)")
    return value


def _bar(text: str) -> int:
    try:
        bar = int(text, 0)
    except ValueError:
        bar = -1
    if not 0 <= bar < NUM_BARS:
        raise argparse.ArgumentTypeError(f"BAR {text!r} is not an index 0..{NUM_BARS - 1}")
    return bar


def _address(text: str) -> int:
    try:
        addr = int(text, 0)
    except ValueError:
        addr = -1
    if not 0 <= addr <= U64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (0x... or decimal)")
    return addr


def configure_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", type=Path, help="policy file (TOML)")
    p.add_argument(
        "trace", type=Path,
        help="Linux mmiotrace log, or QEMU output with -trace 'vfio_region_*' (x-no-mmap=on "
        "makes every access of the BAR trap, and so appear in the trace)",
    )  # fmt: skip
    p.add_argument(
        "--bar-size", type=_size, default=None, metavar="N",
        help="BAR size: 0x1000000, 16M, ... (default: what the trace says: PCIDEV, MAP or "
        "vfio_region_setup lines)",
    )  # fmt: skip
    p.add_argument("--bar", type=_bar, default=0, help="BAR index 0..5 (default 0)")
    p.add_argument(
        "--page-size", type=_size, default=None, metavar="P",
        help="page size 4K, 16K, 64K, ...: decides which accesses trap (default: this host's)",
    )  # fmt: skip
    p.add_argument(
        "--format", choices=("auto", *FORMATS), default="auto",
        help="trace format (default: detected from the file)",
    )  # fmt: skip
    p.add_argument(
        "--base", type=_address, default=None, metavar="ADDR",
        help="mmiotrace: bus address of the BAR (default: the PCIDEV BAR holding the first MAP "
        "in one, else the first MAP)",
    )  # fmt: skip
    p.add_argument(
        "--device", default=None, metavar="NAME",
        help="QEMU: the device to replay, e.g. 0000:65:00.0 (default: the first to access "
        "the BAR)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_replay(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    source = open_trace(
        args.trace, fmt=args.format, bar=args.bar, base=args.base, device=args.device
    )
    report = replay(source, policy, bar_size=args.bar_size, bar=args.bar, page_size=args.page_size)
    if args.json:
        out = {"policy": str(args.policy), "trace": str(args.trace), **report.to_json()}
        print(json.dumps(out, indent=2))
    else:
        print(f"policy: {args.policy}\ntrace: {args.trace}\n{report.format_text()}")
    return 0


def register_replay(register: Register) -> None:
    """Add `mmiofilter replay` through the CLI's `register(name, help, configure, run)`."""
    register("replay", HELP, configure_replay, run_replay)
