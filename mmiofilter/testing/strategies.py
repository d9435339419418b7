"""Hypothesis strategies for BARs, rules, policies and accesses (contract §1-3).

They aim where bugs live: rules overlap, tie on priority and straddle page boundaries; accesses
land on rule and page edges; BARs are tiny, a whole number of pages, end in a partial page, or
are 64 GiB. Everything is drawn from `st.integers` and `st.sampled_from` inside `st.composite`
so that failures shrink to small numbers, the first choice of each list (`allow`, priority 0,
a register-sized rule) and fewer rules. Fixed strategies are built once, at import: building
them per draw dominated the cost of a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from hypothesis import strategies as st

from ..rules import ACTIONS, MAX_NAME_BYTES, NUM_BARS, PARTIAL_MODES, UNALIGNED_MODES, Policy, Rule
from .model import WIDTHS

#: Page sizes a filter may run with: x86, ARM64 16 KiB, POWER 64 KiB.
PAGE_SIZES: tuple[int, ...] = (4096, 16384, 65536)
#: The largest BAR the strategies generate: 64 GiB.
MAX_BAR_SIZE = 2**36
#: Few priorities, so that ties (and the tie-break on action and order) happen often.
PRIORITIES: tuple[int, ...] = (0, 1, -1, 2)
BAD_WIDTHS: tuple[int, ...] = (0, 3, 5, 16, -1)

Access = tuple[int, int, bool, int]

_PAGE = st.sampled_from(PAGE_SIZES)
#: Without targets to name, a policy cannot hold a redirect rule.
_ACTION = st.sampled_from([a for a in ACTIONS if a != "redirect"])
_ACTION_WITH_TARGETS = st.sampled_from(ACTIONS)
# Where a redirect rule's first byte lands in its target: often aligned like the rule (so an
# aligned access stays aligned there), sometimes not, sometimes far in.
_TARGET_SHIFT = st.sampled_from((0, 0, 0x100, 0x1000, 1, 2, 3, 5, 0x40000))
_PRIORITY = st.sampled_from(PRIORITIES)
_WIDTH = st.sampled_from(WIDTHS)
_NEAR = st.integers(-16, 16)  # how far a rule starts from its anchor
_EDGE_NEAR = st.integers(-8, 8)  # how far an access starts from an edge
_FEW = st.integers(0, 4)
# Rule sizes: mostly registers; sometimes a block of a few pages; sometimes anything.
_SIZE_KIND = st.sampled_from(("register", "register", "register", "pages", "any"))
_ANCHOR_KIND = st.sampled_from(("near", "from start", "from end", "page inside", "anywhere"))
_VALUE_KIND = st.sampled_from(("zero", "random", "ones"))
_OTHER_BAR_RULES = st.sampled_from((0, 0, 0, 1, 2))
_FILL = st.one_of(st.just(0xFF), st.integers(0, 0xFF))
_PARTIAL = st.sampled_from(PARTIAL_MODES)
_UNALIGNED = st.sampled_from(UNALIGNED_MODES)
_NAMES = (
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=MAX_NAME_BYTES
    )
    .map(str.strip)
    .filter(lambda name: bool(name) and not name.startswith("("))  # "(...)" is reserved
)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def page_sizes() -> st.SearchStrategy[int]:
    return _PAGE


def bar_sizes(page_size: int) -> st.SearchStrategy[int]:
    """BAR sizes from a quarter page to 64 GiB, weighted toward the interesting ones."""
    p = page_size
    huge = (MAX_BAR_SIZE, MAX_BAR_SIZE - p, MAX_BAR_SIZE - p + 1, MAX_BAR_SIZE - 1, 2**32)
    return st.one_of(
        st.integers(1, 64).map(lambda n: n * p),  # whole pages
        st.builds(lambda n, rest: n * p + rest, st.integers(1, 64), st.integers(1, p - 1)),
        st.integers(p // 4, p - 1),  # smaller than a page: wholly trapped
        st.sampled_from(huge),
        st.integers(p // 4, MAX_BAR_SIZE),
    )


def rule_names() -> st.SearchStrategy[str]:
    """Valid rule names: printable ASCII, inner spaces only, at most 63 bytes."""
    return _NAMES


def _draw_size(draw: st.DrawFn, bar_size: int) -> int:
    kind = draw(_SIZE_KIND)
    if kind == "register":
        size = draw(st.integers(1, 16))
    elif kind == "pages":
        size = draw(st.integers(1, 4 * PAGE_SIZES[-1]))
    else:
        size = draw(st.integers(1, bar_size))  # huge rules in huge BARs
    return min(size, bar_size)


def _draw_anchor(draw: st.DrawFn, bar_size: int, near: Sequence[int]) -> int:
    """An offset rules cluster around: page boundaries at both ends and inside, other rules."""
    kind = draw(_ANCHOR_KIND)
    if kind == "near" and near:
        return near[draw(st.integers(0, len(near) - 1))]
    if kind == "from start":
        return draw(_FEW) * draw(_PAGE)
    if kind == "from end":
        return bar_size - draw(_FEW) * draw(_PAGE)
    offset = draw(st.integers(0, bar_size))
    return offset - offset % draw(_PAGE) if kind == "page inside" else offset


def _draw_fitting(draw: st.DrawFn, size: int) -> int:
    """A value or mask that fits in `size` bytes: zero, random, or all ones.

    Random bytes cover at most 16 bytes, shifted up to 64 bytes into the rule, so that a huge
    rule never needs a huge integer.
    """
    kind = draw(_VALUE_KIND)
    n = min(size, 16)
    if kind == "zero":
        return 0
    if kind == "ones":
        return (1 << (8 * n)) - 1
    return draw(st.integers(0, (1 << (8 * n)) - 1)) << (8 * draw(st.integers(0, min(size - n, 64))))


@st.composite
def rules(
    draw: st.DrawFn,
    bar_size: int,
    *,
    bar: int = 0,
    names: st.SearchStrategy[str] | None = None,
    near: Sequence[int] = (),
    targets: Sequence[str] = (),
    target_size: int | None = None,
) -> Rule:
    """A valid rule inside a BAR of `bar_size` bytes, with any action.

    Starts cluster within 16 bytes of page boundaries and of the offsets in `near` (e.g. the
    edges of rules already drawn), so rules overlap and cross pages. A redirect rule is drawn
    only when there are `targets` to name; with a `target_size`, it lies inside the target.
    """
    name = draw(names if names is not None else _NAMES)
    action = draw(_ACTION_WITH_TARGETS if targets else _ACTION)
    priority = draw(_PRIORITY)
    size = _draw_size(draw, bar_size)
    if action == "redirect" and target_size is not None:
        size = min(size, target_size)
    start = _clamp(_draw_anchor(draw, bar_size, near) + draw(_NEAR), 0, bar_size - size)
    value = _draw_fitting(draw, size)
    mask = _draw_fitting(draw, size)
    target, offset = "", 0  # Rule's defaults: no target
    if action == "redirect":
        target = targets[draw(st.integers(0, len(targets) - 1))]
        # the target's byte for the rule's first byte: the rule's start moved by a small shift
        offset = start % 0x10000 + draw(_TARGET_SHIFT)
        if target_size is not None:
            offset %= target_size - size + 1
    return Rule(
        name,
        start,
        size,
        action,
        value=value,
        mask=mask,
        priority=priority,
        bar=bar,
        target=target,
        target_offset=offset,
    )


def _unique(name: str, used: set[str], index: int) -> str:
    # Unique by construction: a `unique=True` list of short random texts rejects too often.
    candidate, attempt = name, 0
    while candidate in used:
        candidate = f"{name[:48].strip()}#{index}.{attempt}"
        attempt += 1
    used.add(candidate)
    return candidate


@st.composite
def policies(
    draw: st.DrawFn,
    bar_size: int,
    *,
    max_rules: int = 8,
    bar: int = 0,
    targets: Sequence[str] = (),
    target_size: int | None = None,
) -> Policy:
    """A policy for BAR `bar` of `bar_size` bytes; sometimes with rules of another BAR, which a
    filter must ignore (they may even lie beyond this BAR's end). Redirect rules name one of
    `targets` (none without), inside `target_size` bytes when it is given."""
    n = draw(st.integers(0, max_rules))
    n_other = draw(_OTHER_BAR_RULES)
    used: set[str] = set()
    chosen: list[Rule] = []
    edges: list[int] = []
    for i in range(n):
        rule = draw(rules(bar_size, bar=bar, near=edges, targets=targets, target_size=target_size))
        rule = replace(rule, name=_unique(rule.name, used, i))
        chosen.append(rule)
        edges += [rule.start, rule.end]
    if n_other:
        other_bar = draw(st.sampled_from([b for b in range(NUM_BARS) if b != bar]))
        for i in range(n, n + n_other):
            rule = draw(rules(2 * bar_size, bar=other_bar, near=edges))
            rule = replace(rule, name=_unique(rule.name, used, i))
            chosen.insert(draw(st.integers(0, len(chosen))), rule)
    return Policy(chosen, fill=draw(_FILL), partial=draw(_PARTIAL), unaligned=draw(_UNALIGNED))


def _page_edges(bar_size: int, points: Sequence[int]) -> list[int]:
    """Page boundaries around `points` and at both ends of the BAR, for every page size."""
    edges = {0, bar_size}
    for point in [0, bar_size, *points]:
        for p in PAGE_SIZES:
            edges |= {point - point % p, point - point % p + p}
    return sorted(e for e in edges if 0 <= e <= bar_size)


@st.composite
def accesses(draw: st.DrawFn, bar_size: int, policy: Policy, *, bar: int = 0) -> Access:
    """A valid `(offset, width, is_write, value)`, mostly within 8 bytes of a rule edge of
    `bar` or of a page edge; half of them aligned to their width. `value` is 0 for reads."""
    width = draw(_WIDTH if bar_size >= 8 else st.sampled_from([w for w in WIDTHS if w <= bar_size]))
    rule_edges = sorted({e for r in policy.for_bar(bar) for e in (r.start, r.end)})
    # 0: anywhere; 1: near a page edge; 2, 3: near a rule edge, where accesses turn mixed.
    kind = draw(st.integers(0, 3))
    if kind == 0:
        offset = draw(st.integers(0, bar_size))
    else:
        edges = rule_edges if kind >= 2 and rule_edges else _page_edges(bar_size, rule_edges)
        offset = edges[draw(st.integers(0, len(edges) - 1))] + draw(_EDGE_NEAR)
    if draw(st.booleans()):
        offset -= offset % width
    offset = _clamp(offset, 0, bar_size - width)
    is_write = draw(st.booleans())
    value = 0
    if is_write:
        top = (1 << (8 * width)) - 1
        value = draw(st.one_of(st.integers(0, top), st.sampled_from((0, top))))
    return (offset, width, is_write, value)


def invalid_accesses(bar_size: int) -> st.SearchStrategy[Access]:
    """Accesses contract §3 step 1 rejects with AccessError, for one reason or more."""
    in_bar = st.integers(0, bar_size - 1)
    bad_width = st.tuples(in_bar, st.sampled_from(BAD_WIDTHS), st.booleans(), st.just(0))
    negative = st.tuples(
        st.one_of(st.integers(-16, -1), st.sampled_from((-(2**63), -(2**64)))),
        _WIDTH,
        st.booleans(),
        st.just(0),
    )
    past_end = _WIDTH.flatmap(
        lambda w: st.tuples(
            st.integers(max(0, bar_size - w + 1), bar_size + 16),
            st.just(w),
            st.booleans(),
            st.just(0),
        )
    )
    # Offsets whose end wraps a 64-bit (or signed 64-bit) integer, and ones beyond it.
    wrapping = st.tuples(
        st.one_of(st.integers(2**64 - 16, 2**64 + 8), st.sampled_from((2**63 - 4, 2**63))),
        _WIDTH,
        st.booleans(),
        st.just(0),
    )
    bad_value = _WIDTH.flatmap(
        lambda w: st.tuples(
            st.integers(0, max(0, bar_size - w)),
            st.just(w),
            st.just(True),
            st.one_of(st.integers(-(2**64), -1), st.integers(1 << (8 * w), (1 << (8 * w)) + 2**64)),
        )
    )
    return st.one_of(bad_width, negative, past_end, wrapping, bad_value)
