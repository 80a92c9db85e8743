"""Leaving nothing of one /execute run for the next: processes, files, IPC objects.

Stdlib only. Only the sandbox supervisor calls these, and only as PID 1 of
the container's own PID namespace (``sandbox.py`` refuses otherwise): on a
host, a sweep would signal every process of the user and a wipe of /tmp
would delete other people's files.

Nothing here follows a symbolic link. A run may have planted links to the
runtime's code, to the socket directory or to ``/``; removing them removes
the links. Directories a run made unreadable (mode 000) are made readable
first, as their owner may.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import stat

# Places a run can write to, wiped after every run. The sandbox also keeps
# runs out of all but the scratch directory and /dev/shm with Landlock;
# this holds where the kernel has no Landlock.
WIPED_DIRS = ("/tmp", "/dev/shm", "/dev/mqueue")
IPC_RMID = 0
SWEEP_PASSES = 200
SWEEP_PAUSE_S = 0.005


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return "X"  # gone
    # The command name may hold spaces and parentheses: the state follows the last ')'.
    return raw[raw.rfind(b")") + 2:][:1].decode() or "X"


def live_pids(keep: set[int]) -> list[int]:
    """Processes of this PID namespace, other than ``keep``, that are not yet dead."""
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    return [pid for pid in pids if pid not in keep and _state(pid) not in ("Z", "X")]


async def sweep(keep: set[int]) -> bool:
    """SIGKILL every process but ``keep`` until none is left; False if some survived.

    Repeated, because a fork bomb forks between one listing and the next;
    each pass kills whatever the last one missed. Dead processes stay as
    zombies until their parent (often us, as PID 1) reaps them, which is
    why zombies do not count.
    """
    for _ in range(SWEEP_PASSES):
        victims = live_pids(keep)
        if not victims:
            return True
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        await asyncio.sleep(SWEEP_PAUSE_S)
    return not live_pids(keep)


def remove_tree(path: str) -> None:
    """Remove ``path`` and, if it is a real directory, everything under it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        os.unlink(path)  # a file, a socket, a fifo, or a symlink (never its target)
        return
    empty_dir(path)
    os.rmdir(path)


def empty_dir(path: str, keep: frozenset[str] = frozenset()) -> None:
    """Remove everything inside ``path`` except the names in ``keep``."""
    try:
        names = os.listdir(path)
    except PermissionError:
        os.chmod(path, 0o700)  # lstat said: a directory, not a link
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for name in names:
        if name not in keep:
            try:
                remove_tree(os.path.join(path, name))
            except PermissionError:
                os.chmod(path, 0o700)  # unlinking needs write permission on the parent
                remove_tree(os.path.join(path, name))


def wipe(extra: tuple[tuple[str, frozenset[str]], ...] = ()) -> list[str]:
    """Empty every place a run could write to; return what could not be removed."""
    failures = []
    for path, keep in tuple((d, frozenset[str]()) for d in WIPED_DIRS) + extra:
        try:
            empty_dir(path, keep)
        except OSError as exc:
            failures.append(f"{path}: {exc}")
    return failures


def remove_sysv_ipc() -> int:
    """Remove System V shared memory, queues and semaphores: they outlive processes."""
    libc = ctypes.CDLL(None, use_errno=True)
    removed = 0
    for kind, control in (("shm", libc.shmctl), ("msg", libc.msgctl), ("sem", libc.semctl)):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            ident = int(row.split()[1])
            # semctl takes a semaphore number before the command; shmctl and msgctl do not.
            args = (ident, 0, IPC_RMID) if kind == "sem" else (ident, IPC_RMID, None)
            removed += control(*args) == 0
    return removed
