"""Policies and accesses: generated with a fixed seed by one procedure for every variant, so
the mixes are comparable; `describe_mix` reports what a generated mix is."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..rules import Policy, Rule

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

BAR_SIZE = 16 * MiB
PAGE_SIZE = 4 * KiB
DENSE_PAGE_SIZE = 64 * KiB
BIG_BAR_SIZE = 64 * GiB
REG = 4  # every generated rule is one 32-bit register

#: Actions of generated rules, cycled: 3 deny, 3 mask, 2 readonly, 1 emulate, 1 audit in ten,
#: so a 10-rule and a 10,000-rule policy have exactly the same proportions.
ACTION_CYCLE = ("deny", "mask", "readonly", "deny", "mask", "emulate", "deny", "mask",
                "readonly", "audit")  # fmt: skip
#: Share of accesses aimed at a rule's register; the rest hit allowed registers in trapped
#: pages, what a driver mostly does on a page that merely neighbours a protected register.
RULE_SHARE = 0.2
WRITE_SHARE = 0.3
#: Widths of accesses to allowed registers (rule registers are accessed with width 4).
WIDTH_WEIGHTS = ((4, 85), (1, 5), (2, 5), (8, 5))


@dataclass(frozen=True)
class Workload:
    """A generated policy and where its registers are."""

    name: str
    bar_size: int
    page_size: int
    rules: list[Rule]
    pages: list[int]  # trapped pages (page indices), in generation order
    rule_slots: frozenset[int]  # offsets of the 4-byte registers the rules own

    @property
    def policy(self) -> Policy:
        return Policy(self.rules)


def _rule(i: int, start: int, rng: random.Random) -> Rule:
    action = ACTION_CYCLE[i % len(ACTION_CYCLE)]
    value = mask = 0
    if action == "mask":
        mask = rng.getrandbits(32) | 1  # never an empty mask: it would force nothing
        value = rng.getrandbits(32) & mask
    elif action == "emulate":
        value = rng.getrandbits(32)
    return Rule(f"r{i}", start, REG, action, value=value, mask=mask)


def make_workload(
    name: str, n_rules: int, per_page: int, bar_size: int, page_size: int, seed: int
) -> Workload:
    """`n_rules` 4-byte registers, `per_page` of them in each of ceil(n/per_page) random pages."""
    rng = random.Random(f"{seed}:{name}")
    n_pages = -(-n_rules // per_page)
    pages = rng.sample(range(bar_size // page_size), n_pages)
    rules: list[Rule] = []
    for page in pages:
        want = min(per_page, n_rules - len(rules))
        for slot in sorted(rng.sample(range(page_size // REG), want)):
            rules.append(_rule(len(rules), page * page_size + slot * REG, rng))
    return Workload(name, bar_size, page_size, rules, pages, frozenset(r.start for r in rules))


@dataclass(frozen=True)
class Access:
    offset: int
    width: int
    is_write: bool
    value: int


def _allowed_access(w: Workload, pages: Sequence[int], rng: random.Random) -> Access:
    """An access to a register no rule owns, in one of the trapped `pages`."""
    widths, weights = zip(*WIDTH_WEIGHTS, strict=True)
    width = rng.choices(widths, weights)[0]
    while True:
        page = rng.choice(pages)
        base = page * w.page_size + rng.randrange(w.page_size // 8) * 8
        # the 8-byte word holding the access must be rule-free, so no access is mixed
        if base in w.rule_slots or base + REG in w.rule_slots:
            continue
        offset = base + rng.randrange(8 // width) * width
        is_write = rng.random() < WRITE_SHARE
        value = rng.getrandbits(8 * width) if is_write else 0
        return Access(offset, width, is_write, value)


def make_accesses(
    w: Workload, n: int, seed: int, pages: Sequence[int] | None = None
) -> list[Access]:
    """`n` accesses: RULE_SHARE on rule registers, the rest on allowed registers of `pages`
    (default: every trapped page of the workload)."""
    rng = random.Random(f"{seed}:accesses")
    use_pages = list(pages if pages is not None else w.pages)
    page_set = set(use_pages)
    targets = [r for r in w.rules if r.start // w.page_size in page_set]
    out: list[Access] = []
    for _ in range(n):
        if targets and rng.random() < RULE_SHARE:
            r = rng.choice(targets)
            is_write = rng.random() < WRITE_SHARE
            out.append(Access(r.start, REG, is_write, rng.getrandbits(32) if is_write else 0))
        else:
            out.append(_allowed_access(w, use_pages, rng))
    return out


def describe_mix(accesses: Sequence[Access], w: Workload) -> dict[str, Any]:
    """What the generated accesses are, before any filter decides them."""
    n = len(accesses)
    on_rules = sum(a.offset in w.rule_slots and a.width == REG for a in accesses)
    widths = {str(k): 0 for k, _ in WIDTH_WEIGHTS}
    for a in accesses:
        widths[str(a.width)] += 1
    return {
        "accesses": n,
        "on_rule_registers": on_rules / n,
        "on_allowed_registers_in_trapped_pages": 1 - on_rules / n,
        "writes": sum(a.is_write for a in accesses) / n,
        "widths": {k: v / n for k, v in widths.items()},
        "distinct_pages": len({a.offset // w.page_size for a in accesses}),
    }
