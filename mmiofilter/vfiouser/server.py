"""The server loop: one UNIX socket, one client at a time, signals for reload and shutdown.

SIGHUP re-reads the policy (`FilteredDevice.reload`: atomic, refused when it would trap a page
the client maps); SIGTERM and SIGINT end the server after the message in hand, closing the
client's fds and removing the socket. While a client is connected the server accepts no other:
a second one waits in the listen backlog until the first is gone (the document's "Socket":
a dedicated socket per client/server connection). The filter's events are logged as they
happen, to the "mmiofilter" logger.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import stat
from types import FrameType

from . import protocol as p
from .device import FilteredDevice, ReloadRefused
from .session import Session
from .wire import Disconnected, FramingError, receive, send

log = logging.getLogger("mmiofilter")

CLIENT_STALL_SECONDS = 2.0


def _log_events(device: FilteredDevice) -> None:
    for e in device.drain_events():
        log.warning(
            "event: BAR%d %s %d byte(s) at %#x value %#x: %s by rule %s%s",
            e.bar, "write" if e.is_write else "read", e.width, e.offset, e.value,
            e.outcome.value, e.rule, f" ({e.detail})" if e.detail else "",
        )  # fmt: skip


class Server:
    def __init__(self, device: FilteredDevice, path: str) -> None:
        self.device = device
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                self.listener.close()
                raise ValueError(f"--socket {path}: exists and is not a socket")
            os.unlink(path)  # a stale socket of an earlier server
        try:
            self.listener.bind(path)
        except OSError as e:
            self.listener.close()
            raise ValueError(f"--socket {path}: cannot listen: {e.strerror}") from None
        self.listener.listen(2)
        self.client: socket.socket | None = None
        self.session: Session | None = None
        self.stop_requested = False
        self.reload_requested = False
        self.clients_served = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._old_handlers: dict[int, object] = {}
        self._old_wakeup = -1

    # ---- signals ------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stop_requested = True

    def install_signals(self) -> None:
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            self._old_handlers[s] = signal.signal(s, self._on_signal)

    def restore_signals(self) -> None:
        for s, h in self._old_handlers.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._old_wakeup)

    def request_reload(self) -> None:
        self.reload_requested = True
        self._wake_w.send(b"\0")

    def request_stop(self) -> None:
        self.stop_requested = True
        self._wake_w.send(b"\0")

    # ---- the loop -----------------------------------------------------------------------

    def _reload(self) -> None:
        self.reload_requested = False
        try:
            self.device.reload()
        except ReloadRefused as e:
            log.error("%s", e)
        except Exception as e:  # a bad policy file: the old policy stays
            log.error("reload failed, the current policy stays: %s", e)

    def _drop_client(self, why: str) -> None:
        if self.session is not None:
            self.session.close()
        if self.client is not None:
            self.client.close()
        log.info("client disconnected: %s", why)
        self.client = self.session = None

    def _serve_one(self) -> None:
        assert self.client is not None and self.session is not None
        try:
            msg = receive(self.client)
        except Disconnected as e:
            self._drop_client(str(e))
            return
        except FramingError as e:
            log.warning("client: %s; closing the connection", e)
            if e.header is not None and not e.header.no_reply:
                try:
                    send(self.client, p.error_reply(e.header.msg_id, e.header.command, e.errno))
                except OSError:
                    pass
            self._drop_client(str(e))
            return
        except OSError as e:
            self._drop_client(f"socket error: {e.strerror or e}")
            return
        out = self.session.handle(msg)
        _log_events(self.device)
        if out is None:
            return
        data, fds = out
        try:
            send(self.client, data, fds)
        except OSError as e:
            self._drop_client(f"cannot reply: {e.strerror or e}")

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        # A client that stops mid-message (or stops reading replies) is dropped after this,
        # so it can neither hold the server nor delay a SIGTERM for long.
        conn.settimeout(CLIENT_STALL_SECONDS)
        self.client, self.session = conn, Session(self.device)
        self.clients_served += 1
        log.info("client connected")

    def serve(self, *, max_clients: int | None = None) -> None:
        """Run until SIGTERM/SIGINT (or `request_stop`), or until `max_clients` clients have
        come and gone."""
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        log.info("serving %s on %s", self.device.source.name, self.path)
        try:
            while not self.stop_requested:
                if self.reload_requested:
                    self._reload()
                if (
                    max_clients is not None
                    and self.client is None
                    and self.clients_served >= max_clients
                ):
                    break
                if self.client is not None:
                    try:
                        sel.get_key(self.client)
                    except KeyError:
                        sel.register(self.client, selectors.EVENT_READ, "client")
                        sel.unregister(self.listener)  # one client at a time
                for key, _ in sel.select():
                    if key.data == "wake":
                        try:
                            while self._wake_r.recv(64):
                                pass
                        except BlockingIOError:
                            pass
                    elif key.data == "listen":
                        self._accept()
                    elif key.data == "client" and not self.stop_requested:
                        client = self.client
                        self._serve_one()
                        if self.client is None and client is not None:
                            sel.unregister(client)
                            sel.register(self.listener, selectors.EVENT_READ, "listen")
        finally:
            sel.close()
            self.close()

    def close(self) -> None:
        if self.client is not None:
            self._drop_client("server shutting down")
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                log.warning("cannot remove %s: %s", self.path, e.strerror)
        self._wake_r.close()
        self._wake_w.close()
        for index, f in self.device.filters.items():
            touched = {name: n for name, n in f.counters().items() if n}
            if touched:
                text = ", ".join(f"{name}={n}" for name, n in sorted(touched.items()))
                log.info("BAR%d rule counters: %s", index, text)
        log.info("server stopped")
