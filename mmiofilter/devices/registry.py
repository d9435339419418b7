"""Which profiles exist, and which one a device gets."""

from __future__ import annotations

from functools import cache

from ..errors import PolicyError
from .profile import Profile


@cache
def profiles() -> dict[str, Profile]:
    """Every profile by name; the NVIDIA ones first, `pci` (any device) last."""
    from .nvidia import Gh100Profile, Gv100Profile
    from .pci import PciProfile

    return {p.name: p for p in (Gv100Profile(), Gh100Profile(), PciProfile())}


def get_profile(name: str, where: str = "policy") -> Profile:
    try:
        return profiles()[name]
    except KeyError:
        raise PolicyError(
            f"{where}: no profile {name!r} (profiles: {', '.join(profiles())})"
        ) from None


def profile_for_ids(vendor: int, device: int) -> Profile:
    """The profile made for a PCI vendor:device, else the generic `pci` profile."""
    for p in profiles().values():
        if (vendor, device) in p.ids:
            return p
    return profiles()["pci"]
