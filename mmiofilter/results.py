"""What an access returns and what it leaves in the event ring (contract §3)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Outcome(enum.Enum):
    """How the filter decided one access (the core's codes: mmiofilter._binding)."""

    PASS = "pass"
    MASKED = "masked"
    EMULATED = "emulated"
    BLOCKED = "blocked"
    PARTIAL = "partial"
    #: One redirect rule owned every byte: the access went to its target, not the device.
    REDIRECTED = "redirected"


@dataclass(frozen=True)
class Result:
    """The outcome of an access and the value: the one returned for a read, or for a
    write the value that reached the device (after masks; 0 when nothing did)."""

    outcome: Outcome
    value: int


@dataclass(frozen=True)
class Event:
    """One access that did not simply pass, or that touched an `audit` byte.

    `value` is what the guest wrote for a write, or what it was returned for a read.
    `rule` names the rule owning the first byte that did not pass
    (docs/contract-details.md, item 6).
    """

    seq: int
    bar: int
    offset: int
    width: int
    is_write: bool
    value: int
    outcome: Outcome
    rule: str
    #: A guard's reason for its decision ("nvdm 0x12 refused"); empty for other rules.
    detail: str = ""
    #: When the core made the event: CLOCK_REALTIME in nanoseconds since the epoch (0 when the
    #: event did not come from the core). Not part of equality: two runs of the same accesses
    #: make equal events at different times.
    time_ns: int = field(default=0, compare=False)
    #: The label of the filter that made the event (`BarFilter(..., label=...)`), e.g.
    #: "0000:65:00.0/bar0"; empty when the filter has none.
    label: str = ""

    @property
    def time(self) -> float:
        """`time_ns` in seconds since the epoch, as `time.time()` gives it."""
        return self.time_ns / 1e9
