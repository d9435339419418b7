"""What other components' tests import (DESIGN §7).

- The reference model of DESIGN §2-4 (`ModelFilter`, `ModelDevice`, `owner`, `compute_layout`,
  ...): the oracle differential tests compare the C core and `BarFilter` against.
- Hypothesis strategies for page sizes, BAR sizes, rules, policies, and valid and invalid
  accesses. Importing this package therefore needs hypothesis (a test dependency).
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
from .strategies import (
    BAD_WIDTHS,
    MAX_BAR_SIZE,
    PAGE_SIZES,
    PRIORITIES,
    Access,
    accesses,
    bar_sizes,
    invalid_accesses,
    page_sizes,
    policies,
    rule_names,
    rules,
)

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
