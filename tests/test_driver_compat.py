"""A guest driver keeps working: the public drivers' own GV100 access sequences
(mmiofilter.devices.scenarios_gv100) run through the default `nvidia-gv100` profile over the
simulated V100, with the host's isolation applied. Every access passes, or is virtualized
(redirected to the VMM's config space, where the write lands); none is blocked.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mmiofilter as mf
from mmiofilter.devices import attach, load_policy_file
from mmiofilter.devices.scenarios_gv100 import (
    NV_PCFG,
    SCENARIOS,
    Poll,
    Scenario,
    ScenarioFailed,
    run,
)
from mmiofilter.simulated.gv100 import (
    SimulatedBar,
    SimulatedConfig,
    apply_gv100_isolation,
    simulated_bar0,
)

IOCTRL, IOCTRL_BASE = 18, 0xA00000
KEEP = 0x030000  # the host keeps links 0 and 1 (to the CPU), disables 2..5
MIRROR_END = NV_PCFG + 0x1000
IDS = [f"{s.driver.split()[0].lower()}-{s.function.split(',')[0]}" for s in SCENARIOS]


@pytest.fixture
def v100() -> Iterator[SimulatedBar]:
    with simulated_bar0("gv100", [(IOCTRL, IOCTRL_BASE)]) as bar:
        apply_gv100_isolation(bar, keep=KEEP)
        bar.write32(0x0, 0x140000A1)  # NV_PMC_BOOT_0: ARCHITECTURE_GV100 (a made-up revision)
        bar.buf[0x300000:0x300040] = bytes(range(0x40))  # some VBIOS image in the ROM window
        bar.buf[0x120058:0x12005C] = (0x100).to_bytes(4, "little")  # a HUB0 ring interrupt
        yield bar


def in_mirror(offset: int) -> bool:
    return NV_PCFG <= offset < MIRROR_END


def filter_for(bar: SimulatedBar, options: str = "", **targets: mf.Backend) -> mf.BarFilter:
    text = 'profile = "nvidia-gv100"\n' + (f"[options]\n{options}\n" if options else "")
    f, _ = attach(load_policy_file(text), bar.backend(), bar.size, targets=targets)
    return f


def test_every_scenario_names_its_source() -> None:
    assert {s.driver.split()[0] for s in SCENARIOS} == {"Linux", "NVIDIA"}
    for s in SCENARIOS:
        assert s.source and s.function and s.steps, s.name
    touched = {getattr(step, "offset", None) for s in SCENARIOS for step in s.steps}
    # the paths the review names: ring ack, MSI re-arm through the mirror, NV_PMC_ENABLE, PTIMER
    assert {0x12004C, NV_PCFG + 0x704, 0x200, 0x9400, 0x9410} <= touched


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_driver_scenario_passes_under_the_default_profile(
    v100: SimulatedBar, scenario: Scenario
) -> None:
    config = SimulatedConfig()
    shadow = bytearray(config.data)  # the VMM's config space as the driver's accesses change it
    f = filter_for(v100, config=config.backend())
    mirror_before = bytes(v100.buf[NV_PCFG:MIRROR_END])
    played = run(scenario, f)
    assert played
    landed = iter(config.writes)
    for p in played:
        where = f"{scenario.function}: {'write' if p.is_write else 'read'} {p.offset:#x}"
        if in_mirror(p.offset):
            assert p.result.outcome is mf.Outcome.REDIRECTED, where
            cfg = p.offset - NV_PCFG
            if p.is_write:
                assert next(landed) == (cfg, p.width, p.value), where  # one write, in order
                shadow[cfg : cfg + p.width] = p.value.to_bytes(p.width, "little")
            else:
                assert p.value == int.from_bytes(shadow[cfg : cfg + p.width], "little"), where
        else:
            assert p.result.outcome is mf.Outcome.PASS, where
    assert next(landed, None) is None  # nothing else reached the config space
    assert config.data == shadow
    # Virtualized accesses are counted, not events; the device's own mirror is never touched.
    assert f.drain_events() == []
    assert bytes(v100.buf[NV_PCFG:MIRROR_END]) == mirror_before


def test_ring_interrupt_ack_reaches_the_ring(v100: SimulatedBar) -> None:
    """nouveau gk104_privring_intr acks through 0x12004C and waits for CMD to clear: a profile
    that holds 0x12004C read-only leaves the guest with a ring interrupt it cannot ack."""
    (ack,) = [s for s in SCENARIOS if s.function == "gk104_privring_intr"]
    f = filter_for(v100, 'config_mirror = "deny"')
    before = list(v100.ring_commands)
    played = run(ack, f)
    assert all(p.result.outcome is mf.Outcome.PASS for p in played)
    assert v100.ring_commands == [*before, 0x2]  # ACK_INTERRUPT, taken by the ring
    assert isinstance(ack.steps[-1], Poll)


def test_the_ring_model_is_what_the_poll_needs(v100: SimulatedBar) -> None:
    # Without the ring behind it (plain memory), the driver's wait would never end: the
    # scenario runner must say so rather than pass.
    (ack,) = [s for s in SCENARIOS if s.function == "gk104_privring_intr"]
    text = 'profile = "nvidia-gv100"\n[options]\nconfig_mirror = "deny"\n'
    f, _ = attach(load_policy_file(text), mf.MemoryBackend(v100.buf), v100.size)
    with pytest.raises(ScenarioFailed, match="would time out"):
        run(ack, f)


@pytest.mark.parametrize(
    "scenario",
    [s for s in SCENARIOS if not any(in_mirror(getattr(step, "offset", 0)) for step in s.steps)],
    ids=lambda s: s.function,
)
def test_scenarios_off_the_mirror_pass_whatever_the_mirror_choice(
    v100: SimulatedBar, scenario: Scenario
) -> None:  # fmt: skip
    f = filter_for(v100, 'config_mirror = "deny"')
    for p in run(scenario, f):
        assert p.result.outcome is mf.Outcome.PASS, (scenario.function, hex(p.offset))
    assert f.drain_events() == []
    # the isolation the host applied is intact
    assert v100.read32(0x200) & (1 << 25)
    assert v100.read32(0xA00148) & 0x3F0000 == 0x3C0000


def test_denying_the_mirror_breaks_the_drivers_interrupts(v100: SimulatedBar) -> None:
    """Why `virtualize`: under `deny` the MSI re-arm of both drivers is dropped."""
    f = filter_for(v100, 'config_mirror = "deny"')
    for s in SCENARIOS:
        if s.function in ("gp100_pci_msi_rearm", "kbifRearmMSI_GM107"):
            (p,) = run(s, f)
            assert p.result.outcome is mf.Outcome.BLOCKED


def test_without_a_config_target_attach_says_what_to_hand_it(v100: SimulatedBar) -> None:
    with pytest.raises(mf.PolicyError, match=r"NV_PCFG.*'config'.*open_config_target"):
        filter_for(v100)
