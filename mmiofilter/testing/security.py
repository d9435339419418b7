"""The security property of contract §3, checked on its own: no device access carries a byte the
policy does not pass.

It reads the policy with `owner()` and contract-details item 1 directly, never through
`ModelFilter`, so a bug that the reference model and the C core happened to share would still
be caught here. Give it the device accesses one MMIO access (or a run of them under one policy)
turned into, e.g. the new entries of a `ModelDevice.log`.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..rules import Policy
from .model import action_of, owner

#: contract-details 1: the actions whose bytes a read may fetch from the device...
READ_PASSES = frozenset({"allow", "audit", "readonly", "mask"})
#: ...and those whose bytes a write must never carry to it.
WRITE_BLOCKED = frozenset({"readonly", "emulate", "deny", "redirect", "guard"})

#: One device access as `ModelDevice.log` records it: `(offset, width, is_write, value)`.
DeviceAccess = tuple[int, int, bool, int]


def assert_security(policy: Policy, log: Iterable[DeviceAccess], bar: int = 0) -> None:
    """Raise AssertionError for a device access that touched a byte `policy` does not pass.

    A read may only touch bytes whose owner is `allow`, `audit`, `readonly` or `mask`; a write
    may only touch `allow`, `audit` and `mask` bytes, and on a `mask` byte the bits of the mask
    must carry the rule's value. `policy` must be the one in force when the accesses were made.
    """
    rules = policy.for_bar(bar)
    for offset, width, is_write, value in log:
        for i in range(width):
            at = offset + i
            rule = owner(rules, at)
            action = action_of(rule)
            if not is_write:
                if action not in READ_PASSES:
                    raise AssertionError(f"BAR{bar}: a device read reached {action} byte {at:#x}")
                continue
            if action in WRITE_BLOCKED:
                raise AssertionError(f"BAR{bar}: a device write reached {action} byte {at:#x}")
            if rule is not None and action == "mask":
                k = at - rule.start
                byte = (value >> (8 * i)) & 0xFF
                mask, forced = rule.mask_byte(k), rule.value_byte(k)
                if byte & mask != forced & mask:
                    raise AssertionError(
                        f"BAR{bar}: a device write carried {byte:#04x} to byte {at:#x}, whose "
                        f"mask {mask:#04x} forces {forced & mask:#04x} (rule {rule.name!r})"
                    )
