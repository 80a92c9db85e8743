"""sd_notify against real AF_UNIX datagram sockets, the way systemd listens."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth.sd_notify import notify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def test_sends_one_datagram_to_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify("READY=1", {"NOTIFY_SOCKET": path}) is True
    assert sock.recv(4096) == b"READY=1"


def test_abstract_namespace_when_it_starts_with_at() -> None:
    name = f"hearth-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("READY=1\nSTATUS=serving", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_systemd_sees_the_senders_pid(listener: tuple[socket.socket, str]) -> None:
    # systemd (NotifyAccess=main) accepts READY=1 only from the main pid,
    # which it learns from SCM_CREDENTIALS: the sender must be this process.
    sock, path = listener
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    notify("READY=1", {"NOTIFY_SOCKET": path})
    data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    assert data == b"READY=1"
    wanted = (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
    (creds,) = [d for level, kind, d in ancillary if (level, kind) == wanted]
    assert int.from_bytes(creds[:4], "little") == os.getpid()


def test_no_op_without_notify_socket() -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": ""}) is False


def test_never_raises_when_nobody_listens(tmp_path: Path) -> None:
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False
