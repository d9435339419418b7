"""Replay a driver's trace through a policy: what the filter would have done to each access."""

from __future__ import annotations

import bisect
import mmap
from collections.abc import Callable, Iterable

from ..backends import CallbackBackend
from ..devices.targets import inert_targets
from ..filter import BarFilter
from ..results import Event, Outcome, Result
from ..rules import Policy
from .items import BarFound, DeviceError, Malformed, Note, Skipped, TraceAccess, TraceItem
from .report import NO_RULE, ChangedRead, ReplayReport, RuleStats
from .source import TraceSource


class TraceDevice:
    """The device as the trace saw it, changed only where the policy changed what reached it.

    A read returns, for each byte, what the driver read there in the trace, unless the policy
    made the device diverge from the traced run: a masked write leaves the masked value, a
    blocked write leaves whatever the device held before (the last value the trace showed for
    that byte; when it never showed one, the divergence is unknown and the trace's value
    stands). A write that reaches the device with the traced value ends the divergence.

    Why not a plain memory: registers are not memory. A status register changes on its own and
    a write-1-to-clear bit reads back 0, so a memory model would report differences under a
    policy that allows everything; this model reports none there, by construction, and
    attributes every difference it reports to the policy.
    """

    def __init__(self) -> None:
        self._current: TraceAccess | None = None
        self._diverged: dict[int, int] = {}  # byte offset -> what the device holds instead
        self._last: dict[int, int] = {}  # byte offset -> last value the trace showed
        self._written: dict[int, int] = {}  # bytes that reached the device in this access

    def begin(self, acc: TraceAccess) -> None:
        self._current = acc
        self._written.clear()

    def read(self, offset: int, width: int) -> int:
        acc = self._current
        value = 0
        for i in range(width):
            b = offset + i
            byte = self._diverged.get(b)
            if byte is None:
                if acc is not None and not acc.is_write and 0 <= b - acc.offset < acc.width:
                    byte = (acc.value >> (8 * (b - acc.offset))) & 0xFF
                else:  # the filter reads only within the access: defensive
                    byte = self._last.get(b, 0)
            value |= byte << (8 * i)
        return value

    def write(self, offset: int, width: int, value: int) -> None:
        for i in range(width):
            self._written[offset + i] = (value >> (8 * i)) & 0xFF

    def settle(self, acc: TraceAccess) -> None:
        """Account for what the access left in the device, once the filter is done with it."""
        for i in range(acc.width):
            b = acc.offset + i
            traced = (acc.value >> (8 * i)) & 0xFF
            if acc.is_write:
                held = self._written.get(b)
                if held is None:  # blocked: the device keeps what it had
                    held = self._diverged.get(b, self._last.get(b))
                if held is None or held == traced:
                    self._diverged.pop(b, None)
                else:
                    self._diverged[b] = held
            self._last[b] = traced
        self._current = None


class _Replayer:
    def __init__(
        self,
        policy: Policy,
        *,
        bar_size: int | None,
        bar: int,
        page_size: int | None,
        examples: int,
        listed: int,
    ) -> None:
        self.policy = policy
        self.bar = bar
        self.examples = examples
        self.device = TraceDevice()
        self.filter: BarFilter | None = None
        self.touched: dict[tuple[int, int], tuple[str, ...]] = {}
        self.direct_starts: list[int] = []
        self.direct_ends: list[int] = []
        self.report = ReplayReport(
            bar=bar, page_size=page_size or mmap.PAGESIZE, listed=listed, bar_size=bar_size
        )
        if bar_size is not None:
            self.report.bar_size_source = "given"
        for r in policy.for_bar(bar):
            self.report.rules[r.name] = RuleStats(r.name, r.action, r.start, r.size)

    def item(self, it: TraceItem) -> None:
        rep = self.report
        if isinstance(it, TraceAccess):
            self.access(it)
        elif isinstance(it, Skipped):
            rep.skipped.add(it.line, it.reason)
            if it.bar is not None:
                rep.skipped_by_bar[it.bar] = rep.skipped_by_bar.get(it.bar, 0) + 1
        elif isinstance(it, DeviceError):
            rep.device_errors.add(it.line, it.text)
        elif isinstance(it, Malformed):
            rep.malformed.add(it.line, it.reason)
        elif isinstance(it, Note):
            rep.notes.add(it.line, it.text)
        elif isinstance(it, BarFound):
            if rep.bar_size is None:
                rep.bar_size, rep.bar_size_source = it.size, f"from {it.source}"
            elif it.size != rep.bar_size:
                rep.notes.add(
                    it.line,
                    f"the trace says BAR{self.bar} is {it.size:#x} bytes ({it.source}); "
                    f"replaying it as {rep.bar_size:#x}",
                )

    def _make_filter(self, line: int) -> BarFilter:
        size = self.report.bar_size
        if size is None:
            raise ValueError(
                f"the trace does not say how large BAR{self.bar} is before its first access "
                f"(line {line}): give the BAR size"
            )
        f = BarFilter(
            size,
            self.policy,
            CallbackBackend(self.device.read, self.device.write),
            bar=self.bar,
            page_size=self.report.page_size,
            # a redirected access never reaches the traced device: its reads answer 0
            targets=inert_targets(self.policy, self.bar),
        )
        self.direct_starts = [off for off, _ in f.layout.direct]
        self.direct_ends = [off + length for off, length in f.layout.direct]
        return f

    def _row(self, name: str) -> RuleStats:
        row = self.report.rules.get(name)
        if row is None:  # NO_RULE, "(unaligned)"
            row = self.report.rules[name] = RuleStats(name)
        return row

    def _trapped(self, offset: int, width: int) -> bool:
        i = bisect.bisect_right(self.direct_starts, offset) - 1
        return i < 0 or offset + width > self.direct_ends[i]

    def _run(self, f: BarFilter, acc: TraceAccess) -> tuple[Result, list[Event]]:
        self.device.begin(acc)
        res = f.access(acc.offset, acc.width, acc.is_write, acc.value if acc.is_write else 0)
        events = f.drain_events()  # after every access: the ring can never overflow
        self.device.settle(acc)
        return res, events

    def access(self, acc: TraceAccess) -> None:
        f = self.filter
        if f is None:
            f = self.filter = self._make_filter(acc.line)
        rep = self.report
        if acc.offset < 0 or acc.offset + acc.width > f.size:
            where = f"{acc.offset:#x}" if acc.offset >= 0 else f"-{-acc.offset:#x}"
            rep.skipped.add(
                acc.line,
                f"{acc.width}-byte access at {where} is outside BAR{self.bar} [0, {f.size:#x})",
            )
            return
        key = (acc.offset, acc.width)
        touched = self.touched.get(key)
        if touched is None:
            # Which rules own bytes of the access, from the core's own counters; only the first
            # time an (offset, width) is seen, as ownership does not change during a replay.
            before = f.counters()
            res, events = self._run(f, acc)
            after = f.counters()
            touched = self.touched[key] = tuple(n for n, c in after.items() if c != before[n])
        else:
            res, events = self._run(f, acc)
        outcome = res.outcome.value
        if res.outcome is Outcome.PASS:
            names = touched or (NO_RULE,)
        else:
            ev = next((e for e in events if e.outcome is res.outcome), None)
            names = (ev.rule if ev is not None else "(unknown)",)
        (rep.writes if acc.is_write else rep.reads)[outcome] += 1
        if self._trapped(acc.offset, acc.width):
            rep.trapped += 1
        changed = not acc.is_write and res.value != acc.value
        for name in names:
            row = self._row(name)
            (row.writes if acc.is_write else row.reads)[outcome] += 1
            if res.outcome is not Outcome.PASS:
                examples = row.write_examples if acc.is_write else row.read_examples
                lines = examples.setdefault(outcome, [])
                if len(lines) < self.examples:
                    lines.append(acc.line)
            row.changed_reads += changed
        if changed:
            rep.changed_reads += 1
            if len(rep.changed) < rep.listed:
                rep.changed.append(
                    ChangedRead(
                        acc.line, acc.offset, acc.width, acc.value, res.value, outcome, names
                    )
                )

    def finish(self) -> ReplayReport:
        if self.filter is not None:
            self.report.dropped_events = self.filter.dropped_events
        return self.report


def replay(
    items: Iterable[TraceItem],
    policy: Policy,
    *,
    bar_size: int | None = None,
    bar: int = 0,
    page_size: int | None = None,
    examples: int = 5,
    listed: int = 20,
    progress: Callable[[ReplayReport, int], None] | None = None,
    progress_every: int = 65536,
) -> ReplayReport:
    """Replay a trace's items through `policy` on BAR `bar`; say per rule what it would do.

    `bar_size` defaults to the size the trace states (PCIDEV, MAP, vfio_region_setup); a
    ValueError says so when it states none. `page_size` (default: the host's) only decides
    which accesses count as trapped. Per-rule example lines are capped at `examples`, lists of
    skipped and malformed lines, notes and changed reads at `listed` (counts are exact).
    `progress(report, items)` is called every `progress_every` items. A KeyboardInterrupt
    (Ctrl-C) ends the replay early with the report so far, marked `interrupted`.
    """
    r = _Replayer(
        policy, bar_size=bar_size, bar=bar, page_size=page_size, examples=examples, listed=listed
    )
    n = 0
    try:
        for it in items:
            r.item(it)
            n += 1
            if progress is not None and n % progress_every == 0:
                if isinstance(items, TraceSource):
                    r.report.lines = items.lines_read
                progress(r.report, n)
    except KeyboardInterrupt:
        r.report.interrupted = True
    rep = r.finish()
    if isinstance(items, TraceSource):
        rep.format, rep.lines = items.format, items.lines_read
    return rep
