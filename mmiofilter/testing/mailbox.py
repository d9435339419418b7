"""FSP mailbox scenarios for tests, in plain Python: a driver's sends, a hostile guest's raw
register accesses interleaved with them, and the checks that the guard held.

A scenario is a list of steps. `Send` is one message through the open driver's send and
receive order (`mmiofilter.simulated.fsp.FspDriver`: kern_fsp_gh100.c), on a channel at its
EMEM offset (channel N at N * 1 KiB, fsp_emem_channels.h); its `injections` are raw accesses a
second vCPU makes between the driver's own register accesses. `Raw` is one access of its own.
`run_mailbox(bar, steps)` plays them against a filter (or any `bar` with `read`/`write`, such as
a guest driver's own test double) and says what each send got; `assert_fsp_guarded(fsp, deny)`
checks what reached the simulated FSP. A guest driver's own test can drive its driver through
`InterleavedBar` to meet the same hostile accesses.

Strategies drawing these steps are in `mmiofilter.testing.fsp_strategies`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..guards import NVDM_PRC
from ..simulated.fsp import (
    CHANNEL_BYTES,
    ERR_NOT_SUPPORTED,
    ERR_OK,
    NVDM_FSP_RESPONSE,
    Bar,
    FspDriver,
    FspTimeout,
    Response,
    SimFsp,
)


@dataclass(frozen=True)
class Raw:
    """One register access a hostile guest makes: `(offset, width, is_write, value)`."""

    offset: int
    width: int
    is_write: bool
    value: int = 0

    def as_access(self) -> tuple[int, int, bool, int]:
        return (self.offset, self.width, self.is_write, self.value)


@dataclass(frozen=True)
class Send:
    """One message the driver sends on `channel` (through EMEM port `port`, default the
    channel's), then, with `read_reply`, the FSP's reply it reads. `injections` are
    `(k, Raw)`: the raw access is made just before the driver's k-th register access."""

    nvdm_type: int
    payload: bytes = field(repr=False)
    channel: int = 0
    port: int | None = None
    read_reply: bool = True
    injections: tuple[tuple[int, Raw], ...] = ()

    def __repr__(self) -> str:  # payloads are long; their size says enough in a failing example
        inj = f", injections={list(self.injections)!r}" if self.injections else ""
        return (
            f"Send(nvdm_type={self.nvdm_type:#04x}, payload=<{len(self.payload)} bytes>, "
            f"channel={self.channel}, port={self.port}, read_reply={self.read_reply}{inj})"
        )


Step = Send | Raw


class InterleavedBar:
    """A `bar` (read/write) that makes the scheduled raw accesses just before the k-th access
    of whoever uses it: another vCPU racing a driver. `made` lists every raw access made with
    its result."""

    def __init__(self, bar: Bar, injections: Iterable[tuple[int, Raw]] = ()) -> None:
        self.bar = bar
        self.count = 0
        self._due: dict[int, list[Raw]] = {}
        for k, raw in injections:
            self._due.setdefault(k, []).append(raw)
        self.made: list[tuple[Raw, object]] = []

    def _inject(self) -> None:
        for raw in self._due.pop(self.count, []):
            self.made.append((raw, _do(self.bar, raw)))
        self.count += 1

    def flush(self) -> None:
        """Make the injections scheduled after the driver's last access."""
        for k in sorted(self._due):
            for raw in self._due.pop(k):
                self.made.append((raw, _do(self.bar, raw)))

    def read(self, offset: int, width: int) -> int:
        self._inject()
        return self.bar.read(offset, width)

    def write(self, offset: int, width: int, value: int) -> object:
        self._inject()
        return self.bar.write(offset, width, value)


def _do(bar: Bar, raw: Raw) -> object:
    if raw.is_write:
        return bar.write(raw.offset, raw.width, raw.value)
    return bar.read(raw.offset, raw.width)


@dataclass
class SendResult:
    """What one `Send` got: the reply it read, or why it got none."""

    send: Send
    response: Response | None = None
    #: "timeout" (the mailbox never became ready: a hostile guest can make its own driver
    #: wait), "bad reply" (the reply's size was impossible), or None.
    failure: str | None = None
    raw_results: list[tuple[Raw, object]] = field(default_factory=list)


def driver_for(bar: Bar, send: Send, *, poll: Callable[[], None] | None = None) -> FspDriver:
    """The open driver's FspDriver for `send`'s channel and port."""
    return FspDriver(
        bar,
        channel=send.channel,
        port=send.port,
        offset=send.channel * CHANNEL_BYTES,
        polls=8,
        poll=poll,
    )


def run_mailbox(bar: Bar, steps: Sequence[Step]) -> list[SendResult | tuple[Raw, object]]:
    """Play `steps` on `bar` in order: each `Raw` as one access (its result kept), each `Send`
    through the driver with its injections. Never raises for what a hostile guest can cause
    (a timeout, an impossible reply); anything else (an AccessError, a device fault) raises."""
    out: list[SendResult | tuple[Raw, object]] = []
    for step in steps:
        if isinstance(step, Raw):
            out.append((step, _do(bar, step)))
            continue
        ibar = InterleavedBar(bar, step.injections)
        result = SendResult(step)
        drv = driver_for(ibar, step)
        try:
            drv.send_message(step.nvdm_type, step.payload)
            if step.read_reply:
                result.response = drv.read_response()
        except FspTimeout:
            result.failure = "timeout"
        except ValueError as e:
            if "response of" not in str(e):
                raise
            result.failure = "bad reply"
        ibar.flush()
        result.raw_results = ibar.made
        out.append(result)
    return out


def _refused(nvdm_type: int, payload: bytes, denied: set[int], deny_prc: set[int]) -> bool:
    """Whether the guard refuses a message: its NVDM type, or for PRC its sub-message (payload
    byte 0, packet byte 8; docs/fsp-guard.md)."""
    if nvdm_type in denied:
        return True
    return nvdm_type == NVDM_PRC and (not payload or payload[0] in deny_prc)


def assert_fsp_guarded(
    fsp: SimFsp, deny_types: Iterable[int], deny_prc: Iterable[int] = ()
) -> None:
    """Raise AssertionError if a message of a denied NVDM type (or a PRC message with a denied
    sub-message) reached the FSP (whole or its first packet), or if a mailbox access that is
    not one aligned 32-bit register access reached it (the guard refuses every such access)."""
    denied = set(deny_types)
    prc = set(deny_prc)
    subs = [m.body[0] for m in fsp.messages if m.nvdm_type == NVDM_PRC and m.body[:1]]
    if prc and any(sub in prc for sub in subs):
        raise AssertionError(f"the FSP took PRC sub-message(s) {sorted(set(subs) & prc)}")
    firsts = [t for t in fsp.types_received() if t in denied]
    if firsts:
        raise AssertionError(f"the FSP took the first packet of denied NVDM type(s) {firsts}")
    whole = [m.nvdm_type for m in fsp.messages if m.nvdm_type in denied]
    if whole:
        raise AssertionError(f"the FSP assembled message(s) of denied NVDM type(s) {whole}")
    if fsp.odd_accesses:
        raise AssertionError(f"odd mailbox accesses reached the FSP: {fsp.odd_accesses[:4]}")


def assert_driver_served(
    results: Sequence[SendResult | tuple[Raw, object]],
    fsp: SimFsp,
    deny_types: Iterable[int],
    deny_prc: Iterable[int] = (),
) -> None:
    """For a driver alone on the mailbox (no raw steps, no injections): every allowed message
    reached the FSP once, in order, and its reply says OK; every denied one was answered
    NOT_SUPPORTED (by the guard) at once, never by a timeout."""
    denied, prc = set(deny_types), set(deny_prc)
    sends = [r for r in results if isinstance(r, SendResult)]
    for r in sends:
        if r.send.read_reply:
            assert r.failure is None and r.response is not None, f"{r.send!r}: {r.failure}"
            refused = _refused(r.send.nvdm_type, r.send.payload, denied, prc)
            want = ERR_NOT_SUPPORTED if refused else ERR_OK
            got = (r.response.nvdm_type, r.response.command_type, r.response.error_code)
            assert got == (NVDM_FSP_RESPONSE, r.send.nvdm_type, want), f"{r.send!r}: {got}"
    allowed = [
        r.send for r in sends if not _refused(r.send.nvdm_type, r.send.payload, denied, prc)
    ]
    got_msgs = [
        (m.channel, m.nvdm_type, m.body[: len(s.payload)])
        for m, s in zip(fsp.messages, allowed, strict=False)
    ]
    want_msgs = [(s.channel, s.nvdm_type, s.payload) for s in allowed]
    assert len(fsp.messages) == len(allowed), f"{len(fsp.messages)} messages for {len(allowed)}"
    assert got_msgs == want_msgs, "a message did not reach the FSP byte for byte"
