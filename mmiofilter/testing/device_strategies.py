"""Hypothesis strategies for realistic inputs: shipped profiles, their registers, simulated GPUs.

`mmiofilter.testing.strategies` draws random rules; these draw what deployments hold:

- `profile_policies()`: an admin's policy file for a shipped profile (`nvidia-gv100`,
  `nvidia-gh100`, `pci`) with options drawn from the profile's own list, resolved against a
  device whose device-info table (NVIDIA) or config space (`pci`, MSI-X) is drawn too: the
  policy a filter enforces once attached. A `ProfilePolicy` keeps the file's text, so a failing
  example prints what an admin would have written.
- `register_accesses(pp)`: accesses clustered on the profile's registers (the register map's
  registers and blocks, the rules' edges), at the widths drivers use, with values that set and
  clear the registers' named fields, and straddling their edges.
- `gpu_specs()`: the simulated GPUs (`mmiofilter.testing.gpus.simulated_gpu` opens one).

Everything is drawn from `st.sampled_from`, `st.integers` and `st.booleans`, so failures shrink
to the profile's defaults, the first register and the fewest units.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st

from ..devices import Device, Resolved, get_profile, load_policy_file, profiles
from ..devices.devinfo_encode import UnitSpec, table_words, words_reader
from ..devices.nvidia import NvidiaProfile
from ..devices.pciconfig import MSIX_ENTRY_SIZE, parse_config, pba_size
from ..devices.pciconfig_build import build_config, mem_bar, msix_cap, pcie_cap, pm_cap
from ..devices.regmap import Region, RegisterMap, load_map
from ..guards import NVDM_TYPES, FspGuard
from ..rules import PARTIAL_MODES, UNALIGNED_MODES, Policy
from .gpus import FAMILIES, GpuSpec
from .model import WIDTHS
from .strategies import PRIORITIES, Access

#: Actions an admin's extra rule may take here: those every filter takes without a target.
EXTRA_ACTIONS: tuple[str, ...] = ("allow", "audit", "readonly", "mask", "emulate", "deny")
#: NVLink (IOCTRL) unit bases per family. GH100: NVLink groups at 0xA00000 + 0x40000*g, three
#: groups of six links (gpu-admin-tools, `nvlink` of the H100 entry; maps/gh100.toml
#: device_info.unit_size). GV100: the NVLink block at 0xA00000 (maps/gv100.toml: the link
#: disable register 0xA00148 and the MINION at 0xA06000 lie in it).
IOCTRL_BASES: Mapping[str, tuple[int, ...]] = {
    "gv100": (0xA00000,),
    "gh100": (0xA00000, 0xA40000, 0xA80000),
}


@dataclass(frozen=True)
class ProfilePolicy:
    """A policy file for a shipped profile and what it resolves to on one device.

    `text` is the file (TOML); `policy` is what `load_policy_file(text).resolve(device)`
    gives for the drawn device; `bar_sizes` are that device's BARs; `units` its device-info
    table (NVIDIA) and `config` its config-space dump (`pci`)."""

    profile: str
    options: Mapping[str, object]
    text: str
    policy: Policy = field(repr=False)
    resolved: Resolved = field(repr=False)
    bar_sizes: Mapping[int, int]
    units: tuple[UnitSpec, ...] = ()
    config: bytes | None = field(default=None, repr=False)

    @property
    def regmap(self) -> RegisterMap | None:
        """The profile's register map (NVIDIA profiles), else None."""
        return _regmap_of(self.profile)

    @property
    def guards(self) -> list[FspGuard]:
        return [r for r in self.policy.rules if isinstance(r, FspGuard)]

    def device(self) -> Device:
        """The device the policy was resolved against, again (discovery reads the same)."""
        return _device_for(self.profile, self.units, self.config, self.bar_sizes)


def _regmap_of(profile: str) -> RegisterMap | None:
    """The register map of an NVIDIA profile (loaded once per profile), else None."""
    p = get_profile(profile)
    return p.map if isinstance(p, NvidiaProfile) else None


def _device_for(
    profile: str, units: Sequence[UnitSpec], config: bytes | None, bar_sizes: Mapping[int, int]
) -> Device:
    regmap = _regmap_of(profile)
    if regmap is not None and regmap.device_info is not None:
        return Device(
            read32=words_reader(table_words(regmap.device_info, units)),
            bar_sizes=dict(bar_sizes),
        )
    return Device(
        bar_sizes=dict(bar_sizes),
        config=parse_config(config, "<drawn config>") if config else None,
    )


def profile_names() -> st.SearchStrategy[str]:
    """The shipped profiles' names."""
    return st.sampled_from(sorted(profiles()))


def _nvdm_lists() -> st.SearchStrategy[list[object]]:
    names = sorted(NVDM_TYPES)
    one: st.SearchStrategy[object] = st.one_of(
        st.sampled_from(names), st.sampled_from(sorted(NVDM_TYPES.values()))
    )
    return st.lists(one, max_size=3)


@st.composite
def profile_options(draw: st.DrawFn, profile: str) -> dict[str, object]:
    """An `[options]` table for `profile`: each option left to its default or set to one of
    the profile's own choices (`fsp_deny_types`: a few NVDM type names or numbers)."""
    out: dict[str, object] = {}
    for option in get_profile(profile).options:
        if not draw(st.booleans()):
            continue  # the default: what most admins write
        if option.choices:
            out[option.name] = draw(st.sampled_from(option.choices))
        else:
            out[option.name] = draw(_nvdm_lists())
    return out


@st.composite
def ioctrl_units(draw: st.DrawFn, family: str) -> tuple[UnitSpec, ...]:
    """The NVLink (IOCTRL) units a `family` GPU's device-info table lists: a subset of the real
    unit bases, in table order; sometimes none (a GPU without NVLink)."""
    spec = load_map(family).device_info
    assert spec is not None, f"{family}: no device-info table in the map"
    bases = draw(st.lists(st.sampled_from(IOCTRL_BASES[family]), unique=True, max_size=3))
    return tuple((spec.ioctrl_type, b, i) for i, b in enumerate(bases))


def gpu_specs(family: str | None = None) -> st.SearchStrategy[GpuSpec]:
    """Simulated GPUs: the family, its NVLink units, the host's isolation applied or not."""
    families = st.just(family) if family else st.sampled_from(FAMILIES)
    return families.flatmap(
        lambda fam: st.builds(
            GpuSpec,
            st.just(fam),
            ioctrl_units(fam),
            isolated=st.booleans().map(lambda b: not b),  # shrinks to isolated
            fsp=st.just(True),
        )
    )


_BAR_SIZES = tuple(1 << n for n in range(12, 25))  # 4 KiB .. 16 MiB


@st.composite
def msix_configs(draw: st.DrawFn) -> tuple[bytes, dict[int, int]]:
    """A PCIe endpoint's config space with MSI-X (table and PBA in one or two BARs, where
    drivers' devices put them) and its BAR sizes."""
    n_bars = draw(st.integers(1, 3))
    sizes = {i: draw(st.sampled_from(_BAR_SIZES)) for i in range(n_bars)}
    entries = draw(st.sampled_from((1, 2, 8, 16, 17, 64, 65, 256, 2048)))
    table_bytes, pba_bytes = entries * MSIX_ENTRY_SIZE, pba_size(entries)
    fitting = [b for b, s in sizes.items() if s >= table_bytes + pba_bytes]
    if not fitting:
        sizes[0] = max(sizes[0], 1 << (table_bytes + pba_bytes - 1).bit_length())
        fitting = [0]
    table_bar = draw(st.sampled_from(fitting))
    pba_bar = draw(st.sampled_from(fitting))
    if table_bar == pba_bar:
        room = sizes[table_bar] - table_bytes - pba_bytes
        table_offset = draw(st.integers(0, room // 8)) * 8
        pba_offset = table_offset + table_bytes  # the common layout: PBA right after
        if draw(st.booleans()):  # or the PBA at a page of its own at the BAR's end
            pba_offset = max(pba_offset, (sizes[table_bar] - pba_bytes) // 8 * 8)
    else:
        table_offset = draw(st.integers(0, (sizes[table_bar] - table_bytes) // 8)) * 8
        pba_offset = draw(st.integers(0, (sizes[pba_bar] - pba_bytes) // 8)) * 8
    cap = msix_cap(
        entries,
        table_bar=table_bar,
        table_offset=table_offset,
        pba_bar=pba_bar,
        pba_offset=pba_offset,
    )
    bars = [mem_bar(0xF000_0000 + 0x0100_0000 * i)[0] for i in range(n_bars)]
    blob = build_config(0x1AF4, 0x1041, bars=bars, caps=[pm_cap(), pcie_cap(), cap])
    return blob, sizes


def _toml_value(v: object) -> str:
    if isinstance(v, str):
        return json.dumps(v)  # printable ASCII: a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, int):
        return hex(v) if v >= 0 else str(v)  # TOML has no signed hex
    raise TypeError(f"no TOML for {v!r}")


def _regions(regmap: RegisterMap | None, bar: int) -> list[Region]:
    return [r for r in regmap.regions if r.bar == bar] if regmap else []


@st.composite
def _extra_rule(
    draw: st.DrawFn,
    index: int,
    regmap: RegisterMap | None,
    bar_size: int,
    keep_out: Sequence[Region],
) -> dict[str, object]:
    """An admin's own rule: over one of the map's registers or blocks, or anywhere."""
    regions = [r for r in _regions(regmap, 0) if r.end <= bar_size]
    on_register = draw(st.booleans())
    if regions and on_register:
        r = draw(st.sampled_from(regions))
        start, size = r.offset, min(r.size, 0x10000)
    else:
        size = draw(st.sampled_from((1, 2, 4, 8, 0x100, 0x1000)))
        start = draw(st.integers(0, (bar_size - min(size, bar_size)) // 4)) * 4
        size = min(size, bar_size - start)
    # An extra rule may not take a guard's registers (the policy would not compile): move it
    # before them.
    for g in keep_out:
        if start < g.end and g.offset < start + size:
            start, size = max(0, g.offset - 4), min(4, g.offset) or 4
    n = min(size, 8)
    top = (1 << (8 * n)) - 1
    rule: dict[str, object] = {
        "name": f"extra-{index}",
        "start": start,
        "size": size,
        "action": draw(st.sampled_from(EXTRA_ACTIONS)),
        "priority": draw(st.sampled_from(PRIORITIES)),
    }
    if rule["action"] in ("mask", "emulate"):
        rule["value"] = draw(st.one_of(st.just(0), st.integers(0, top)))
    if rule["action"] == "mask":
        rule["mask"] = draw(st.one_of(st.just(top), st.integers(0, top)))
    return rule


@st.composite
def profile_policies(
    draw: st.DrawFn, profile: str | None = None, *, max_extra_rules: int = 2
) -> ProfilePolicy:
    """A policy file for `profile` (default: any shipped one) with drawn options, policy-wide
    settings and up to `max_extra_rules` rules of the admin's own, resolved against a drawn
    device (its NVLink units, or its MSI-X layout)."""
    name = profile if profile is not None else draw(profile_names())
    options = draw(profile_options(name))
    regmap = _regmap_of(name)
    units: tuple[UnitSpec, ...] = ()
    config: bytes | None = None
    if regmap is not None:
        bar_sizes = {0: regmap.bar(0).size}
        if regmap.device_info is not None:
            units = draw(ioctrl_units(regmap.family))
    else:
        config, bar_sizes = draw(msix_configs())
    lines = [f"profile = {json.dumps(name)}"]
    for key, choices in (
        ("fill", None),
        ("partial", PARTIAL_MODES),
        ("unaligned", UNALIGNED_MODES),
    ):
        if draw(st.booleans()):
            value = (
                draw(st.integers(0, 0xFF)) if choices is None else draw(st.sampled_from(choices))
            )
            lines.append(f"{key} = {_toml_value(value)}")
    if options:
        lines.append("\n[options]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in options.items()]
    device = _device_for(name, units, config, bar_sizes)
    guarded = [
        Region("block", g.name, g.bar, g.start, g.size, "firmware", "", True)
        for g in load_policy_file("\n".join(lines) + "\n").resolve(device)[0].rules
        if isinstance(g, FspGuard)
    ]
    for i in range(draw(st.integers(0, max_extra_rules))):
        rule = draw(_extra_rule(i, regmap, bar_sizes[0], guarded))
        lines.append("\n[[rule]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in rule.items()]
    text = "\n".join(lines) + "\n"
    policy, resolved = load_policy_file(text).resolve(device)
    return ProfilePolicy(name, options, text, policy, resolved, bar_sizes, units, config)


def _field_values(r: Region) -> list[int]:
    """Values a driver or an attacker writes to `r`: each field set alone and cleared alone,
    and its named values."""
    full = (1 << (8 * r.size)) - 1 if r.size <= 8 else 0xFFFFFFFF
    out = [0, full]
    for f in r.fields:
        out += [f.mask & full, full & ~f.mask]
    out += [v & full for _, v in r.values]
    return out


@st.composite
def register_accesses(
    draw: st.DrawFn,
    pp: ProfilePolicy | None = None,
    *,
    regmap: RegisterMap | None = None,
    policy: Policy | None = None,
    bar: int = 0,
    bar_size: int | None = None,
) -> Access:
    """A valid `(offset, width, is_write, value)` on BAR `bar` clustered on the registers of a
    profile: mostly a register or block of the map (or a rule of the policy) at its own width
    and offset, else any aligned word inside it, or an access straddling one of its edges.
    Writes carry each named field set or cleared, the field's named values, or anything."""
    if pp is not None:
        regmap = regmap or pp.regmap
        policy = policy or pp.policy
        bar_size = bar_size or pp.bar_sizes.get(bar)
    if bar_size is None:
        bar_size = regmap.bar(bar).size if regmap is not None else 0x10000
    targets = [r for r in _regions(regmap, bar) if r.end <= bar_size]
    if policy is not None:
        targets += [
            Region("block", r.name, bar, r.start, r.size, "other", "", True)
            for r in policy.for_bar(bar)
            if r.end <= bar_size
        ]
    if not targets:
        targets = [Region("block", "bar", bar, 0, min(bar_size, 0x1000), "other", "", True)]
    r = draw(st.sampled_from(targets))
    kind = draw(st.sampled_from(("register", "register", "inside", "edge")))
    if kind == "register" and r.size in WIDTHS:
        offset, width = r.offset, r.size
    else:
        width = draw(st.sampled_from(WIDTHS))
        if kind == "edge":
            edge = r.end if draw(st.booleans()) else r.offset
            offset = edge - draw(st.integers(1, width - 1)) if width > 1 else edge
        else:
            words = max(1, min(r.size, 0x10000) // width)
            offset = r.offset + draw(st.integers(0, words - 1)) * width
    width = min(width, bar_size)
    offset = max(0, min(offset, bar_size - width))
    is_write = draw(st.booleans())
    value = 0
    if is_write:
        top = (1 << (8 * width)) - 1
        chosen = draw(st.one_of(st.sampled_from(_field_values(r)), st.integers(0, top)))
        # Lay the register's value over the access: byte k is register byte offset + k - start.
        if kind == "inside" or offset == r.offset:
            value = chosen & top
        elif offset < r.offset:
            value = (chosen << (8 * (r.offset - offset))) & top
        else:
            value = (chosen >> (8 * (offset - r.offset))) & top
    return (offset, width, is_write, value)
