"""Which profiles exist, and which one a device gets."""

from __future__ import annotations

import logging
from functools import cache

from ..errors import PolicyError
from .profile import Profile

log = logging.getLogger("mmiofilter")
NVIDIA = 0x10DE


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


def profile_for_ids(vendor: int, device: int, class_code: int | None = None) -> Profile:
    """The profile made for a PCI vendor:device, else the generic `pci` profile. An NVIDIA
    GPU (display class 0x03xx, or a class not given) that no NVIDIA profile knows gets the
    generic profile with a warning on the `mmiofilter` logger: it protects the MSI-X table and
    nothing of the GPU's own (no NVLink isolation, no firmware guard)."""
    for p in profiles().values():
        if (vendor, device) in p.ids:
            return p
    if vendor == NVIDIA and (class_code is None or class_code >> 16 == 0x03):
        what = "class not known" if class_code is None else f"class {class_code:06x}"
        log.warning(
            "%04x:%04x (%s) is an NVIDIA GPU no NVIDIA profile knows: it gets only the generic "
            "'pci' profile (MSI-X), no NVLink isolation and no firmware protection; name a "
            "profile to protect it",
            vendor,
            device,
            what,
        )
    return profiles()["pci"]
