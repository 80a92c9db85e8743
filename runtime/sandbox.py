"""The /execute sandbox, supervisor side: one-shot runs of untrusted Python code.

Stdlib only. A ``load`` with ``mode: "sandbox"`` makes the runtime an
``Executor`` that answers ``execute`` ops, one run at a time:

1. a fresh scratch directory ``/tmp/run-*`` gets ``main.py`` and the files;
2. the zygote (``zygote.py``, a clean interpreter started once) forks the
   run's process, which confines itself: rlimits for memory, CPU time, file
   size, processes and core dumps, and Landlock so that it writes only to
   its scratch directory and /dev/shm and cannot signal or trace us;
3. stdin is fed, stdout and stderr are captured up to a cap (past it the run
   is killed: ``output_limit``), and the wall-clock timeout kills it too;
4. once it exits, every process but us and the zygote is killed (the
   container has its own PID namespace and we are its PID 1), so nothing a
   run started survives it; then everything writable is wiped and System V
   IPC objects are removed.

A run that hit a limit, or the container's ``max_runs``-th, answers with
``recycle``: the gateway has the pool manager replace the container, and
this executor refuses further runs (and says so in its health answer), so
the next run lands on a container that never ran hostile code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import struct
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from runtime import cleanup, confine, pipes, protocol, zygote
from runtime.runs import RunRequest, classify, limits_from_meta, oom_kills, parse_request, write_files

RUN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
ZYGOTE_START_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0  # for the zygote to see a killed run exit
DRAIN_S = 1.0  # for pipes to close once every writer is dead
# A scratch filesystem this full after a run means the run filled it.
FULL_FRACTION = 0.9


class NotStarted(Exception):
    """The run's process could not be started; its code never ran, so a retry is safe."""


@dataclass
class Outcome:
    """What became of one run, before it is shaped into an answer."""

    wait_status: int | None
    timed_out: bool
    overflowed: bool
    stdout: bytes
    stderr: bytes
    duration_ms: float
    usage: dict[str, Any]
    clean: bool  # every process it started was killed, everything it wrote removed
    oom_killed: bool | None  # None: the cgroup does not say
    disk_full: bool


class Zygote:
    """Our end of the zygote process."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs.set_inheritable(True)
        runtime_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        argv = [sys.executable, "-I", "-c", zygote.BOOT, runtime_parent, str(theirs.fileno())]
        self.pid = os.posix_spawn(sys.executable, argv, RUN_ENV)
        theirs.close()
        ours.setblocking(False)
        self.sock = ours

    async def receive(self) -> dict[str, Any]:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
        if not data:
            raise NotStarted("the zygote exited")
        return protocol.decode_meta(data)

    async def fork(self, fds: list[int]) -> int:
        socket.send_fds(self.sock, [b"run"], fds)
        answer = await asyncio.wait_for(self.receive(), ZYGOTE_START_TIMEOUT_S)
        if "pid" not in answer:
            raise NotStarted(answer.get("error", "the zygote did not fork"))
        return int(answer["pid"])

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.sock.close()


def check_can_sandbox() -> None:
    # Cleanup signals every other process and empties /tmp: only safe as
    # PID 1 of a namespace of our own, i.e. inside the container.
    if os.getpid() != 1:
        raise RuntimeError("sandbox mode needs its own PID namespace: run the runtime as a container's PID 1")


def from_inside(sock: Any) -> bool:
    """Whether the peer is a process in this container (the host's pids read as 0 here)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", raw)
    return pid != 0


def _fs_full(path: str) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_blocks > 0 and st.f_bavail < st.f_blocks * (1 - FULL_FRACTION)


class Executor:
    """Answers ``execute``: one run at a time, each in a fresh, confined process."""

    def __init__(self, meta: dict[str, Any], socket_path: str) -> None:
        check_can_sandbox()
        self.limits = limits_from_meta(meta)
        self.socket_dir = os.path.dirname(socket_path)
        self.lock = asyncio.Lock()
        self.runs = 0
        self.recycling = False
        self.abi = confine.landlock_abi()
        # With Landlock scopes (ABI 6) a run can neither signal nor trace the
        # zygote, so it may outlive runs; without, it is replaced after each.
        self.keep_zygote = self.abi >= 6
        self.zygote: Zygote | None = Zygote()  # now, so that the first run does not wait
        confine.set_dumpable(False)  # runs share our uid: no ptrace, no /proc/1/mem or environ

    def health(self) -> dict[str, Any]:
        return {"ok": not self.recycling, "mode": "sandbox", "runs": self.runs,
                "recycle": self.recycling, "landlock_abi": self.abi}

    async def execute(self, body: bytes) -> bytes:
        if self.recycling:
            return _refused("recycling", "this sandbox container is being replaced", recycle=True)
        try:
            request = parse_request(body, self.limits)
        except ValueError as exc:
            error = {"code": "bad_request", "message": str(exc)}
            return protocol.encode({"outcome": "error", "error": error})
        async with self.lock:
            try:
                outcome = await self._execute_with_retry(request)
            except NotStarted as exc:
                return _refused("not_started", f"the run could not be started: {exc}")
            except Exception as exc:  # a bug, or a container in a bad way: take no more runs
                traceback.print_exc()
                self.recycling = True
                error = {"code": "sandbox_failed", "message": f"{type(exc).__name__}: {exc}"}
                return protocol.encode({"outcome": "error", "recycle": True, "error": error})
        return self._answer(outcome)

    async def _execute_with_retry(self, request: RunRequest) -> Outcome:
        try:
            return await self._execute(request)
        except NotStarted as exc:  # its code never ran: a fresh zygote may try again
            print(f"hearth sandbox: run not started ({exc}); replacing the zygote", file=sys.stderr)
            self._replace_zygote()
            return await self._execute(request)

    async def _execute(self, request: RunRequest) -> Outcome:
        scratch = f"/tmp/run-{secrets.token_hex(8)}"
        try:
            os.mkdir(scratch, 0o700)
            write_files(scratch, request)
            outcome = await self._run(request, scratch)
        finally:
            swept = await cleanup.sweep(self._keep())
            failures = cleanup.wipe(((self.socket_dir, frozenset({protocol.SOCKET_NAME})),))
            cleanup.remove_sysv_ipc()
            if not self.keep_zygote:
                self._replace_zygote()  # the sweep killed it: the run could have touched it
        if failures:
            print(f"hearth sandbox: cleanup failed: {failures}", file=sys.stderr)
        outcome.clean = outcome.clean and swept and not failures
        return outcome

    def _answer(self, outcome: Outcome) -> bytes:
        self.runs += 1
        status, exit_code, sig = classify(outcome.wait_status, outcome.timed_out, outcome.overflowed,
                                          outcome.oom_killed, outcome.stderr)
        self.recycling = (status in ("timeout", "memory", "output_limit") or outcome.disk_full
                          or not outcome.clean or self.runs >= self.limits.max_runs)
        meta = {"outcome": "ok", "status": status, "exit_code": exit_code, "signal": sig,
                "timed_out": outcome.timed_out, "truncated": outcome.overflowed,
                "duration_ms": round(outcome.duration_ms, 3), "stdout_bytes": len(outcome.stdout),
                "recycle": self.recycling, "start": "cold" if self.runs == 1 else "warm",
                **outcome.usage}
        return protocol.encode(meta, outcome.stdout + outcome.stderr)

    def _keep(self) -> set[int]:
        return {os.getpid()} | ({self.zygote.pid} if self.zygote and self.keep_zygote else set())

    def _replace_zygote(self) -> None:
        # Started at once, so that it has booted by the time the next run comes.
        if self.zygote is not None:
            self.zygote.stop()
        self.zygote = Zygote()

    async def _start(self) -> list[int]:
        """Have the zygote fork the run's process; our ends of its stdin, stdout, stderr, spec."""
        assert self.zygote is not None
        pairs = [os.pipe2(os.O_CLOEXEC) for _ in range(4)]
        theirs = [pairs[0][0], pairs[1][1], pairs[2][1], pairs[3][0]]
        ours = [pairs[0][1], pairs[1][0], pairs[2][0], pairs[3][1]]
        try:
            await self.zygote.fork(theirs)
        except (OSError, TimeoutError) as exc:
            for fd in ours:
                os.close(fd)
            raise NotStarted(str(exc)) from exc
        finally:
            for fd in theirs:
                os.close(fd)
        return ours

    async def _run(self, request: RunRequest, scratch: str) -> Outcome:
        loop = asyncio.get_running_loop()
        oom_before = oom_kills()
        stdin_w, stdout_r, stderr_r, spec_w = await self._start()
        began = loop.time()
        feeds = [pipes.Feed(spec_w, request.spec(scratch, RUN_ENV)), pipes.Feed(stdin_w, request.stdin)]
        limit_hit = loop.create_future()

        def overflow() -> None:
            if not limit_hit.done():
                limit_hit.set_result(None)

        out = pipes.Capture(stdout_r, request.output_limit_bytes, overflow)
        err = pipes.Capture(stderr_r, request.output_limit_bytes, overflow)
        assert self.zygote is not None
        exited = asyncio.ensure_future(self.zygote.receive())
        await asyncio.wait({exited, limit_hit}, timeout=request.timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
        overflowed = limit_hit.done()
        timed_out = not exited.done() and not overflowed
        answer = await self._end(exited)
        duration_ms = (loop.time() - began) * 1000
        clean = await cleanup.sweep(self._keep())  # whatever it left running, which may hold its pipes
        for feed in feeds:
            feed.close()
        stdout, stderr = await out.finish(DRAIN_S), await err.finish(DRAIN_S)
        oom_after = oom_kills()
        return Outcome(
            wait_status=answer.get("status"), timed_out=timed_out, overflowed=overflowed,
            stdout=stdout, stderr=stderr, duration_ms=duration_ms,
            usage={k: answer[k] for k in ("max_rss_kb", "cpu_ms") if k in answer}, clean=clean,
            oom_killed=None if oom_before is None or oom_after is None else oom_after > oom_before,
            disk_full=_fs_full("/tmp") or _fs_full("/dev/shm") or b"File too large" in stderr,
        )

    async def _end(self, exited: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        """The zygote's report of the run's exit, killing the run first if it is still going."""
        if not exited.done():
            await cleanup.sweep(self._keep())  # the run, and everything it started
        try:
            return await asyncio.wait_for(exited, KILL_WAIT_S)
        except (NotStarted, TimeoutError):
            self._replace_zygote()  # it died, or it is stuck: either way, not to be trusted
            return {}

    def shutdown(self) -> None:
        if self.zygote is not None:
            self.zygote.stop()
            self.zygote = None


def _refused(code: str, message: str, recycle: bool = False) -> bytes:
    error = {"code": code, "message": message}
    return protocol.encode({"outcome": "refused", "recycle": recycle, "error": error})


async def execute(executor: Executor | None, body: bytes) -> bytes:
    """The ``execute`` op, whatever mode the runtime is in."""
    if executor is None:
        return _refused("not_sandbox", "this container is not a sandbox")
    return await executor.execute(body)


__all__ = ["Executor", "execute", "from_inside"]
