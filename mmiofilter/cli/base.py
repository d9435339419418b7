"""The framework of the `mmiofilter` command: one subcommand per task.

Adding a subcommand is a function that adds its arguments, a function that runs it, and one
`register(...)` line in a module of this package that `__init__` imports. A run function
returns the exit status, or raises `CliError` (or a PolicyError / ValueError / OSError of the
library) for a one-line message on stderr and exit status 2: an admin reading a typo in a
policy file needs the message, not a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from .._version import __version__
from ..errors import PolicyError
from ..rules import NUM_BARS

EXIT_USAGE = 2
#: Ctrl-C: what a shell reports for SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
#: The version of every command's JSON shape: `{"schema": SCHEMA, "command": NAME, ...}`.
SCHEMA = 1

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^(\d+)\s*([KMGT]?)(?:I?B)?$", re.IGNORECASE)


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (prog: error: ...), exit status 2,
    with a "did you mean" for a mistyped option or subcommand."""

    def _all_options(self) -> list[str]:
        opts = [o for a in self._actions for o in a.option_strings]
        for a in self._actions:
            if isinstance(a, argparse._SubParsersAction):
                for p in a.choices.values():
                    opts += [o for b in p._actions for o in b.option_strings]
        return opts

    def error(self, message: str) -> NoReturn:
        m = re.match(r"unrecognized arguments: (\S+)", message)
        if m:
            message += did_you_mean(m.group(1).split("=")[0], self._all_options())
        m = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        if m:
            message += did_you_mean(m.group(1), list(COMMANDS))
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def print_json(command: str, payload: dict[str, object]) -> None:
    """The one JSON shape of every command: schema version, command name, then its fields."""
    print(json.dumps({"schema": SCHEMA, "command": command, **payload}, indent=2))


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows of cells as aligned lines: each column as wide as its widest cell."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    return [indent + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]


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


def size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def page_sizes_arg(text: str) -> list[int]:
    """`4096,65536` or `4K,64K`: one or more page sizes."""
    try:
        sizes = [parse_size(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not sizes:
        raise argparse.ArgumentTypeError(f"{text!r}: no page size")
    return sizes


def bar_arg(text: str) -> int:
    try:
        bar = int(text, 0)
    except ValueError:
        bar = -1
    if not 0 <= bar < NUM_BARS:
        raise argparse.ArgumentTypeError(f"BAR {text!r} is not an index 0..{NUM_BARS - 1}")
    return bar


_BINARY_UNITS = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def add_bar_arguments(
    p: argparse.ArgumentParser,
    *,
    bar_size_default: str,
    page_size_default: str,
    several_page_sizes: bool = False,
) -> None:
    """--bar-size, --bar and --page-size, as every command about one BAR takes them; the
    defaults differ per command and are said in the help. With `several_page_sizes`,
    --page-size takes a comma-separated list (a list, in the namespace)."""
    p.add_argument(
        "--bar-size", type=size_arg, default=None, metavar="N",
        help=f"BAR size: decimal, hex (0x1000) or with a unit (64K, 16M, 64G); default: "
        f"{bar_size_default}",
    )  # fmt: skip
    p.add_argument("--bar", type=bar_arg, default=0, help="BAR index 0..5 (default 0)")
    p.add_argument(
        "--page-size", type=page_sizes_arg if several_page_sizes else size_arg, default=None,
        metavar="P[,P...]" if several_page_sizes else "P",
        help=f"page size{'s' if several_page_sizes else ''} (4K, 16K, 64K, ...); default: "
        f"{page_size_default}",
    )  # fmt: skip


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
    parser.add_argument("--version", action="version", version=f"mmiofilter {__version__}")
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
    except KeyboardInterrupt:
        print(f"mmiofilter {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `mmiofilter ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    except (CliError, PolicyError, ValueError, OSError) as e:
        print(f"mmiofilter {args.command}: error: {e}", file=sys.stderr)
        if getattr(args, "json", False):  # a tool reading stdout gets the error too
            print_json(args.command, {"ok": False, "errors": [str(e)]})
        return EXIT_USAGE
