"""`mmiofilter replay POLICY TRACE`: check a policy against a real driver's trace before use."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..devices import PolicyFile, load_policy_file, profiles
from ..replay.engine import replay
from ..replay.items import U64_MAX
from ..replay.report import ReplayReport
from ..replay.source import FORMATS, open_trace
from ..rules import Policy
from .base import (
    EXIT_INTERRUPTED,
    CliError,
    add_bar_arguments,
    did_you_mean,
    print_json,
    register,
)

HELP = "replay a driver's MMIO trace through a policy: what each rule would have done"

#: What `--fail-on` can make a failure (exit status 1), and how each is counted.
FAIL_ON: dict[str, Callable[[ReplayReport], int]] = {
    "changed-reads": lambda r: r.changed_reads,  # reads the driver would see differently
    "blocked": lambda r: r.blocked,  # accesses blocked wholly or in part
    "malformed": lambda r: r.malformed.count,  # trace lines that are not records
    "nothing": lambda r: int(r.accesses == 0),  # no access of the BAR replayed at all
}
EXIT_FAILED = 1
PROGRESS_SECONDS = 2.0


def load_policy(path: Path, options: list[str] | None = None) -> tuple[Policy, list[str]]:
    """The policy the trace is replayed against: a profile name (with NAME=VALUE options), a
    plain or a device policy file. Rules that need the device (NVLink units from the
    device-info table) cannot be resolved from a trace; they are returned as notes."""
    name = str(path)
    if name in profiles():
        profile = profiles()[name]
        given: dict[str, object] = {}
        for item in options or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise CliError(f"--option {item!r}: expected NAME=VALUE")
            given[key.strip()] = value.strip()
        pf = PolicyFile(where=name, extra=Policy([]), profile=profile,
                        choices=profile.choices(given, f"profile {name}"))  # fmt: skip
    else:
        if options:
            raise CliError("--option applies to a profile name; a policy file has [options]")
        if not path.is_file():
            raise CliError(
                f"{name}: neither a profile{did_you_mean(name, list(profiles()))} "
                f"({', '.join(profiles())}) nor a policy file"
            )
        pf = load_policy_file(path)
    policy, resolved = pf.resolve(None)
    return policy, resolved.deferred


def fail_on_arg(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    for t in items:
        if t not in FAIL_ON:
            raise argparse.ArgumentTypeError(
                f"{t!r} is not one of {', '.join(FAIL_ON)}{did_you_mean(t, list(FAIL_ON))}"
            )
    return items


def _address(text: str) -> int:
    try:
        addr = int(text, 0)
    except ValueError:
        addr = -1
    if not 0 <= addr <= U64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (0x... or decimal)")
    return addr


def configure_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", type=Path, metavar="PROFILE|FILE",
                   help="a profile name or a policy file (TOML)")  # fmt: skip
    p.add_argument(
        "trace", type=Path,
        help="Linux mmiotrace log, or QEMU output with -trace 'vfio_region_*' (x-no-mmap=on "
        "makes every access of the BAR trap, and so appear in the trace); `-` reads standard "
        "input, a .gz file is decompressed",
    )  # fmt: skip
    p.add_argument(
        "--option", "-o", action="append", default=[], metavar="NAME=VALUE",
        help="a profile option, when the policy is a profile name (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--fail-on", type=fail_on_arg, default=[], metavar="WHAT[,WHAT...]",
        help="exit 1 when the replay finds any of: " + ", ".join(FAIL_ON) + " (a CI gate)",
    )  # fmt: skip
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="a progress line on stderr every few seconds (default: when stderr is a terminal)",
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


class _Progress:
    """A progress line on stderr at most every PROGRESS_SECONDS."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()

    def __call__(self, r: ReplayReport, items: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        print(
            f"replay: {r.lines:,} line(s), {r.accesses:,} access(es) of BAR{r.bar}, "
            f"{r.blocked:,} blocked, {r.changed_reads:,} changed read(s) "
            f"({now - self.start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )


def failures(report: ReplayReport, fail_on: list[str]) -> list[str]:
    return [f"{what}: {FAIL_ON[what](report):,}" for what in fail_on if FAIL_ON[what](report)]


def run_replay(args: argparse.Namespace) -> int:
    policy, deferred = load_policy(args.policy, args.option)
    source = open_trace(
        args.trace, fmt=args.format, bar=args.bar, base=args.base, device=args.device
    )
    show = sys.stderr.isatty() if args.progress is None else args.progress
    report = replay(
        source, policy, bar_size=args.bar_size, bar=args.bar, page_size=args.page_size,
        progress=_Progress() if show else None, progress_every=4096,
    )  # fmt: skip
    failed = failures(report, args.fail_on)
    if args.json:
        out = {"policy": str(args.policy), "trace": str(args.trace), "deferred": deferred,
               **report.to_json(), "fail_on": args.fail_on, "failed": failed}  # fmt: skip
        print_json("replay", out)
    else:
        print(f"policy: {args.policy}\ntrace: {args.trace}")
        for note in deferred:
            print(f"not in this replay (needs the device): {note}")
        print(report.format_text())
    if report.interrupted:
        return EXIT_INTERRUPTED
    if failed:
        print(f"mmiofilter replay: FAILED (--fail-on): {'; '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


register("replay", HELP, configure_replay, run_replay)
