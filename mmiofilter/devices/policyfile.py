"""The admin's policy file: a device profile, its options, and any extra rules, in one TOML.

    profile = "nvidia-gv100"       # or omit it and give `device` or `config` to choose by ID
    device = "10de:1db1"           # optional: choose the profile by PCI vendor:device
    config = "config.bin"          # optional: a PCI config-space dump (relative to this file),
                                   # e.g. /sys/bus/pci/devices/<BDF>/config, or the text of
                                   # `lspci -s <BDF> -xxx`; chooses the profile
                                   # by its IDs and locates MSI-X for the `pci` profile
    fill = 0xFF                    # policy-wide settings, as in a plain policy file
    partial = "deny"

    [options]                      # the admin's choices; `mmiofilter show PROFILE` lists them
    nvlink = "isolate"
    firmware_update = "deny"

    [[rule]]                       # extra rules, exactly as in a plain policy file
    name = "scratch"
    ...

A file without `profile`, `device` or `config` is a plain policy file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PolicyError
from ..policy_toml import policy_from_document, read_document
from ..rules import Policy
from .pciconfig import ConfigError, ConfigSpace
from .pcisources import load_config_any
from .profile import Device, Profile, Resolved
from .registry import get_profile, profile_for_ids

DEVICE_KEYS = frozenset({"profile", "device", "config", "options"})


@dataclass(frozen=True)
class PolicyFile:
    """A parsed policy file. `resolve()` turns it into the Policy a BarFilter enforces."""

    where: str
    extra: Policy  # the file's own rules and policy-wide settings
    profile: Profile | None = None
    choices: dict[str, str] = field(default_factory=dict)
    config: ConfigSpace | None = None

    def resolve(self, device: Device | None = None) -> tuple[Policy, Resolved]:
        """The full policy: the profile's rules for the admin's choices (resolved against the
        device when one is given), then the file's own rules."""
        if self.profile is None:
            return self.extra, Resolved(rules=[])
        if self.config is not None:
            device = Device(
                read32=device.read32 if device else None,
                bar_sizes=device.bar_sizes if device else {},
                config=self.config,
                targets=device.targets if device else None,
            )
        resolved = self.profile.resolve(self.choices, device)
        taken = {r.name for r in resolved.rules}
        for r in self.extra.rules:
            if r.name in taken:
                raise PolicyError(
                    f"{self.where}: rule {r.name!r} has the name of a rule of profile "
                    f"{self.profile.name!r}"
                )
        policy = Policy(
            [*resolved.rules, *self.extra.rules],
            fill=self.extra.fill,
            partial=self.extra.partial,
            unaligned=self.extra.unaligned,
        )
        return policy, resolved


def _parse_ids(text: object, where: str) -> tuple[int, int]:
    if isinstance(text, str) and text.count(":") == 1:
        v, d = text.split(":")
        try:
            vendor, device = int(v, 16), int(d, 16)
        except ValueError:
            pass
        else:
            if 0 <= vendor <= 0xFFFF and 0 <= device <= 0xFFFF:
                return vendor, device
    raise PolicyError(f"{where}: device must be 'vendor:device' in hex (e.g. '10de:1db1')")


def _load_config(value: object, base: Path | None, where: str) -> ConfigSpace:
    if not isinstance(value, str):
        raise PolicyError(f"{where}: config must be a path to a PCI config-space dump")
    path = Path(value)
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        return load_config_any(path)  # binary (sysfs) or lspci -xxx text
    except (OSError, ConfigError) as e:
        raise PolicyError(f"{where}: config {value!r}: {e}") from None


def load_policy_file(source: object) -> PolicyFile:
    """Parse a policy file (TOML text or a path); errors name the file, key and value."""
    doc, where = read_document(source)
    extra = policy_from_document(doc, where, DEVICE_KEYS)
    if not DEVICE_KEYS & set(doc):
        return PolicyFile(where=where, extra=extra)
    # a config path is relative to the policy file; `where` is that file's path when it has one
    base = Path(where).parent if where != "<policy>" else None
    config = _load_config(doc["config"], base, where) if "config" in doc else None
    ids = _parse_ids(doc["device"], where) if "device" in doc else None
    if ids is None and config is not None:
        ids = (config.vendor, config.device)
    if "profile" in doc:
        if not isinstance(doc["profile"], str):
            raise PolicyError(f"{where}: profile must be a profile name")
        profile = get_profile(doc["profile"], where)
        if ids is not None and ids not in profile.ids and profile.ids:
            raise PolicyError(
                f"{where}: device {ids[0]:04x}:{ids[1]:04x} is not one profile "
                f"{profile.name!r} is for"
            )
    elif ids is not None:
        known = config is not None and (config.vendor, config.device) == ids
        profile = profile_for_ids(*ids, config.class_code if known and config else None)
    else:
        raise PolicyError(f"{where}: [options] need a profile (or a device or config to pick one)")
    options: Any = doc.get("options", {})
    if not isinstance(options, dict):
        raise PolicyError(f"{where}: options must be a table ([options])")
    choices = profile.choices(options, where)
    return PolicyFile(where=where, extra=extra, profile=profile, choices=choices, config=config)
