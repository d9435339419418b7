"""Rules and policies: the admin's intent, validated before it reaches the C core.

Every check here fails with a PolicyError that names the rule and the field, because a
policy that is silently reinterpreted is a protection silently weakened.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from . import _binding as cb
from .errors import PolicyError, shown

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
_NAME_OK = re.compile(r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")


def _is_int(v: object) -> bool:
    # bool is an int in Python; `start = true` in a policy file is a mistake, not 1.
    return isinstance(v, int) and not isinstance(v, bool)


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
        if not isinstance(self.name, str) or not _NAME_OK.match(self.name):
            raise PolicyError(
                f"rule {self.name!r}: name must be printable ASCII, without leading or "
                "trailing spaces"
            )
        if self.name.startswith("("):
            # "(unaligned)" and the like name the filter's own decisions in events
            raise PolicyError(f"rule {self.name!r}: names starting with '(' are reserved")
        if len(self.name.encode()) > MAX_NAME_BYTES:
            raise PolicyError(f"rule {self.name!r}: name is longer than {MAX_NAME_BYTES} bytes")
        where = f"rule {self.name!r}"
        for fname in ("start", "size", "value", "mask", "priority", "bar", "target_offset"):
            if not _is_int(getattr(self, fname)):
                raise PolicyError(
                    f"{where}: {fname} must be an integer, not {shown(getattr(self, fname))}"
                )
        if self.action not in self.allowed_actions:
            hint = " (a guard: mmiofilter.FspGuard)" if self.action == "guard" else ""
            raise PolicyError(
                f"{where}: action {shown(self.action)} is not one of "
                f"{', '.join(self.allowed_actions)}{hint}"
            )
        if self.start < 0 or self.start > U64_MAX:
            raise PolicyError(f"{where}: start {self.start:#x} is outside 0..2**64-1")
        if self.size < 1:
            raise PolicyError(f"{where}: size must be at least 1, not {shown(self.size)}")
        if self.start + self.size - 1 > U64_MAX:
            raise PolicyError(
                f"{where}: start {self.start:#x} + size {self.size:#x} wraps past 2**64"
            )
        for fname in ("value", "mask"):
            v = getattr(self, fname)
            if v < 0:
                raise PolicyError(f"{where}: {fname} must not be negative")
            if v.bit_length() > 8 * self.size:
                raise PolicyError(
                    f"{where}: {fname} {v:#x} does not fit in the rule's {self.size} byte(s)"
                )
        if not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise PolicyError(
                f"{where}: priority {shown(self.priority)} is outside a signed 32-bit range"
            )
        if not 0 <= self.bar < NUM_BARS:
            raise PolicyError(
                f"{where}: bar {shown(self.bar)} is not a BAR index 0..{NUM_BARS - 1}"
            )
        self._check_target(where)

    def _check_target(self, where: str) -> None:
        if not isinstance(self.target, str):
            raise PolicyError(f"{where}: target must be a string, not {shown(self.target)}")
        if self.action != "redirect":
            if self.target or self.target_offset:
                raise PolicyError(
                    f"{where}: target and target_offset belong to redirect rules, not {self.action}"
                )
            return
        if not self.target.isidentifier() or not self.target.isascii():
            raise PolicyError(
                f"{where}: a redirect rule needs a target name (an identifier such as "
                f"'config'), not {shown(self.target)}"
            )
        # the target's last byte + 1 must be representable, as a BAR's end is
        if self.target_offset < 0 or self.target_offset + self.size > U64_MAX:
            raise PolicyError(
                f"{where}: target_offset {shown(self.target_offset)} + size {self.size:#x} "
                "is outside 0..2**64-1"
            )

    def __repr__(self) -> str:
        # as it would be written: the keyword fields only where they differ from the default
        extra = "".join(
            f", {f}={getattr(self, f)!r}"
            for f, default in (
                ("value", 0),
                ("mask", 0),
                ("priority", 0),
                ("bar", 0),
                ("target", ""),
                ("target_offset", 0),
            )
            if getattr(self, f) != default
        )
        return f"Rule({self.name!r}, {self.start:#x}, {self.size:#x}, {self.action!r}{extra})"

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
    """An ordered list of rules and the access-wide choices of DESIGN §3.

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
        if not _is_int(fill) or not 0 <= fill <= 0xFF:
            raise PolicyError(f"policy: fill must be a byte 0..255, not {shown(fill)}")
        if partial not in PARTIAL_MODES:
            raise PolicyError(
                f"policy: partial {shown(partial)} is not one of {', '.join(PARTIAL_MODES)}"
            )
        if unaligned not in UNALIGNED_MODES:
            raise PolicyError(
                f"policy: unaligned {shown(unaligned)} is not one of {', '.join(UNALIGNED_MODES)}"
            )
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
