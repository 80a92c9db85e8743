"""Both processes tell systemd they are ready (Type=notify), and only once they are."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.docker


class Notifications:
    """A NOTIFY_SOCKET listener that, like systemd, learns each sender's pid."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def next(self, timeout_s: float) -> tuple[int, bytes]:
        self.sock.settimeout(timeout_s)
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        wanted = (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
        (creds,) = [d for level, kind, d in ancillary if (level, kind) == wanted]
        return int.from_bytes(creds[:4], "little"), data


@pytest.fixture
def notifications(tmp_path: Path) -> Iterator[Notifications]:
    n = Notifications(tmp_path / "notify")
    try:
        yield n
    finally:
        n.sock.close()


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_ready_only_when_serving(engine: None, tmp_path: Path, notifications: Notifications) -> None:
    stack = Stack(tmp_path, NOTIFY_SOCKET=notifications.path)
    try:
        # A gateway without a pool manager listens but has no routing table:
        # not ready, so systemd would not start what depends on it.
        gateway = stack.start("gateway")
        stack.wait_http(f"{stack.url}/healthz", "gateway")
        assert status(f"{stack.url}/readyz") == 503
        with pytest.raises(TimeoutError):
            notifications.next(timeout_s=2.0)

        pool = stack.start("pool_manager")
        seen: dict[int, bytes] = {}
        for _ in range(2):
            pid, data = notifications.next(timeout_s=60.0)
            # Checked at the moment of READY=1: what it promises is true then.
            if pid == pool.pid:
                assert status(f"http://127.0.0.1:{stack.control_port}/v1/healthz") == 200
            else:
                assert pid == gateway.pid
                assert status(f"{stack.url}/readyz") == 200
            seen[pid] = data
        assert seen == {pool.pid: b"READY=1", gateway.pid: b"READY=1"}
    finally:
        stack.down()
