"""Device knowledge (docs/admin-guide.md): register maps, PCI config space, profiles, policy files.

`load_policy_file(path)` reads an admin's policy file; `attach(policy_file, backend, size)`
resolves it against the device (device-info discovery) and returns the filter; its
`targets` (the VMM's config-space emulation, or `open_config_target`/`vfio_config_target`)
serve the config-space mirrors under `config_mirror = "virtualize"`.
"""

from .attach import attach, probe_device
from .policyfile import PolicyFile, load_policy_file
from .profile import Device, Option, Profile, Resolved
from .registry import get_profile, profile_for_ids, profiles
from .targets import ConfigFile, open_config_target, vfio_config_target

__all__ = [
    "ConfigFile",
    "Device",
    "Option",
    "PolicyFile",
    "Profile",
    "Resolved",
    "attach",
    "get_profile",
    "load_policy_file",
    "open_config_target",
    "probe_device",
    "profile_for_ids",
    "profiles",
    "vfio_config_target",
]
