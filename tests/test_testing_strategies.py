"""The realistic strategies of mmiofilter.testing draw what they promise: every shipped profile
and every option choice, accesses on the profile's registers, driver messages laid out as their
senders lay them out, and hostile mailbox traffic that an unguarded mailbox does not survive."""

from __future__ import annotations

import struct
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

import mmiofilter as mf
from mmiofilter.devices import profiles
from mmiofilter.testing import (
    GpuSpec,
    ProfilePolicy,
    bar_filter,
    gpu_specs,
    profile_policies,
    register_accesses,
    run_mailbox,
    simulated_gpu,
)
from mmiofilter.testing.fsp_strategies import (
    COT_BYTES,
    cot_payloads,
    fsp_messages,
    mailbox_sequences,
    prc_payloads,
)
from mmiofilter.testing.mailbox import assert_fsp_guarded

FW = 0x12


def collect(strategy: st.SearchStrategy[object], n: int) -> list[object]:
    out: list[object] = []

    @settings(max_examples=n, deadline=None, derandomize=True, database=None)
    @given(strategy)
    def draw(value: object) -> None:
        out.append(value)

    draw()
    return out


def test_profile_policies_cover_every_profile_and_option_choice() -> None:
    drawn = collect(profile_policies(), 300)
    seen: Counter[tuple[str, str, object]] = Counter()
    for pp in drawn:
        assert isinstance(pp, ProfilePolicy)
        for key, value in pp.options.items():
            seen[(pp.profile, key, value if isinstance(value, str) else "list")] += 1
    for name, profile in profiles().items():
        for option in profile.options:
            for choice in option.choices or ("list",):
                assert seen[(name, option.name, choice)], (name, option.name, choice)


def test_profile_policies_are_what_the_policy_file_resolves_to() -> None:
    from mmiofilter.devices import load_policy_file

    for pp in collect(profile_policies(), 60):
        assert isinstance(pp, ProfilePolicy)
        policy, _ = load_policy_file(pp.text).resolve(pp.device())
        assert policy == pp.policy
        # the config mirror's target (config_mirror = "virtualize"): a config space
        targets = {
            r.target: mf.MemoryBackend(bytearray(4096))
            for r in pp.policy.rules
            if r.action == "redirect"
        }
        for bar, size in pp.bar_sizes.items():
            backend = mf.MemoryBackend(bytearray(size))
            mf.BarFilter(size, pp.policy, backend, bar=bar, targets=targets)


def test_nvidia_policies_carry_the_drawn_units_and_pci_ones_the_msix_table() -> None:
    for pp in collect(profile_policies(), 120):
        assert isinstance(pp, ProfilePolicy)
        names = {r.name for r in pp.policy.rules}
        if pp.profile.startswith("nvidia") and pp.options.get("nvlink", "isolate") == "isolate":
            assert {f"ioctrl@{u[1]:#x}" for u in pp.units} <= names
        if pp.profile == "pci" and pp.options.get("msix", "deny") != "allow":
            assert {"msix-table", "msix-pba"} <= names


@settings(max_examples=40, deadline=None)
@given(pp=profile_policies("nvidia-gv100"), data=st.data())
def test_register_accesses_cluster_on_the_maps_registers(
    pp: ProfilePolicy, data: st.DataObject
) -> None:
    regmap = pp.regmap
    assert regmap is not None
    spans = [(r.offset, r.end) for r in regmap.regions if r.bar == 0]
    spans += [(r.start, r.end) for r in pp.policy.for_bar(0)]
    accs = data.draw(st.lists(register_accesses(pp), min_size=20, max_size=20))
    on = sum(any(a < off + w and off < b for a, b in spans) for off, w, _, _ in accs)
    assert on >= 15, accs  # by construction every one touches or straddles one
    with bar_filter(pp.policy, size=pp.bar_sizes[0], backend="fd") as f:
        for acc in accs:
            f.access(*acc)  # valid: never an AccessError


def test_gpu_specs_draw_both_families_and_their_real_unit_bases() -> None:
    specs = collect(gpu_specs(), 100)
    families = {s.family for s in specs if isinstance(s, GpuSpec)}
    assert families == {"gv100", "gh100"}
    bases = {u[1] for s in specs if isinstance(s, GpuSpec) for u in s.units}
    assert bases == {0xA00000, 0xA40000, 0xA80000}


def test_driver_messages_are_laid_out_as_their_senders_do() -> None:
    for payload in collect(cot_payloads(), 20):
        assert isinstance(payload, bytes) and len(payload) == COT_BYTES == 860
        version, size = struct.unpack_from("<HH", payload)
        assert version in (1, 2) and size == 860
    subs = Counter()
    for payload in collect(prc_payloads(), 100):
        assert isinstance(payload, bytes) and len(payload) % 4 == 0
        subs[payload[0]] += 1  # packet byte 8: the sub-message
        assert payload[1] in (0x1, 0x2, 0x3)  # byte 9: its scope
    assert set(subs) == {0x01, 0x04, 0x0A, 0x0C, 0x0D}
    types = {m[0] for m in collect(fsp_messages(), 60) if isinstance(m, tuple)}
    assert types == {0x12, 0x13, 0x14, 0x16, 0x17}


def reaches_an_unguarded_fsp(steps: list[object]) -> bool:
    with simulated_gpu(GpuSpec("gh100")) as gpu:
        f, _ = gpu.attach('profile = "nvidia-gh100"\n[options]\nfirmware_update = "allow"\n')
        assert gpu.fsp is not None
        run_mailbox(f, steps)  # type: ignore[arg-type]
        try:
            assert_fsp_guarded(gpu.fsp, {FW})
        except AssertionError:
            return True
        return False


def test_mailbox_sequences_find_a_way_through_an_unguarded_mailbox() -> None:
    # The strategy's traffic does carry firmware updates: without the guard they get through.
    drawn = collect(mailbox_sequences(), 40)
    assert sum(reaches_an_unguarded_fsp(steps) for steps in drawn) >= 5  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(steps=mailbox_sequences())
def test_the_guard_holds_for_every_drawn_sequence(steps: list[object]) -> None:
    with simulated_gpu(GpuSpec("gh100")) as gpu:
        f, _ = gpu.attach()
        assert gpu.fsp is not None
        run_mailbox(f, steps)  # type: ignore[arg-type]
        assert_fsp_guarded(gpu.fsp, {FW})
