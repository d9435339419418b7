"""Filters over fake devices, in plain Python: usable under `@given`, in unittest, in a script.

- `bar_filter(policy, ...)`: a context manager giving a `BarFilter` over a fake device (a new
  one unless `device` is given, closed at the end of the block) with any backend: "memory",
  "fd", "callback" (every device access logged in the device's `log`) or a Backend of your own.
- `device_of(f)`: the fake device under a filter these helpers made.
- `model_filter(policy, ...)`: the pure-Python reference model over a fresh `ModelDevice` (its
  `device.log` lists the device accesses), to compare a component's results against.
- `BarFilterFactory`, `ModelFilterFactory`: the same as callables that make a fresh filter on
  every call; what the pytest plugin's factory fixtures are.

A filter outliving its block is safe: the fake device's memory and memfd stay until the filter
is gone (see `mmiofilter.testing.devices`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..backends import Backend
from ..filter import DEFAULT_RING_CAPACITY, BarFilter
from ..rules import Policy, Rule
from .devices import DEFAULT_SIZE, DeviceFactory, FakeDevice
from .model import ModelDevice, ModelFilter

#: Page size of the helpers' filters. Not the host's (the filter's default): a test's layout
#: should not depend on the machine it runs on.
DEFAULT_PAGE_SIZE = 4096
#: How a filter reaches its fake device when `backend` names a kind.
BACKEND_KINDS = ("memory", "fd", "callback")

# The fake device under each filter the helpers made, and the fake redirect targets they made
# for it, for `device_of`. Weak: a filter the test drops is forgotten with it.
_devices_of: weakref.WeakKeyDictionary[BarFilter, FakeDevice] = weakref.WeakKeyDictionary()
_targets_of: weakref.WeakKeyDictionary[BarFilter, dict[str, FakeDevice]] = (
    weakref.WeakKeyDictionary()
)
#: Smallest fake redirect target: a PCI Express config space (PCI_CFG_SPACE_EXP_SIZE).
TARGET_SIZE = 4096


def as_policy(policy: Policy | Iterable[Rule]) -> Policy:
    """`policy` itself, or a default Policy of the rules given."""
    return policy if isinstance(policy, Policy) else Policy(policy)


def backend_of(device: FakeDevice, kind: str) -> Backend:
    """The backend of `kind` ("memory", "fd", "callback") over `device`."""
    if kind == "memory":
        return device.memory_backend()
    if kind == "fd":
        return device.fd_backend()
    if kind == "callback":
        return device.callback_backend()
    raise ValueError(f"backend {kind!r} is not one of {BACKEND_KINDS} or a Backend")


def _fake_targets(
    policy: Policy, bar: int, new_device: DeviceFactory | None
) -> dict[str, FakeDevice]:
    """A fake device for each redirect target the policy's rules of `bar` name, sized to hold
    every byte a rule sends there (at least `TARGET_SIZE`)."""
    need: dict[str, int] = {}
    for r in policy.for_bar(bar):
        if r.action == "redirect":
            end = r.target_offset + r.size
            need[r.target] = max(need.get(r.target, TARGET_SIZE), end)
    make = new_device if new_device is not None else FakeDevice
    return {name: make(-(-size // TARGET_SIZE) * TARGET_SIZE) for name, size in need.items()}


def _make(
    new_device: DeviceFactory | None,
    policy: Policy | Iterable[Rule],
    size: int | None,
    page_size: int,
    backend: str | Backend,
    device: FakeDevice | None,
    bar: int,
    ring_capacity: int,
    targets: Mapping[str, Backend] | None,
) -> tuple[BarFilter, FakeDevice | None]:
    """(filter, the fake device made here for it or None)."""
    if device is not None and size is not None and size > device.size:
        raise ValueError(f"a BAR of {size:#x} bytes does not fit in {device!r}")
    if not isinstance(backend, (str, Backend)):
        raise TypeError(f"backend {backend!r} is neither a kind {BACKEND_KINDS} nor a Backend")
    if isinstance(backend, str) and backend not in BACKEND_KINDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKEND_KINDS} or a Backend")
    made: FakeDevice | None = None
    if isinstance(backend, Backend):
        chosen = backend
        bar_size = size if size is not None else (device.size if device else DEFAULT_SIZE)
    else:
        if device is None:
            n = DEFAULT_SIZE if size is None else size
            made = device = new_device(n) if new_device is not None else FakeDevice(n)
        bar_size = device.size if size is None else size
        chosen = backend_of(device, backend)
    policy = as_policy(policy)
    fakes: dict[str, FakeDevice] = {}
    if targets is None:
        kind = backend if isinstance(backend, str) else "memory"
        fakes = _fake_targets(policy, bar, new_device)
        targets = {name: backend_of(d, kind) for name, d in fakes.items()}
    extra: dict[str, Any] = {"targets": dict(targets)} if targets else {}
    try:
        f = BarFilter(
            bar_size,
            policy,
            chosen,
            bar=bar,
            page_size=page_size,
            ring_capacity=ring_capacity,
            **extra,  # redirect targets (given only when there are some)
        )
    except BaseException:
        for d in [made, *fakes.values()]:
            if d is not None:
                d.close(warn=False)
        raise
    if device is not None:
        _devices_of[f] = device
    if fakes:
        _targets_of[f] = fakes
    return f, made


@contextmanager
def bar_filter(
    policy: Policy | Iterable[Rule] = (),
    *,
    size: int | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    backend: str | Backend = "memory",
    device: FakeDevice | None = None,
    bar: int = 0,
    ring_capacity: int = DEFAULT_RING_CAPACITY,
    targets: Mapping[str, Backend] | None = None,
) -> Iterator[BarFilter]:
    """A filter of `policy` (a Policy, or rules for a default one) over `device`, or over a new
    fake device of `size` bytes (default `DEFAULT_SIZE`) that is closed at the end of the
    block. `backend` is "memory", "fd", "callback" (logged in the device's `log`) or a Backend
    of your own; `targets` are redirect targets by name, passed on to `BarFilter`."""
    f, made = _make(None, policy, size, page_size, backend, device, bar, ring_capacity, targets)
    mine = [made] if made is not None else []
    mine += _targets_of.get(f, {}).values()
    try:
        yield f
    finally:
        del f
        for d in mine:
            # Released now unless the caller still holds the filter (`with ... as f` leaves f
            # bound): then when the filter goes. Never under a live filter.
            d.close(warn=False)


def device_of(f: BarFilter, target: str | None = None) -> FakeDevice:
    """The fake device `f` was made over, by `bar_filter` or a `BarFilterFactory`; with
    `target`, the fake device the helpers made for that redirect target (a policy with redirect
    rules and no `targets` given gets one per target name)."""
    try:
        if target is not None:
            return _targets_of[f][target]
        return _devices_of[f]
    except (KeyError, TypeError):
        raise LookupError("this filter was not made over a fake device by these helpers") from None


def model_filter(
    policy: Policy | Iterable[Rule] = (),
    *,
    size: int = DEFAULT_SIZE,
    page_size: int = DEFAULT_PAGE_SIZE,
    bar: int = 0,
    ring_capacity: int = DEFAULT_RING_CAPACITY,
    initial: bytes | None = None,
) -> ModelFilter:
    """The reference model of `policy` over a fresh `ModelDevice` (`.device`, with its `log`).
    Nothing to clean up: it is plain Python."""
    return ModelFilter(
        size,
        as_policy(policy),
        ModelDevice(initial),
        bar=bar,
        page_size=page_size,
        ring_capacity=ring_capacity,
    )


class BarFilterFactory:
    """`make(policy, ...) -> BarFilter`, a fresh filter (and fake device) on every call; the
    arguments are `bar_filter`'s. Devices come from `devices` (a `DeviceFactory`), which closes
    those left when it is closed; filters are held weakly."""

    def __init__(self, devices: DeviceFactory | None = None) -> None:
        self._devices = devices if devices is not None else DeviceFactory()
        self._own_devices = devices is None
        self._made: weakref.WeakSet[BarFilter] = weakref.WeakSet()

    def __call__(
        self,
        policy: Policy | Iterable[Rule] = (),
        *,
        size: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        backend: str | Backend = "memory",
        device: FakeDevice | None = None,
        bar: int = 0,
        ring_capacity: int = DEFAULT_RING_CAPACITY,
        targets: Mapping[str, Backend] | None = None,
    ) -> BarFilter:
        f, _ = _make(
            self._devices, policy, size, page_size, backend, device, bar, ring_capacity, targets
        )
        self._made.add(f)
        return f

    def device(self, f: BarFilter) -> FakeDevice:
        """The fake device `f` was made over."""
        if f not in self._made:
            raise LookupError("this filter was not made by this factory over a fake device")
        return device_of(f)

    def close(self) -> None:
        """Forget the filters; close the devices when this factory made its own."""
        self._made = weakref.WeakSet()
        if self._own_devices:
            self._devices.close()


class ModelFilterFactory:
    """`make(policy, ...) -> ModelFilter` over a fresh `ModelDevice` on every call; the
    arguments are `model_filter`'s."""

    def __init__(self) -> None:
        self._made: weakref.WeakSet[ModelFilter] = weakref.WeakSet()

    def __call__(
        self,
        policy: Policy | Iterable[Rule] = (),
        *,
        size: int = DEFAULT_SIZE,
        page_size: int = DEFAULT_PAGE_SIZE,
        bar: int = 0,
        ring_capacity: int = DEFAULT_RING_CAPACITY,
        initial: bytes | None = None,
    ) -> ModelFilter:
        m = model_filter(
            policy,
            size=size,
            page_size=page_size,
            bar=bar,
            ring_capacity=ring_capacity,
            initial=initial,
        )
        self._made.add(m)
        return m

    def device(self, m: ModelFilter) -> ModelDevice:
        """The `ModelDevice` under `m`, with its `log` of device accesses."""
        if m not in self._made or not isinstance(m.device, ModelDevice):
            raise LookupError("this model filter was not made by this factory")
        return m.device
