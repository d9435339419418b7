"""`BarFilter`: one BAR, its policy, its backend and its redirect targets, over the C core.

The C core validates every range and limit (for C callers too) and decides the access; this
module adds type checks and turns the core's codes and messages into exceptions
(`mmiofilter._binding` is the seam). cffi releases the GIL around each C call, so several vCPU
threads can be inside the core at once.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Mapping
from typing import Any, NoReturn

from . import _binding as cb
from ._core import ffi, lib
from .backends import Backend
from .errors import AccessError, BackendError, PolicyError, is_int
from .guards import Guard
from .layout import Layout
from .results import Event, Outcome, Result
from .rules import Policy, Rule

DEFAULT_RING_CAPACITY = 1024
_WIDTHS = cb.WIDTHS
_OUTCOME = cb.OUTCOME_BY_CODE


def _guard_spec(g: Guard) -> Any:
    """`struct mf_guard_spec` for a guard (the guard fills it); the caller keeps it alive
    until compiled."""
    spec = ffi.new("struct mf_guard_spec *")
    g.fill_spec(spec)
    return spec


class _Table:
    """A compiled table before it is handed to a filter (which then owns and frees it)."""

    def __init__(
        self, policy: Policy, bar: int, size: int, page_size: int, targets: Mapping[str, int]
    ) -> None:
        if not isinstance(policy, Policy):
            raise PolicyError(f"expected a Policy, not {type(policy).__name__}")
        rules: tuple[Rule, ...] = policy.for_bar(bar)
        specs = {i: _guard_spec(r) for i, r in enumerate(rules) if isinstance(r, Guard)}
        crules = cb.RuleArray(rules, targets=targets, guard_specs=specs)
        cfg = cb.make_config(size, page_size, policy.fill, policy.partial, policy.unaligned)
        try:
            self.ptr: Any = cb.compile_table(crules, cfg)
        except PolicyError as e:  # the core names the rule; say which BAR it belongs to
            raise PolicyError(f"BAR{bar}: {e}") from None
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
    `targets` are the backends redirect rules name (`Rule(..., "redirect", target="config")`):
    the VMM's config-space emulation, say. `label` names the filter in its events and audit
    records (e.g. "0000:65:00.0/bar0").
    """

    def __init__(
        self,
        size: int,
        policy: Policy,
        backend: Backend,
        *,
        bar: int = 0,
        page_size: int | None = None,
        targets: Mapping[str, Backend] | None = None,
        ring_capacity: int = DEFAULT_RING_CAPACITY,
        label: str = "",
    ) -> None:
        if not isinstance(label, str) or len(label) > 256 or not label.isprintable():
            raise ValueError(f"label {label!r} is not printable text of at most 256 characters")
        self.label = label
        page_size = mmap.PAGESIZE if page_size is None else page_size
        for what, v, want in (
            ("BAR size", size, "an integer in 1..2**64-1"),
            ("page size", page_size, "a power of two >= 4096"),
            ("bar", bar, f"a BAR index 0..{cb.NUM_BARS - 1}"),
            ("ring_capacity", ring_capacity, f"an integer in 1..{cb.RING_MAX}"),
        ):
            if not is_int(v):
                raise ValueError(f"{what} {v!r} is not {want}")
        if not isinstance(backend, Backend):
            raise TypeError(f"expected a backend, not {type(backend).__name__}")
        targets = {} if targets is None else targets
        if not isinstance(targets, Mapping):
            raise TypeError(f"targets must be a mapping of names to backends, not {targets!r}")
        for name, t in targets.items():
            if not isinstance(name, str) or not (name.isidentifier() and name.isascii()):
                raise ValueError(f"target name {name!r} is not an identifier")
            if not isinstance(t, Backend):
                raise TypeError(f"target {name!r}: expected a backend, not {type(t).__name__}")
        self.size: int = size
        self.page_size: int = page_size
        self.bar: int = bar
        self.backend = backend
        self.targets: dict[str, Backend] = dict(targets)
        self._target_index = {name: i for i, name in enumerate(self.targets)}
        self._lock = threading.Lock()  # serializes update() with counters()
        self._local = threading.local()  # per-thread access/result structs for the C calls
        self._carry: dict[str, int] = {}  # counts from tables that update() retired
        be = ffi.new("struct mf_backend *")
        backend._configure(be, size)
        tbes = []
        for t in self.targets.values():
            tbe = ffi.new("struct mf_backend *")
            t._configure(tbe, 0)  # how much of it redirect rules reach, the core checks
            tbes.append(tbe)
        self._table = _Table(policy, bar, size, page_size, self._target_index)
        ptr = cb.new_filter(be, tbes, bar, ring_capacity, self._table.ptr)
        self._f = ffi.gc(ptr, lib.mf_filter_free)

    # ---- accesses ----------------------------------------------------------------------

    def _result_buf(self) -> Any:
        try:
            return self._local.res
        except AttributeError:
            self._local.res = ffi.new("struct mf_result *")
            return self._local.res

    def _validate(self, offset: object, width: object, is_write: bool, value: object) -> None:
        """The core's access checks, for a batch that must be refused before any of it runs."""
        if type(width) is not int or width not in _WIDTHS:
            self._fail(lib.MF_EWIDTH, offset, width, value)
        if type(offset) is not int or offset < 0 or offset + width > self.size:
            self._fail(lib.MF_ERANGE, offset, width, value)
        if is_write and (type(value) is not int or not 0 <= value < 1 << (8 * width)):
            self._fail(lib.MF_EVALUE, offset, width, value)

    def _do(self, offset: int, width: int, is_write: bool, value: int) -> Any:
        # The path a Python VMM's exit handler takes for every trapped access: the core
        # validates; Python only turns a type it cannot pass, or a refusal, into AccessError.
        try:
            res = self._local.res
        except AttributeError:
            res = self._result_buf()
        if type(offset) is not int or type(width) is not int or type(value) is not int:
            self._validate(offset, width, is_write, value)
        try:
            rc = lib.mf_access_scalar(
                self._f, offset, width, is_write, value if is_write else 0, res
            )
        except OverflowError:  # an integer no C type holds: find the check it fails
            self._validate(offset, width, is_write, value)
            raise
        if rc:
            self._fail(rc, offset, width, value)
        return res

    def _fail(self, rc: int, offset: object, width: object, value: object) -> NoReturn:
        where = f"BAR{self.bar}"
        if rc == lib.MF_EWIDTH:
            raise AccessError(f"{where}: width {width!r} is not 1, 2, 4 or 8")
        shown = f"{offset:#x}" if type(offset) is int else repr(offset)
        if rc == lib.MF_ERANGE:
            raise AccessError(
                f"{where}: {width}-byte access at offset {shown} is outside the BAR "
                f"[0, {self.size:#x})"
            )
        if rc == lib.MF_EVALUE:
            raise AccessError(
                f"{where}: value {value!r} written at offset {shown} does not fit in "
                f"{width} byte(s)"
            )
        where = f"{where}: {width}-byte access at offset {shown}"
        if rc == lib.MF_EDEVICE:
            self.backend._raise_failure(where)
        if rc == lib.MF_ETARGET:
            for name, t in self.targets.items():
                if t._has_failure():
                    t._raise_failure(f"{where}, redirect target {name!r}")
            raise BackendError(f"{where}: a redirect target failed")
        raise RuntimeError(f"{where}: {cb.strerror(rc)} (code {rc})")

    def read(self, offset: int, width: int) -> int:
        """Read `width` bytes at `offset`, as the guest sees them."""
        value: int = self._do(offset, width, False, 0).value
        return value

    def write(self, offset: int, width: int, value: int) -> Outcome:
        """Write `value` (`width` bytes, little-endian) at `offset`; say what reached the device."""
        outcome: Outcome = _OUTCOME[self._do(offset, width, True, value).outcome]
        return outcome

    def access(self, offset: int, width: int, is_write: bool, value: int = 0) -> Result:
        """One access, with its outcome and value (docs/contract-details.md)."""
        res = self._do(offset, width, bool(is_write), value)
        return Result(_OUTCOME[res.outcome], int(res.value))

    def access_many(self, accesses: list[tuple[int, int, bool, int]]) -> list[Result]:
        """A batch of `(offset, width, is_write, value)` decided under one policy table. An
        invalid access refuses the whole batch before any of it runs."""
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
                self._fail(res[i].status, accesses[i][0], accesses[i][1], accesses[i][3])
            out.append(Result(_OUTCOME[res[i].outcome], int(res[i].value)))
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
        new = _Table(policy, self.bar, self.size, self.page_size, self._target_index)
        with self._lock:
            old = ffi.new("struct mf_table **")
            err = ffi.new("struct mf_error *")
            rc = lib.mf_filter_update(self._f, new.ptr, old, err)
            if rc != 0:
                new.free()
                if rc == lib.MF_EBUSY:
                    raise RuntimeError(cb.error_text(err))
                cb.raise_error(err)
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
                outcome=_OUTCOME[e.outcome],
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
