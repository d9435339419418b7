"""Device knowledge (docs/admin-guide.md): register maps, PCI config space, profiles, policy files.

`load_policy_file(path)` reads an admin's policy file; `attach(policy_file, backend, size)`
resolves it against the device (device-info discovery) and returns the filter.
"""

from .attach import attach, probe_device
from .policyfile import PolicyFile, load_policy_file
from .profile import Device, Option, Profile, Resolved
from .registry import get_profile, profile_for_ids, profiles

__all__ = [
    "Device",
    "Option",
    "PolicyFile",
    "Profile",
    "Resolved",
    "attach",
    "get_profile",
    "load_policy_file",
    "probe_device",
    "profile_for_ids",
    "profiles",
]
