"""Bad input of every kind gets a clear error that says what and where, and touches nothing."""

from __future__ import annotations

import pytest

import mmiofilter as mf
from mmiofilter import Rule

from .conftest import MakeFilter


@pytest.mark.parametrize("width", [0, 3, 5, 16, -1, 2**64, 4.0, "4", None, True])
def test_bad_widths(make_filter: MakeFilter, width: object) -> None:
    f, dev = make_filter(0x1000, [Rule("d", 0, 4, "deny")])
    with pytest.raises(mf.AccessError, match=r"width .* is not 1, 2, 4 or 8"):
        f.read(0, width)  # type: ignore[arg-type]
    with pytest.raises(mf.AccessError, match="width"):
        f.write(0, width, 0)  # type: ignore[arg-type]
    assert dev.log == [] and f.drain_events() == [] and f.counters() == {"d": 0}


@pytest.mark.parametrize(
    ("offset", "width"),
    [(-1, 1), (-8, 8), (0x1000, 1), (0xFFF, 2), (0xFFC, 8), (2**64 - 4, 8), (2**64, 1), (2**70, 4)],
)
def test_offsets_outside_the_bar(make_filter: MakeFilter, offset: int, width: int) -> None:
    f, dev = make_filter(0x1000, [])
    with pytest.raises(mf.AccessError, match=r"outside the BAR \[0, 0x1000\)"):
        f.read(offset, width)
    with pytest.raises(mf.AccessError, match="outside the BAR"):
        f.access(offset, width, True, 0)
    assert dev.log == []


def test_non_integer_offset(make_filter: MakeFilter) -> None:
    f, _ = make_filter(0x1000, [])
    with pytest.raises(mf.AccessError, match="offset"):
        f.read(1.0, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("width", "value"), [(1, 256), (1, -1), (2, 0x10000), (4, 2**32), (8, 2**64), (4, "1")]
)
def test_write_values_too_wide(make_filter: MakeFilter, width: int, value: object) -> None:
    f, dev = make_filter(0x1000, [])
    with pytest.raises(mf.AccessError, match=r"does not fit in \d byte"):
        f.write(0x10, width, value)  # type: ignore[arg-type]
    assert dev.log == []


def test_batch_rejects_a_bad_access_before_any_is_done(make_filter: MakeFilter) -> None:
    f, dev = make_filter(0x1000, [])
    with pytest.raises(mf.AccessError):
        f.access_many([(0, 4, True, 1), (0xFFE, 4, False, 0)])
    assert dev.log == []


def test_c_core_validates_on_its_own(make_filter: MakeFilter) -> None:
    """The C API is public too: it must reject what Python would have."""
    from mmiofilter._core import ffi, lib

    f, dev = make_filter(0x1000, [])
    res = ffi.new("struct mf_result *")
    for acc, code in [
        ({"offset": 0, "width": 3}, lib.MF_EWIDTH),
        ({"offset": 0, "width": 0}, lib.MF_EWIDTH),
        ({"offset": 0xFFD, "width": 4}, lib.MF_ERANGE),
        ({"offset": 2**64 - 1, "width": 2}, lib.MF_ERANGE),
        ({"offset": 0, "width": 1, "is_write": 1, "value": 0x100}, lib.MF_EVALUE),
        ({"offset": 0, "width": 4, "is_write": 1, "value": 2**32}, lib.MF_EVALUE),
    ]:
        assert lib.mf_access(f._f, ffi.new("struct mf_access *", acc), res) == code
        assert res.status == code
    assert dev.log == [] and f.drain_events() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "block"}, "action 'block' is not one of"),
        ({"size": 0}, "size must be at least 1"),
        ({"size": -4}, r"size -4 is not 1\.\.2\*\*64-1"),
        ({"start": -1}, "start"),
        ({"value": 0x100, "size": 1}, r"value of 2 bytes does not fit in the rule's 1 byte"),
        ({"mask": 2**32, "size": 4}, "mask of 5 bytes does not fit"),
        ({"value": -1}, "value must not be negative"),
        ({"priority": 2**31}, "priority"),
        ({"bar": 6}, "bar 6 is not a BAR index"),
        ({"start": "0x10"}, "start must be an integer"),
        ({"size": True}, "size must be an integer"),
        ({"start": 2**64 - 2, "size": 4}, r"wraps past 2\^64"),
    ],
)
def test_bad_rules_name_rule_and_field(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "r1", "start": 0, "size": 4, "action": "deny"}
    args.update(kwargs)
    with pytest.raises(mf.PolicyError, match=message) as e:
        Rule(**args)  # type: ignore[arg-type]
    assert "'r1'" in str(e.value)


@pytest.mark.parametrize("name", ["", " lead", "trail ", "tab\there", "é", "x" * 64, 7])
def test_bad_rule_names(name: object) -> None:
    with pytest.raises(mf.PolicyError, match="name"):
        Rule(name, 0, 4, "deny")  # type: ignore[arg-type]


def test_bad_policies() -> None:
    r = Rule("a", 0, 4, "deny")
    with pytest.raises(mf.PolicyError, match="'a': name is used by more than one rule"):
        mf.Policy([r, Rule("a", 8, 4, "allow")])
    with pytest.raises(mf.PolicyError, match="fill must be a byte"):
        mf.Policy([r], fill=256)
    with pytest.raises(mf.PolicyError, match="partial 'merge'"):
        mf.Policy([r], partial="merge")
    with pytest.raises(mf.PolicyError, match="unaligned 'no'"):
        mf.Policy([r], unaligned="no")
    with pytest.raises(mf.PolicyError, match="expected a Rule"):
        mf.Policy([("a", 0, 4, "deny")])  # type: ignore[list-item]


def test_rule_outside_the_bar(make_filter: MakeFilter) -> None:
    with pytest.raises(mf.PolicyError, match=r"BAR0: rule 'late': \[0xffe, \+0x4\) lies outside"):
        make_filter(0x1000, [Rule("late", 0xFFE, 4, "deny")])
    # a rule of another BAR is not checked against this one: it is ignored
    f, _ = make_filter(0x1000, [Rule("other", 0x10000, 4, "deny", bar=2)])
    assert f.counters() == {}
    assert f.layout.direct == [(0, 0x1000)]


@pytest.mark.parametrize("page_size", [0, 1, 2048, 4095, 4097, 12288, -4096, 2**64, "4K"])
def test_bad_page_sizes(page_size: object) -> None:
    with pytest.raises(ValueError, match=r"page size .* is not a power of two >= 4096"):
        mf.BarFilter(
            0x1000, mf.Policy([]), mf.MemoryBackend(bytearray(0x1000)), page_size=page_size
        )  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1, 2**64, 1.5])
def test_bad_bar_sizes(size: object) -> None:
    with pytest.raises(ValueError, match="BAR size"):
        mf.BarFilter(size, mf.Policy([]), mf.CallbackBackend(lambda o, w: 0, lambda o, w, v: 0))  # type: ignore[arg-type]


def test_memory_backend_smaller_than_the_bar() -> None:
    with pytest.raises(ValueError, match=r"buffer of 0x800 bytes is smaller than the BAR"):
        mf.BarFilter(0x1000, mf.Policy([]), mf.MemoryBackend(bytearray(0x800)))
    with pytest.raises(TypeError, match="writable buffer"):
        mf.MemoryBackend(bytes(0x1000))


def test_update_with_bad_policy_keeps_the_old_one(make_filter: MakeFilter) -> None:
    f, _ = make_filter(0x1000, [Rule("d", 0, 4, "deny")])
    with pytest.raises(mf.PolicyError, match=r"BAR0: rule 'x': .* lies outside the BAR"):
        f.update(mf.Policy([Rule("x", 0x1000, 4, "allow")]))
    assert f.read(0, 4) == 0xFFFFFFFF


def test_c_compile_rejects_hostile_rules() -> None:
    """The C compiler of tables checks what Python checks, for C callers and fuzzers."""
    from mmiofilter._core import ffi, lib

    def compile_one(**fields: object) -> str:
        name = ffi.new("char[]", b"r")
        rule = ffi.new("struct mf_rule *", {"name": name, "start": 0, "size": 4, "action": 5})
        for k, v in fields.items():
            setattr(rule, k, v)
        cfg = ffi.new("struct mf_config *", {"bar_size": 0x1000, "page_size": 4096})
        err = ffi.new("struct mf_error *")
        t = lib.mf_table_compile(rule, 1, cfg, err)
        if t != ffi.NULL:
            lib.mf_table_free(t)
            return ""
        return ffi.string(err.message).decode()

    assert compile_one() == ""
    assert "wraps past 2^64" in compile_one(start=2**64 - 2, size=4)
    assert "outside the BAR" in compile_one(start=0xFFF, size=2)
    assert "size must be at least 1" in compile_one(size=0)
    assert "unknown action 9" in compile_one(action=9)
    assert "value of 5 bytes does not fit" in compile_one(value_len=5)
    assert "name" in compile_one(name=ffi.NULL)


@pytest.mark.parametrize("name", [b"(unaligned)", b" lead", b"trail ", b"tab\there", b"\xc3\xa9"])
def test_c_core_checks_rule_names_as_python_does(name: bytes) -> None:
    """One set of rules for names, in the core: a C caller cannot name a rule like the
    filter's own decisions ("(unaligned)") or put control bytes into event records."""
    from mmiofilter._core import ffi, lib

    cname = ffi.new("char[]", name)
    rule = ffi.new("struct mf_rule *", {"name": cname, "start": 0, "size": 4, "action": 5})
    err = ffi.new("struct mf_error *")
    assert lib.mf_rule_check(rule, err) == lib.MF_EINVAL
    assert "printable ASCII" in ffi.string(err.message).decode()
    cfg = ffi.new("struct mf_config *", {"bar_size": 0x1000, "page_size": 4096})
    assert lib.mf_table_compile(rule, 1, cfg, err) == ffi.NULL
