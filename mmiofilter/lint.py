"""Rules that protect nothing while looking as if they did, found wherever a policy is made.

A `mask` rule with mask 0 forces no bit: it compiles, it counts accesses, and every write
passes unchanged. Such a rule is a protection the admin believes in and does not have, so it is
said at once, through Python's `warnings` (category `PolicyWarning`) and the `mmiofilter`
logger; `mmiofilter check --strict` makes it an error.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .rules import Rule

#: The library's logger. A library adds no handler but a null one: the application decides
#: where warnings go (`logging.basicConfig()`, journald, ...).
LOGGER = logging.getLogger("mmiofilter")
LOGGER.addHandler(logging.NullHandler())


class PolicyWarning(UserWarning):
    """A policy that compiles but does less than it says (see `inert_rules`)."""


def inert_rules(rules: Iterable[Rule]) -> list[str]:
    """One message per rule that does nothing it seems to do, or gives away what it guards:
    each kind of rule says what is weak about itself (`Rule.weaknesses`)."""
    return [msg for r in rules for msg in r.weaknesses()]


def warn_inert(rules: Iterable[Rule]) -> list[str]:
    """Warn (warnings and the logger) about every inert rule; return the messages."""
    found = inert_rules(rules)
    for msg in found:
        # stacklevel 3: the caller of Policy(...), not Policy.__init__ or this function.
        warnings.warn(msg, PolicyWarning, stacklevel=3)
        LOGGER.warning("%s", msg)
    return found
