"""What a CLI command acts on: a profile name or a policy file, and optionally the device (a
sysfs PCI address or a config dump), turned into rules."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..devices import Device, PolicyFile, Resolved, load_policy_file, profile_for_ids, profiles
from ..devices.nvidia import NvidiaProfile
from ..devices.pciconfig import ConfigError, ConfigSpace
from ..devices.pcisources import SYSFS_DEVICES, load_config_any, read_sysfs_device
from ..devices.regmap import RegisterMap
from ..errors import PolicyError
from ..rules import Policy
from .base import CliError, did_you_mean


@dataclass(frozen=True)
class Source:
    label: str
    policy_file: PolicyFile
    #: BAR sizes the device's sysfs `resource` gives, when a device was named.
    device_sizes: dict[int, int] = field(default_factory=dict)
    #: The PCI address of the device, when one was named.
    address: str | None = None

    def resolve(self) -> tuple[Policy, Resolved]:
        """The rules known without reading the device's BARs (device-info units are
        deferred to attach)."""
        device = Device(bar_sizes=self.device_sizes) if self.device_sizes else None
        return self.policy_file.resolve(device)

    @property
    def config(self) -> ConfigSpace | None:
        return self.policy_file.config

    @property
    def register_map(self) -> RegisterMap | None:
        p = self.policy_file.profile
        return p.map if isinstance(p, NvidiaProfile) else None

    def bar_size(self, bar: int) -> int | None:
        if bar in self.device_sizes:
            return self.device_sizes[bar]
        m = self.register_map
        try:
            return m.bar(bar).size if m else None
        except KeyError:
            return None


def add_source_argument(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    p.add_argument(
        "source", metavar="PROFILE|FILE", nargs="?" if device else None,
        help="a profile name or a policy file" + (
            " (optional with --device or --config: the profile is chosen by the device's "
            "PCI IDs)" if device else ""),
    )  # fmt: skip
    p.add_argument(
        "--option", "-o", action="append", default=[], metavar="NAME=VALUE",
        help="a profile option, when PROFILE is a profile name (repeatable)",
    )  # fmt: skip
    if not device:
        return
    p.add_argument(
        "--device", metavar="ADDRESS", default=None,
        help="a PCI address (0000:65:00.0): read its config space and BAR sizes from sysfs "
        "(config needs root for the capabilities, MSI-X among them)",
    )  # fmt: skip
    p.add_argument(
        "--config", metavar="DUMP", type=Path, default=None,
        help="a config-space dump: binary (sysfs config) or `lspci -s ADDRESS -xxx` text",
    )  # fmt: skip
    p.add_argument("--sysfs-root", default=SYSFS_DEVICES, help=argparse.SUPPRESS)


def _options(items: list[str]) -> dict[str, object]:
    given: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--option {item!r}: expected NAME=VALUE")
        given[key.strip()] = value.strip()
    return given


def _choices(pf: PolicyFile, given: dict[str, object], where: str) -> dict[str, str]:
    assert pf.profile is not None
    known = [o.name for o in pf.profile.options]
    for key in given:
        if key not in known:
            raise CliError(
                f"{where}: profile {pf.profile.name!r} has no option {key!r}"
                f"{did_you_mean(key, known)} (options: {', '.join(known) or 'none'})"
            )
    return pf.profile.choices(given, where)


def _device(args: argparse.Namespace) -> tuple[ConfigSpace | None, dict[int, int], str | None]:
    address = getattr(args, "device", None)
    dump = getattr(args, "config", None)
    if address and dump:
        raise CliError("give --device or --config, not both")
    try:
        if address:
            dev = read_sysfs_device(address, args.sysfs_root)
            return dev.config, dev.bar_sizes, dev.address
        if dump:
            return load_config_any(dump), {}, None
    except ConfigError as e:
        raise CliError(str(e)) from None
    return None, {}, None


def load_source(args: argparse.Namespace) -> Source:
    """A profile name (with --option choices) or a policy file path, and the device."""
    name: str | None = args.source
    config, sizes, address = _device(args)
    given = _options(args.option)
    if name is None:
        if config is None:
            raise CliError("give a profile name or a policy file (or --device / --config)")
        profile = profile_for_ids(config.vendor, config.device)
        pf = PolicyFile(where=address or config.where, extra=Policy([]), profile=profile)
        pf = dataclasses.replace(pf, choices=_choices(pf, given, f"profile {profile.name}"))
    elif name in profiles():
        pf = PolicyFile(where=name, extra=Policy([]), profile=profiles()[name])
        pf = dataclasses.replace(pf, choices=_choices(pf, given, f"profile {name}"))
    else:
        if given:
            raise CliError("--option applies to a profile name; a policy file has [options]")
        path = Path(name)
        if not path.is_file():
            raise CliError(
                f"{name}: neither a profile{did_you_mean(name, list(profiles()))} "
                f"({', '.join(profiles())}) nor a policy file"
            )
        pf = load_policy_file(path)
    if config is not None:
        pf = _with_device(pf, config)
    label = name or address or str(getattr(args, "config", ""))
    return Source(label, pf, sizes, address)


def _with_device(pf: PolicyFile, config: ConfigSpace) -> PolicyFile:
    """The policy file with the device's config space; its profile must be for the device."""
    ids = (config.vendor, config.device)
    p = pf.profile
    if p is None:  # a plain policy file: the device gives BAR sizes only
        return pf
    if p.ids and ids not in p.ids:
        raise PolicyError(
            f"{pf.where}: device {ids[0]:04x}:{ids[1]:04x} is not one profile {p.name!r} is for"
        )
    return dataclasses.replace(pf, config=config)
