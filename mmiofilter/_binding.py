"""The seam between Python and the C core, in one place.

Every code, limit and struct layout here is read from the compiled core (`lib` constants and
`ffi`'s own view of the structs), never restated: rebuilding the core with another layout or
a new action changes this module's tables, not its code. The filter and the benchmark both
pack rules through `pack_rules`. Range checks of rules, configs and filters are the core's
(one place, also for C callers); Python adds type checks and turns the core's messages
(`struct mf_error`) into `PolicyError` / `ValueError`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._core import ffi, lib
from .errors import PolicyError
from .results import Outcome

if TYPE_CHECKING:
    from .rules import Rule

#: enum mf_action by the name a policy uses ("allow" -> MF_ALLOW); every C action has one.
ACTION_NAMES: tuple[str, ...] = (
    "allow",
    "audit",
    "readonly",
    "mask",
    "emulate",
    "deny",
    "guard",
    "redirect",
)
ACTION_CODE: dict[str, int] = {a: getattr(lib, f"MF_{a.upper()}") for a in ACTION_NAMES}
if sorted(ACTION_CODE.values()) != list(range(lib.MF_NUM_ACTIONS)):
    raise ImportError("the core's actions and ACTION_NAMES differ: rebuild mmiofilter")

#: Outcome by the core's numeric code (enum mf_outcome), looked up by name.
OUTCOME_BY_CODE: tuple[Outcome, ...] = tuple(
    sorted(Outcome, key=lambda o: int(getattr(lib, f"MF_{o.name}")))
)
if [getattr(lib, f"MF_{o.name}") for o in OUTCOME_BY_CODE] != list(range(len(Outcome))):
    raise ImportError("the core's outcomes and mmiofilter.Outcome differ: rebuild mmiofilter")

PARTIAL_CODE: dict[str, int] = {"deny": lib.MF_PARTIAL_DENY, "split": lib.MF_PARTIAL_SPLIT}
UNALIGNED_CODE: dict[str, int] = {
    "allow": lib.MF_UNALIGNED_ALLOW,
    "deny": lib.MF_UNALIGNED_DENY,
}
#: Limits of the core.
NAME_MAX_BYTES: int = lib.MF_NAME_MAX - 1
RING_MAX: int = lib.MF_RING_MAX
TARGETS_MAX: int = lib.MF_TARGETS_MAX
NUM_BARS: int = lib.MF_NUM_BARS
#: Access widths the core accepts (mmiofilter.h, MF_EWIDTH).
WIDTHS: tuple[int, ...] = (1, 2, 4, 8)


def strerror(code: int) -> str:
    """The core's description of a return code (mf_strerror)."""
    return str(ffi.string(lib.mf_strerror(code)).decode())


def error_text(err: Any) -> str:
    """The message of a `struct mf_error`."""
    return str(ffi.string(err.message).decode(errors="replace"))


def raise_error(err: Any) -> None:
    """Raise what a failed compile/new/update reported: a PolicyError when it names a rule,
    else a ValueError (a bad BAR size, page size, ring capacity, backend)."""
    text = error_text(err)
    raise PolicyError(text) if err.rule >= 0 else ValueError(text)


# ---- struct mf_rule, as the struct module packs it ------------------------------------------

_INT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _field_format(ctype: Any) -> str:
    """The struct-module code of one field, from cffi's type (standard sizes, no padding)."""
    size = ffi.sizeof(ctype)
    code = _INT_FORMATS[size]
    if ctype.kind == "primitive" and ctype.cname.startswith("int"):
        code = code.lower()
    return code


def _struct_of(cname: str) -> tuple[struct.Struct, tuple[str, ...]]:
    """A packer for `cname` laid out exactly as the compiler does (offsets and padding from
    ffi), and its field names in packing order."""
    ctype = ffi.typeof(cname)
    fmt, at, names = "=", 0, []
    for name, field in sorted(ctype.fields, key=lambda nf: nf[1].offset):
        fmt += "x" * (field.offset - at) + _field_format(field.type)
        at = field.offset + ffi.sizeof(field.type)
        names.append(name)
    fmt += "x" * (ffi.sizeof(ctype) - at)
    packer = struct.Struct(fmt)
    if packer.size != ffi.sizeof(ctype):
        raise ImportError(f"cannot describe {cname} to the struct module: rebuild mmiofilter")
    return packer, tuple(names)


_RULE, _RULE_FIELDS = _struct_of("struct mf_rule")


def _le_bytes(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "little")


class RuleArray:
    """`struct mf_rule[]` for a rule list, with the names, values and masks it points to.

    One buffer holds every name, value and mask, and the array is packed in one go: per-field
    cffi calls would dominate compiling thousands of rules. `targets` maps a redirect rule's
    target name to its index in the filter's targets; `guard_specs` gives the `struct
    mf_guard_spec *` of each guard rule by index (kept alive here until compiled).
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        targets: Mapping[str, int] | None = None,
        guard_specs: Mapping[int, Any] | None = None,
    ) -> None:
        targets = targets or {}
        self.n = len(rules)
        blobs: list[bytes] = []
        for r in rules:
            blobs += (r.name.encode() + b"\0", _le_bytes(r.value), _le_bytes(r.mask))
        self._pool = ffi.from_buffer(b"".join(blobs) or b"\0")
        base = int(ffi.cast("uintptr_t", ffi.cast("uint8_t *", self._pool)))
        packed = bytearray(_RULE.size * max(self.n, 1))
        at = 0
        for i, r in enumerate(rules):
            name, value, mask = blobs[3 * i : 3 * i + 3]
            target = 0
            if r.action == "redirect":
                if r.target not in targets:
                    given = ", ".join(sorted(targets)) or "none"
                    raise PolicyError(
                        f"rule {r.name!r}: redirect target {r.target!r} was not given to the "
                        f"filter (targets: {given})"
                    )
                target = targets[r.target]
            fields = {
                "name": base + at,
                "start": r.start,
                "size": r.size,
                "priority": r.priority,
                "action": ACTION_CODE[r.action],
                "value": base + at + len(name),
                "value_len": len(value),
                "mask": base + at + len(name) + len(value),
                "mask_len": len(mask),
                "guard": 0,
                "target": target,
                "target_offset": r.target_offset,
            }
            _RULE.pack_into(packed, i * _RULE.size, *[fields[f] for f in _RULE_FIELDS])
            at += len(name) + len(value) + len(mask)
        self._packed = packed
        self.array: Any = ffi.from_buffer("struct mf_rule[]", packed)
        self._specs = dict(guard_specs or {})
        for i, spec in self._specs.items():
            self.array[i].guard = spec


def check_rule(r: Rule) -> None:
    """The core's checks of one rule on its own (mf_rule_check); PolicyError with its message.
    `r` must already have the right types and integers its C fields hold."""
    name = ffi.new("char[]", r.name.encode())
    value, mask = _le_bytes(r.value), _le_bytes(r.mask)
    c = ffi.new("struct mf_rule *")
    c.name, c.start, c.size, c.priority = name, r.start, r.size, r.priority
    c.action = ACTION_CODE[r.action]
    c.value, c.value_len = ffi.from_buffer(value), len(value)
    c.mask, c.mask_len = ffi.from_buffer(mask), len(mask)
    c.target_offset = r.target_offset
    err = ffi.new("struct mf_error *")
    if lib.mf_rule_check(c, err) != lib.MF_OK:
        raise PolicyError(error_text(err))


def make_config(bar_size: int, page_size: int, fill: int, partial: str, unaligned: str) -> Any:
    """`struct mf_config`; the core checks the ranges when it compiles."""
    cfg = ffi.new("struct mf_config *")
    try:
        cfg.bar_size = bar_size
    except OverflowError:
        raise ValueError(f"BAR size {bar_size!r} is not an integer in 1..2**64-1") from None
    try:
        cfg.page_size = page_size
    except OverflowError:
        raise ValueError(f"page size {page_size!r} is not a power of two >= 4096") from None
    cfg.fill = fill
    cfg.partial = PARTIAL_CODE[partial]
    cfg.unaligned = UNALIGNED_CODE[unaligned]
    return cfg


def compile_table(rules: RuleArray, cfg: Any) -> Any:
    """`mf_table_compile`; a refusal raises PolicyError (a rule) or ValueError (the config)."""
    err = ffi.new("struct mf_error *")
    ptr = lib.mf_table_compile(rules.array, rules.n, cfg, err)
    if ptr == ffi.NULL:
        raise_error(err)
    return ptr


def new_filter(
    backend: Any, targets: Sequence[Any], bar: int, ring_capacity: int, table: Any
) -> Any:
    """`mf_filter_new` over `struct mf_backend` cdata; the filter owns `table` from here (the
    core frees it on failure too)."""
    err = ffi.new("struct mf_error *")
    tarr = ffi.new("struct mf_backend[]", max(len(targets), 1))
    for i, t in enumerate(targets):
        tarr[i] = t[0]
    try:
        ptr = lib.mf_filter_new(backend, tarr, len(targets), bar, ring_capacity, table, err)
    except OverflowError:
        lib.mf_table_free(table)
        raise ValueError(
            f"bar {bar!r} or ring_capacity {ring_capacity!r} is out of range"
        ) from None
    if ptr == ffi.NULL:
        raise_error(err)
    return ptr
