"""The zygote: a clean, warm interpreter that forks one fresh process per /execute run.

Stdlib only. The sandbox supervisor starts it once as a brand-new
``python3 -I`` (``BOOT`` below), never as a fork of itself: the supervisor
has held earlier runs' code, input and output, and a fork would carry them
in freed memory for the next run to find. The zygote itself never sees a
run's data either: it is sent only file descriptors, so every child it
forks starts from the same state a fresh ``python3 main.py`` would, in about
a millisecond instead of about fifteen.

One run at a time, over a SOCK_SEQPACKET socket with the supervisor:

- supervisor -> zygote: ``b"run"`` with fds ``[stdin, stdout, stderr, spec]``;
- zygote -> supervisor: ``{"pid": n}`` once forked (or ``{"error": ...}``);
- zygote -> supervisor: ``{"status": wait status, "max_rss_kb", "cpu_ms"}``
  when that process has exited.

The child reads its spec (JSON: ``dir``, ``args``, ``env``, ``limits``) from
the spec pipe, confines itself (rlimits, Landlock) and runs ``main.py`` as
``__main__``, exiting the way ``python3 main.py`` would.
"""

from __future__ import annotations

import atexit
import builtins
import json
import os
import resource
import socket
import sys
import types
from typing import Any, NoReturn

from runtime import confine

# sys.argv after -c: [ "-c", runtime's parent dir, socket fd ].
BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
        "from runtime import zygote; zygote.main(int(sys.argv[2]))")
DEVICE_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# Exit status when the sandbox could not set the run up (as in `env` and `timeout`).
SETUP_FAILED = 125


def main(fd: int) -> None:
    confine.set_dumpable(False)  # runs share our uid: no ptrace, no /proc/PID/mem
    abi = confine.landlock_abi()
    sock = socket.socket(fileno=fd)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 64, 4)
        except OSError:
            return
        if not msg:
            return  # the supervisor is gone
        try:
            pid = os.fork()
        except OSError as exc:
            _close(fds)
            _send(sock, {"error": f"fork failed: {exc}"})
            continue
        if pid == 0:
            sock.close()
            become_run(fds, abi)
        _close(fds)
        _send(sock, {"pid": pid})
        _, status, usage = os.wait4(pid, 0)
        cpu_ms = round((usage.ru_utime + usage.ru_stime) * 1000, 3)
        _send(sock, {"status": status, "max_rss_kb": usage.ru_maxrss, "cpu_ms": cpu_ms})


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.send(json.dumps(message).encode())


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def become_run(fds: list[int], abi: int) -> NoReturn:
    """The forked child: set up, confine, run main.py, exit like the interpreter would."""
    try:
        stdin, stdout, stderr, spec_fd = fds
        with os.fdopen(spec_fd, "rb") as spec_file:
            spec = json.loads(spec_file.read())
        os.setsid()  # its own session and process group, no controlling terminal
        for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        _confine(spec, abi)
        _prepare_interpreter(spec)
    except BaseException as exc:
        os.write(2, f"hearth sandbox: could not start the run: {exc!r}\n".encode())
        os._exit(SETUP_FAILED)
    os._exit(_run_main())


def _confine(spec: dict[str, Any], abi: int) -> None:
    limits = spec["limits"]
    # An ordinary process again (the zygote is not dumpable): /proc/self is
    # ours to write, and the run may trace its own children.
    confine.set_dumpable(True)
    # Under memory pressure the kernel must pick the run, never the supervisor.
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    cpu_s = limits["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"],) * 2)
    if abi:
        confine.restrict_self(abi, readable=["/"], writable=[spec["dir"], "/dev/shm"],
                              device_files=DEVICE_FILES)
    # Last: counted on top of what the interpreter already maps, so that
    # memory_mb is what the program itself may allocate.
    with open("/proc/self/statm") as f:
        mapped_bytes = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    address_space = mapped_bytes + limits["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def _prepare_interpreter(spec: dict[str, Any]) -> None:
    os.chdir(spec["dir"])
    os.environ.clear()
    os.environ.update(spec["env"])
    sys.argv = ["main.py", *spec["args"]]
    # As for `python3 main.py`: the script's directory first, none of ours.
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [spec["dir"], *(p for p in sys.path if p != ours)]
    for name in [m for m in sys.modules if m == "runtime" or m.startswith("runtime.")]:
        del sys.modules[name]
    main = types.ModuleType("__main__")
    main.__file__ = "main.py"
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main


def _run_main() -> int:
    namespace = sys.modules["__main__"].__dict__
    try:
        with open("main.py", "rb") as f:
            code = compile(f.read(), "main.py", "exec")
        exec(code, namespace)
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        tb = exc.__traceback__
        exc = exc.with_traceback(tb.tb_next if tb else None)  # without this frame
        sys.excepthook(type(exc), exc, exc.__traceback__)
        status = 1
    return _finalize(status)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _finalize(status: int) -> int:
    """What the interpreter does at exit that a program can observe, without the teardown."""
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()  # joins non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            status = status or 120  # as the interpreter does when it cannot flush
    return status
