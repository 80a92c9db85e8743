"""A forked worker: it takes a client connection from the supervisor and serves it.

Stdlib only. The supervisor (``server.py``) reads a connection's first
``invoke`` frame, then lends the connection itself to an idle worker: the
socket goes over the worker's control socketpair (``SCM_RIGHTS``) with that
first frame behind it. From then on the worker reads requests from and writes
replies to the client directly, with blocking calls, so a warm invocation
costs one process's work instead of a hop through the supervisor and back.

The worker gives the connection back (a release message on the control
channel) when the client closes it, when a frame that is not an invocation
arrives (the supervisor answers it), or when the supervisor asks because
another connection is waiting for a worker.

Deadlines hold without the supervisor seeing each request: before running a
handler the worker arms ``ITIMER_REAL``, whose ``SIGALRM`` (left at its
default action) ends the process even inside C code, and records the
request in a slot of memory shared with the supervisor. The supervisor reads
the slot when a worker dies, to answer the request it was running (504 or
502), and its watchdog kills a worker whose handler re-armed the timer.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback
from typing import Any, NoReturn

from runtime import protocol
from runtime.handler import Invoker, LogStream

# Control messages, both ways: (kind, payload length), then the payload.
CONTROL = struct.Struct("!cI")
TAKE = b"T"  # supervisor -> worker: the attached socket, then its first frame
ASK = b"A"  # supervisor -> worker: give your connection back when you can
RELEASED = b"R"  # worker -> supervisor: the connection is yours again, nothing pending
PENDING = b"F"  # ... and here is a frame read from it that is yours to answer
CLOSED = b"E"  # ... the client closed it (or sent garbage): close it

# One slot per worker: (state, deadline, started, cold), CLOCK_MONOTONIC seconds.
SLOT = struct.Struct("=dddd")
IDLE, RUNNING, REPLYING = 0.0, 1.0, 2.0


class Slots:
    """Shared memory the workers write their current request into."""

    def __init__(self, count: int) -> None:
        self.mem = mmap.mmap(-1, SLOT.size * max(count, 1))  # MAP_SHARED: forks see writes

    def set(self, index: int, state: float, deadline: float = 0.0, started: float = 0.0,
            cold: bool = False) -> None:
        SLOT.pack_into(self.mem, index * SLOT.size, state, deadline, started, float(cold))

    def get(self, index: int) -> tuple[float, float, float, bool]:
        state, deadline, started, cold = SLOT.unpack_from(self.mem, index * SLOT.size)
        return state, deadline, started, bool(cold)


class Lease:
    """One connection lent to this worker, served until it has to go back."""

    def __init__(self, invoker: Invoker, conn: socket.socket, ctl: socket.socket,
                 slots: Slots, index: int, timeout_s: float) -> None:
        self.invoker, self.conn, self.ctl = invoker, conn, ctl
        self.slots, self.index, self.timeout_s = slots, index, timeout_s
        self.poller = select.poll()
        self.poller.register(conn, select.POLLIN)
        self.poller.register(ctl, select.POLLIN)

    def serve(self, frame: bytes) -> tuple[bytes, bytes]:
        """Answer ``frame`` and what follows it; return the release message's (kind, payload)."""
        try:
            meta, body = split(frame)
            while True:
                self.run(meta, body)
                for fd, _ in self.poller.poll():
                    if fd == self.ctl.fileno():
                        # An ASK, or EOF: then the release fails and the worker exits.
                        with contextlib.suppress(EOFError):
                            read_control(self.ctl)
                        return RELEASED, b""
                try:
                    meta, body = protocol.recv_frame(self.conn)
                except EOFError:
                    return CLOSED, b""
                if meta.get("op") != "invoke":
                    return PENDING, protocol.encode(meta, body)
                meta["start"] = "warm"
        except (protocol.ProtocolError, ConnectionError):
            return CLOSED, b""

    def run(self, meta: dict[str, Any], body: bytes) -> None:
        raw = meta.get("timeout_s")
        timeout_s = float(raw) if isinstance(raw, int | float) and raw > 0 else self.timeout_s
        now = time.monotonic()
        meta["deadline"] = time.time() + timeout_s
        self.slots.set(self.index, RUNNING, now + timeout_s, now, meta.get("start") == "cold")
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            reply = self.invoker.respond(meta, body)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        self.slots.set(self.index, REPLYING)
        self.conn.sendall(reply)  # one write: no delayed-ACK stall
        self.slots.set(self.index, IDLE)


def split(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """A whole encoded frame back into (meta, body)."""
    meta_len, body_len = protocol.HEADER.unpack_from(frame)
    head = protocol.HEADER.size
    meta = protocol.decode_meta(frame[head : head + meta_len])
    return meta, frame[head + meta_len : head + meta_len + body_len]


def read_control(ctl: socket.socket) -> tuple[bytes, bytes, list[int]]:
    """One control message: (kind, payload, fds); EOFError when the supervisor is gone."""
    head, fds, _, _ = socket.recv_fds(ctl, CONTROL.size, 1)
    if not head:
        raise EOFError("the supervisor closed the control channel")
    if len(head) < CONTROL.size:
        head += protocol.recv_exactly(ctl, CONTROL.size - len(head))
    kind, length = CONTROL.unpack(head)
    return kind, protocol.recv_exactly(ctl, length) if length else b"", fds


def serve(invoker: Invoker, ctl: socket.socket, slots: Slots, index: int, timeout_s: float) -> None:
    """Take connections from the supervisor until it goes away."""
    while True:
        try:
            kind, frame, fds = read_control(ctl)
        except EOFError:
            return
        if kind != TAKE or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue  # a late ASK for a connection already given back
        conn = socket.socket(fileno=fds[0])
        try:
            conn.setblocking(True)
            kind, payload = Lease(invoker, conn, ctl, slots, index, timeout_s).serve(frame)
        finally:
            conn.close()  # this copy only: the supervisor keeps its own
            # A reply cut short by a vanished client left the slot "replying";
            # health would count this idle worker as busy for good.
            slots.set(index, IDLE)
        try:
            ctl.sendall(CONTROL.pack(kind, len(payload)) + payload)
        except OSError:
            return  # the supervisor is gone


def become_worker(invoker: Invoker, ctl: socket.socket, parent: socket.socket,
                  inherited_fds: list[int], slots: Slots, index: int, timeout_s: float) -> NoReturn:
    """The forked worker's whole life: serve leases until the supervisor goes, then exit."""
    code = 1
    try:
        parent.close()
        for fd in set(inherited_fds) - {ctl.fileno()}:
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)
        import asyncio

        asyncio.events._set_running_loop(None)  # 3.11 does not reset it on fork
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not dump core
        sys.stdout = LogStream(sys.__stdout__ or sys.stdout, "stdout", invoker)
        sys.stderr = LogStream(sys.__stderr__ or sys.stderr, "stderr", invoker)
        serve(invoker, ctl, slots, index, timeout_s)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
