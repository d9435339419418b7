"""A picture of a BAR's pages: which the guest maps, which trap, and the rules that trap them.

Pages are classed from the layout the C core computed; runs of pages of one class collapse
into one band (a 16 MiB BAR at 4 KiB pages is 4,096 pages, a 64 GiB one 16 million), and every
trapped run is labelled with the rules it holds. One row per page size. `svg()` draws it,
`text_grid()` prints the same as characters.

A new page class (read-direct pages, say) is one `PageClass` member and one entry of
`AREA_SOURCES`: the layout attribute listing its areas.
"""

from __future__ import annotations

import enum
import html
from bisect import bisect_left
from dataclasses import dataclass

from ..layout import Layout
from ..rules import Rule
from .base import human_size


class PageClass(enum.Enum):
    """What the guest gets on a page: (name, grid character, SVG colour)."""

    DIRECT = ("direct", ".", "#8fd18f")
    TRAPPED = ("trapped", "#", "#e07b6a")

    @property
    def title(self) -> str:
        return self.value[0]

    @property
    def char(self) -> str:
        return self.value[1]

    @property
    def colour(self) -> str:
        return self.value[2]


#: Page classes the layout lists areas for, and the Layout attribute holding (offset, length)
#: areas. Pages in none of them trap.
AREA_SOURCES: tuple[tuple[PageClass, str], ...] = ((PageClass.DIRECT, "direct"),)
DEFAULT_CLASS = PageClass.TRAPPED
#: Rule names listed per run; more are counted.
MAX_NAMES = 6


@dataclass(frozen=True)
class Run:
    cls: PageClass
    start: int  # byte offsets, page-aligned (the end may be the BAR's end)
    end: int
    pages: int
    rules: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class BarRow:
    bar: int
    bar_size: int
    page_size: int
    runs: list[Run]

    @property
    def pages(self) -> int:
        return -(-self.bar_size // self.page_size)


def runs_of(layout: Layout, rules: tuple[Rule, ...]) -> list[Run]:
    """The layout as runs of one class, in offset order, trapped runs labelled with the rules
    they hold (sorted by offset)."""
    areas: list[tuple[int, int, PageClass]] = []
    for cls, attr in AREA_SOURCES:
        areas += [(off, off + length, cls) for off, length in getattr(layout, attr, [])]
    areas.sort()
    spans: list[tuple[int, int, PageClass]] = []
    pos = 0
    for start, end, cls in [*areas, (layout.size, layout.size, DEFAULT_CLASS)]:
        if start > pos:
            spans.append((pos, start, DEFAULT_CLASS))
        if end > start:
            spans.append((start, end, cls))
        pos = max(pos, end)
    merged: list[tuple[int, int, PageClass]] = []
    for s in spans:  # adjacent areas of one class are one run
        if merged and merged[-1][2] is s[2] and merged[-1][1] == s[0]:
            merged[-1] = (merged[-1][0], s[1], s[2])
        else:
            merged.append(s)
    ordered = sorted(rules, key=lambda r: (r.start, r.end))
    starts = [r.start for r in ordered]
    ps = layout.page_size
    out = []
    for start, end, cls in merged:
        names: tuple[str, ...] = ()
        if cls is not PageClass.DIRECT:
            hi = bisect_left(starts, end)
            names = tuple(r.name for r in ordered[:hi] if r.end > start)
        out.append(Run(cls, start, end, -(-(end - start) // ps), names))
    return out


def _names(run: Run) -> str:
    shown = ", ".join(run.rules[:MAX_NAMES])
    more = len(run.rules) - MAX_NAMES
    if more > 0:
        shown += f", +{more} more"
    return shown or "(no rule: a partial page)"


# ---- text ---------------------------------------------------------------------------------

GRID_COLUMNS = 64
GRID_CELLS = 4096


def text_grid(rows: list[BarRow]) -> str:
    """Per page size: a grid of one character per page (or per group of pages, at most 4,096
    cells; a cell with any trapped page is trapped), then the runs."""
    out: list[str] = []
    legend = ", ".join(f"{c.char} {c.title}" for c in PageClass)
    for row in rows:
        per_cell = -(-row.pages // GRID_CELLS)
        cells = -(-row.pages // per_cell)
        out.append(
            f"BAR{row.bar}: {human_size(row.bar_size)}, {human_size(row.page_size)} pages: "
            f"{row.pages:,} page(s); one cell = {per_cell:,} page(s) ({legend})"
        )
        chars = [PageClass.DIRECT.char] * cells
        for run in row.runs:
            first = run.start // row.page_size // per_cell
            last = (-(-run.end // row.page_size) - 1) // per_cell
            for c in range(first, min(last, cells - 1) + 1):
                if run.cls is not PageClass.DIRECT:  # a mixed cell shows what traps
                    chars[c] = run.cls.char
        width = len(f"{row.bar_size:#x}")
        for i in range(0, cells, GRID_COLUMNS):
            off = i * per_cell * row.page_size
            out.append(f"  {off:#0{width}x}  {''.join(chars[i : i + GRID_COLUMNS])}")
        out.append("  runs:")
        for run in row.runs:
            label = "" if run.cls is PageClass.DIRECT else f"  {_names(run)}"
            out.append(
                f"    [{run.start:#0{width}x}, {run.end:#0{width}x})  {run.pages:>9,} page(s)  "
                f"{run.cls.title:<8}{label}".rstrip()
            )
        out.append("")
    return "\n".join(out)


# ---- SVG ----------------------------------------------------------------------------------

WIDTH = 960
BAND = 28
MIN_RUN = 6  # px: a one-page trap in a 64 GiB BAR stays visible


def _widths(row: BarRow, width: float) -> list[float]:
    """Band widths in proportion to bytes, with at least MIN_RUN px each."""
    n = len(row.runs)
    spare = max(width - n * MIN_RUN, 0)
    return [MIN_RUN + spare * r.size / row.bar_size for r in row.runs]


def svg(rows: list[BarRow], title: str) -> str:
    """The rows as one SVG image: a band per page size, trapped runs numbered, and under each
    band the numbered list of trapped runs with their rules."""
    esc = html.escape
    left, y = 20, 40
    parts: list[str] = []
    for row in rows:
        parts.append(
            f'<text x="{left}" y="{y}" class="h">BAR{row.bar}: {esc(human_size(row.bar_size))}, '
            f"{esc(human_size(row.page_size))} pages ({row.pages:,})</text>"
        )
        y += 8
        x = float(left)
        n = 0
        notes: list[str] = []
        for run, w in zip(row.runs, _widths(row, WIDTH - 2 * left), strict=True):
            tip = (f"[{run.start:#x}, {run.end:#x}) {run.pages:,} page(s) {run.cls.title}"
                   + (f": {_names(run)}" if run.cls is not PageClass.DIRECT else ""))  # fmt: skip
            parts.append(
                f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{BAND}" '
                f'fill="{run.cls.colour}" class="{run.cls.title}"><title>{esc(tip)}</title></rect>'
            )
            if run.cls is not PageClass.DIRECT:
                n += 1
                if w >= 12:
                    parts.append(
                        f'<text x="{x + w / 2:.2f}" y="{y + BAND / 2 + 4}" class="n">{n}</text>'
                    )
                notes.append(
                    f"{n}: [{run.start:#x}, {run.end:#x}) {run.pages:,} page(s): {_names(run)}"
                )
            x += w
        y += BAND + 16
        for note in notes:
            parts.append(f'<text x="{left}" y="{y}" class="t">{esc(note)}</text>')
            y += 14
        y += 20
    legend_x = left
    for c in PageClass:
        parts.append(f'<rect x="{legend_x}" y="{y - 10}" width="12" height="12" '
                     f'fill="{c.colour}"/>')  # fmt: skip
        parts.append(f'<text x="{legend_x + 16}" y="{y}" class="t">{c.title}</text>')
        legend_x += 110
    height = y + 20
    style = (
        "text{font-family:monospace;fill:#222}.h{font-size:14px;font-weight:bold}"
        ".t{font-size:11px}.n{font-size:11px;text-anchor:middle}"
        "rect{stroke:#fff;stroke-width:0.5}"
    )
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}">',
            f"<style>{style}</style>",
            f'<text x="{left}" y="20" class="h">{esc(title)}</text>',
            *parts,
            "</svg>",
            "",
        ]
    )
