"""Hypothesis strategies for BARs, rules, policies and accesses (DESIGN §1-3).

They aim where bugs live: rules overlap, tie on priority and straddle page boundaries; accesses
land on rule and page edges; BARs are tiny, a whole number of pages, end in a partial page, or
are 64 GiB. Every strategy is built from `st.integers`, `st.sampled_from` and `st.composite` so
that failures shrink to small numbers, the first action (`allow`) and priority 0.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def page_sizes() -> st.SearchStrategy[int]:
    return st.sampled_from(PAGE_SIZES)


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
    printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    return st.text(printable, min_size=1, max_size=MAX_NAME_BYTES).map(str.strip).filter(bool)


def _rule_sizes(bar_size: int) -> st.SearchStrategy[int]:
    small = st.integers(1, 16)  # registers: the common case
    pages = st.integers(1, 4 * PAGE_SIZES[-1])  # blocks of a few pages
    anything = st.integers(1, bar_size)  # huge rules in huge BARs
    return st.one_of(small, small, small, pages, anything).map(lambda n: min(n, bar_size))


def _anchors(bar_size: int, near: Sequence[int]) -> st.SearchStrategy[int]:
    """Offsets rules cluster around: page boundaries at both ends and inside, other rules."""
    page = st.sampled_from(PAGE_SIZES)
    options = [
        st.builds(lambda k, p: k * p, st.integers(0, 4), page),
        st.builds(lambda k, p: bar_size - k * p, st.integers(0, 4), page),
        st.builds(lambda off, p: off - off % p, st.integers(0, bar_size), page),
        st.integers(0, bar_size),
    ]
    if near:
        options.insert(0, st.sampled_from(sorted(set(near))))
    return st.one_of(options)


def _fitting_values(size: int) -> st.SearchStrategy[int]:
    """Values and masks that fit in `size` bytes: zero, all ones, random.

    Random bytes cover at most 16 bytes, shifted up to 64 bytes into the rule, so that a
    huge rule never needs a huge integer.
    """
    n = min(size, 16)
    ones = (1 << (8 * n)) - 1
    shifted = st.builds(
        lambda v, shift: v << (8 * shift),
        st.integers(0, ones),
        st.integers(0, min(size - n, 64)),
    )
    return st.one_of(st.just(0), st.just(ones), shifted)


@st.composite
def rules(
    draw: st.DrawFn,
    bar_size: int,
    *,
    bar: int = 0,
    names: st.SearchStrategy[str] | None = None,
    near: Sequence[int] = (),
) -> Rule:
    """A valid rule inside a BAR of `bar_size` bytes, with any action.

    Starts cluster within 16 bytes of page boundaries and of the offsets in `near` (e.g. the
    edges of rules already drawn), so rules overlap and cross pages.
    """
    name = draw(names if names is not None else rule_names())
    action = draw(st.sampled_from(ACTIONS))
    priority = draw(st.sampled_from(PRIORITIES))
    size = draw(_rule_sizes(bar_size))
    anchor = draw(_anchors(bar_size, near))
    start = _clamp(anchor + draw(st.integers(-16, 16)), 0, bar_size - size)
    value = draw(_fitting_values(size))
    mask = draw(_fitting_values(size))
    return Rule(name, start, size, action, value=value, mask=mask, priority=priority, bar=bar)


@st.composite
def policies(draw: st.DrawFn, bar_size: int, *, max_rules: int = 8, bar: int = 0) -> Policy:
    """A policy for BAR `bar` of `bar_size` bytes; sometimes with rules of another BAR, which a
    filter must ignore (they may even lie beyond this BAR's end)."""
    n = draw(st.integers(0, max_rules))
    n_other = draw(st.sampled_from((0, 0, 0, 1, 2)))
    names = draw(st.lists(rule_names(), min_size=n + n_other, max_size=n + n_other, unique=True))
    chosen: list[Rule] = []
    edges: list[int] = []
    for name in names[:n]:
        rule = draw(rules(bar_size, bar=bar, names=st.just(name), near=edges))
        chosen.append(rule)
        edges += [rule.start, rule.end]
    other_bar = draw(st.sampled_from([b for b in range(NUM_BARS) if b != bar]))
    for name in names[n:]:
        rule = draw(rules(2 * bar_size, bar=other_bar, names=st.just(name), near=edges))
        chosen.insert(draw(st.integers(0, len(chosen))), rule)
    return Policy(
        chosen,
        fill=draw(st.one_of(st.just(0xFF), st.integers(0, 0xFF))),
        partial=draw(st.sampled_from(PARTIAL_MODES)),
        unaligned=draw(st.sampled_from(UNALIGNED_MODES)),
    )


def _edges(bar_size: int, policy: Policy, bar: int) -> list[int]:
    """Rule edges of `bar`, the page boundaries around them, and both ends of the BAR."""
    edges = {0, bar_size}
    for rule in policy.for_bar(bar):
        edges |= {rule.start, rule.end}
    for edge in list(edges):
        for p in PAGE_SIZES:
            edges |= {edge - edge % p, edge - edge % p + p}
    return sorted(e for e in edges if 0 <= e <= bar_size)


def _values(width: int) -> st.SearchStrategy[int]:
    top = (1 << (8 * width)) - 1
    return st.one_of(st.integers(0, top), st.sampled_from((0, top)))


@st.composite
def accesses(draw: st.DrawFn, bar_size: int, policy: Policy, *, bar: int = 0) -> Access:
    """A valid `(offset, width, is_write, value)`, mostly within 8 bytes of a rule or page
    edge; half of them aligned to their width. `value` is 0 for reads."""
    width = draw(st.sampled_from([w for w in WIDTHS if w <= bar_size]))
    anchor = draw(
        st.one_of(st.sampled_from(_edges(bar_size, policy, bar)), st.integers(0, bar_size))
    )
    offset = anchor + draw(st.integers(-8, 8))
    if draw(st.booleans()):
        offset -= offset % width
    offset = _clamp(offset, 0, bar_size - width)
    is_write = draw(st.booleans())
    value = draw(_values(width)) if is_write else 0
    return (offset, width, is_write, value)


def invalid_accesses(bar_size: int) -> st.SearchStrategy[Access]:
    """Accesses DESIGN §3 step 1 rejects with AccessError, one reason at a time (or more)."""
    width = st.sampled_from(WIDTHS)
    in_bar = st.integers(0, bar_size - 1)
    bad_width = st.tuples(in_bar, st.sampled_from(BAD_WIDTHS), st.booleans(), st.just(0))
    negative = st.tuples(
        st.one_of(st.integers(-16, -1), st.sampled_from((-(2**63), -(2**64)))),
        width,
        st.booleans(),
        st.just(0),
    )
    past_end = width.flatmap(
        lambda w: st.tuples(
            st.integers(max(0, bar_size - w + 1), bar_size + 16),
            st.just(w),
            st.booleans(),
            st.just(0),
        )
    )
    # Offsets whose end wraps a 64-bit (or signed 64-bit) integer.
    wrapping = st.tuples(
        st.one_of(st.integers(2**64 - 16, 2**64 + 8), st.sampled_from((2**63 - 4, 2**63))),
        width,
        st.booleans(),
        st.just(0),
    )
    bad_value = width.flatmap(
        lambda w: st.tuples(
            st.integers(0, max(0, bar_size - w)),
            st.just(w),
            st.just(True),
            st.one_of(st.integers(-(2**64), -1), st.integers(1 << (8 * w), (1 << (8 * w)) + 2**64)),
        )
    )
    return st.one_of(bad_width, negative, past_end, wrapping, bad_value)
