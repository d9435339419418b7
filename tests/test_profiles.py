"""Profiles and policy files: the admin's choices become the right rules, and bad files say
what is wrong and where."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import mmiofilter as mf
from mmiofilter import cli
from mmiofilter.devices import Device, load_policy_file, profile_for_ids, profiles
from mmiofilter.devices.pciconfig_build import build_config, mem_bar, msix_cap, pm_cap


def names(pf_text: str) -> set[str]:
    policy, _ = load_policy_file(pf_text).resolve(None)
    return {r.name for r in policy.rules}


def test_profiles_are_chosen_by_pci_id() -> None:
    assert profile_for_ids(0x10DE, 0x1DB1).name == "nvidia-gv100"
    assert profile_for_ids(0x10DE, 0x2330).name == "nvidia-gh100"
    assert profile_for_ids(0x8086, 0x1234).name == "pci"


# open-gpu-kernel-modules README.md compatible-GPU table (GH100 boards; pci.ids agrees)
GH100_IDS = {
    0x2321: "H100 NVL",
    0x2322: "H800 PCIe",
    0x2324: "H800",
    0x2329: "H20",
    0x232C: "H20-3e",
    0x230E: "H20 NVL16",
    0x2330: "H100 SXM5",
    0x2331: "H100 PCIe",
    0x2335: "H200",
    0x2339: "H100",
    0x233A: "H800 NVL",
    0x233B: "H200 NVL",
    0x2342: "GH200",
    0x2348: "GH200 144G HBM3e",
}


@pytest.mark.parametrize("device", sorted(GH100_IDS))
def test_every_gh100_board_gets_the_gh100_profile(device: int) -> None:
    assert profile_for_ids(0x10DE, device).name == "nvidia-gh100", GH100_IDS[device]


def test_an_nvidia_gpu_no_profile_knows_is_said_loudly(caplog: pytest.LogCaptureFixture) -> None:
    """An NVIDIA display-class device with no NVIDIA profile gets only the generic `pci`
    profile: a warning on the `mmiofilter` logger says so. Other classes (an NVIDIA audio
    function, 0x0403) and other vendors stay quiet."""
    with caplog.at_level("WARNING", logger="mmiofilter"):
        assert profile_for_ids(0x10DE, 0x2B85, 0x030000).name == "pci"
        assert profile_for_ids(0x10DE, 0x2BB1).name == "pci"  # class not known
    warned = [r for r in caplog.records if r.name == "mmiofilter"]
    assert len(warned) == 2 and "2b85" in warned[0].getMessage()
    assert "no NVLink isolation and no firmware protection" in warned[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="mmiofilter"):
        assert profile_for_ids(0x10DE, 0x22E8, 0x040300).name == "pci"
        assert profile_for_ids(0x8086, 0x1234, 0x030000).name == "pci"
        assert profile_for_ids(0x10DE, 0x2335, 0x030200).name == "nvidia-gh100"
    assert [r for r in caplog.records if r.name == "mmiofilter"] == []


def test_gh100_persistent_settings_and_nvlink_choose_the_prc_sub_messages() -> None:
    from mmiofilter.guards import FspGuard

    def guard(options: str) -> FspGuard | None:
        text = f'profile = "nvidia-gh100"\n[options]\n{options}\n'
        policy = load_policy_file(text).resolve(None)[0]
        found = [r for r in policy.rules if isinstance(r, FspGuard)]
        return found[0] if found else None

    default = guard("")
    assert default is not None and default.deny_prc == {0x01, 0x04, 0x0A, 0x0D}
    only_nvlink = guard('persistent_settings = "allow"')
    assert only_nvlink is not None and only_nvlink.deny_prc == {0x0A}
    none = guard('nvlink = "allow"\npersistent_settings = "allow"\nfirmware_update = "allow"')
    assert none is None
    assert set(profiles()) == {"nvidia-gv100", "nvidia-gh100", "pci"}


def target(r: mf.Rule) -> object:
    """A redirect rule's target (a field of the redirect action's builds)."""
    return getattr(r, "target", None), getattr(r, "target_offset", None)


def rules_of(pf_text: str) -> dict[str, mf.Rule]:
    policy, _ = load_policy_file(pf_text).resolve(None)
    return {r.name: r for r in policy.rules}


DENY_MIRROR = '[options]\nconfig_mirror = "deny"\n'


def test_gv100_options_select_rules() -> None:
    base = 'profile = "nvidia-gv100"\n'
    assert {"NV_PMC_ENABLE", "NV_PROM_DATA", "NV_PCFG", "NV_PCFG1"} <= names(base + DENY_MIRROR)
    allow_nvlink = '[options]\nnvlink = "allow"\nconfig_mirror = "deny"\n'
    assert names(base + allow_nvlink) >= {"NV_PROM_DATA", "NV_PCFG"}
    assert "NV_PMC_ENABLE" not in names(base + allow_nvlink)
    assert "NV_PROM_DATA" not in names(
        base
        + DENY_MIRROR.replace(
            'config_mirror = "deny"', 'config_mirror = "deny"\nfirmware_update = "allow"'
        )
    )
    assert not {"NV_PCFG", "NV_PCFG1"} & names(base + '[options]\nconfig_mirror = "allow"\n')


def test_gv100_isolation_rules_are_the_isolation_state_only() -> None:
    rules = rules_of('profile = "nvidia-gv100"\n' + DENY_MIRROR)
    assert (rules["NV_PMC_ENABLE"].action, rules["NV_PMC_ENABLE"].mask) == ("mask", 1 << 25)
    # The ring registers the sequence writes are not isolation state: the guest acks ring
    # interrupts through 0x12004C (nouveau gk104_privring_intr).
    assert not any(r.start <= off < r.end for r in rules.values() for off in (0x12004C, 0x122204))
    # The MINION falcon's code-load paths are denied: the ports and the DMA transfer registers
    # (a DMATRFCMD with IMEM set loads code from memory).
    for name in ("IMEM_PORTS", "DMEM_PORTS", "DMATRF", "DMATRFBASE1"):
        assert rules["NV_PMINION_FALCON_" + name].action == "deny"
    assert not any(r.start <= 0xA06100 < r.end for r in rules.values())  # CPUCTL stays usable
    # Without the device, the link-disable bits the host set are not known yet: deferred.
    assert "NVLINK_LINK_DISABLE" not in rules
    _, resolved = load_policy_file('profile = "nvidia-gv100"\n' + DENY_MIRROR).resolve(None)
    assert any("NVLINK_LINK_DISABLE" in d for d in resolved.deferred)
    # The MINION offsets are sourced (nvgpu hw_falcon_gv100.h): no unconfirmed-fact warning.
    assert not any(w.startswith("NV_PMINION") for w in resolved.warnings)


def test_link_disable_rule_forces_exactly_the_hosts_bits(caplog: pytest.LogCaptureFixture) -> None:
    pf = load_policy_file('profile = "nvidia-gv100"\n' + DENY_MIRROR)

    def device(word: int) -> Device:
        return Device(read32=lambda off: word if off == 0xA00148 else 0, bar_sizes={0: 16 << 20})

    policy, resolved = pf.resolve(device(0x00FC0000 | 0x3C0000 | 0x1234))
    (rule,) = [r for r in policy.rules if r.name == "NVLINK_LINK_DISABLE"]
    assert (rule.start, rule.action) == (0xA00148, "mask")
    assert (rule.mask, rule.value) == (0x3C0000, 0x3C0000)
    assert not any("link-disable" in w for w in resolved.warnings)
    with caplog.at_level(logging.WARNING, logger="mmiofilter"):
        policy, resolved = pf.resolve(device(0x1234))
    assert "NVLINK_LINK_DISABLE" not in {r.name for r in policy.rules}
    assert any("has not isolated" in w for w in resolved.warnings)
    assert any("has not isolated" in r.getMessage() for r in caplog.records)


def test_config_mirror_choices_and_default() -> None:
    p = profiles()["nvidia-gv100"]
    (opt,) = [o for o in p.options if o.name == "config_mirror"]
    assert (opt.default, opt.choices) == ("virtualize", ("virtualize", "deny", "readonly", "allow"))
    ro = rules_of('profile = "nvidia-gv100"\n[options]\nconfig_mirror = "readonly"\n')
    assert (ro["NV_PCFG"].action, ro["NV_PCFG1"].action) == ("readonly", "readonly")
    gh = rules_of('profile = "nvidia-gh100"\n[options]\nconfig_mirror = "deny"\n')
    assert gh["NV_EP_PCFGM"].action == "deny"


def test_virtualize_redirects_the_mirrors() -> None:
    rules = rules_of('profile = "nvidia-gv100"\n')
    pcfg = rules["NV_PCFG"]
    assert (pcfg.start, pcfg.size, pcfg.action) == (0x88000, 0x1000, "redirect")
    assert target(pcfg) == ("config", 0)
    # Function 1's mirror: denied unless the VMM hands a config1 target at attach.
    assert rules["NV_PCFG1"].action == "deny"
    pf = load_policy_file('profile = "nvidia-gv100"\n')
    with_fn1 = Device(targets=frozenset({"config", "config1"}))
    policy, resolved = pf.resolve(with_fn1)
    fn1 = {r.name: r for r in policy.rules}["NV_PCFG1"]
    assert (fn1.action, target(fn1)) == ("redirect", ("config1", 0))
    assert not any("NV_PCFG1" in d for d in resolved.deferred)
    gh = rules_of('profile = "nvidia-gh100"\n')["NV_EP_PCFGM"]
    assert (gh.start, gh.action, target(gh)) == (0x92000, "redirect", ("config", 0))


def test_device_id_picks_the_profile_and_extra_rules_add() -> None:
    text = 'device = "10de:1db4"\n' + DENY_MIRROR + '[[rule]]\nname = "scratch"\nstart = 0x1000\n'
    text += 'size = 4\naction = "emulate"\nvalue = 7\n'
    pf = load_policy_file(text)
    assert pf.profile is not None and pf.profile.name == "nvidia-gv100"
    assert "scratch" in names(text) and "NV_PCFG" in names(text)
    assert profile_for_ids(0x10DE, 0x1DF5).name == "nvidia-gv100"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('profile = "nvidia-gv999"\n', "no profile 'nvidia-gv999'"),
        ('profile = "nvidia-gv100"\n[options]\nnvlnk = "allow"\n', "no option 'nvlnk'"),
        ('profile = "nvidia-gv100"\n[options]\nnvlink = "off"\n', "'off' is not one of"),
        ('profile = "nvidia-gv100"\ndevice = "10de:2330"\n', "not one profile 'nvidia-gv100'"),
        ('device = "10de"\n', "vendor:device"),
        ('[options]\nnvlink = "allow"\n', "need a profile"),
        (
            'profile = "nvidia-gv100"\n' + DENY_MIRROR + '[[rule]]\nname = "NV_PCFG"\n'
            'start = 0\nsize = 4\naction = "allow"\n',
            "has the name of a rule of profile",
        ),
        ('profile = "pci"\nconfig = "/nonexistent/config"\n', "config '/nonexistent/config'"),
    ],
)
def test_bad_policy_files(text: str, message: str) -> None:
    with pytest.raises(mf.PolicyError, match=message):
        load_policy_file(text).resolve(None)


def test_plain_policy_loader_points_at_the_device_loader() -> None:
    with pytest.raises(mf.PolicyError, match="load_policy_file"):
        mf.Policy.from_toml('profile = "nvidia-gv100"\n')


def test_pci_profile_traps_msix_from_a_config_dump(tmp_path: Path) -> None:
    cfg = build_config(
        0x15B3, 0x1017, class_code=0x020000, bars=mem_bar(0xF0000000, is_64bit=True),
        caps=[pm_cap(), msix_cap(64, table_bar=0, table_offset=0x2000, pba_offset=0x3000)],
    )  # fmt: skip
    (tmp_path / "config").write_bytes(cfg)
    (tmp_path / "nic.toml").write_text('config = "config"\n[options]\nmsix = "emulate"\n')
    pf = load_policy_file(tmp_path / "nic.toml")
    assert pf.profile is not None and pf.profile.name == "pci"
    policy, _ = pf.resolve(None)
    assert [(r.name, r.start, r.size, r.action) for r in policy.rules] == [
        ("msix-table", 0x2000, 64 * 16, "emulate"),
        ("msix-pba", 0x3000, 8, "emulate"),
    ]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert cli.main([*argv, "--json"]) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_cli_profiles_show_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    listed = run_json(capsys, "profiles")
    assert [p["name"] for p in listed["profiles"]] == ["nvidia-gv100", "nvidia-gh100", "pci"]  # type: ignore[index]
    shown = run_json(capsys, "show", "nvidia-gv100")
    assert {o["name"] for o in shown["options"]} == {"nvlink", "firmware_update", "config_mirror"}  # type: ignore[attr-defined]
    assert all(r["source"] for r in shown["regions"])  # type: ignore[attr-defined]
    path = tmp_path / "v100.toml"
    path.write_text('profile = "nvidia-gv100"\n[options]\nconfig_mirror = "readonly"\n')
    checked = run_json(capsys, "check", str(path))
    rules = {r["name"]: r for r in checked["rules"]}  # type: ignore[attr-defined]
    assert rules["NV_PCFG"]["action"] == "readonly"
    assert checked["deferred"] and checked["warnings"]
    assert cli.main(["check", str(path)]) == 0
    assert "WARNING" in capsys.readouterr().out
    assert cli.main(["show", "nope"]) == 2


def test_cli_layout_of_a_profile_at_64k(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_json(capsys, "layout", "nvidia-gv100", "--page-size", "64K")
    assert r["bar_size"] == 16 << 20 and r["page_size"] == 65536
    usable = {u["name"] for u in r["usable_registers_trapped"]}  # type: ignore[attr-defined]
    assert {"NV_PTIMER_TIME_0", "NV_PMC_BOOT_0"} <= usable
    every = run_json(capsys, "layout", "nvidia-gv100", "-o", "firmware_update=allow")
    assert [x["page_size"] for x in every["layouts"]] == [4096, 16384, 65536]  # type: ignore[attr-defined]
    assert cli.main(["layout", "nvidia-gv100", "-o", "bogus"]) == 2


def test_a_non_sxm2_v100_is_told_the_sequence_is_unverified(tmp_path: Path) -> None:
    from mmiofilter.simulated.gv100 import gv100_config_space

    for dev, unverified in ((0x1DB4, True), (0x1DF5, False)):
        (tmp_path / "config").write_bytes(gv100_config_space(dev))
        (tmp_path / "v100.toml").write_text('config = "config"\n' + DENY_MIRROR)
        pf = load_policy_file(tmp_path / "v100.toml")
        assert pf.profile is not None and pf.profile.name == "nvidia-gv100"
        _, resolved = pf.resolve(None)
        said = [w for w in resolved.warnings if "unverified" in w]
        assert bool(said) == unverified, hex(dev)


def test_check_prints_each_profile_rule_with_its_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["check", "nvidia-gv100", "-o", "config_mirror=deny"]) == 0
    out = capsys.readouterr().out
    assert "NV_PMC_ENABLE" in out and "volta/gv100/dev_master.ref.txt" in out
    assert "NV_PMINION_FALCON_IMEM_PORTS" in out and "gpu-admin-tools" in out
    assert "0x12004c" not in out.split("deferred")[0]  # the ring registers have no rule
    checked = run_json(capsys, "check", "nvidia-gv100", "-o", "config_mirror=deny")
    sources = {r["name"]: r["source"] for r in checked["rules"]}  # type: ignore[attr-defined]
    assert "dev_nv_xve3g_fn1.ref.txt" in sources["NV_PCFG1"]
