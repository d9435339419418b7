"""What other components' tests import (docs/testing.md).

- The reference model of contract §2-4 (`ModelFilter`, `ModelDevice`, `owner`, `compute_layout`,
  ...): the oracle differential tests compare the C core and `BarFilter` against.
- Hypothesis strategies for page sizes, BAR sizes, rules, policies, and valid and invalid
  accesses (these need hypothesis, a test dependency; the model does not).
"""

from __future__ import annotations

from .model import (
    MIN_PAGE_SIZE,
    UNALIGNED_RULE,
    WIDTHS,
    Device,
    ModelDevice,
    ModelFilter,
    ModelLayout,
    action_of,
    chunks,
    compute_layout,
    elementary_intervals,
    owner,
)
from .security import assert_security

# The strategies need hypothesis (a test dependency); the model does not, so a VMM's own tests
# or the benchmark can use the model without it. Strategy names resolve on first use.
_STRATEGY_NAMES = frozenset(
    {
        "BAD_WIDTHS",
        "MAX_BAR_SIZE",
        "PAGE_SIZES",
        "PRIORITIES",
        "Access",
        "accesses",
        "bar_sizes",
        "invalid_accesses",
        "page_sizes",
        "policies",
        "rule_names",
        "rules",
    }
)


def __getattr__(name: str) -> object:
    if name in _STRATEGY_NAMES:
        from . import strategies

        return getattr(strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BAD_WIDTHS",
    "MAX_BAR_SIZE",
    "MIN_PAGE_SIZE",
    "PAGE_SIZES",
    "PRIORITIES",
    "UNALIGNED_RULE",
    "WIDTHS",
    "Access",
    "Device",
    "ModelDevice",
    "ModelFilter",
    "ModelLayout",
    "accesses",
    "action_of",
    "assert_security",
    "bar_sizes",
    "chunks",
    "compute_layout",
    "elementary_intervals",
    "invalid_accesses",
    "owner",
    "page_sizes",
    "policies",
    "rule_names",
    "rules",
]
