"""Frames between the training process and its tracking process: each message one
length-prefixed pickle, written whole by a sending thread (signals run only in the main thread, so
none cuts a frame in half) and read back with a deadline; an idle sender pings."""

from __future__ import annotations

import contextlib
import pickle
import queue
import select
import socket
import struct
import threading
import time
from typing import Any

PING = ("ping",)  # "still here": no reply


PING_S = 2.0  # seconds between pings from an idle training process


HEADER = struct.Struct("!Q")


class IncompleteFrame(OSError):
    """A frame began but did not arrive whole in time: the writer died or hung mid-message."""


def send_frame(sock: socket.socket, message: Any) -> None:
    """Write ``message`` as one frame (call from a thread that no signal handler interrupts)."""
    write_frame(sock, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def write_frame(sock: socket.socket, data: bytes) -> None:
    """Write pickled ``data`` as one frame."""
    sock.sendall(HEADER.pack(len(data)))
    sock.sendall(data)


def recv_frame(sock: socket.socket, whole_within: float = 30.0) -> Any:
    """Read one frame (blocking until it begins); raise EOFError if the peer closed first, and
    :class:`IncompleteFrame` if, once begun, the frame is not whole within ``whole_within`` s."""
    first = sock.recv(1)
    if not first:
        raise EOFError
    deadline = time.monotonic() + whole_within
    (size,) = HEADER.unpack(first + _read(sock, HEADER.size - 1, deadline))
    return pickle.loads(_read(sock, size, deadline))


def _read(sock: socket.socket, n: int, deadline: float) -> bytes:
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise IncompleteFrame(f"a message stopped after {got} of {n} bytes")
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise IncompleteFrame(f"the connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class _Link:
    """A socket with a sending thread (pickled requests queued, each written whole; pings when
    idle) and a receiving thread (replies queued)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.outbox: queue.Queue = queue.Queue()
        self.inbox: queue.Queue = queue.Queue()
        self.broken: BaseException | None = None
        for target, name in ((self._send, "lrexp-send"), (self._receive, "lrexp-receive")):
            threading.Thread(target=target, daemon=True, name=name).start()

    def _send(self) -> None:
        ping = pickle.dumps(PING)
        while True:
            try:
                data = self.outbox.get(timeout=PING_S)
            except queue.Empty:
                data = ping
            if data is None:  # closing: everything before it has been written
                return
            try:
                write_frame(self.sock, data)
            except OSError as e:
                self.broken = e
                self.inbox.put(("gone", e))
                return
            finally:
                if data is not ping:
                    self.outbox.task_done()

    def _receive(self) -> None:
        while True:
            try:
                self.inbox.put(recv_frame(self.sock))
            except (EOFError, OSError, pickle.UnpicklingError) as e:
                self.inbox.put(("gone", e))
                return

    def flush(self, timeout: float) -> bool:
        """Wait until every queued request is written, at most ``timeout`` s; whether it was."""
        deadline = time.monotonic() + timeout
        while self.outbox.unfinished_tasks and self.broken is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return self.broken is None

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        self.outbox.put(None)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
