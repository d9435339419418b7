"""The human-readable report of a run's result: the header, the main table (one line per
figure, from ROWS, with its target), the batch variants and the notes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .workload import GiB, KiB, MiB


def _size(n: float) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f} {name}"
    return f"{n:.0f} B"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ns(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.1f} ns"


def _count(x: int | None) -> str:
    return "n/a" if x is None else f"{x:,}"


def _bytes(n: int) -> str:
    return f"{_size(n)} ({n:,} B)"


#: (label, key, how to show the value) for each line of the main table.
ROWS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("batch, 10 rules (per access)", "batch_ns_10", _ns),
    ("batch, 10,000 rules (per access)", "batch_ns_10000", _ns),
    ("batch ratio 10,000 / 10 rules", "batch_ratio", lambda x: f"{x:.2f}x"),
    ("  floor: no rules, accesses of 10 rules", "batch_floor_ns_10", _ns),
    ("  floor: no rules, accesses of 10,000 rules", "batch_floor_ns_10000", _ns),
    ("  filter share above floor, 10 rules", "batch_filter_ns_10", _ns),
    ("  filter share above floor, 10,000 rules", "batch_filter_ns_10000", _ns),
    ("  filter share ratio 10,000 / 10", "batch_filter_ratio",
     lambda x: "n/a (noise)" if x is None else f"{x:.2f}x"),
    ("  10,000 rules, accesses on 10 pages", "batch_ns_10000_hot10", _ns),
    ("  ratio of that / 10 rules", "batch_ratio_hot10", lambda x: f"{x:.2f}x"),
    ("batch, dense: 1,000 rules in one 64 KiB page", "batch_dense_ns", _ns),
    ("BarFilter.read, trapped page, 10 rules", "read_ns_10", _ns),
    ("BarFilter.read, trapped page, 10,000 rules", "read_ns_10000", _ns),
    ("reference model read, 10 rules", "model_read_ns", _ns),
    ("reference model read, 10,000 rules", "model_read_ns_10000", _ns),
    ("64 GiB BAR, 1,000 rules: C compile", "compile_64g_1000_ms", lambda x: f"{x:.2f} ms"),
    ("64 GiB BAR, 1,000 rules: footprint", "footprint_64g_1000_bytes", _bytes),
    ("64 GiB BAR, 1,000 rules: BarFilter(...)", "construct_64g_1000_ms",
     lambda x: f"{x:.2f} ms"),
    ("64 GiB BAR, 10,000 rules: C compile", "compile_64g_10000_ms", lambda x: f"{x:.2f} ms"),
    ("64 GiB BAR, 10,000 rules: footprint", "footprint_64g_10000_bytes", _bytes),
    ("64 GiB BAR, 10,000 rules: BarFilter(...)", "construct_64g_10000_ms",
     lambda x: f"{x:.2f} ms"),
    ("FSP guard, mailbox access (no doorbell)", "guard_ns", _ns),
    ("  plain trapped rule, same accesses", "guard_plain_ns", _ns),
    ("  floor: no rules, same accesses", "guard_floor_ns", _ns),
    ("  guard / plain", "guard_over_plain", lambda x: f"{x:.2f}x"),
    ("KVM guest loop (a) direct page", "direct_ns", _ns),
    ("  exits the direct loop took", "direct_exits", lambda x: "n/a" if x is None else f"{x}"),
    ("KVM (b) allowed register, trapped page, C loop", "trapped_c_ns", _ns),
    ("KVM (c) the same, Python loop", "trapped_py_ns", _ns),
    ("KVM (d) blocked register, C loop", "blocked_ns", _ns),
    ("KVM (e) floor: C loop, constant, no filter", "floor_ns", _ns),
    ("KVM (f) QEMU, HPET counter", "qemu_ns", _ns),
    ("  (b) / (e)", "trapped_c_over_floor", lambda x: "n/a" if x is None else f"{x:.3f}x"),
    ("  (b) / (f)", "trapped_c_over_qemu", lambda x: "n/a" if x is None else f"{x:.3f}x"),
    ("read-direct page: exits of the read loop", "read_direct_read_exits", _count),
    ("read-direct page: exits of the write loop", "read_direct_write_exits", _count),
    ("  read loop (per read)", "read_direct_read_ns", _ns),
    ("  write loop (per write)", "read_direct_write_ns", _ns),
)  # fmt: skip


def _header(r: dict[str, Any]) -> list[str]:
    m, pr = r["machine"], r["params"]
    return [
        "mmiofilter benchmark" + ("  (--quick: smoke run, figures not meaningful)"
                                  if pr["quick"] else ""),
        f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['implementation']} {m['python']}, kernel {m['kernel']}",
        f"batch: {pr['accesses_per_batch']:,} accesses per mf_access_batch call, "
        f"{pr['repeats']} timed calls per variant (round-robin), median shown; memory backend "
        f"(bytearray); {_size(pr['bar_size'])} BAR, {_size(pr['page_size'])} pages; "
        f"seed {pr['seed']}",
    ]  # fmt: skip


def _main_table(r: dict[str, Any]) -> list[str]:
    lines = [f"{'figure':<46} {'value':>22}  {'target':<16} met"]
    for label, key, show in ROWS:
        value = r.get(key)
        t = r["targets"].get(key)
        target = t["target"] if t else ""
        met = {True: "yes", False: "NO", None: "n/a"}[t["met"]] if t else ""
        shown = "n/a" if value is None and show is not _ns else show(value)
        lines.append(f"{label:<46} {shown:>22}  {target:<16} {met}".rstrip())
    return lines


def _variant_lines(label: str, d: dict[str, Any]) -> list[str]:
    mix, oc = d["mix"], d["outcomes"]
    if d["rules"] == 0:
        return [
            f"  {label}: median {d['median_ns']:.1f} ns, best {d['best_ns']:.1f} ns "
            f"({mix['distinct_pages']:,} pages touched)"
        ]
    widths = ", ".join(f"w{k} {_pct(s)}" for k, s in mix["widths"].items())
    return [
        f"  {label}: {d['rules']:,} rules, {_size(d['page_size'])} pages, {d['runs']:,} runs, "
        f"{d['indexed_pages']:,} indexed pages, table {_size(d['footprint_bytes'])}; "
        f"median {d['median_ns']:.1f} ns, best {d['best_ns']:.1f} ns",
        f"    mix: {_pct(mix['on_allowed_registers_in_trapped_pages'])} allowed registers in "
        f"trapped pages, {_pct(mix['on_rule_registers'])} rule registers; "
        f"{_pct(mix['writes'])} writes; {widths}; {mix['distinct_pages']:,} pages touched",
        "    outcomes: " + ", ".join(f"{k} {_pct(s)}" for k, s in oc.items() if s)
        + f"; events (ring pushes) {_pct(d['events_per_access'])} of accesses",
    ]  # fmt: skip


def format_table(r: dict[str, Any]) -> str:
    pr = r["params"]
    lines = [*_header(r), "", *_main_table(r), "", "batch variants:"]
    for label, d in r["variants"].items():
        lines += _variant_lines(label, d)
    for n, d in r["big_bar"].items():
        lines.append(
            f"  64 GiB BAR, {int(n):,} rules: {d['runs']:,} runs, {d['indexed_pages']:,} indexed "
            f"pages, {d['trapped_pages']:,} trapped pages, {d['direct_areas']:,} direct areas"
        )
    lines.append(
        f"  BarFilter.read: {pr['read_iters']:,} calls in a Python loop (loop included); "
        f"model: {pr['model_iters_10']:,} calls (10 rules), {pr['model_iters_10000']:,} "
        "(10,000 rules)"
    )
    if r["model_note"]:
        lines.append(f"  note: {r['model_note']}")
    if r.get("kvm_reads"):
        lines.append(
            f"  KVM: a 32-bit guest loop of {r['kvm_reads']:,} MMIO reads timed by the guest's "
            "TSC, median of round-robin runs; ns from the host's TSC rate"
        )
    lines += _workload_lines(r)
    for key in ("kvm_note", "qemu_note", "read_direct_note"):
        if r.get(key):
            lines.append(f"  note: {r[key]}")
    return "\n".join(lines)


def _workload_lines(r: dict[str, Any]) -> list[str]:
    """The driver workload's exits: one line per page size, the schemes side by side."""
    ex, w = r.get("workload_exits"), r.get("workload")
    if not ex or not w:
        return []
    guest = r.get("workload_exits_guest") or {}
    lines = [
        f"driver workload (default V100 profile; {w['accesses']:,} 32-bit accesses, "
        f"{w['reads']:,} reads, {w['ticks']} ticks): exits",
        f"  {'page size':<10} {'page_trap':>10} {'read_direct':>12} {'byte_minimum':>13}  guest",
    ]
    for page, d in ex.items():
        g = guest.get(page)
        shown = f"{g['page_trap']:,} / {g['read_direct']:,}" if g else "n/a"
        lines.append(f"  {_size(int(page)):<10} {d['page_trap']:>10,} {d['read_direct']:>12,} "
                     f"{d['byte_minimum']:>13,}  {shown}")  # fmt: skip
    for page, gap in (r.get("workload_gap") or {}).items():
        what = ", ".join(f"{k} x{n}" for k, n in gap.items())
        lines.append(f"  read_direct - byte_minimum at {_size(int(page))}: {what}")
    return lines
