"""Profiles for NVIDIA data-center GPUs: Tesla V100 (GV100) and H100 (GH100).

What each option protects (the register facts and their sources are in maps/*.toml):

- `nvlink = "isolate"`: the NVLink isolation a host applied before attaching the GPU stays
  applied. On GV100 (NVIDIA's 2019 linuxppc-dev isolation sequence) a mask rule forces
  NV_PMC_ENABLE bit 25 (NVLINK) set, and a mask rule forces exactly the link-disable bits of
  0xA00148 that the host set, read from the device when the filter is attached (the host keeps
  the links to the CPU enabled; forcing all six would disable them). The ring registers the
  sequence also writes (0x12004C, 0x122204) are not isolation state: the guest driver acks ring
  interrupts through 0x12004C, so they pass. The NVLink MINION falcon's code-load paths (the
  IMEM and DMEM ports, the DMA transfer registers) are denied. On both chips every NVLink
  (IOCTRL) unit that the device-info table lists is read-only to the guest, at a higher
  priority than the mask rules.
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
- `config_mirror`: the BAR0 mirrors of PCI config space. Guest drivers use them (nouveau's MSI
  re-arm, the open driver's bus-interface code), and a write through them bypasses the VMM's
  config-space virtualization. `virtualize` (the default) redirects function 0's mirror to the
  `config` target, the VMM's config-space emulation (docs/profiles.md); GV100's function-1
  mirror goes to a `config1` target when the VMM hands one, and is denied otherwise. `deny`,
  `readonly` and `allow` keep their plain meanings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import ClassVar

from ..errors import PolicyError, shown
from ..guards import NVDM_FIRMWARE_UPDATE, PRC_SUBMESSAGES, FspGuard, nvdm_type
from ..rules import Rule
from .devinfo import find_units
from .profile import Device, Option, Profile, Resolved
from .regmap import Region, RegisterMap, load_map

#: Unit rules outrank the mask rules inside the same unit (contract §2: higher priority wins).
UNIT_PRIORITY = 1
#: The FSP guard outranks the readonly rule over the whole FSP range it sits in (on a tie
#: readonly would own the mailbox bytes: docs/contract-details.md item 1).
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
    ("virtualize", "deny", "readonly", "allow"),
    "virtualize",
    "the BAR0 mirrors of PCI config space: served by the VMM's config emulation (virtualize)",
)

log = logging.getLogger("mmiofilter")


def redirect_rule(region: Region, target: str) -> Rule:
    """A redirect rule sending `region` to byte 0 of `target` (the mirror is the config space
    byte for byte)."""
    return Rule(
        region.name, region.offset, region.size, "redirect", bar=region.bar, target=target
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
    #: config_mirror = "virtualize": mirror block -> the redirect target it goes to. "config"
    #: is required at attach; any other target is optional, and its mirror is denied without it.
    mirror_targets: ClassVar[Mapping[str, str]] = {}
    #: Action for the firmware regions when firmware_update = "deny".
    firmware_action = "readonly"
    firmware_warning = ""

    @cached_property
    def map(self) -> RegisterMap:
        return load_map(self.family)

    @property
    def ids(self) -> tuple[tuple[int, int], ...]:  # type: ignore[override]
        return tuple((d.vendor, d.device) for d in self.map.devices)

    def isolation_rules(self, device: Device | None) -> tuple[list[Rule], list[str], list[str]]:
        """(rules, deferred, warnings) of the chip's isolation registers."""
        return [], [], []

    def part_notes(self, device: Device | None) -> list[str]:
        """What the map says about this very part (e.g. that the isolation sequence is stated
        for other parts), when the device's config space says which part it is."""
        if device is None or device.config is None:
            return []
        ids = (device.config.vendor, device.config.device)
        return [
            f"{d.vendor:04x}:{d.device:04x} {d.name or ''}: {d.note}".replace("  ", " ")
            for d in self.map.devices
            if (d.vendor, d.device) == ids and d.note
        ]

    def mirror_rules(
        self, choice: str, device: Device | None
    ) -> tuple[list[Rule], list[str], list[str]]:
        """(rules, deferred, warnings) for the config-space mirrors under `choice`."""
        if choice == "allow":
            return [], [], []
        mirrors = outermost(self.map.regions_in("config-mirror"))
        if choice != "virtualize":
            return region_rules(mirrors, choice), [], []
        rules: list[Rule] = []
        deferred: list[str] = []
        for r in mirrors:
            target = self.mirror_targets.get(r.name, "config")
            if target == "config":
                rules.append(redirect_rule(r, target))
            elif device is not None and device.targets is not None and target in device.targets:
                rules.append(redirect_rule(r, target))
            else:
                # Another function's config space: only the VMM that virtualizes that function
                # may answer, and passing it would reach a function this guest may not own.
                rules.append(Rule(r.name, r.offset, r.size, "deny", bar=r.bar))
                if device is None or device.targets is None:
                    deferred.append(
                        f"{r.name}: redirected to the {target!r} target when the VMM hands one "
                        "at attach; denied otherwise"
                    )
        return rules, deferred, []

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
            iso, iso_deferred, iso_warnings = self.isolation_rules(device)
            rules += iso
            deferred += iso_deferred
            warnings += iso_warnings
            warnings += self.part_notes(device)
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
        mirror, mirror_deferred, mirror_warnings = self.mirror_rules(
            choices["config_mirror"], device
        )
        rules += mirror
        deferred += mirror_deferred
        warnings += mirror_warnings
        sources = {}
        for r in rules:
            try:
                sources[r.name] = self.map.find(r.name).source
            except KeyError:
                pass  # rules of discovered units are named for their base, not the map
        return Resolved(rules=rules, deferred=deferred, warnings=warnings, sources=sources)


class Gv100Profile(NvidiaProfile):
    name = "nvidia-gv100"
    title = "NVIDIA Tesla V100 (GV100): NVLink isolation, flash path, config mirror"
    family = "gv100"
    options = (NVLINK, FIRMWARE, CONFIG_MIRROR)

    mirror_targets: ClassVar[Mapping[str, str]] = {"NV_PCFG": "config", "NV_PCFG1": "config1"}
    #: Every MINION falcon register through which the host loads code or data into it: the IMEM
    #: and DMEM ports and the DMA transfer registers (maps/gv100.toml gives the sources).
    minion_code_load: ClassVar[tuple[str, ...]] = (
        "NV_PMINION_FALCON_IMEM_PORTS",
        "NV_PMINION_FALCON_DMEM_PORTS",
        "NV_PMINION_FALCON_DMATRF",
        "NV_PMINION_FALCON_DMATRFBASE1",
    )

    def isolation_rules(self, device: Device | None) -> tuple[list[Rule], list[str], list[str]]:
        m = self.map
        pmc = m.find("NV_PMC_ENABLE")
        nvlink_bit = pmc.field("NVLINK").mask
        rules = [Rule(pmc.name, pmc.offset, pmc.size, "mask", mask=nvlink_bit, value=nvlink_bit)]
        minion = [m.find(name) for name in self.minion_code_load]
        rules += region_rules(minion, "deny")
        derived = unconfirmed(minion)
        links = m.find("NVLINK_LINK_DISABLE")
        field = links.field("LINK_DISABLE").mask
        if device is None or device.read32 is None:
            return (
                rules,
                [
                    f"{links.name}: the link-disable bits the host set are read from "
                    f"{links.offset:#x} when the filter is attached, and exactly those are forced"
                ],
                derived,
            )
        host_set = device.read32(links.offset) & field
        if not host_set:
            warning = (
                f"{links.name} at {links.offset:#x}: the host set no link-disable bit "
                f"(bits 21:16 read 0): the host has not isolated this GPU's NVLinks, so no "
                "link-disable bit is protected"
            )
            log.warning("%s", warning)
            return rules, [], [*derived, warning]
        # Exactly the host's bits: the links it kept (to the CPU, to GPUs of the same group)
        # stay usable to the guest driver.
        rules.append(Rule(links.name, links.offset, links.size, "mask", mask=host_set,
                          value=host_set))  # fmt: skip
        return rules, [], derived


class Gh100Profile(NvidiaProfile):
    name = "nvidia-gh100"
    title = "NVIDIA H100 (GH100): NVLink units, FSP mailbox guard, config mirror"
    family = "gh100"
    options = (NVLINK, FIRMWARE, PERSISTENT, FSP_DENY, CONFIG_MIRROR)
    mirror_targets: ClassVar[Mapping[str, str]] = {"NV_EP_PCFGM": "config"}
    #: The FSP range is readonly to the guest; the guard inside it decides the mailbox. No
    #: public driver writes NV_PFSP outside the mailbox (open-gpu-kernel-modules
    #: kern_fsp_gh100.c and kern_fsp.c, nouveau nvkm/subdev/fsp/gh100.c and falcon/gp102.c
    #: write only EMEMC/EMEMD, QUEUE_HEAD/TAIL and MSGQ_HEAD/TAIL; RM reads
    #: FALCON_COMMON_SCRATCH_GROUP_2 on a failed boot), and kfspSecureReset_IMPL says the CPU
    #: may not reset the FSP. A write to the FSP falcon's own registers (CPUCTL, IMEM/DMEM
    #: ports, DMA) could halt it or load it: refused, and recorded as a refused write.
    firmware_action = "readonly"

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
