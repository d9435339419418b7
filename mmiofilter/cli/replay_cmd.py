"""`mmiofilter replay POLICY TRACE`: check a policy against a real driver's trace before use."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..devices import load_policy_file
from ..replay.engine import replay
from ..replay.items import U64_MAX
from ..replay.source import FORMATS, open_trace
from ..rules import Policy
from .base import add_bar_arguments, register

HELP = "replay a driver's MMIO trace through a policy: what each rule would have done"


def load_policy(path: Path) -> tuple[Policy, list[str]]:
    """The policy the trace is replayed against: a plain or a device policy file. Rules that
    need the device (NVLink units from the device-info table) cannot be resolved from a trace;
    they are returned as notes."""
    policy, resolved = load_policy_file(path).resolve(None)
    return policy, resolved.deferred


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
    add_bar_arguments(
        p,
        bar_size_default="what the trace says (PCIDEV, MAP or vfio_region_setup lines)",
        page_size_default="this host's; it decides which accesses trap",
    )
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
    policy, deferred = load_policy(args.policy)
    source = open_trace(
        args.trace, fmt=args.format, bar=args.bar, base=args.base, device=args.device
    )
    report = replay(source, policy, bar_size=args.bar_size, bar=args.bar, page_size=args.page_size)
    if args.json:
        out = {"policy": str(args.policy), "trace": str(args.trace), "deferred": deferred,
               **report.to_json()}  # fmt: skip
        print(json.dumps(out, indent=2))
    else:
        print(f"policy: {args.policy}\ntrace: {args.trace}")
        for note in deferred:
            print(f"not in this replay (needs the device): {note}")
        print(report.format_text())
    return 0


register("replay", HELP, configure_replay, run_replay)
