"""The `mmiofilter` command: one subcommand per task.

Adding a subcommand is a function that adds its arguments, a function that runs it, and one
`register(...)` line (see the end of this file). A run function returns the exit status, or
raises `CliError` (or a PolicyError / ValueError / OSError of the library) for a one-line
message on stderr and exit status 2: an admin reading a typo in a policy file needs the
message, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import mmap
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from . import bench
from .backends import CallbackBackend
from .errors import PolicyError
from .filter import BarFilter
from .rules import NUM_BARS, Policy

EXIT_USAGE = 2

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^(\d+)\s*([KMGT]?)(?:I?B)?$", re.IGNORECASE)


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (prog: error: ...), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# ---- argument types ---------------------------------------------------------------------


def parse_size(text: str) -> int:
    """A byte count: decimal (`65536`), hex (`0x1000`) or with a binary unit (`4K`, `64KiB`,
    `16M`, `64G`). At least 1."""
    s = text.strip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", s):
        value = int(s, 16)
    else:
        m = _SIZE_RE.match(s)
        if not m:
            raise ValueError(f"{text!r} is not a size (examples: 4096, 0x1000, 4K, 16M, 64G)")
        value = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise ValueError(f"size {text!r} must be at least 1 byte")
    return value


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bar_arg(text: str) -> int:
    try:
        bar = int(text, 0)
    except ValueError:
        bar = -1
    if not 0 <= bar < NUM_BARS:
        raise argparse.ArgumentTypeError(f"BAR {text!r} is not an index 0..{NUM_BARS - 1}")
    return bar


_BINARY_UNITS = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def human_size(n: int) -> str:
    """Exact in the largest unit that divides n (`4 KiB`, `56 KiB`, `4,092 B`), with an
    approximation in a larger unit when that helps (`67,108,800 KiB (~64.0 GiB)`)."""
    exact = next(((u, name) for u, name in _BINARY_UNITS if n >= u and n % u == 0), (1, "B"))
    text = f"{n // exact[0]:,} {exact[1]}"
    big = next(((u, name) for u, name in _BINARY_UNITS if n >= u), None)
    if big is not None and big[0] > exact[0]:
        text += f" (~{n / big[0]:.1f} {big[1]})"
    return text


# ---- registration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register(
    name: str,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Make `mmiofilter NAME` exist: `configure` adds its arguments, `run` does it."""
    if name in COMMANDS:
        raise ValueError(f"subcommand {name!r} is registered twice")
    COMMANDS[name] = Command(name, help, configure, run)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mmiofilter",
        description="Byte-exact userspace MMIO filter for PCI BARs passed through to VMs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        status: int = args._run(args)
        return status
    except (CliError, PolicyError, ValueError, OSError) as e:
        print(f"mmiofilter {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


# ---- bench ------------------------------------------------------------------------------


def _run_bench(args: argparse.Namespace) -> int:
    return bench.execute(args)


register(
    "bench",
    "measure the core and the Python API (figures, never a test)",
    bench.add_arguments,
    _run_bench,
)


# ---- layout -----------------------------------------------------------------------------


def _configure_layout(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="policy file (TOML)")
    p.add_argument(
        "--bar-size", type=_size_arg, required=True, metavar="N",
        help="BAR size: decimal, hex (0x1000) or with a unit (64K, 16M, 64G)",
    )  # fmt: skip
    p.add_argument(
        "--page-size", type=_size_arg, default=None, metavar="P",
        help=f"page size: 4K, 16K, 64K, ... (default: this host's, {human_size(mmap.PAGESIZE)})",
    )  # fmt: skip
    p.add_argument("--bar", type=_bar_arg, default=0, help="BAR index 0..5 (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _zero_read(offset: int, width: int) -> int:
    return 0


def _ignore_write(offset: int, width: int, value: int) -> None:
    return None


def layout_report(policy: Policy, size: int, page_size: int, bar: int) -> dict[str, Any]:
    """The page layout of one BAR under `policy`, as the C core computes it."""
    # Layout needs no device: a backend that reads 0 lets a 64 GiB BAR be described.
    f = BarFilter(
        size, policy, CallbackBackend(_zero_read, _ignore_write), bar=bar, page_size=page_size
    )
    lay = f.layout
    trapped: list[tuple[int, int]] = []  # the complement of the direct areas
    pos = 0
    for off, length in [*lay.direct, (size, 0)]:
        if off > pos:
            trapped.append((pos, off - pos))
        pos = off + length
    return {
        "bar": bar,
        "bar_size": size,
        "page_size": page_size,
        "rules": len(policy.for_bar(bar)),
        "pages": lay.pages,
        "direct": [list(a) for a in lay.direct],
        "direct_bytes": lay.direct_bytes,
        "trapped_pages": lay.trapped_count,
        "trapped_areas": [list(a) for a in trapped],
        "trapped_bytes": size - lay.direct_bytes,
        "collateral": lay.collateral,
        "table_footprint": f.table_footprint(),
    }


def _area(off: int, length: int) -> str:
    return f"[{off:#x}, {off + length:#x})  {human_size(length)}"


def format_layout(r: dict[str, Any], source: str) -> str:
    lines = [
        f"policy: {source} ({r['rules']} rule(s) for BAR{r['bar']})",
        f"BAR{r['bar']}: {human_size(r['bar_size'])} ({r['bar_size']:#x}), "
        f"{human_size(r['page_size'])} pages: {r['pages']:,} page(s)",
        f"direct areas: {len(r['direct'])}, {human_size(r['direct_bytes'])} mapped into the guest",
    ]
    lines += [f"  {_area(off, length)}" for off, length in r["direct"]]
    lines.append(
        f"trapped pages: {r['trapped_pages']:,} ({human_size(r['trapped_bytes'])}) in "
        f"{len(r['trapped_areas'])} area(s)"
    )
    lines += [f"  {_area(off, length)}" for off, length in r["trapped_areas"]]
    lines.append(f"collateral: {human_size(r['collateral'])} of allowed bytes in trapped pages")
    return "\n".join(lines)


def _run_layout(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise CliError(f"{args.file}: no such policy file")
    policy = Policy.from_toml(args.file)
    page_size = mmap.PAGESIZE if args.page_size is None else args.page_size
    report = layout_report(policy, args.bar_size, page_size, args.bar)
    print(json.dumps(report, indent=2) if args.json else format_layout(report, str(args.file)))
    return 0


register(
    "layout",
    "show which pages of a BAR a policy lets the guest map directly and which it traps",
    _configure_layout,
    _run_layout,
)


if __name__ == "__main__":
    raise SystemExit(main())
