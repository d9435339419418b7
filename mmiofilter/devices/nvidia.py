"""Profiles for NVIDIA data-center GPUs: Tesla V100 (GV100) and H100 (GH100).

What each option protects (the register facts and their sources are in maps/*.toml):

- `nvlink = "isolate"`: the NVLink isolation a host applied before attaching the GPU stays
  applied. On GV100 the isolation sequence's registers (NVIDIA's 2019 linuxppc-dev patch) keep
  their values: mask rules force NV_PMC_ENABLE bit 25 and the link-disable bits 21:16 of
  0xA00148, readonly rules hold 0x12004C and 0x122204. On both chips every NVLink (IOCTRL)
  unit that the device-info table lists is read-only to the guest, at a higher priority than
  the mask rules, so a register inside a unit is read-only even where a mask rule also covers
  it. Units are found by reading the table when the filter is attached.
- `firmware_update = "deny"`: the flash path is write-blocked (GV100: the VBIOS ROM window and
  the SPI controller). On GH100 a firmware update is a message through the FSP mailbox, which
  the guest driver must keep using (it sends a COT message on every boot), so no byte range can
  be blocked: the FSP guard (docs/fsp-guard.md) owns the mailbox registers and refuses the
  doorbell of FIRMWARE_UPDATE messages; the rest of the FSP range is audited.
- `fsp_deny_types` (GH100): more NVDM types the FSP guard refuses, names or numbers
  (`["inforom", 0x18]`).
- On GH100 NVLink isolation and persistent settings are FSP messages too: PRC (NVDM 0x13),
  decided on its sub-message (packet byte 8; gpu-admin-tools FspRpc.prc_*). `nvlink =
  "isolate"` refuses the NVLink link mask (0x0A, what gpu-admin-tools' block_nvlinks sends);
  `persistent_settings = "deny"` (GH100) refuses ECC (0x01), reset coupling (0x04) and knob
  writes (0x0D: CC mode, PPCIe, ...), in every scope. Knob reads (0x0C) pass. With nothing
  refused there is no guard.
- `config_mirror`: the BAR0 mirror of PCI config space (writes through it bypass the VMM's
  config-space virtualization) is denied, read-only, or left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property

from ..errors import PolicyError, shown
from ..guards import NVDM_FIRMWARE_UPDATE, PRC_SUBMESSAGES, FspGuard, nvdm_type
from ..rules import Rule
from .devinfo import find_units
from .profile import Device, Option, Profile, Resolved
from .regmap import Region, RegisterMap, load_map

#: Unit rules outrank the mask rules inside the same unit (DESIGN §2: higher priority wins).
UNIT_PRIORITY = 1
#: The FSP guard outranks the audit rule over the whole FSP range it sits in.
GUARD_PRIORITY = 1

NVLINK = Option("nvlink", ("isolate", "allow"), "isolate", "keep NVLink isolation in place")
FIRMWARE = Option(
    "firmware_update", ("deny", "allow"), "deny", "block the firmware-update (flash) path"
)


def parse_nvdm_types(value: object) -> str:
    """`fsp_deny_types`: a list (or comma-separated string) of NVDM type names or numbers, as
    a canonical comma-separated string of hex numbers."""
    items: list[object]
    if isinstance(value, str):
        words = [v.strip() for v in value.split(",") if v.strip()]
        try:
            items = [int(v, 0) if v[:1].isdigit() else v for v in words]
        except ValueError:
            raise PolicyError(f"{value!r} is not a list of NVDM types") from None
    elif isinstance(value, list):
        items = list(value)
    else:
        raise PolicyError(f"expected a list of NVDM types, not {shown(value)}")
    return ",".join(f"{t:#04x}" for t in sorted({nvdm_type(v) for v in items}))


FSP_DENY = Option(
    "fsp_deny_types",
    (),
    "",
    "more NVDM message types the FSP guard refuses (names or numbers)",
    parse=parse_nvdm_types,
)
PERSISTENT = Option(
    "persistent_settings",
    ("deny", "allow"),
    "deny",
    "refuse FSP messages that change settings the next tenant inherits (ECC, reset coupling, "
    "knobs)",
)
#: PRC sub-messages each GH100 choice refuses (gpu-admin-tools nvidia_gpu_tools.py FspRpc).
PRC_NVLINK = (PRC_SUBMESSAGES["nvlink_mask"],)
PRC_PERSISTENT = tuple(PRC_SUBMESSAGES[n] for n in ("ecc", "reset_coupling", "knob_write"))
CONFIG_MIRROR = Option(
    "config_mirror",
    ("deny", "readonly", "allow"),
    "deny",
    "guest access to the BAR0 mirror of PCI config space",
)


def outermost(regions: Sequence[Region]) -> list[Region]:
    """The regions not inside another one: one rule for a block covers its registers."""
    return [
        r
        for r in regions
        if not any(
            o is not r
            and o.bar == r.bar
            and o.offset <= r.offset
            and r.end <= o.end
            and (o.offset, o.end) != (r.offset, r.end)
            for o in regions
        )
    ]


def region_rules(regions: Sequence[Region], action: str) -> list[Rule]:
    return [Rule(r.name, r.offset, r.size, action, bar=r.bar) for r in outermost(regions)]


def unconfirmed(regions: Sequence[Region]) -> list[str]:
    return [
        f"{r.name} at {r.offset:#x}: unconfirmed for this chip: {r.note}"
        for r in regions
        if not r.confirmed
    ]


class NvidiaProfile(Profile):
    """What both chips share: the map, unit discovery, config mirror, firmware blocks."""

    family = ""
    #: Action for the firmware regions when firmware_update = "deny".
    firmware_action = "readonly"
    firmware_warning = ""

    @cached_property
    def map(self) -> RegisterMap:
        return load_map(self.family)

    @property
    def ids(self) -> tuple[tuple[int, int], ...]:  # type: ignore[override]
        return tuple((d.vendor, d.device) for d in self.map.devices)

    def isolation_rules(self) -> list[Rule]:
        return []

    def unit_rules(self, device: Device | None) -> tuple[list[Rule], list[str]]:
        spec = self.map.device_info
        if spec is None:
            return [], []
        if device is None or device.read32 is None:
            return [], [
                f"NVLink (IOCTRL) units: found in the device-info table at {spec.base:#x} "
                "when the filter is attached to the device"
            ]
        bar0 = device.bar_sizes.get(0, self.map.bar(0).size)
        units = find_units(device.read32, spec, bar0, spec.ioctrl_type)
        rules = [
            Rule(f"ioctrl@{u.base:#x}", u.base, u.size, "readonly", priority=UNIT_PRIORITY)
            for u in units
        ]
        # a table that leaves NVLink out cannot be told from a GPU without it: say so
        missing = [] if units else ["the device-info table lists no NVLink (IOCTRL) unit"]
        return rules, missing

    def resolve(self, choices: Mapping[str, str], device: Device | None) -> Resolved:
        rules: list[Rule] = []
        deferred: list[str] = []
        warnings: list[str] = []
        if choices["nvlink"] == "isolate":
            rules += self.isolation_rules()
            units, notes = self.unit_rules(device)
            rules += units
            if device is None or device.read32 is None:
                deferred += notes
            else:
                warnings += notes
            if self.map.device_info and not self.map.device_info.unit_size_provenance.confirmed:
                warnings.append(
                    f"IOCTRL unit size {self.map.device_info.unit_size:#x}: "
                    f"{self.map.device_info.unit_size_provenance.note}"
                )
        if choices["firmware_update"] == "deny":
            firmware = self.map.regions_in("firmware")
            rules += region_rules(firmware, self.firmware_action)
            warnings += unconfirmed(firmware)
            if self.firmware_warning:
                warnings.append(self.firmware_warning)
        if choices["config_mirror"] != "allow":
            rules += region_rules(self.map.regions_in("config-mirror"), choices["config_mirror"])
        return Resolved(rules=rules, deferred=deferred, warnings=warnings)


class Gv100Profile(NvidiaProfile):
    name = "nvidia-gv100"
    title = "NVIDIA Tesla V100 (GV100): NVLink isolation, flash path, config mirror"
    family = "gv100"
    options = (NVLINK, FIRMWARE, CONFIG_MIRROR)

    def isolation_rules(self) -> list[Rule]:
        m = self.map
        pmc = m.find("NV_PMC_ENABLE")
        links = m.find("NVLINK_LINK_DISABLE")
        nvlink_bit = pmc.field("NVLINK").mask
        disable = links.field("LINK_DISABLE").mask
        return [
            Rule(pmc.name, pmc.offset, pmc.size, "mask", mask=nvlink_bit, value=nvlink_bit),
            Rule(links.name, links.offset, links.size, "mask", mask=disable, value=disable),
            *(
                Rule(r.name, r.offset, r.size, "readonly")
                for r in (m.find("NVLINK_ISOLATE_12004C"), m.find("NVLINK_ISOLATE_122204"))
            ),
        ]


class Gh100Profile(NvidiaProfile):
    name = "nvidia-gh100"
    title = "NVIDIA H100 (GH100): NVLink units, FSP mailbox guard, config mirror"
    family = "gh100"
    options = (NVLINK, FIRMWARE, PERSISTENT, FSP_DENY, CONFIG_MIRROR)
    #: The FSP range is audited; the guard inside it decides the mailbox.
    firmware_action = "audit"

    def guard(self, choices: Mapping[str, str]) -> list[Rule]:
        """The FSP guard on the map's mailbox registers, refusing the denied NVDM types and
        PRC sub-messages."""
        denied = {int(t, 16) for t in choices["fsp_deny_types"].split(",") if t}
        if choices["firmware_update"] == "deny":
            denied.add(NVDM_FIRMWARE_UPDATE)
        prc: set[int] = set()
        if choices["nvlink"] == "isolate":
            prc.update(PRC_NVLINK)
        if choices["persistent_settings"] == "deny":
            prc.update(PRC_PERSISTENT)
        if not denied and not prc:
            return []
        m = self.map
        return [
            FspGuard.at(
                "NV_PFSP_MAILBOX_GUARD",
                emem=m.find("NV_PFSP_EMEM").offset,
                queue=m.find("NV_PFSP_QUEUE").offset,
                msgq=m.find("NV_PFSP_MSGQ").offset,
                deny_types=sorted(denied),
                deny_prc=sorted(prc),
                priority=GUARD_PRIORITY,
            )
        ]

    def resolve(self, choices: Mapping[str, str], device: Device | None) -> Resolved:
        resolved = super().resolve(choices, device)
        resolved.rules.extend(self.guard(choices))
        return resolved
