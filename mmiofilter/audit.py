"""Audit events that leave the process: JSON lines, syslog (journald), Prometheus metrics.

A filter records what it did in a bounded ring (docs/contract-details.md, items 6-7); nothing
leaves it until someone drains it. `drain(filters, sinks)` takes every filter's events and
hands them, with the filter's per-rule counters and drop count, to each sink; a `Drainer` does
that from a background thread every `interval` seconds, for a VMM whose main loop should not:

    with audit.Drainer([f0, f2], [audit.JsonLines("/var/log/mmiofilter.jsonl"),
                                  audit.PrometheusTextfile("/var/lib/node_exporter/mf.prom")]):
        run_the_vm()

Stdlib only. A sink that fails (disk full, syslog gone) is logged on the `mmiofilter` logger
and does not stop the others: an audit trail with a gap is better than a stalled VMM.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from .filter import BarFilter
from .lint import LOGGER
from .results import Event, Outcome

__all__ = [
    "Drainer",
    "FilterBatch",
    "JsonLines",
    "PrometheusTextfile",
    "Sink",
    "Syslog",
    "drain",
    "event_record",
]

SCHEMA = 1


@dataclass(frozen=True)
class FilterBatch:
    """What one drain took from one filter: its new events and its running totals."""

    label: str
    bar: int
    events: list[Event]
    #: Accesses that touched a byte each rule owns, since the filter was made.
    counters: dict[str, int]
    #: Events the ring lost since the filter was made (full ring).
    dropped: int
    #: Of those, lost since the previous drain of this filter.
    new_dropped: int = 0


class Sink(Protocol):
    """Where drained events go. `write` gets one call per drain, with a batch per filter."""

    def write(self, batches: Sequence[FilterBatch]) -> None: ...

    def close(self) -> None: ...


def _label(f: BarFilter) -> str:
    return f.label or f"bar{f.bar}"


#: filter -> its drop count at its previous drain (weak: a drained filter may go away)
_last_dropped: weakref.WeakKeyDictionary[BarFilter, int] = weakref.WeakKeyDictionary()
_dropped_lock = threading.Lock()


def _batch(f: BarFilter) -> FilterBatch:
    events = f.drain_events()
    dropped = f.dropped_events
    with _dropped_lock:
        previous = _last_dropped.get(f, 0)
        _last_dropped[f] = dropped
    return FilterBatch(_label(f), f.bar, events, f.counters(), dropped, max(dropped - previous, 0))


def _sinks(sinks: Sink | Iterable[Sink]) -> list[Sink]:
    if hasattr(sinks, "write"):
        return [sinks]  # type: ignore[list-item]
    return list(sinks)


def drain(
    filters: BarFilter | Iterable[BarFilter], sinks: Sink | Iterable[Sink]
) -> list[FilterBatch]:
    """Drain every filter's events into every sink, once; return what was drained."""
    fs = [filters] if isinstance(filters, BarFilter) else list(filters)
    ss = _sinks(sinks)
    batches = [_batch(f) for f in fs]
    for s in ss:
        try:
            s.write(batches)
        except Exception:  # one broken sink must not silence the others
            LOGGER.exception("audit sink %s failed; its events of this drain are lost", s)
    return batches


# ---- records -----------------------------------------------------------------------------


def _iso(time_ns: int) -> str:
    """RFC 3339 UTC with nanoseconds: sorts as text, reads next to other logs."""
    secs, ns = divmod(time_ns, 1_000_000_000)
    t = datetime.datetime.fromtimestamp(secs, datetime.UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{ns:09d}Z"


def event_record(e: Event) -> dict[str, Any]:
    """One event as a JSON object (the `audit` record of docs/admin-guide.md)."""
    return {
        "schema": SCHEMA,
        "type": "event",
        "time": _iso(e.time_ns),
        "time_ns": e.time_ns,
        "filter": e.label,
        "bar": e.bar,
        "seq": e.seq,
        "offset": e.offset,
        "width": e.width,
        "write": e.is_write,
        "value": e.value,
        "outcome": e.outcome.value,
        "rule": e.rule,
        "detail": e.detail,
    }


def event_text(e: Event) -> str:
    """One event as one line of text (syslog)."""
    what = "write" if e.is_write else "read"
    detail = f" ({e.detail})" if e.detail else ""
    return (
        f"{e.label or f'bar{e.bar}'}: {e.outcome.value} {e.width}-byte {what} at "
        f"{e.offset:#x} value {e.value:#x} rule {e.rule}{detail} seq {e.seq}"
    )


# ---- sinks -------------------------------------------------------------------------------


class JsonLines:
    """Append one JSON object per event (and per loss of events) to a file.

    A `dropped` record says how many events the ring lost before the events that follow it.
    Each drain is flushed (and, with `fsync=True`, synced) before `write` returns.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8")  # closed by close()

    def write(self, batches: Sequence[FilterBatch]) -> None:
        lines = []
        for b in batches:
            if b.new_dropped:
                lines.append({"schema": SCHEMA, "type": "dropped", "filter": b.label, "bar": b.bar,
                              "count": b.new_dropped, "total": b.dropped})  # fmt: skip
            lines += [event_record(e) for e in b.events]
        if not lines:
            return
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in lines)
        with self._lock:
            self._file.write(text)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __repr__(self) -> str:
        return f"JsonLines({self.path!r})"


#: syslog(3) facilities and severities (RFC 5424 §6.2.1 numbering, as <syslog.h> has them).
LOG_DAEMON = 3
LOG_WARNING, LOG_NOTICE, LOG_INFO = 4, 5, 6
_SEVERITY = {
    Outcome.BLOCKED: LOG_WARNING,
    Outcome.PARTIAL: LOG_WARNING,
    Outcome.MASKED: LOG_NOTICE,
    Outcome.EMULATED: LOG_NOTICE,
    Outcome.PASS: LOG_INFO,  # an `audit` byte that passed
}


class Syslog:
    """Send one message per event to the local syslog socket, where journald reads it.

    The message is what syslog(3) itself sends to /dev/log (`<PRI>TAG[PID]: text`, PRI =
    facility * 8 + severity); blocked and partial accesses are warnings, masked and emulated
    notices, audited passes info. `journalctl -t mmiofilter` shows them. A UNIX datagram socket
    rather than the `syslog` module: that one is process-wide state (one ident, one facility)
    which the VMM may be using itself.
    """

    def __init__(
        self, address: str = "/dev/log", *, tag: str = "mmiofilter", facility: int = LOG_DAEMON
    ) -> None:
        if not 0 <= facility <= 23:
            raise ValueError(f"syslog facility {facility} is not 0..23")
        self.address = address
        self.tag = tag
        self.facility = facility
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.connect(address)

    def _send(self, severity: int, text: str) -> None:
        msg = f"<{self.facility * 8 + severity}>{self.tag}[{os.getpid()}]: {text}"
        self._sock.send(msg.encode("utf-8", "replace"))

    def write(self, batches: Sequence[FilterBatch]) -> None:
        with self._lock:
            for b in batches:
                if b.new_dropped:
                    self._send(LOG_WARNING, f"{b.label}: {b.new_dropped} audit event(s) lost "
                               f"(ring full; {b.dropped} in all)")  # fmt: skip
                for e in b.events:
                    self._send(_SEVERITY[e.outcome], event_text(e))

    def close(self) -> None:
        with self._lock:
            self._sock.close()

    def __repr__(self) -> str:
        return f"Syslog({self.address!r})"


def _escape(value: str) -> str:
    # Label values escape backslash, double quote and line feed (Prometheus "Exposition
    # formats", text format details).
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items()) + "}"


@dataclass
class _Totals:
    bar: int
    counters: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    events: dict[tuple[str, str], int] = field(default_factory=dict)  # (rule, outcome) -> n


class PrometheusTextfile:
    """Per-rule hit counters, events by rule and outcome, and lost events, as a `.prom` file
    for node-exporter's textfile collector (`--collector.textfile.directory`).

    The whole file is rewritten on every drain, to a temporary file in the same directory and
    renamed over the old one, so the collector never reads half a file. Metrics (counters,
    labelled by `filter` and `bar`):

        mmiofilter_rule_hits_total{rule}            accesses touching a byte the rule owns
        mmiofilter_events_total{rule,outcome}       events drained
        mmiofilter_events_dropped_total             events the ring lost
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        if not self.path.endswith(".prom"):
            raise ValueError(f"{self.path}: the textfile collector reads only *.prom files")
        self._lock = threading.Lock()
        self._totals: dict[str, _Totals] = {}

    def write(self, batches: Sequence[FilterBatch]) -> None:
        with self._lock:
            for b in batches:
                t = self._totals.setdefault(b.label, _Totals(b.bar))
                t.counters = dict(b.counters)
                t.dropped = b.dropped
                for e in b.events:
                    key = (e.rule, e.outcome.value)
                    t.events[key] = t.events.get(key, 0) + 1
            self._publish(self.render())

    def render(self) -> str:
        out = [
            "# HELP mmiofilter_rule_hits_total Accesses that touched a byte the rule owns.",
            "# TYPE mmiofilter_rule_hits_total counter",
        ]
        for label, t in sorted(self._totals.items()):
            for rule, n in sorted(t.counters.items()):
                out.append(f"mmiofilter_rule_hits_total"
                           f"{_labels(filter=label, bar=str(t.bar), rule=rule)} {n}")  # fmt: skip
        out += [
            "# HELP mmiofilter_events_total Audit events drained from the filter's ring.",
            "# TYPE mmiofilter_events_total counter",
        ]
        for label, t in sorted(self._totals.items()):
            for (rule, outcome), n in sorted(t.events.items()):
                lab = _labels(filter=label, bar=str(t.bar), rule=rule, outcome=outcome)
                out.append(f"mmiofilter_events_total{lab} {n}")
        out += [
            "# HELP mmiofilter_events_dropped_total Audit events lost because the ring was full.",
            "# TYPE mmiofilter_events_dropped_total counter",
        ]
        for label, t in sorted(self._totals.items()):
            lab = _labels(filter=label, bar=str(t.bar))
            out.append(f"mmiofilter_events_dropped_total{lab} {t.dropped}")
        return "\n".join(out) + "\n"  # the last line ends with a line feed

    def _publish(self, text: str) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".mmiofilter-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)  # the collector runs as another user
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"PrometheusTextfile({self.path!r})"


# ---- the background drainer ------------------------------------------------------------


class Drainer:
    """Drain `filters` into `sinks` every `interval` seconds on a daemon thread.

    `stop()` (or leaving the `with` block) wakes the thread, drains once more so that nothing
    recorded before the stop is left behind, and closes the sinks when `close_sinks` is true.
    """

    def __init__(
        self,
        filters: BarFilter | Iterable[BarFilter],
        sinks: Sink | Iterable[Sink],
        *,
        interval: float = 1.0,
        close_sinks: bool = True,
    ) -> None:
        if not isinstance(interval, int | float) or not 0 < interval <= 86400:
            raise ValueError(f"interval {interval!r} is not a number of seconds in (0, 86400]")
        self.filters = [filters] if isinstance(filters, BarFilter) else list(filters)
        self.sinks = _sinks(sinks)
        self.interval = float(interval)
        self.close_sinks = close_sinks
        self.drains = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._once()
        self._once()

    def _once(self) -> None:
        try:
            drain(self.filters, self.sinks)
            self.drains += 1
        except Exception:  # a filter gone wrong: keep the thread, say it
            LOGGER.exception("audit drain failed")

    def start(self) -> Drainer:
        if self._thread is not None:
            raise RuntimeError("the drainer is already started")
        self._thread = threading.Thread(target=self._loop, name="mmiofilter-audit", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self.close_sinks:
            for s in self.sinks:
                s.close()

    def __enter__(self) -> Drainer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
