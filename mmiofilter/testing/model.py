"""Pure-Python reference model of docs/contract.md §2-4: the oracle the C core is tested against.

Written from the contract text (docs/contract.md and docs/contract-details.md), not from the C code,
so that a differential test compares two independent readings of the same contract. It favours
being obviously right over being fast: ownership is recomputed per accessed byte, the layout
from the elementary intervals between rule boundaries. Nothing here loops or allocates per byte
or per page of the BAR (BARs go up to 64 GiB), except `ModelLayout.trapped_pages`, which lists
the trapped pages on demand.

Where each part comes from:
- `owner`: contract §2, "Which rule owns a byte".
- `ModelDevice`: the device behind a backend (contract §1), little-endian, logging every access.
- `ModelFilter.access`, `read`, `write`: contract §3 and contract-details items 1-5 and 9;
  redirect: contract-details item 17.
- Events, `drain_events`, `dropped_events`: contract §3 and contract-details items 6-7.
- `counters`, `update`: contract-details item 8 and contract §5.
- `compute_layout`, `ModelFilter.layout`: contract §4.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

from ..errors import AccessError, PolicyError, is_int
from ..results import Event, Outcome, Result
from ..rules import NUM_BARS, U64_MAX, Policy, Rule

#: Access widths contract §3 accepts.
WIDTHS: tuple[int, ...] = (1, 2, 4, 8)
#: Pseudo-rule named by events of accesses blocked by `unaligned = "deny"` (contract-details 6).
UNALIGNED_RULE = "(unaligned)"
#: Smallest page size contract §1 allows.
MIN_PAGE_SIZE = 4096

# contract-details 1: on a priority tie, deny > emulate > redirect > mask > readonly > guard >
# audit > allow.
_TIE_ORDER = ("allow", "audit", "guard", "readonly", "mask", "redirect", "emulate", "deny")
_RESTRICTIVENESS = {action: rank for rank, action in enumerate(_TIE_ORDER)}
# contract-details 1: which bytes pass to the device on a read, which are kept from it on a
# write (a redirect byte goes to its target instead: contract-details 17).
_READ_PASSES = frozenset({"allow", "audit", "readonly", "mask"})
_WRITE_BLOCKED = frozenset({"readonly", "emulate", "deny", "redirect"})


def owner(rules_of_bar: Sequence[Rule], offset: int) -> Rule | None:
    """The rule owning the byte at `offset` (contract §2), or None when no rule covers it.

    `rules_of_bar` must hold the rules of one BAR only, in policy order. The owner is the
    covering rule with the highest priority, then the most restrictive action, then the one
    listed last.
    """
    covering = [
        (rule.priority, _RESTRICTIVENESS[rule.action], index, rule)
        for index, rule in enumerate(rules_of_bar)
        if rule.start <= offset < rule.end
    ]
    if not covering:
        return None
    # The index is unique, so the comparison never reaches the Rule itself.
    return max(covering, key=lambda entry: entry[:3])[3]


def action_of(rule: Rule | None) -> str:
    """The action a byte owned by `rule` gets: a byte no rule covers is `allow` (contract §2)."""
    return "allow" if rule is None else rule.action


def chunks(start: int, end: int) -> list[tuple[int, int]]:
    """Split the run of bytes `[start, end)` into naturally aligned `(offset, width)` accesses.

    contract §3, `partial = "split"`: at position p the widest w of 8, 4, 2, 1 with p % w == 0
    and p + w <= end. Offsets are absolute BAR offsets, so alignment is the device's.
    """
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        width = next(w for w in (8, 4, 2, 1) if pos % w == 0 and pos + w <= end)
        out.append((pos, width))
        pos += width
    return out


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """Maximal runs `[begin, end)` of indices whose flag is true."""
    out: list[tuple[int, int]] = []
    begin: int | None = None
    for index, flag in enumerate([*flags, False]):
        if flag and begin is None:
            begin = index
        elif not flag and begin is not None:
            out.append((begin, index))
            begin = None
    return out


def _le(data: Iterable[int]) -> int:
    return int.from_bytes(bytes(data), "little")


def _name(rule: Rule | None) -> str:
    # Only bytes that do not pass, or audit and mask bytes, are ever named, and a byte no rule
    # covers is `allow`: it passes and is neither audited nor masked.
    assert rule is not None, "a byte no rule covers is allow and is never named in an event"
    return rule.name


class Device(Protocol):
    """What `ModelFilter` needs of a device: exact-width little-endian accesses."""

    def read(self, offset: int, width: int) -> int: ...

    def write(self, offset: int, width: int, value: int) -> None: ...


class ModelDevice:
    """A sparse byte-addressed device: bytes never written read as 0.

    Every access is appended to `log` as `(offset, width, is_write, value)`, in order, so a
    test can check exactly which device accesses an MMIO access turned into.
    """

    def __init__(self, initial: bytes | bytearray | Mapping[int, int] | None = None) -> None:
        self._bytes: dict[int, int] = {}
        self.log: list[tuple[int, int, bool, int]] = []
        items = initial.items() if isinstance(initial, Mapping) else enumerate(initial or b"")
        for offset, byte in items:
            if not 0 <= byte <= 0xFF:
                raise ValueError(f"byte at {offset:#x} is {byte!r}, not 0..255")
            self._bytes[offset] = byte

    def byte(self, offset: int) -> int:
        """The byte at `offset`, without logging an access."""
        return self._bytes.get(offset, 0)

    def read(self, offset: int, width: int) -> int:
        value = _le(self.byte(offset + i) for i in range(width))
        self.log.append((offset, width, False, value))
        return value

    def write(self, offset: int, width: int, value: int) -> None:
        self.log.append((offset, width, True, value))
        for i, byte in enumerate(value.to_bytes(width, "little")):
            self._bytes[offset + i] = byte


@dataclass(frozen=True)
class ModelLayout:
    """The page layout of a BAR (contract §4).

    `direct` and `trapped` are sorted maximal `(offset, length)` runs of direct and trapped
    pages; together they tile `[0, size)` (the last trapped run may end in a partial page).
    """

    size: int
    page_size: int
    direct: list[tuple[int, int]]
    trapped: list[tuple[int, int]]
    collateral: int

    @property
    def pages(self) -> int:
        """Pages of the BAR, the partial last one included."""
        return -(-self.size // self.page_size)

    @property
    def trapped_count(self) -> int:
        """How many pages are trapped, without listing them."""
        return self.pages - sum(length for _, length in self.direct) // self.page_size

    @property
    def trapped_pages(self) -> list[int]:
        """Indexes of the trapped pages, ascending. As long as the number of trapped pages."""
        p = self.page_size
        return [
            page
            for off, length in self.trapped
            for page in range(off // p, -(-(off + length) // p))
        ]


def elementary_intervals(
    rules_of_bar: Sequence[Rule], size: int
) -> list[tuple[int, int, Rule | None]]:
    """`[0, size)` cut at every rule boundary, as `(begin, end, owner)`.

    No rule starts or ends inside an interval, so one owner holds for all its bytes.
    """
    cuts = {0, size} | {c for r in rules_of_bar for c in (r.start, r.end) if 0 < c < size}
    ordered = sorted(cuts)
    return [(a, b, owner(rules_of_bar, a)) for a, b in pairwise(ordered)]


def compute_layout(rules_of_bar: Sequence[Rule], size: int, page_size: int) -> ModelLayout:
    """contract §4 from the elementary intervals: O(rules²), independent of the BAR's size."""
    p = page_size
    n_pages = -(-size // p)
    intervals = elementary_intervals(rules_of_bar, size)
    # Page ranges [first, last + 1) that must trap: those holding a non-allow byte...
    ranges = [(a // p, (b - 1) // p + 1) for a, b, r in intervals if action_of(r) != "allow"]
    # ...and a partial last page, which a VMM cannot map without exposing what lies past it.
    if size % p:
        ranges.append((size // p, size // p + 1))
    merged: list[tuple[int, int]] = []
    for first, stop in sorted(ranges):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((first, stop))
    direct: list[tuple[int, int]] = []
    previous = 0
    for first, stop in [*merged, (n_pages, n_pages)]:
        if first > previous:
            direct.append((previous * p, (first - previous) * p))
        previous = stop
    trapped = [(first * p, min(stop * p, size) - first * p) for first, stop in merged]
    collateral = sum(
        max(0, min(b, t_off + t_len) - max(a, t_off))
        for a, b, r in intervals
        if action_of(r) == "allow"
        for t_off, t_len in trapped
    )
    return ModelLayout(size, page_size, direct, trapped, collateral)


#: Actions whose reads pass to the device unrecorded (contract §4): a page holding only these
#: (and not only `allow`) is read-direct. Any other action hides, changes or records a read.
READ_CLEAN_ACTIONS = frozenset({"allow", "readonly", "mask"})


@dataclass(frozen=True)
class ModelReadDirect:
    """The read-direct part of a layout: the sorted maximal areas of read-direct pages, and
    the read collateral (bytes whose reads pass unrecorded, in pages where reads exit)."""

    areas: list[tuple[int, int]]
    collateral_read: int


def compute_read_direct(rules_of_bar: Sequence[Rule], size: int, page_size: int) -> ModelReadDirect:
    """contract §4's read-direct pages, from the elementary intervals: a full page is read-direct
    when it holds a non-`allow` byte and every byte's action is in READ_CLEAN_ACTIONS."""
    p = page_size
    full = size // p
    intervals = elementary_intervals(rules_of_bar, size)
    # every page touched by a restricting interval, with the strictest class of its bytes
    strict: dict[int, int] = {}  # page -> 1 read-direct, 2 trapped; O(pages of rules)
    pieces: list[tuple[int, int, int]] = []  # (first, stop, class) page ranges
    for a, b, r in intervals:
        act = action_of(r)
        if act != "allow":
            pieces.append((a // p, (b - 1) // p + 1, 1 if act in READ_CLEAN_ACTIONS else 2))
    if size % p:
        pieces.append((full, full + 1, 2))
    for first, stop, cls in pieces:
        # a piece's inner pages are its own; only its end pages can be shared with another
        for page in {first, stop - 1}:
            strict[page] = max(strict.get(page, 0), cls)
    ranges: list[tuple[int, int]] = []  # read-direct page ranges [first, stop)
    for first, stop, cls in sorted(pieces):
        if cls != 1:
            continue
        lo = first if strict[first] == 1 else first + 1
        hi = stop if strict[stop - 1] == 1 else stop - 1
        if lo < hi:
            ranges.append((lo, hi))
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    areas = [(lo * p, (hi - lo) * p) for lo, hi in merged]
    # trapped pages: those not direct (compute_layout) and not read-direct
    layout = compute_layout(rules_of_bar, size, page_size)
    collateral_read = sum(
        max(0, min(b, t_off + t_len) - max(a, t_off))
        for a, b, r in intervals
        if action_of(r) in READ_CLEAN_ACTIONS
        for t_off, t_len in _minus(layout.trapped, areas)
    )
    return ModelReadDirect(areas, collateral_read)


def _minus(outer: list[tuple[int, int]], inner: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The byte ranges of `outer` not covered by `inner` (both sorted, `inner` inside `outer`)."""
    out: list[tuple[int, int]] = []
    for off, length in outer:
        pos, end = off, off + length
        for i_off, i_len in inner:
            if i_off + i_len <= pos or i_off >= end:
                continue
            if i_off > pos:
                out.append((pos, i_off - pos))
            pos = i_off + i_len
        if pos < end:
            out.append((pos, end - pos))
    return out


class ModelFilter:
    """The filter of one BAR as contract §3 describes it, over a `Device` (e.g. `ModelDevice`)."""

    def __init__(
        self,
        size: int,
        policy: Policy,
        device: Device,
        *,
        bar: int = 0,
        page_size: int = MIN_PAGE_SIZE,
        ring_capacity: int = 1024,
        targets: Mapping[str, Device] | None = None,
    ) -> None:
        if not is_int(size) or not 1 <= size <= U64_MAX:
            raise ValueError(f"BAR size {size!r} is not in 1..2**64-1")
        if not is_int(page_size) or page_size < MIN_PAGE_SIZE or page_size & (page_size - 1):
            raise ValueError(f"page size {page_size!r} is not a power of two >= {MIN_PAGE_SIZE}")
        if not is_int(bar) or not 0 <= bar < NUM_BARS:
            raise ValueError(f"bar {bar!r} is not a BAR index 0..{NUM_BARS - 1}")
        if not is_int(ring_capacity) or ring_capacity < 1:
            raise ValueError(f"ring capacity {ring_capacity!r} is not a positive integer")
        self.size = size
        self.bar = bar
        self.page_size = page_size
        self.device = device
        #: The backends redirect rules name (contract-details 17), by name.
        self.targets: dict[str, Device] = dict(targets or {})
        self._events: deque[Event] = deque(maxlen=ring_capacity)
        self._seq = 0
        self._dropped = 0
        self._counters: dict[str, int] = {}
        self._policy = policy
        self._rules: tuple[Rule, ...] = ()
        self.update(policy)

    # -- policy and bookkeeping (contract-details 6-8) --------------------------------------

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules of this BAR in policy order; rules of other BARs are ignored (contract §5)."""
        return self._rules

    def update(self, policy: Policy) -> None:
        """Swap the policy. A rejected policy leaves the old one in force."""
        policy.check_bar(self.bar, self.size)
        rules = policy.for_bar(self.bar)
        if any(r.action == "guard" for r in rules):
            # a guard decides from protocol state: mmiofilter.testing.fsp_model models it
            raise NotImplementedError("ModelFilter models rules, not guards (see fsp_model)")
        for r in rules:
            if r.action == "redirect" and r.target not in self.targets:
                raise PolicyError(
                    f"rule {r.name!r}: redirect target {r.target!r} was not given to the filter"
                )
        # Counts follow the rule's name; names gone from the policy are dropped.
        self._counters = {r.name: self._counters.get(r.name, 0) for r in rules}
        self._policy = policy
        self._rules = rules

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def drain_events(self) -> list[Event]:
        events = list(self._events)
        self._events.clear()
        return events

    @property
    def dropped_events(self) -> int:
        return self._dropped

    @property
    def layout(self) -> ModelLayout:
        return compute_layout(self._rules, self.size, self.page_size)

    # -- one access (contract §3) -----------------------------------------------------------

    def read(self, offset: int, width: int) -> int:
        return self.access(offset, width, False).value

    def write(self, offset: int, width: int, value: int) -> Outcome:
        return self.access(offset, width, True, value).outcome

    def access(self, offset: int, width: int, is_write: bool, value: int = 0) -> Result:
        is_write = bool(is_write)
        self._validate(offset, width, is_write, value)
        owners = [owner(self._rules, offset + i) for i in range(width)]
        # Once per access whatever the outcome, also when `unaligned = "deny"` blocks it.
        for name in {r.name for r in owners if r is not None}:
            self._counters[name] += 1
        if self._policy.unaligned == "deny" and offset % width:
            result = self._refused(width, is_write)
            rule: str | None = UNALIGNED_RULE
        elif is_write:
            result, rule = self._write(offset, width, value, owners)
        else:
            result, rule = self._read(offset, width, owners)
        if rule is not None:
            guest_value = value if is_write else result.value
            self._record(offset, width, is_write, guest_value, result.outcome, rule)
        return result

    def _validate(self, offset: int, width: int, is_write: bool, value: int) -> None:
        # contract-details 9: width, then offset range, then value range.
        where = f"BAR{self.bar} of size {self.size:#x}"
        if not is_int(width) or width not in WIDTHS:
            raise AccessError(
                f"width {width!r} at offset {offset!r} of {where} is not 1, 2, 4 or 8"
            )
        if not is_int(offset) or offset < 0 or offset + width > self.size:
            shown = f"{offset:#x}" if is_int(offset) else repr(offset)
            raise AccessError(f"{width}-byte access at offset {shown} lies outside {where}")
        if is_write and (not is_int(value) or not 0 <= value < 1 << (8 * width)):
            raise AccessError(
                f"value {value!r} of a {width}-byte write at offset {offset:#x} of {where} "
                f"is not in 0..2**{8 * width}-1"
            )

    def _refused(self, width: int, is_write: bool) -> Result:
        """BLOCKED with nothing touched: fill in every byte of a read, a write dropped."""
        return Result(Outcome.BLOCKED, 0 if is_write else _le([self._policy.fill] * width))

    def _substitute(self, offset: int, rule: Rule | None) -> int:
        """What a read returns for a byte that does not pass: emulated byte or fill."""
        if rule is not None and rule.action == "emulate":
            return rule.value_byte(offset - rule.start)
        return self._policy.fill

    def _read(
        self, offset: int, width: int, owners: list[Rule | None]
    ) -> tuple[Result, str | None]:
        actions = [action_of(r) for r in owners]
        passes = [a in _READ_PASSES for a in actions]
        if all(passes):
            result = Result(Outcome.PASS, self.device.read(offset, width))
            audited = [r for r, a in zip(owners, actions, strict=True) if a == "audit"]
            return result, (_name(audited[0]) if audited else None)
        first = owners[0]
        if first is not None and first.action == "redirect" and all(r is first for r in owners):
            # wholly inside one redirect rule: one target access, counted, not an event
            at = first.target_offset + offset - first.start
            return Result(Outcome.REDIRECTED, self.targets[first.target].read(at, width)), None
        blamed = _name(owners[passes.index(False)])
        data = [self._substitute(offset + i, r) for i, r in enumerate(owners)]
        redirected = [a == "redirect" for a in actions]
        if not any(passes) and not any(redirected):
            all_emulated = all(a == "emulate" for a in actions)
            return Result(Outcome.EMULATED if all_emulated else Outcome.BLOCKED, _le(data)), blamed
        if self._policy.partial == "deny":
            return self._refused(width, False), blamed
        for begin, end in _runs(passes):
            for pos, w in chunks(offset + begin, offset + end):
                i = pos - offset
                data[i : i + w] = self.device.read(pos, w).to_bytes(w, "little")
        for rule, begin, end in self._target_runs(owners):
            base = rule.target_offset + offset - rule.start  # where byte 0 would land
            for pos, w in chunks(base + begin, base + end):
                i = pos - base
                data[i : i + w] = self.targets[rule.target].read(pos, w).to_bytes(w, "little")
        return Result(Outcome.PARTIAL, _le(data)), blamed

    @staticmethod
    def _target_runs(owners: list[Rule | None]) -> list[tuple[Rule, int, int]]:
        """The redirect bytes of a mixed access as `(rule, begin, end)` runs: rule by rule in
        the order of their first byte, each rule's runs in order (contract-details 17)."""
        order: list[Rule] = []
        for r in owners:
            if r is not None and r.action == "redirect" and r not in order:
                order.append(r)
        return [
            (rule, begin, end)
            for rule in order
            for begin, end in _runs([r is rule for r in owners])
        ]

    def _write(
        self, offset: int, width: int, value: int, owners: list[Rule | None]
    ) -> tuple[Result, str | None]:
        actions = [action_of(r) for r in owners]
        blocked = [a in _WRITE_BLOCKED for a in actions]
        guest = value.to_bytes(width, "little")
        # contract §2, mask: b' = (b & ~m) | (v & m), with the rule's bytes at this position.
        out = list(guest)
        for i, r in enumerate(owners):
            if r is not None and r.action == "mask":
                m, v = r.mask_byte(offset + i - r.start), r.value_byte(offset + i - r.start)
                out[i] = (guest[i] & ~m & 0xFF) | (v & m)
        if not any(blocked):
            self.device.write(offset, width, _le(out))
            changed = [i for i in range(width) if out[i] != guest[i]]
            if changed:
                return Result(Outcome.MASKED, _le(out)), _name(owners[changed[0]])
            audited = [r for r, a in zip(owners, actions, strict=True) if a == "audit"]
            return Result(Outcome.PASS, _le(out)), (_name(audited[0]) if audited else None)
        first = owners[0]
        if first is not None and first.action == "redirect" and all(r is first for r in owners):
            at = first.target_offset + offset - first.start
            self.targets[first.target].write(at, width, value)
            return Result(Outcome.REDIRECTED, value), None
        blamed = _name(owners[blocked.index(True)])
        redirected = [a == "redirect" for a in actions]
        if (all(blocked) and not any(redirected)) or self._policy.partial == "deny":
            return self._refused(width, True), blamed
        written = [0] * width
        for begin, end in _runs([not b for b in blocked]):
            for pos, w in chunks(offset + begin, offset + end):
                i = pos - offset
                self.device.write(pos, w, _le(out[i : i + w]))
                written[i : i + w] = out[i : i + w]
        for rule, begin, end in self._target_runs(owners):
            base = rule.target_offset + offset - rule.start
            for pos, w in chunks(base + begin, base + end):
                i = pos - base
                self.targets[rule.target].write(pos, w, _le(out[i : i + w]))
                written[i : i + w] = out[i : i + w]
        return Result(Outcome.PARTIAL, _le(written)), blamed

    def _record(
        self, offset: int, width: int, is_write: bool, value: int, outcome: Outcome, rule: str
    ) -> None:
        # A full deque drops its oldest entry on append: count it first (contract-details 7).
        if len(self._events) == self._events.maxlen:
            self._dropped += 1
        self._events.append(
            Event(self._seq, self.bar, offset, width, is_write, value, outcome, rule)
        )
        self._seq += 1
