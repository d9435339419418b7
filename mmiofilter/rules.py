"""Rules and policies: the admin's intent, validated before it reaches the C core.

Every check here fails with a PolicyError that names the rule and the field, because a
policy that is silently reinterpreted is a protection silently weakened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import ClassVar

from . import _binding as cb
from .errors import PolicyError, is_int, shown
from .lint import warn_inert

#: A rule's actions, from the least to the most restrictive: the tie-break order of
#: docs/contract-details.md (a guard, between readonly and audit, is a rule of its own class).
ACTIONS: tuple[str, ...] = ("allow", "audit", "readonly", "mask", "redirect", "emulate", "deny")
PARTIAL_MODES: tuple[str, ...] = tuple(cb.PARTIAL_CODE)
UNALIGNED_MODES: tuple[str, ...] = tuple(cb.UNALIGNED_CODE)
NUM_BARS: int = cb.NUM_BARS
#: Names travel in fixed-size event records of the C core (MF_NAME_MAX with the NUL).
MAX_NAME_BYTES: int = cb.NAME_MAX_BYTES
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
U64_MAX = 2**64 - 1


@dataclass(frozen=True, repr=False)
class Rule:
    """A byte range `[start, start+size)` of one BAR with an action (docs/contract-details.md).

    `value` and `mask` are laid little-endian over the rule's bytes: byte i of the rule is
    `(value >> 8*i) & 0xFF`. A `redirect` rule names its `target` (a backend the filter is
    given as `BarFilter(..., targets={name: backend})`); byte i of the rule is byte
    `target_offset + i` of the target.
    """

    name: str
    start: int
    size: int
    action: str
    value: int = field(default=0, kw_only=True)
    mask: int = field(default=0, kw_only=True)
    priority: int = field(default=0, kw_only=True)
    bar: int = field(default=0, kw_only=True)
    target: str = field(default="", kw_only=True)
    target_offset: int = field(default=0, kw_only=True)

    #: The actions this kind of rule may have (a guard is a rule whose action is "guard").
    allowed_actions: ClassVar[tuple[str, ...]] = ACTIONS

    def __post_init__(self) -> None:
        # Types, and what no field of struct mf_rule can carry, are checked here; every range
        # and limit a rule has on its own is the core's (mf_rule_check), so a C caller and a
        # policy file get the same rules and the same messages.
        if not isinstance(self.name, str) or "\0" in self.name:
            raise PolicyError(f"rule {shown(self.name)}: name must be a string without NUL")
        where = f"rule {self.name!r}"
        for fname in ("start", "size", "value", "mask", "priority", "bar", "target_offset"):
            if not is_int(getattr(self, fname)):
                raise PolicyError(
                    f"{where}: {fname} must be an integer, not {shown(getattr(self, fname))}"
                )
        if self.action not in self.allowed_actions:
            hint = " (a guard: mmiofilter.FspGuard)" if self.action == "guard" else ""
            raise PolicyError(
                f"{where}: action {shown(self.action)} is not one of "
                f"{', '.join(self.allowed_actions)}{hint}"
            )
        # integers the C fields cannot hold
        for fname, low, high, want in (
            ("start", 0, U64_MAX, "0..2**64-1"),
            ("size", 0, U64_MAX, "1..2**64-1"),  # 0 fits: the core refuses it
            ("target_offset", 0, U64_MAX, "0..2**64-1"),
            ("priority", PRIORITY_MIN, PRIORITY_MAX, "a signed 32-bit integer"),
        ):
            v = getattr(self, fname)
            if not low <= v <= high:
                raise PolicyError(f"{where}: {fname} {shown(v)} is not {want}")
        for fname in ("value", "mask"):
            if getattr(self, fname) < 0:
                raise PolicyError(f"{where}: {fname} must not be negative")
        # the BAR index and the target's name are not part of struct mf_rule
        if not 0 <= self.bar < NUM_BARS:
            raise PolicyError(
                f"{where}: bar {shown(self.bar)} is not a BAR index 0..{NUM_BARS - 1}"
            )
        if not isinstance(self.target, str):
            raise PolicyError(f"{where}: target must be a string, not {shown(self.target)}")
        if self.action == "redirect" and not (self.target.isidentifier() and self.target.isascii()):
            raise PolicyError(
                f"{where}: a redirect rule needs a target name (an identifier such as "
                f"'config'), not {shown(self.target)}"
            )
        if self.action != "redirect" and self.target:
            raise PolicyError(
                f"{where}: target and target_offset belong to redirect rules, not {self.action}"
            )
        cb.check_rule(self)

    def __repr__(self) -> str:
        # as it would be written: the keyword fields only where they differ from the default
        extra = "".join(
            f", {f.name}={getattr(self, f.name)!r}"
            for f in fields(Rule)
            if f.kw_only and getattr(self, f.name) != f.default
        )
        return f"Rule({self.name!r}, {self.start:#x}, {self.size:#x}, {self.action!r}{extra})"

    def weaknesses(self) -> list[str]:
        """What makes this rule protect less than it seems to (mmiofilter.lint)."""
        if self.action == "mask" and self.mask == 0:
            return [
                f"rule {self.name!r}: a mask rule with mask 0 forces no bit, so it protects "
                "nothing (give `mask`: the bits to force to `value`)"
            ]
        return []

    @property
    def end(self) -> int:
        """One past the last byte of the rule."""
        return self.start + self.size

    def value_byte(self, i: int) -> int:
        """Byte `i` of the rule's value, little-endian."""
        return (self.value >> (8 * i)) & 0xFF

    def mask_byte(self, i: int) -> int:
        """Byte `i` of the rule's mask, little-endian."""
        return (self.mask >> (8 * i)) & 0xFF


class Policy:
    """An ordered list of rules and the access-wide choices of contract §3.

    The order of `rules` matters: on a full tie the rule listed last owns the byte.
    """

    __slots__ = ("fill", "partial", "rules", "unaligned")

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        fill: int = 0xFF,
        partial: str = "deny",
        unaligned: str = "allow",
    ) -> None:
        rules_t = tuple(rules)
        names: set[str] = set()
        for i, r in enumerate(rules_t):
            if not isinstance(r, Rule):
                raise PolicyError(f"rule #{i}: expected a Rule, not {type(r).__name__}")
            if r.name in names:
                # Events and counters identify rules by name: a duplicate would make an
                # audit trail ambiguous.
                raise PolicyError(f"rule {r.name!r}: name is used by more than one rule")
            names.add(r.name)
        if not is_int(fill) or not 0 <= fill <= 0xFF:
            raise PolicyError(f"policy: fill must be a byte 0..255, not {shown(fill)}")
        if partial not in PARTIAL_MODES:
            raise PolicyError(
                f"policy: partial {shown(partial)} is not one of {', '.join(PARTIAL_MODES)}"
            )
        if unaligned not in UNALIGNED_MODES:
            raise PolicyError(
                f"policy: unaligned {shown(unaligned)} is not one of {', '.join(UNALIGNED_MODES)}"
            )
        warn_inert(rules_t)  # a rule that protects nothing is said at once (mmiofilter.lint)
        self.rules: tuple[Rule, ...] = rules_t
        self.fill: int = fill
        self.partial: str = partial
        self.unaligned: str = unaligned

    def for_bar(self, bar: int) -> tuple[Rule, ...]:
        """The rules of one BAR, in policy order."""
        return tuple(r for r in self.rules if r.bar == bar)

    def check_bar(self, bar: int, size: int) -> None:
        """Raise PolicyError for a rule of `bar` that does not lie inside a BAR of `size`."""
        for r in self.for_bar(bar):
            if r.end > size:
                raise PolicyError(
                    f"rule {r.name!r}: [{r.start:#x}, {r.end:#x}) lies outside BAR{bar} "
                    f"of size {size:#x}"
                )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return (self.rules, self.fill, self.partial, self.unaligned) == (
            other.rules,
            other.fill,
            other.partial,
            other.unaligned,
        )

    def __hash__(self) -> int:
        return hash((self.rules, self.fill, self.partial, self.unaligned))

    def __repr__(self) -> str:
        return (
            f"Policy({list(self.rules)!r}, fill={self.fill:#x}, partial={self.partial!r}, "
            f"unaligned={self.unaligned!r})"
        )

    @classmethod
    def from_toml(cls, source: object) -> Policy:
        """Parse a policy from TOML text or a path (see `mmiofilter.policy_toml`)."""
        from .policy_toml import policy_from_toml

        return policy_from_toml(source)
