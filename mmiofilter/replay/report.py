"""What a replay found, per rule, and how it reads: text for an admin, one JSON object for tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..results import Outcome

OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)  # pass, masked, emulated, ...
#: The row of accesses that touched only bytes no rule owns.
NO_RULE = "(no rule)"


def _zeros() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)


@dataclass
class RuleStats:
    """Outcomes of the accesses attributed to one rule, reads and writes apart.

    An access that did not pass is attributed to the rule its event names (the owner of its
    first byte that did not pass); one that passed, to every rule owning one of its bytes, or
    to NO_RULE. `read_examples` and `write_examples` hold the first trace lines of each
    outcome but pass.
    """

    name: str
    action: str | None = None  # None for rows that are not rules of the policy
    start: int | None = None
    size: int | None = None
    reads: dict[str, int] = field(default_factory=_zeros)
    writes: dict[str, int] = field(default_factory=_zeros)
    read_examples: dict[str, list[int]] = field(default_factory=dict)
    write_examples: dict[str, list[int]] = field(default_factory=dict)
    changed_reads: int = 0

    @property
    def accesses(self) -> int:
        return sum(self.reads.values()) + sum(self.writes.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.name,
            "action": self.action,
            "start": self.start,
            "size": self.size,
            "reads": dict(self.reads),
            "writes": dict(self.writes),
            "examples": {
                "reads": {k: list(v) for k, v in self.read_examples.items()},
                "writes": {k: list(v) for k, v in self.write_examples.items()},
            },
            "changed_reads": self.changed_reads,
        }


@dataclass(frozen=True)
class ChangedRead:
    """A read whose value under the policy differs from the one the driver saw in the trace."""

    line: int
    offset: int
    width: int
    trace_value: int
    replay_value: int
    outcome: str
    rules: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "offset": self.offset,
            "width": self.width,
            "trace_value": self.trace_value,
            "replay_value": self.replay_value,
            "outcome": self.outcome,
            "rules": list(self.rules),
        }


@dataclass
class Listed:
    """A count and its first `limit` (line, text) entries: a huge trace keeps a small report."""

    limit: int
    key: str = "reason"  # what the text is called in JSON
    count: int = 0
    entries: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, text: str) -> None:
        self.count += 1
        if len(self.entries) < self.limit:
            self.entries.append((line, text))

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "lines": [{"line": n, self.key: t} for n, t in self.entries],
        }


@dataclass
class ReplayReport:
    """Everything `replay()` found. Offsets are relative to the BAR."""

    bar: int
    page_size: int
    listed: int
    format: str | None = None
    lines: int = 0
    bar_size: int | None = None
    bar_size_source: str | None = None
    reads: dict[str, int] = field(default_factory=_zeros)
    writes: dict[str, int] = field(default_factory=_zeros)
    trapped: int = 0
    rules: dict[str, RuleStats] = field(default_factory=dict)
    changed_reads: int = 0
    changed: list[ChangedRead] = field(default_factory=list)
    skipped: Listed = field(init=False)
    malformed: Listed = field(init=False)
    notes: Listed = field(init=False)
    device_errors: Listed = field(init=False)
    dropped_events: int = 0
    #: Skipped accesses per BAR the trace named ("BAR2"), so a replay of a BAR the driver
    #: never touched can say which one it did.
    skipped_by_bar: dict[int, int] = field(default_factory=dict)
    #: The replay was stopped (Ctrl-C) before the end of the trace: the counts are partial.
    interrupted: bool = False

    def __post_init__(self) -> None:
        self.skipped = Listed(self.listed)
        self.malformed = Listed(self.listed)
        self.notes = Listed(self.listed, "text")
        self.device_errors = Listed(self.listed, "text")

    @property
    def blocked(self) -> int:
        """Accesses the policy stopped, wholly (blocked) or in part (partial)."""
        return sum(c["blocked"] + c["partial"] for c in (self.reads, self.writes))

    def other_bar_hint(self) -> str | None:
        """When this BAR saw no access but others did: which BAR to replay instead."""
        if self.accesses or not self.skipped_by_bar:
            return None
        busiest = max(self.skipped_by_bar.items(), key=lambda kv: (kv[1], -kv[0]))
        seen = ", ".join(f"BAR{b}: {n:,}" for b, n in sorted(self.skipped_by_bar.items()))
        return (
            f"BAR{self.bar} saw no access; the trace has accesses to {seen}: replay another "
            f"BAR with --bar {busiest[0]}"
        )

    @property
    def accesses(self) -> int:
        return sum(self.reads.values()) + sum(self.writes.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "lines": self.lines,
            "bar": self.bar,
            "bar_size": self.bar_size,
            "bar_size_source": self.bar_size_source,
            "page_size": self.page_size,
            "accesses": self.accesses,
            "reads": dict(self.reads),
            "writes": dict(self.writes),
            "trapped_accesses": self.trapped,
            "rules": [r.to_json() for r in self.rules.values()],
            "changed_reads": {
                "count": self.changed_reads,
                "examples": [c.to_json() for c in self.changed],
            },
            "skipped": self.skipped.to_json(),
            "malformed": self.malformed.to_json(),
            "notes": self.notes.to_json(),
            "device_errors": self.device_errors.to_json(),
            "skipped_by_bar": {f"BAR{b}": n for b, n in sorted(self.skipped_by_bar.items())},
            "hint": self.other_bar_hint(),
            "interrupted": self.interrupted,
            "dropped_events": self.dropped_events,
        }

    def format_text(self) -> str:
        return "\n".join(_text(self))


def _hex(value: int, width: int) -> str:
    return f"{value:#0{2 + 2 * width}x}"


def _counts(counts: dict[str, int], examples: dict[str, list[int]] | None = None) -> str:
    parts = []
    for outcome in OUTCOMES:
        if counts[outcome]:
            text = f"{outcome} {counts[outcome]:,}"
            lines = (examples or {}).get(outcome)
            if lines and outcome != "pass":
                text += f" (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))})"
            parts.append(text)
    return ", ".join(parts) or "none"


def _more(listed: Listed) -> list[str]:
    hidden = listed.count - len(listed.entries)
    return [f"  ... and {hidden:,} more"] if hidden else []


def _text(r: ReplayReport) -> list[str]:
    size = "size unknown" if r.bar_size is None else f"{r.bar_size:#x} bytes, {r.bar_size_source}"
    source = f" from {r.lines:,} line(s) of {r.format}" if r.format else ""
    out = [
        f"replayed {r.accesses:,} access(es) of BAR{r.bar} ({size}){source}",
        f"  reads:  {sum(r.reads.values()):,}: {_counts(r.reads)}",
        f"  writes: {sum(r.writes.values()):,}: {_counts(r.writes)}",
        f"  {r.trapped:,} on trapped {r.page_size // 1024} KiB pages (a VM exit each), "
        f"{r.accesses - r.trapped:,} on pages the guest maps directly",
        "per rule (the access's outcome; lines of the first that did not pass):",
    ]
    for s in r.rules.values():
        head = f"  {s.name}"
        if s.action is not None and s.start is not None and s.size is not None:
            head += f": {s.action} [{s.start:#x}, {s.start + s.size:#x})"
        elif s.name == NO_RULE:
            head += ": accesses touching only bytes no rule owns"
        out.append(head)
        if not s.accesses:
            out.append("    no accesses")
            continue
        out.append(f"    reads:  {_counts(s.reads, s.read_examples)}")
        out.append(f"    writes: {_counts(s.writes, s.write_examples)}")
        if s.changed_reads:
            out.append(f"    reads returning another value than in the trace: {s.changed_reads:,}")
    out.append(
        f"reads that would return another value to the driver (outcome; rules): {r.changed_reads:,}"
    )
    for c in r.changed:
        out.append(
            f"  line {c.line}: {c.width}-byte read at {c.offset:#x}: trace "
            f"{_hex(c.trace_value, c.width)}, with the policy {_hex(c.replay_value, c.width)} "
            f"({c.outcome}; {', '.join(c.rules)})"
        )
    if r.changed_reads > len(r.changed):
        out.append(f"  ... and {r.changed_reads - len(r.changed):,} more")
    for title, listed in (
        ("skipped accesses", r.skipped),
        ("malformed lines", r.malformed),
        ("device errors the VMM reported", r.device_errors),
        ("notes", r.notes),
    ):
        out.append(f"{title}: {listed.count:,}")
        out += [f"  line {n}: {t}" if n else f"  {t}" for n, t in listed.entries]
        out += _more(listed)
    if r.skipped_by_bar:
        per_bar = ", ".join(f"BAR{b}: {n:,}" for b, n in sorted(r.skipped_by_bar.items()))
        out.append(f"skipped accesses by BAR: {per_bar}")
    hint = r.other_bar_hint()
    if hint:
        out.append(f"HINT: {hint}")
    if r.interrupted:
        out.append(f"INTERRUPTED after {r.lines:,} line(s): the counts are partial")
    if r.dropped_events:
        out.append(f"WARNING: {r.dropped_events} filter event(s) lost: counts are incomplete")
    return out
