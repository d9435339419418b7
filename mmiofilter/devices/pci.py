"""The `pci` profile: any PCI device, protected as vfio-pci itself protects it.

vfio-pci never lets a guest map the MSI-X table or the PBA (the VMM emulates them, since the
table holds the host's interrupt routing); their location comes from the MSI-X capability in
config space (PCI Local Bus Specification 3.0 §6.8.2). `msix` chooses what the guest gets when
an access reaches the filter: `deny` (reads 0xFF, writes dropped: the safe default, for a VMM
that emulates the table before the filter sees the access), `emulate` (reads 0, writes
dropped) or `allow` (pass through, as with vfio-pci's MSI-X mmap relaxation on some hosts).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..rules import Rule
from .pciconfig import ConfigError, msix_regions
from .profile import Device, Option, Profile, Resolved

MSIX_ACTION = {"deny": "deny", "emulate": "emulate"}


class PciProfile(Profile):
    name = "pci"
    title = "Any PCI device: MSI-X table and PBA, located through config space"
    options = (
        Option("msix", ("deny", "emulate", "allow"), "deny", "guest access to MSI-X table/PBA"),
    )

    def resolve(self, choices: Mapping[str, str], device: Device | None) -> Resolved:
        action = MSIX_ACTION.get(choices["msix"])
        if action is None:
            return Resolved(rules=[])
        config = device.config if device else None
        if config is None:
            return Resolved(
                rules=[],
                deferred=["MSI-X table and PBA: need the device's config space (config = ...)"],
            )
        if config.msix is None:
            return Resolved(rules=[], warnings=["the device has no MSI-X capability"])
        rules: list[Rule] = []
        for bar in sorted({config.msix.table_bar, config.msix.pba_bar}):
            size = device.bar_sizes.get(bar) if device else None
            try:
                regions = msix_regions(config.msix, bar, bar_size=size)
            except ConfigError as e:
                raise ConfigError(f"{config.where}: {e}") from None
            rules += [Rule(name, off, length, action, bar=bar) for name, off, length in regions]
        return Resolved(rules=rules)
