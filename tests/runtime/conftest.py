"""Run the runtime server as a real subprocess and talk to it over its unix socket."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime import protocol

REPO = Path(__file__).resolve().parents[2]
READ_TIMEOUT_S = 10.0
# Lets the same tests drive the server under another interpreter (e.g. a bare 3.12).
RUNTIME_PYTHON = os.environ.get("HEARTH_TEST_RUNTIME_PYTHON", sys.executable)


def make_zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, textwrap.dedent(text))
    return buf.getvalue()


class Client:
    """One persistent connection to the runtime; every read is bounded."""

    def __init__(self, path: str, timeout_s: float = READ_TIMEOUT_S) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        self.sock.connect(path)

    def call(self, meta: dict[str, Any], body: bytes = b"") -> tuple[dict[str, Any], bytes]:
        protocol.send_frame(self.sock, meta, body)
        return protocol.recv_frame(self.sock)

    def health(self) -> dict[str, Any]:
        return self.call({"op": "health"})[0]

    def load(self, files: dict[str, str] | bytes, **meta: Any) -> dict[str, Any]:
        archive = files if isinstance(files, bytes) else make_zip(files)
        fields = {"op": "load", "function": "fn", "version": "v1", "handler": "main.handle",
                  "env": {}, "concurrency": 1, "timeout_s": 5.0, **meta}
        return self.call(fields, archive)[0]

    def invoke(self, path: str = "/", body: bytes = b"", **meta: Any) -> tuple[dict[str, Any], bytes]:
        fields = {"op": "invoke", "id": "req-1", "call_id": None, "method": "GET", "path": path,
                  "query": "", "headers": [], "timeout_s": 5.0, **meta}
        return self.call(fields, body)

    def close(self) -> None:
        self.sock.close()


class Server:
    """A runtime server process with its socket, code dir and captured stderr."""

    def __init__(self, base: Path, sock_dir: str) -> None:
        self.socket_path = os.path.join(sock_dir, protocol.SOCKET_NAME)
        self.code_dir = base / "code"
        self.log_path = base / "runtime.log"
        env = {**os.environ, "HEARTH_SOCKET": self.socket_path,
               "HEARTH_CODE_DIR": str(self.code_dir), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([RUNTIME_PYTHON, "-s", "-m", "runtime.server"], cwd=REPO,
                                         env=env, stdout=log, stderr=subprocess.STDOUT)
        self.clients: list[Client] = []
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runtime exited early:\n{self.log()}")
            try:
                self.client().health()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"runtime never answered:\n{self.log()}")

    def client(self, timeout_s: float = READ_TIMEOUT_S) -> Client:
        client = Client(self.socket_path, timeout_s)
        self.clients.append(client)
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    # pytest's tmp_path can exceed the 107-byte limit of a unix socket path.
    sock_dir = tempfile.mkdtemp(prefix="hearth-rt-", dir="/tmp")
    srv = Server(tmp_path, sock_dir)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
