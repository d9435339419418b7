"""Device profiles: the admin's choices in, rules out.

A profile knows a device family's register map and offers a few named options
(`nvlink = "isolate"`, `firmware_update = "deny"`, ...). The admin, not the code, picks the
options; the profile turns them into rules. Some rules need the device itself: NVLink units are
found through the GPU's device-info table, the MSI-X table through PCI config space. Those are
resolved when the filter is attached, by reading the real device before the guest runs; without
a device a profile still reports its static rules and says what it could not resolve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import PolicyError, shown
from ..rules import Rule
from .pciconfig import ConfigSpace


@dataclass(frozen=True)
class Option:
    """One admin choice a profile offers."""

    name: str
    choices: tuple[str, ...]
    default: str
    help: str
    #: For an option that is not one of fixed choices: turns the admin's value into its
    #: canonical string, or raises PolicyError saying what is wrong.
    parse: Callable[[object], str] | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Device:
    """What a profile may read of the real device at attach time."""

    #: Reads a 32-bit register of BAR0 through the backend (before the guest runs).
    read32: Callable[[int], int] | None = None
    bar_sizes: Mapping[int, int] = field(default_factory=dict)
    config: ConfigSpace | None = None
    #: The names of the redirect targets the VMM hands the filter (`attach(..., targets=...)`);
    #: None when not known (a policy checked without a device).
    targets: frozenset[str] | None = None


@dataclass(frozen=True)
class Resolved:
    """A profile's rules for one set of choices, and what needs the device to resolve."""

    rules: list[Rule]
    #: Human-readable: what could not be resolved without the device (empty once attached).
    deferred: list[str] = field(default_factory=list)
    #: Things the admin must know: a choice that cannot be fully honoured yet, an unconfirmed
    #: register fact the rules rely on.
    warnings: list[str] = field(default_factory=list)
    #: Where each profile rule's facts come from: rule name -> the register map's `source`.
    sources: dict[str, str] = field(default_factory=dict)


class Profile:
    """Base class: subclasses set the class attributes and implement `resolve`."""

    name: str = ""
    title: str = ""
    #: (vendor, device) PCI IDs the profile is chosen for.
    ids: tuple[tuple[int, int], ...] = ()
    options: tuple[Option, ...] = ()

    def choices(self, given: Mapping[str, object], where: str = "policy") -> dict[str, str]:
        """The admin's choices, checked, with defaults for the ones not given."""
        known = {o.name: o for o in self.options}
        for key, value in given.items():
            if key not in known:
                raise PolicyError(
                    f"{where}: profile {self.name!r} has no option {key!r} "
                    f"(options: {', '.join(known) or 'none'})"
                )
            parse = known[key].parse
            if parse is not None:
                try:
                    parse(value)
                except PolicyError as e:
                    raise PolicyError(f"{where}: option {key!r}: {e}") from None
            elif value not in known[key].choices:
                raise PolicyError(
                    f"{where}: option {key!r} = {shown(value)} is not one of "
                    f"{', '.join(known[key].choices)}"
                )
        return {
            o.name: o.parse(given[o.name])
            if o.parse and o.name in given
            else str(given.get(o.name, o.default))
            for o in self.options
        }

    def resolve(self, choices: Mapping[str, str], device: Device | None) -> Resolved:
        raise NotImplementedError
