"""The redirect action through the C core (docs/contract-details.md item 17): a rule's bytes
are served by a target backend the VMM hands the filter by name, never by the device.

Expected values are worked out by hand; the differential test compares the core with the
model on random policies, this file pins the cases a reader can check.
"""

from __future__ import annotations

import pytest
from mmiofilter._core import ffi, lib

import mmiofilter as mf
from mmiofilter.testing import ModelDevice

FF4 = 0xFFFFFFFF


def make(
    rules: list[mf.Rule], *, target_size: int = 0x1000, **policy: object
) -> tuple[mf.BarFilter, ModelDevice, bytearray]:
    """A 4 KiB BAR over a logging device whose byte o is o & 0xFF, and a memory "config"
    target whose byte o is 0xFF - (o & 0xFF)."""
    dev = ModelDevice(bytes(range(256)) * 16)
    config = bytearray(bytes(range(255, -1, -1)) * (target_size // 256 + 1))[:target_size]
    f = mf.BarFilter(
        0x1000,
        mf.Policy(rules, **policy),  # type: ignore[arg-type]
        mf.CallbackBackend(dev.read, dev.write),
        page_size=4096,
        targets={"config": mf.MemoryBackend(config)},
    )
    return f, dev, config


MIRROR = mf.Rule("mirror", 0x100, 0x10, "redirect", target="config", target_offset=0x200)


def test_access_inside_a_redirect_rule_goes_to_the_target_only() -> None:
    f, dev, config = make([MIRROR])
    # 0x106 is byte 6 of the rule: target bytes 0x206, 0x207 = 0xF9, 0xF8
    assert f.access(0x106, 2, False) == mf.Result(mf.Outcome.REDIRECTED, 0xF8F9)
    assert f.write(0x10C, 4, 0xA1B2C3D4) is mf.Outcome.REDIRECTED
    assert config[0x20C:0x210] == bytes.fromhex("d4c3b2a1")
    assert dev.log == []  # the device saw nothing
    assert f.drain_events() == []  # counted, not an event
    assert f.counters() == {"mirror": 2}


def test_redirect_page_traps() -> None:
    f, _, _ = make([MIRROR])
    assert f.layout.direct == []
    assert f.layout.trapped_pages == [0]


def test_redirect_outranks_mask_and_yields_to_emulate_on_a_tie() -> None:
    # deny > emulate > redirect > mask: a tie with mask goes to redirect, with emulate not
    f, _, _ = make([MIRROR, mf.Rule("m", 0x100, 4, "mask", mask=0xFF)])
    assert f.access(0x100, 4, False).outcome is mf.Outcome.REDIRECTED
    f, _, _ = make([mf.Rule("e", 0x100, 4, "emulate", value=0x600D), MIRROR])
    assert f.access(0x100, 4, False) == mf.Result(mf.Outcome.EMULATED, 0x600D)


def test_unknown_target_is_a_policy_error_naming_rule_and_target() -> None:
    window = mf.Rule("win", 0x100, 4, "redirect", target="window")
    with pytest.raises(mf.PolicyError, match=r"rule 'win': redirect target 'window'"):
        make([window])
    f, _, _ = make([MIRROR])
    with pytest.raises(mf.PolicyError, match=r"rule 'win': redirect target 'window'"):
        f.update(mf.Policy([window]))
    assert f.access(0x100, 1, False).outcome is mf.Outcome.REDIRECTED  # the old one holds


def test_target_too_small_for_the_rule_is_refused_by_the_core() -> None:
    # the rule reaches target bytes up to 0x210; the target holds 0x208
    with pytest.raises(mf.PolicyError, match=r"'mirror': target #0: memory backend maps 0x208"):
        make([MIRROR], target_size=0x208)
    f, _, _ = make([], target_size=0x208)
    with pytest.raises(mf.PolicyError, match="rule 'mirror': target #0"):
        f.update(mf.Policy([MIRROR]))


def test_mixed_access_under_partial_deny_touches_nothing() -> None:
    f, dev, config = make([MIRROR])
    before = bytes(config)
    assert f.access(0xFE, 4, False) == mf.Result(mf.Outcome.BLOCKED, FF4)
    assert f.access(0xFE, 4, True, 0x11223344) == mf.Result(mf.Outcome.BLOCKED, 0)
    assert dev.log == [] and bytes(config) == before
    assert [e.rule for e in f.drain_events()] == ["mirror", "mirror"]


def test_mixed_access_under_split_sends_each_byte_where_it_belongs() -> None:
    f, dev, config = make([MIRROR], partial="split")
    # 0xFE, 0xFF from the device (0xFE, 0xFF); 0x100, 0x101 from target 0x200, 0x201
    assert f.access(0xFE, 4, False) == mf.Result(mf.Outcome.PARTIAL, 0xFEFFFFFE)
    assert dev.log == [(0xFE, 2, False, 0xFFFE)]
    assert f.access(0xFE, 4, True, 0x11223344) == mf.Result(mf.Outcome.PARTIAL, 0x11223344)
    assert dev.log[-1] == (0xFE, 2, True, 0x3344)
    assert config[0x200:0x202] == bytes.fromhex("2211")


def test_split_chunks_are_aligned_on_the_target_addresses() -> None:
    # bytes 0x101..0x107 go to target 0x203..0x209: a 1-, a 4- and a 2-byte access there
    seen: list[tuple[int, int, bool, int]] = []
    target = ModelDevice()

    def read(o: int, w: int) -> int:
        seen.append((o, w, False, 0))
        return target.read(o, w)

    def write(o: int, w: int, v: int) -> None:
        seen.append((o, w, True, v))
        target.write(o, w, v)

    dev = ModelDevice()
    f = mf.BarFilter(
        0x1000,
        mf.Policy(
            [mf.Rule("w", 0x101, 7, "redirect", target="config", target_offset=0x203)],
            partial="split",
        ),
        mf.CallbackBackend(dev.read, dev.write),
        page_size=4096,
        targets={"config": mf.CallbackBackend(read, write)},
    )
    assert f.write(0x100, 8, 0x0807060504030201) is mf.Outcome.PARTIAL
    assert dev.log == [(0x100, 1, True, 0x01)]
    assert seen == [(0x203, 1, True, 0x02), (0x204, 4, True, 0x06050403), (0x208, 2, True, 0x0807)]


def test_a_failing_target_is_a_backend_error_naming_it() -> None:
    def boom(*_: int) -> int:
        raise OSError("config space gone")

    dev = ModelDevice()
    f = mf.BarFilter(
        0x1000,
        mf.Policy([MIRROR]),
        mf.CallbackBackend(dev.read, dev.write),
        page_size=4096,
        targets={"config": mf.CallbackBackend(boom, boom)},
    )
    with pytest.raises(mf.BackendError, match=r"redirect target 'config'.*config space gone"):
        f.read(0x100, 4)
    assert dev.log == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "redirect"}, "needs a target name"),
        ({"action": "redirect", "target": "1st"}, "needs a target name"),
        ({"action": "redirect", "target": "cfg", "target_offset": -1}, "target_offset"),
        ({"action": "redirect", "target": "cfg", "target_offset": 2**64 - 4}, "target_offset"),
        ({"action": "deny", "target": "cfg"}, "belong to redirect rules"),
        ({"action": "deny", "target_offset": 4}, "belong to redirect rules"),
        ({"action": "redirect", "target": 7}, "target must be a string"),
    ],
)
def test_bad_redirect_rules(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "r1", "start": 0, "size": 4}
    args.update(kwargs)
    with pytest.raises(mf.PolicyError, match=message):
        mf.Rule(**args)  # type: ignore[arg-type]


def test_rule_repr_and_equality_carry_the_target() -> None:
    a = mf.Rule("m", 0x10, 4, "redirect", target="config", target_offset=0x40)
    assert repr(a) == "Rule('m', 0x10, 0x4, 'redirect', target='config', target_offset=64)"
    assert eval(repr(a), {"Rule": mf.Rule}) == a
    assert a != mf.Rule("m", 0x10, 4, "redirect", target="config", target_offset=0x44)
    assert a != mf.Rule("m", 0x10, 4, "redirect", target="window", target_offset=0x40)


def test_policy_file_redirect() -> None:
    p = mf.Policy.from_toml(
        """
        [[rule]]
        name = "pcfg"
        start = 0x100
        size = 0x10
        action = "redirect"
        target = "config"
        target_offset = 0x200
        """
    )
    assert p.rules == (MIRROR.__class__("pcfg", 0x100, 0x10, "redirect", target="config",
                                        target_offset=0x200),)  # fmt: skip
    with pytest.raises(mf.PolicyError, match=r"<policy>: rule 'x': a redirect rule needs"):
        mf.Policy.from_toml('[[rule]]\nname = "x"\nstart = 0\nsize = 4\naction = "redirect"\n')
    with pytest.raises(mf.PolicyError, match="field 'target' must be a string"):
        mf.Policy.from_toml(
            '[[rule]]\nname = "x"\nstart = 0\nsize = 4\naction = "redirect"\ntarget = 1\n'
        )


def test_core_refuses_a_target_index_it_was_not_given() -> None:
    """For C callers: the index is checked against the filter's targets, with a message."""
    name = ffi.new("char[]", b"mirror")
    rule = ffi.new(
        "struct mf_rule *",
        {"name": name, "start": 0, "size": 4, "action": lib.MF_REDIRECT, "target": 1},
    )
    cfg = ffi.new("struct mf_config *", {"bar_size": 0x1000, "page_size": 4096})
    err = ffi.new("struct mf_error *")
    table = lib.mf_table_compile(rule, 1, cfg, err)
    assert table != ffi.NULL
    buf = bytearray(0x1000)
    keep = ffi.from_buffer(buf)
    be = ffi.new("struct mf_backend *", {"kind": lib.MF_BACKEND_MEMORY, "length": 0x1000})
    be.base = keep
    targets = ffi.new("struct mf_backend[]", [be[0]])
    f = lib.mf_filter_new(be, targets, 1, 0, 4, table, err)
    assert f == ffi.NULL and err.rule == 0
    assert "rule 'mirror': redirect target #1 was not given to the filter (it has 1)" in (
        ffi.string(err.message).decode()
    )
    # a target on another action is refused at compile time
    rule.action, rule.target = lib.MF_DENY, 0
    rule.target_offset = 8
    assert lib.mf_table_compile(rule, 1, cfg, err) == ffi.NULL
    assert "belong to redirect rules, not deny" in ffi.string(err.message).decode()

