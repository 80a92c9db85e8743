"""Kernel confinement a process can apply to itself, without privileges.

Stdlib only (ctypes). Used by the /execute sandbox:

- ``Landlock`` (Linux 5.13+, allowed by Docker's default seccomp profile):
  the run may read and execute anything its uid can, but write only under
  its scratch directory and /dev/shm; with ABI 6+ it cannot signal, ptrace
  or reach abstract unix sockets of processes outside its domain (the
  supervisor and the zygote). Landlock never grants, only takes away: where
  the kernel lacks it the container's own limits still hold, and the
  supervisor's cleanup compensates (see ``sandbox.py``).
- ``set_dumpable(False)``: a non-dumpable process cannot be ptraced, and
  its /proc/PID/{mem,environ,maps} cannot be read, by same-uid processes
  that lack CAP_SYS_PTRACE, i.e. by the code the sandbox runs.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

# Syscall numbers are the same on every architecture (the generic table).
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38

FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
READ_ONLY = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: object) -> int:
    # Variadic C calls: every integer goes as a full long, or the kernel may
    # read garbage in the upper half of a register.
    wide = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return int(_libc.syscall(ctypes.c_long(number), *wide))


def _prctl(option: int, value: int) -> int:
    zero = ctypes.c_ulong(0)
    return int(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), zero, zero, zero))


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64))


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed: 12 bytes
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or seccomp hides it)."""
    return max(0, _syscall(SYS_CREATE_RULESET, None, 0, CREATE_RULESET_VERSION))


def fs_rights(abi: int) -> int:
    """Every filesystem right this ABI knows: all are handled, so all are denied by default."""
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM, ABI 1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def file_rights(abi: int) -> int:
    """The rights that apply to a file (not a directory), e.g. /dev/null."""
    return fs_rights(abi) & (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV)


def restrict_self(abi: int, readable: Iterable[str], writable: Iterable[str],
                  device_files: Iterable[str]) -> None:
    """Confine this process and its future children; raises OSError if the kernel refuses."""
    handled = fs_rights(abi)
    attr = _RulesetAttr(handled, 0, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8  # the struct grew with the ABI
    ruleset = _check(_syscall(SYS_CREATE_RULESET, ctypes.byref(attr), size, 0), "landlock_create_ruleset")
    try:
        rules = [(p, READ_ONLY) for p in readable] + [(p, handled) for p in writable]
        rules += [(p, file_rights(abi)) for p in device_files]
        for path, rights in rules:
            _add_rule(ruleset, path, rights)
        _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "prctl(NO_NEW_PRIVS)")
        _check(_syscall(SYS_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _add_rule(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # absent here (e.g. no /dev/shm): nothing to allow
    try:
        rule = _PathBeneathAttr(rights, fd)
        _check(_syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0),
               f"landlock_add_rule({path})")
    finally:
        os.close(fd)


def set_dumpable(dumpable: bool) -> None:
    _check(_prctl(PR_SET_DUMPABLE, int(dumpable)), "prctl(DUMPABLE)")
