"""A minimal KVM virtual machine whose guest reaches a filtered BAR.

Guest-physical layout: RAM from 0 (programs at 0x10000 * (vCPU + 1)), the firmware in the
last 64 KiB below 4 GiB (read-only), and each BAR at the address the caller gives. A BAR's
direct areas are memory slots pointing into the BAR's own mapping (the memory backend's
buffer), so the guest reaches them with no exit. Its read-direct areas are read-only slots
(KVM_MEM_READONLY) over a read-only alias of that mapping: reads are served from it, each
write exits as KVM_EXIT_MMIO with its exact width and data. Without KVM_CAP_READONLY_MEM (or
an alias) they are trapped like the rest. Its trapped pages have no slot, so every
access to them is an MMIO exit, which the C vCPU loop (csrc/kvm.c) answers with the filter
without coming back to Python (`in_c=False` answers them here instead, through the same
mf_access_mmio). Port I/O (the guest's transcript), HLT and errors come back here; an error
stops the vCPU with the instruction pointer and exit reason in `RunResult.error`. Page-crossing
accesses, unsupported instructions and stopping: docs/kvm.md.

One thread per vCPU; all vCPUs share the filters. `update_policy` pauses every vCPU (an
immediate-exit flag and a SIGUSR1 to its thread), swaps the policy, remaps the slots to the new
layout and resumes them. A run that times out stops and joins its threads before it returns.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .._binding import strerror
from .._core import ffi, lib
from ..backends import MemoryBackend
from ..filter import BarFilter
from ..rules import Policy
from . import firmware
from .program import Program, program_address

FOUR_GIB = 1 << 32
DEBUG_PORT, EXIT_PORT = 0xE9, 0xF4
HOST_PAGE = mmap.PAGESIZE
KVM_CHECK_EXTENSION = 0xAE03  # _IO(KVMIO, 0x03), linux/kvm.h
KVM_CAP_READONLY_MEM = 81  # linux/kvm.h
MREMAP_MAYMOVE, PROT_READ = 1, 1  # linux/mman.h, asm-generic/mman-common.h
KVM_EXIT_INTERNAL_ERROR = 17  # linux/kvm.h
# linux/kvm.h, KVM_INTERNAL_ERROR_*: what run->internal.suberror means
INTERNAL_SUBERRORS = {
    1: "KVM_INTERNAL_ERROR_EMULATION: the instruction cannot be emulated",
    2: "KVM_INTERNAL_ERROR_SIMUL_EX: an exception while delivering one",
    3: "KVM_INTERNAL_ERROR_DELIVERY_EV: an event could not be delivered",
    4: "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON",
}


def filter_failure(index: int, ex: Any, code: int) -> str:
    """What a vCPU says when the filter fails on an MMIO exit: the core's text for its MF_E*
    code (mf_strerror), as `BarFilter` says it."""
    what = "write" if ex.is_write else "read"
    return (
        f"vCPU {index}: the filter failed on the MMIO {what} at {int(ex.address):#x} "
        f"(+{int(ex.size)}): {strerror(code)} (code {code})"
    )


class KvmUnavailable(OSError):
    """No usable /dev/kvm (or no KVM support in this build)."""


class GuestError(RuntimeError):
    """The guest did something the machine cannot continue from."""


def kvm_available() -> str | None:
    """None when KVM can run guests here, else the reason it cannot."""
    if not hasattr(lib, "mf_kvm_open"):
        return "this build of mmiofilter has no KVM support (not Linux)"
    fd = lib.mf_kvm_open()
    if fd < 0:
        return f"/dev/kvm: {os.strerror(-fd)}"
    os.close(fd)
    return None


def _address(buf: Any) -> int:
    return int(ffi.cast("uintptr_t", ffi.from_buffer(buf)))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mremap.restype = ctypes.c_void_p
_libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def readonly_alias(host: int, size: int) -> tuple[int | None, str | None]:
    """A second, read-only mapping of the same pages as the shared mapping at `host`
    (mremap with old_size 0, then mprotect PROT_READ), or (None, why) when there is none:
    a private mapping or one mremap refuses (a VM_PFNMAP device mapping)."""
    addr = _libc.mremap(host, 0, size, MREMAP_MAYMOVE)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        return None, f"no read-only alias of the BAR's mapping: {os.strerror(ctypes.get_errno())}"
    if _libc.mprotect(addr, size, PROT_READ) != 0:
        why = os.strerror(ctypes.get_errno())
        _libc.munmap(addr, size)
        return None, f"mprotect(PROT_READ) of the BAR's alias: {why}"
    return int(addr), None


@dataclass
class BarWindow:
    """A BAR placed at a guest-physical address: direct areas mapped, the rest trapped."""

    machine: Machine
    gpa: int
    size: int
    filter: BarFilter | None  # None: a "floor" window answering `constant` (no filter)
    constant: int = 0
    host: int = 0  # address of the BAR's mapping, for the direct slots
    slots: list[int] = field(default_factory=list)
    # a read-only alias of the BAR's mapping, for the read-direct slots; None: they are trapped
    host_ro: int | None = None
    read_direct_note: str | None = None  # why read-direct pages are trapped here, if they are
    read_only_slots: list[int] = field(default_factory=list)

    def remap(self) -> None:
        """Make the memory slots match the filter's current layout: direct areas read-write,
        read-direct areas read-only, trapped pages none."""
        for slot in [*self.slots, *self.read_only_slots]:
            self.machine._set_memory(slot, 0, 0, 0)  # size 0 deletes the slot
            self.machine._free_slots.append(slot)
        self.slots, self.read_only_slots = [], []
        if self.filter is None:
            return
        for off, length in self.filter.layout.direct:
            slot = self.machine._new_slot()
            self.machine._set_memory(slot, self.gpa + off, length, self.host + off)
            self.slots.append(slot)
        if self.host_ro is None:
            return
        for off, length in self.filter.layout.read_direct:
            slot = self.machine._new_slot()
            self.machine._set_memory(slot, self.gpa + off, length, self.host_ro + off, True)
            self.read_only_slots.append(slot)

    def release(self) -> None:
        """Unmap the read-only alias (the VM no longer uses it)."""
        if self.host_ro is not None:
            _libc.munmap(self.host_ro, self.size)
            self.host_ro = None


@dataclass
class RunResult:
    """What one vCPU did: its transcript and its exits."""

    vcpu: int
    transcript: str = ""
    exits: int = 0
    mmio_in_c: int = 0  # MMIO exits the C loop answered
    mmio_in_python: int = 0  # MMIO exits answered here (the Python loop)
    error: str | None = None


class _Vcpu:
    def __init__(self, machine: Machine, index: int) -> None:
        run = ffi.new("void **")
        size = ffi.new("size_t *")
        fd = lib.mf_kvm_create_vcpu(machine._kvm, machine._vm, index, run, size)
        if fd < 0:
            raise KvmUnavailable(f"KVM_CREATE_VCPU {index}: {os.strerror(-fd)}")
        # a CPUID, as a VMM gives its guests: what KVM supports here
        rc = lib.mf_kvm_set_cpuid(machine._kvm, fd)
        if rc < 0:
            os.close(fd)
            raise KvmUnavailable(f"KVM_SET_CPUID2: {os.strerror(-rc)}")
        if index:
            rc = lib.mf_kvm_set_rsi(fd, index)  # the firmware's program selector
            if rc < 0:
                os.close(fd)
                raise KvmUnavailable(f"KVM_SET_REGS: {os.strerror(-rc)}")
        self.machine, self.index, self.fd, self.run = machine, index, fd, run[0]
        self.run_size = size[0]
        self.result = RunResult(index)
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()  # the run timed out: leave the loop at the next pause
        self.pause_requested = threading.Event()
        self.paused = threading.Event()
        self.resumed = threading.Event()
        # the result of `_python_mmio`'s access, made once: that path is taken on every exit
        self._res = ffi.new("struct mf_result *")

    def loop(self, in_c: bool) -> None:
        stats = ffi.new("struct mf_kvm_stats *")
        ex = ffi.new("struct mf_kvm_exit *")
        out: list[str] = []
        res = self.result
        try:
            while True:
                windows, n = self.machine._c_windows() if in_c else (ffi.NULL, 0)
                lib.mf_kvm_run(self.fd, self.run, windows, n, stats, ex)
                if ex.kind == lib.MF_KVM_IO:
                    if ex.address == DEBUG_PORT and ex.is_write:
                        out.append(chr(ex.value & 0xFF))
                    elif ex.address == EXIT_PORT and ex.is_write:
                        return
                    elif not ex.is_write:
                        lib.mf_kvm_complete(self.run, (1 << (8 * ex.size)) - 1)
                elif ex.kind == lib.MF_KVM_MMIO:
                    self._python_mmio(ex)
                elif ex.kind == lib.MF_KVM_PAUSED:
                    if self.stop.is_set():
                        return  # run() timed out and says so in the result
                    if self.pause_requested.is_set():
                        self.paused.set()
                        self.resumed.wait()
                        self.resumed.clear()
                elif ex.kind == lib.MF_KVM_HLT:
                    return
                else:
                    raise GuestError(self._stop_reason(ex))
        except Exception as e:  # the caller sees it in the result, the thread ends cleanly
            if res.error is None:
                res.error = str(e)
        finally:
            res.transcript = "".join(out)
            res.exits = int(stats.exits)
            res.mmio_in_c = int(stats.mmio_handled)

    def _stop_reason(self, ex: Any) -> str:
        """What stopped this vCPU, with where the guest was."""
        at = f"vCPU {self.index} stopped at rip {int(ex.rip):#x}"
        if ex.kind == lib.MF_KVM_SHUTDOWN:
            return f"{at}: the guest triple-faulted (KVM_EXIT_SHUTDOWN)"
        if ex.kind == lib.MF_KVM_INTERNAL:
            sub = INTERNAL_SUBERRORS.get(int(ex.suberror), "unknown")
            return (
                f"{at}: KVM_EXIT_INTERNAL_ERROR (exit reason {KVM_EXIT_INTERNAL_ERROR}, "
                f"suberror {int(ex.suberror)}, {sub}): KVM could not complete this instruction; "
                "instructions it cannot emulate are unsupported on trapped pages (docs/kvm.md)"
            )
        if ex.kind == lib.MF_KVM_STACK:
            return (
                f"{at}: MMIO {'write' if ex.is_write else 'read'} at {int(ex.address):#x}, the "
                "guest's stack pointer: a stack on a trapped page is unsupported (KVM reports "
                "one access of pushad, call, int...; docs/kvm.md)"
            )
        if ex.kind == lib.MF_KVM_ERROR:
            return f"vCPU {self.index}: KVM_RUN failed: {os.strerror(-int(ex.error))}"
        if ex.kind == lib.MF_KVM_FILTER:
            return filter_failure(self.index, ex, int(ex.error))
        return f"{at}: unexpected exit reason {int(ex.reason)}"

    def _python_mmio(self, ex: Any) -> None:
        w = self.machine.window_at(int(ex.address), int(ex.size))
        if w is None:
            raise GuestError(f"MMIO at {int(ex.address):#x} outside every BAR")
        if w.filter is None:
            if not ex.is_write:
                lib.mf_kvm_complete(self.run, w.constant & ((1 << (8 * int(ex.size))) - 1))
        else:  # as the C loop does: mf_access_mmio (page-crossing fragments, joined writes)
            rc = lib.mf_kvm_mmio(w.filter._f, int(ex.address) - w.gpa, ex, self.run, self._res)
            if rc != 0:
                raise GuestError(filter_failure(self.index, ex, rc))
        self.result.mmio_in_python += 1


class Machine:
    """A VM with RAM, the guest firmware, and filtered BARs. One `run` per machine."""

    def __init__(self, *, ram_size: int = 4 << 20, map_read_direct: bool = True) -> None:
        reason = kvm_available()
        if reason is not None:
            raise KvmUnavailable(reason)
        self._kvm = lib.mf_kvm_open()
        vm = lib.mf_kvm_create_vm(self._kvm)
        if vm < 0:
            os.close(self._kvm)
            raise KvmUnavailable(f"KVM_CREATE_VM: {os.strerror(-vm)}")
        self._vm = vm
        self.map_read_direct = map_read_direct  # False: read-direct pages trap (as vfio does)
        try:  # read-only memory slots: what maps read-direct pages (KVM_MEM_READONLY)
            self.readonly_mem = fcntl.ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0
        except OSError:
            self.readonly_mem = False
        self._slot_ids = 0
        # KVM has a few hundred slot ids (KVM_CAP_NR_MEMSLOTS): a policy swap that changes the
        # layout deletes the window's slots, and their ids must be used again
        self._free_slots: list[int] = []
        self.windows: list[BarWindow] = []
        self._vcpus: list[_Vcpu] = []
        self._c_cache: tuple[Any, int] | None = None
        self.ram = mmap.mmap(-1, ram_size)
        self._set_memory(self._new_slot(), 0, ram_size, _address(self.ram))
        self.rom = mmap.mmap(-1, firmware.SIZE)
        self.rom[:] = firmware.image()
        self._set_memory(
            self._new_slot(), FOUR_GIB - firmware.SIZE, firmware.SIZE, _address(self.rom), True
        )
        # SIGUSR1 interrupts KVM_RUN in a vCPU thread; Python's handler does nothing else.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, lambda *_: None)

    # ---- memory ---------------------------------------------------------------------------

    def _new_slot(self) -> int:
        if self._free_slots:
            return self._free_slots.pop()
        self._slot_ids += 1
        return self._slot_ids - 1

    def _set_memory(
        self, slot: int, gpa: int, size: int, host: int, readonly: bool = False
    ) -> None:
        rc = lib.mf_kvm_set_memory(self._vm, slot, gpa, size, ffi.cast("void *", host), readonly)
        if rc < 0:
            raise KvmUnavailable(
                f"KVM_SET_USER_MEMORY_REGION slot {slot} [{gpa:#x}, +{size:#x}): {os.strerror(-rc)}"
            )

    def _check_window(self, gpa: int, size: int) -> None:
        if gpa % HOST_PAGE or gpa < len(self.ram) or gpa + size > FOUR_GIB - firmware.SIZE:
            raise ValueError(
                f"BAR at {gpa:#x} (+{size:#x}) must be page-aligned, above RAM and below the "
                "firmware (the guest is 32-bit)"
            )
        for w in self.windows:
            if gpa < w.gpa + w.size and w.gpa < gpa + size:
                raise ValueError(f"BAR at {gpa:#x} overlaps the one at {w.gpa:#x}")

    def add_bar(self, gpa: int, f: BarFilter) -> BarWindow:
        """Place the filtered BAR at `gpa`. Its backend must be a MemoryBackend over a
        page-aligned mapping (an mmap of a memfd, of resourceN, of a VFIO region)."""
        self._check_window(gpa, f.size)
        if not isinstance(f.backend, MemoryBackend):
            raise ValueError("direct areas need the BAR's memory: use a MemoryBackend")
        host = _address(f.backend.buffer)
        if host % HOST_PAGE or f.page_size % HOST_PAGE:
            raise ValueError("the BAR's buffer and page size must be host-page aligned (mmap)")
        w = BarWindow(self, gpa, f.size, f, host=host)
        if not self.map_read_direct:
            w.read_direct_note = "read-direct mapping turned off: read-direct pages trap"
        elif not self.readonly_mem:
            w.read_direct_note = "KVM has no KVM_CAP_READONLY_MEM: read-direct pages trap"
        else:
            w.host_ro, w.read_direct_note = readonly_alias(host, f.size)
        w.remap()
        self.windows.append(w)
        self._c_cache = None
        return w

    def add_floor(self, gpa: int, size: int, constant: int = 0) -> BarWindow:
        """A window with no filter and no memory: every access exits and reads `constant`.
        The bench's floor: what an exit costs with nothing to decide."""
        self._check_window(gpa, size)
        w = BarWindow(self, gpa, size, None, constant)
        self.windows.append(w)
        self._c_cache = None
        return w

    def window_at(self, gpa: int, size: int) -> BarWindow | None:
        for w in self.windows:
            if w.gpa <= gpa and gpa + size <= w.gpa + w.size:
                return w
        return None

    def _c_windows(self) -> tuple[Any, int]:
        if self._c_cache is None:
            arr = ffi.new("struct mf_kvm_window[]", max(len(self.windows), 1))
            for c, w in zip(arr, self.windows, strict=False):
                c.gpa, c.size, c.constant = w.gpa, w.size, w.constant
                c.filter = w.filter._f if w.filter is not None else ffi.NULL
            self._c_cache = (arr, len(self.windows))
        return self._c_cache

    # ---- running --------------------------------------------------------------------------

    def run(
        self, programs: Sequence[Program], *, in_c: bool = True, timeout: float = 120.0
    ) -> list[RunResult]:
        """Run one vCPU per program until each ends; `in_c=False` answers MMIO in Python."""
        if self._vcpus:
            raise RuntimeError("a Machine runs once: create another one")
        for i, prog in enumerate(programs):
            data = prog.encode()
            at = program_address(i)
            if at + len(data) > len(self.ram):
                raise ValueError(f"program {i} does not fit in guest RAM")
            self.ram[at : at + len(data)] = data
            self._vcpus.append(_Vcpu(self, i))
        for v in self._vcpus:
            v.thread = threading.Thread(target=v.loop, args=(in_c,), name=f"vcpu{v.index}")
            v.thread.start()
        for v in self._vcpus:
            assert v.thread is not None
            v.thread.join(timeout)
            if v.thread.is_alive():
                v.result.error = f"vCPU {v.index} still running after {timeout} s: stopped"
                self._stop(v)
        return [v.result for v in self._vcpus]

    def _stop(self, v: _Vcpu) -> None:
        """Take a vCPU out of the guest for good and join its thread: only then may its file
        descriptors be closed. A kick can land before the thread enters KVM_RUN, so kick
        until it has left."""
        v.stop.set()
        v.resumed.set()  # a vCPU waiting in a pause goes on to see the stop
        while v.thread is not None and v.thread.is_alive():
            self._kick(v)
            v.thread.join(0.05)
        lib.mf_kvm_resume(v.run)

    def _kick(self, v: _Vcpu) -> None:
        lib.mf_kvm_pause(v.run)
        if v.thread is not None and v.thread.ident is not None and v.thread.is_alive():
            signal.pthread_kill(v.thread.ident, signal.SIGUSR1)

    @contextmanager
    def paused(self, timeout: float = 10.0) -> Iterator[None]:
        """Every running vCPU out of the guest and waiting, for the duration."""
        running = [v for v in self._vcpus if v.thread is not None and v.thread.is_alive()]
        for v in running:
            v.pause_requested.set()
            self._kick(v)
        try:
            for v in running:
                # a vCPU may end meanwhile: then it does not pause, and need not
                while not v.paused.wait(0.05):
                    if v.thread is None or not v.thread.is_alive():
                        break
                    self._kick(v)
                    timeout -= 0.05
                    if timeout <= 0:
                        raise GuestError(f"vCPU {v.index} did not pause")
            yield
        finally:
            for v in running:
                v.pause_requested.clear()
                v.paused.clear()
                lib.mf_kvm_resume(v.run)
                v.resumed.set()

    def update_policy(self, window: BarWindow, policy: Policy) -> None:
        """Swap a BAR's policy with every vCPU paused, remapping the pages whose trapping
        changed: no vCPU sees the new table through the old mappings or the reverse. Each
        call pauses the guest: calls back to back, with no pause between them, leave the
        vCPUs no time in the guest."""
        if window.filter is None:
            raise ValueError("a floor window has no policy")
        with self.paused():
            window.filter.update(policy)
            window.remap()

    def close(self) -> None:
        """Release the VM. The filters stay usable; their BAR memory is no longer mapped."""
        for v in self._vcpus:
            self._stop(v)  # no thread may run KVM_RUN on a closed (or reused) descriptor
        for v in self._vcpus:
            os.close(v.fd)
        os.close(self._vm)
        os.close(self._kvm)
        for w in self.windows:
            w.release()
        # windows point back at the machine: drop them so the filters (and the BAR buffers
        # their backends pin) are freed as soon as the caller lets go of them
        self.windows.clear()
        self._vcpus.clear()
        self._c_cache = None

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
