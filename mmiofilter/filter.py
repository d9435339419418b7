"""`BarFilter`: one BAR, its policy and its backend, over the C core (contract §5).

Python validates every argument first, so that a bad call gets a message saying what and
where; the C core validates again and decides the access. cffi releases the GIL around each C
call, so several vCPU threads can be inside the core at once.
"""

from __future__ import annotations

import mmap
import struct
import threading
from typing import Any

from ._core import ffi, lib
from .backends import Backend
from .errors import AccessError, PolicyError
from .guards import Guard
from .layout import Layout
from .results import OUTCOME_BY_CODE, Event, Outcome, Result
from .rules import ACTIONS, NUM_BARS, PARTIAL_MODES, UNALIGNED_MODES, Policy, Rule

_WIDTHS = (1, 2, 4, 8)
DEFAULT_RING_CAPACITY = 1024


def check_page_size(page_size: object) -> int:
    """A page size the MMU can have: a power of two >= 4096."""
    if (
        not isinstance(page_size, int)
        or isinstance(page_size, bool)
        or page_size < 4096
        or page_size >= 2**63
        or page_size & (page_size - 1)
    ):
        raise ValueError(f"page size {page_size!r} is not a power of two >= 4096")
    return page_size


def check_bar_size(size: object) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size < 2**64:
        raise ValueError(f"BAR size {size!r} is not an integer in 1..2**64-1")
    return size


def _rule_struct() -> struct.Struct:
    """`struct mf_rule` as the struct module packs it, checked against cffi's own layout."""
    fmt = struct.Struct("@PQQiBPNPNP")  # native: the C compiler's own alignment
    fields = (
        "name",
        "start",
        "size",
        "priority",
        "action",
        "value",
        "value_len",
        "mask",
        "mask_len",
        "guard",
    )
    offsets = [ffi.offsetof("struct mf_rule", f) for f in fields]
    want = [0, 8, 16, 24, 28, 32, 40, 48, 56, 64]
    if ffi.sizeof("struct mf_rule") != fmt.size or offsets != want:
        raise ImportError(f"unexpected struct mf_rule layout {offsets}: rebuild mmiofilter")
    return fmt


_RULE_STRUCT = _rule_struct()


def _le_bytes(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "little")


#: enum mf_action, by the name a policy uses ("allow" -> MF_ALLOW).
_ACTION_CODE: dict[str, int] = {a: getattr(lib, f"MF_{a.upper()}") for a in (*ACTIONS, "guard")}


def _guard_spec(g: Guard) -> Any:
    """`struct mf_guard_spec` for a guard (the guard fills it); the caller keeps it alive
    until compiled."""
    spec = ffi.new("struct mf_guard_spec *")
    g.fill_spec(spec)
    return spec


class _Table:
    """A compiled table before it is handed to a filter (which then owns and frees it)."""

    def __init__(self, policy: Policy, bar: int, size: int, page_size: int) -> None:
        if not isinstance(policy, Policy):
            raise PolicyError(f"expected a Policy, not {type(policy).__name__}")
        policy.check_bar(bar, size)
        rules: tuple[Rule, ...] = policy.for_bar(bar)
        # One buffer for every name, value and mask, and the rule array packed in one go (the
        # core copies both while compiling): per-field cffi calls would dominate compiling
        # thousands of rules.
        blobs: list[bytes] = []
        at = 0
        for r in rules:
            blobs += (r.name.encode() + b"\0", _le_bytes(r.value), _le_bytes(r.mask))
        pool = ffi.from_buffer(b"".join(blobs) or b"\0")
        base = int(ffi.cast("uintptr_t", ffi.cast("uint8_t *", pool)))
        packed = bytearray(_RULE_STRUCT.size * max(len(rules), 1))
        for i, r in enumerate(rules):
            name, value, mask = blobs[3 * i : 3 * i + 3]
            _RULE_STRUCT.pack_into(
                packed,
                i * _RULE_STRUCT.size,
                base + at,
                r.start,
                r.size,
                r.priority,
                _ACTION_CODE[r.action],
                base + at + len(name),
                len(value),
                base + at + len(name) + len(value),
                len(mask),
                0,
            )
            at += len(name) + len(value) + len(mask)
        crules = ffi.from_buffer("struct mf_rule[]", packed)
        specs = {i: _guard_spec(r) for i, r in enumerate(rules) if isinstance(r, Guard)}
        for i, spec in specs.items():
            crules[i].guard = spec
        cfg = ffi.new(
            "struct mf_config *",
            {
                "bar_size": size,
                "page_size": page_size,
                "fill": policy.fill,
                "partial": PARTIAL_MODES.index(policy.partial),
                "unaligned": UNALIGNED_MODES.index(policy.unaligned),
            },
        )
        err = ffi.new("struct mf_error *")
        ptr = lib.mf_table_compile(crules, len(rules), cfg, err)
        if ptr == ffi.NULL:
            raise PolicyError(ffi.string(err.message).decode(errors="replace"))
        self.ptr: Any = ptr
        self.names: list[str] = [r.name for r in rules]
        self.policy = policy
        self.layout = self._layout(size, page_size)

    def _layout(self, size: int, page_size: int) -> Layout:
        def areas_of(fn: Any) -> list[tuple[int, int]]:
            n = fn(self.ptr, ffi.NULL, 0)
            areas = ffi.new("struct mf_area[]", max(n, 1))
            fn(self.ptr, areas, n)
            return [(areas[i].offset, areas[i].length) for i in range(n)]

        blen = lib.mf_table_sparse_mmap(self.ptr, ffi.NULL, 0)
        buf = ffi.new("uint8_t[]", blen)
        lib.mf_table_sparse_mmap(self.ptr, buf, blen)
        return Layout(
            size=size,
            page_size=page_size,
            direct=areas_of(lib.mf_table_direct_areas),
            trapped_count=lib.mf_table_trapped_pages(self.ptr),
            collateral=lib.mf_table_collateral_write(self.ptr),
            sparse_mmap=bytes(ffi.buffer(buf, blen)),
            read_direct=areas_of(lib.mf_table_read_direct_areas),
            collateral_read_bytes=lib.mf_table_collateral_read(self.ptr),
        )

    def counters(self) -> list[int]:
        out = ffi.new("uint64_t[]", max(len(self.names), 1))
        lib.mf_table_counters(self.ptr, out, len(self.names))
        return list(out)[: len(self.names)]

    def free(self) -> None:
        lib.mf_table_free(self.ptr)
        self.ptr = ffi.NULL


class BarFilter:
    """Filter every trapped access to one BAR of `size` bytes under `policy`.

    `page_size` defaults to the host's. Rules of other BARs in the policy are ignored.
    `label` names the filter in its events and audit records (e.g. "0000:65:00.0/bar0").
    """

    def __init__(
        self,
        size: int,
        policy: Policy,
        backend: Backend,
        *,
        bar: int = 0,
        page_size: int | None = None,
        ring_capacity: int = DEFAULT_RING_CAPACITY,
        label: str = "",
    ) -> None:
        if not isinstance(label, str) or len(label) > 256 or not label.isprintable():
            raise ValueError(f"label {label!r} is not printable text of at most 256 characters")
        self.label = label
        self.size = check_bar_size(size)
        self.page_size = check_page_size(mmap.PAGESIZE if page_size is None else page_size)
        if not isinstance(bar, int) or not 0 <= bar < NUM_BARS:
            raise ValueError(f"bar {bar!r} is not a BAR index 0..{NUM_BARS - 1}")
        if not isinstance(ring_capacity, int) or not 1 <= ring_capacity <= 2**24:
            raise ValueError(f"ring_capacity {ring_capacity!r} is not in 1..2**24")
        if not isinstance(backend, Backend):
            raise TypeError(f"expected a backend, not {type(backend).__name__}")
        self.bar = bar
        self.backend = backend
        self._lock = threading.Lock()  # serializes update() with counters()
        self._local = threading.local()  # per-thread access/result structs for the C calls
        self._carry: dict[str, int] = {}  # counts from tables that update() retired
        be = ffi.new("struct mf_backend *")
        backend._configure(be, self.size)
        self._table = _Table(policy, bar, self.size, self.page_size)
        err = ffi.new("struct mf_error *")
        ptr = lib.mf_filter_new(be, bar, ring_capacity, self._table.ptr, err)
        if ptr == ffi.NULL:  # the core freed the table
            raise ValueError(ffi.string(err.message).decode(errors="replace"))
        self._f = ffi.gc(ptr, lib.mf_filter_free)

    # ---- accesses ----------------------------------------------------------------------

    def _result_buf(self) -> Any:
        try:
            return self._local.res
        except AttributeError:
            self._local.res = ffi.new("struct mf_result *")
            return self._local.res

    def _validate(self, offset: object, width: object, is_write: bool, value: object) -> None:
        if type(width) is not int or width not in _WIDTHS:
            raise AccessError(f"BAR{self.bar}: width {width!r} is not 1, 2, 4 or 8")
        if type(offset) is not int:
            raise AccessError(f"BAR{self.bar}: offset {offset!r} is not an integer")
        if offset < 0 or offset + width > self.size:
            raise AccessError(
                f"BAR{self.bar}: {width}-byte access at offset {offset:#x} is outside the BAR "
                f"[0, {self.size:#x})"
            )
        if is_write and (type(value) is not int or not 0 <= value < 1 << (8 * width)):
            raise AccessError(
                f"BAR{self.bar}: value {value!r} written at offset {offset:#x} does not fit in "
                f"{width} byte(s)"
            )

    def _do(self, offset: int, width: int, is_write: bool, value: int) -> Any:
        # The checks of _validate, inlined for the common valid case: this is the path a
        # Python VMM's exit handler takes for every trapped access.
        if (
            type(width) is not int
            or width not in _WIDTHS
            or type(offset) is not int
            or offset < 0
            or offset + width > self.size
            or (is_write and (type(value) is not int or not 0 <= value < 1 << (8 * width)))
        ):
            self._validate(offset, width, is_write, value)
        try:
            res = self._local.res
        except AttributeError:
            res = self._result_buf()
        if lib.mf_access_scalar(self._f, offset, width, is_write, value if is_write else 0, res):
            self._fail(res.status, offset, width)
        return res

    def _fail(self, rc: int, offset: int, width: int) -> None:
        where = f"BAR{self.bar}: {width}-byte access at offset {offset:#x}"
        if rc == lib.MF_EDEVICE:
            self.backend._raise_failure(where)
        if rc == lib.MF_EBUSY:
            raise RuntimeError(f"{where}: nested too deeply in other filters' accesses")
        raise AccessError(f"{where}: rejected by the core (code {rc})")

    def read(self, offset: int, width: int) -> int:
        """Read `width` bytes at `offset`, as the guest sees them."""
        value: int = self._do(offset, width, False, 0).value
        return value

    def write(self, offset: int, width: int, value: int) -> Outcome:
        """Write `value` (`width` bytes, little-endian) at `offset`; say what reached the device."""
        outcome: Outcome = OUTCOME_BY_CODE[self._do(offset, width, True, value).outcome]
        return outcome

    def access(self, offset: int, width: int, is_write: bool, value: int = 0) -> Result:
        """One access, with its outcome and value (docs/contract-details.md)."""
        res = self._do(offset, width, bool(is_write), value)
        return Result(OUTCOME_BY_CODE[res.outcome], int(res.value))

    def access_many(self, accesses: list[tuple[int, int, bool, int]]) -> list[Result]:
        """A batch of `(offset, width, is_write, value)` decided under one policy table."""
        n = len(accesses)
        accs = ffi.new("struct mf_access[]", max(n, 1))
        for c, (offset, width, is_write, value) in zip(accs, accesses, strict=False):
            self._validate(offset, width, bool(is_write), value)
            c.offset, c.width, c.is_write = offset, width, bool(is_write)
            c.value = value if is_write else 0
        res = ffi.new("struct mf_result[]", max(n, 1))
        lib.mf_access_batch(self._f, accs, res, n)
        out = []
        for i in range(n):
            if res[i].status != 0:
                self._fail(res[i].status, accesses[i][0], accesses[i][1])
            out.append(Result(OUTCOME_BY_CODE[res[i].outcome], int(res[i].value)))
        return out

    # ---- policy -------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self._table.policy

    @property
    def layout(self) -> Layout:
        return self._table.layout

    def update(self, policy: Policy) -> None:
        """Swap in a new policy atomically: every access sees all of the old policy or all of
        the new one. Returns once no access can still be using the old one."""
        new = _Table(policy, self.bar, self.size, self.page_size)
        with self._lock:
            old = ffi.new("struct mf_table **")
            rc = lib.mf_filter_update(self._f, new.ptr, old)
            if rc != 0:
                new.free()
                raise RuntimeError(
                    "update() from inside an access of a filter (a callback backend) would "
                    "wait for itself"
                    if rc == lib.MF_EBUSY
                    else f"update rejected by the core (code {rc})"
                )
            retired = self._table
            counts = dict(zip(retired.names, retired.counters(), strict=True))
            self._carry = {
                n: self._carry.get(n, 0) + counts.get(n, 0) for n in new.names if n in counts
            }
            self._table = new
            retired.free()

    def counters(self) -> dict[str, int]:
        """Accesses that touched a byte each rule owns, per rule name (carried across
        update() by name)."""
        with self._lock:
            names = self._table.names
            out = ffi.new("uint64_t[]", max(len(names), 1))
            lib.mf_filter_counters(self._f, out, len(names))
            return {n: self._carry.get(n, 0) + int(out[i]) for i, n in enumerate(names)}

    # ---- events -------------------------------------------------------------------------

    def drain_events(self) -> list[Event]:
        """Take the recorded events out of the ring, oldest first."""
        n = lib.mf_events_pending(self._f)
        if n == 0:
            return []
        buf = ffi.new("struct mf_event[]", n)
        got = lib.mf_drain_events(self._f, buf, n)
        return [
            Event(
                seq=e.seq,
                bar=e.bar,
                offset=e.offset,
                width=e.width,
                is_write=bool(e.is_write),
                value=e.value,
                outcome=OUTCOME_BY_CODE[e.outcome],
                rule=ffi.string(e.rule).decode(),
                detail=ffi.string(e.detail).decode(errors="replace"),
                time_ns=e.time_ns,
                label=self.label,
            )
            for e in buf[0:got]
        ]

    @property
    def dropped_events(self) -> int:
        """Events lost because the ring was full."""
        return int(lib.mf_events_dropped(self._f))

    def table_footprint(self) -> int:
        """Bytes of C memory the current compiled table occupies."""
        return int(lib.mf_table_footprint(self._table.ptr))
