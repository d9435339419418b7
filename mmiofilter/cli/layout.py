"""`mmiofilter layout`: which pages of a BAR the guest may map, and what trapping costs."""

from __future__ import annotations

import argparse
from typing import Any

from ..backends import CallbackBackend
from ..devices.regmap import RegisterMap
from ..devices.targets import inert_targets
from ..filter import BarFilter
from ..guards import FspGuard
from ..results import Outcome
from ..rules import Policy
from .barmap import BarRow, runs_of, svg, text_grid
from .base import CliError, add_bar_arguments, human_size, print_json, register
from .source import add_source_argument, load_source

#: The page sizes an admin meets: x86 and most ARM hosts, ARM 16K, POWER and ARM 64K.
PAGE_SIZES = (4096, 16384, 65536)


def _configure(p: argparse.ArgumentParser) -> None:
    add_source_argument(p)
    add_bar_arguments(
        p,
        bar_size_default="the device's (--device), else the profile's register map",
        page_size_default="each of 4K, 16K and 64K",
        several_page_sizes=True,
    )
    p.add_argument(
        "--map", metavar="FILE.svg|-", default=None,
        help="draw the BAR's pages (direct, trapped; runs labelled with their rules), one row "
        "per page size: an SVG file, or `-` for a text grid on stdout",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _zero_read(offset: int, width: int) -> int:
    return 0


def _ignore_write(offset: int, width: int, value: int) -> None:
    return None


def _usable_in_trapped(f: BarFilter, regmap: RegisterMap | None) -> list[dict[str, Any]]:
    """Named registers no rule restricts that sit in pages not mapped read-write: the page
    size's cost to the guest driver, an exit for every access to them (`exits_on` "read" and
    "write"), or for every write on a read-direct page (`exits_on` "write" only). Decided by
    the core itself."""
    if regmap is None:
        return []
    direct, read_direct = f.layout.direct, f.layout.read_direct
    # A guard's registers are decided by protocol state, not by a probe: they are restricted.
    guarded = [
        rng
        for g in f.policy.for_bar(f.bar)
        if isinstance(g, FspGuard)
        for rng in g.register_ranges()
    ]
    out = []
    for r in regmap.regions:
        if r.kind != "register" or r.bar != f.bar or r.end > f.size:
            continue
        if any(lo < r.end and r.offset < hi for lo, hi in guarded):
            continue
        if any(off <= r.offset and r.end <= off + length for off, length in direct):
            continue
        width = r.size if r.size in (1, 2, 4, 8) else 4
        read = f.access(r.offset, width, False).outcome
        written = f.access(r.offset, width, True, 0).outcome
        if read is Outcome.PASS and written is Outcome.PASS:
            rd = any(off <= r.offset and r.end <= off + n for off, n in read_direct)
            exits_on = ["write"] if rd else ["read", "write"]
            out.append({"name": r.name, "offset": r.offset, "size": r.size, "exits_on": exits_on})
    return out


def layout_report(
    policy: Policy, size: int, page_size: int, bar: int, regmap: RegisterMap | None = None
) -> dict[str, Any]:
    """The page layout of one BAR under `policy`, as the C core computes it."""
    # Layout needs no device: a backend that reads 0 lets a 64 GiB BAR be described.
    nothing = CallbackBackend(_zero_read, _ignore_write)
    # Redirect targets (the VMM's config space) are the VMM's to hand; layout touches none.
    targets = inert_targets(policy, bar)
    f = BarFilter(size, policy, nothing, bar=bar, page_size=page_size, targets=targets)
    lay = f.layout
    trapped = _complement(lay.direct, size)  # pages not mapped read-write
    fully = _complement(sorted([*lay.direct, *lay.read_direct]), size)  # reads exit too
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
        "read_direct": [list(a) for a in lay.read_direct],
        "read_direct_pages": lay.read_direct_count,
        "read_direct_bytes": lay.read_direct_bytes,
        "fully_trapped_pages": lay.fully_trapped_count,
        "fully_trapped_areas": [list(a) for a in fully],
        "fully_trapped_bytes": size - lay.direct_bytes - lay.read_direct_bytes,
        "collateral": lay.collateral,
        "collateral_write_bytes": lay.collateral_write_bytes,
        "collateral_read_bytes": lay.collateral_read_bytes,
        "usable_registers_trapped": _usable_in_trapped(f, regmap),
        "table_footprint": f.table_footprint(),
    }


def _complement(areas: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The byte ranges of [0, size) outside the sorted, disjoint `areas`."""
    out: list[tuple[int, int]] = []
    pos = 0
    for off, length in [*areas, (size, 0)]:
        if off > pos:
            out.append((pos, off - pos))
        pos = off + length
    return out


def _area(off: int, length: int) -> str:
    return f"[{off:#x}, {off + length:#x})  {human_size(length)}"


def format_layout(r: dict[str, Any]) -> str:
    lines = [
        f"BAR{r['bar']}: {human_size(r['bar_size'])} ({r['bar_size']:#x}), "
        f"{human_size(r['page_size'])} pages: {r['pages']:,} page(s), {r['rules']} rule(s)",
        f"direct areas: {len(r['direct'])}, {human_size(r['direct_bytes'])} mapped read-write "
        "into the guest (no exit)",
    ]
    lines += [f"  {_area(off, length)}" for off, length in r["direct"]]
    lines.append(
        f"read-direct areas: {len(r['read_direct'])}, {human_size(r['read_direct_bytes'])} "
        "mapped read-only (reads cost no exit, writes exit and are filtered)"
    )
    lines += [f"  {_area(off, length)}" for off, length in r["read_direct"]]
    lines.append(
        f"trapped pages: {r['fully_trapped_pages']:,} ({human_size(r['fully_trapped_bytes'])}) "
        f"in {len(r['fully_trapped_areas'])} area(s) (every access exits)"
    )
    lines += [f"  {_area(off, length)}" for off, length in r["fully_trapped_areas"]]
    if r["read_direct_pages"]:
        lines.append(
            f"  a VMM that cannot map read-only traps the read-direct pages too: "
            f"{r['trapped_pages']:,} page(s)"
        )
    lines.append(
        f"collateral, writes: {human_size(r['collateral_write_bytes'])} of allowed bytes "
        "outside direct pages"
    )
    lines.append(
        f"collateral, reads: {human_size(r['collateral_read_bytes'])} of bytes whose reads pass, "
        "in trapped pages"
    )
    usable = r["usable_registers_trapped"]
    for exits_on, what in ((["read", "write"], "access"), (["write"], "write")):
        regs = [u for u in usable if u["exits_on"] == exits_on]
        if regs:
            lines.append(f"unrestricted registers that now cost an exit per {what} ({len(regs)}):")
            lines += [f"  {u['name']} {u['offset']:#x}" for u in regs]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    source = load_source(args)
    policy, resolved = source.resolve()
    size = args.bar_size or source.bar_size(args.bar)
    if size is None:
        raise CliError(f"{source.label}: give --bar-size (no register map gives BAR{args.bar}'s)")
    pages = args.page_size or list(PAGE_SIZES)
    if args.map is not None:
        return _draw(args, policy, size, pages, source.label)
    reports = [layout_report(policy, size, p, args.bar, source.register_map) for p in pages]
    if args.json:
        out: dict[str, Any] = reports[0] if len(pages) == 1 else {"layouts": reports}
        out = {"source": source.label, **out, "deferred": resolved.deferred,
               "warnings": resolved.warnings}  # fmt: skip
        print_json("layout", out)
        return 0
    print(f"policy: {source.label}")
    for note in resolved.deferred:
        print(f"deferred: {note}")
    for r in reports:
        print()
        print(format_layout(r))
    return 0


def _draw(args: argparse.Namespace, policy: Policy, size: int, pages: list[int], label: str) -> int:
    rows = []
    backend = CallbackBackend(_zero_read, _ignore_write)
    targets = inert_targets(policy, args.bar)
    for p in pages:
        f = BarFilter(size, policy, backend, bar=args.bar, page_size=p, targets=targets)
        rows.append(BarRow(args.bar, size, p, runs_of(f.layout, policy.for_bar(args.bar))))
    if args.map == "-":
        print(f"policy: {label}")
        print(text_grid(rows))
        return 0
    title = f"{label}: BAR{args.bar} ({human_size(size)})"
    with open(args.map, "w", encoding="utf-8") as out:
        out.write(svg(rows, title))
    print(f"{args.map}: BAR{args.bar}, {len(rows)} page size(s)")
    return 0


register(
    "layout",
    "show which pages of a BAR a policy lets the guest map directly and which it traps",
    _configure,
    _run,
)
