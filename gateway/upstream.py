"""The gateway's view of containers: slots in use, breakers, persistent connections."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.breaker import Breaker
from hearth.runtime_client import RuntimeConnection


@dataclass(eq=False, slots=True)
class Container:
    """One ready container of a function, with the gateway's state about it."""

    key: str
    socket: str
    concurrency: int
    breaker: Breaker
    inflight: int = 0
    served: int = 0
    idle: list[RuntimeConnection] = field(default_factory=list)
    retired: bool = False
    origin: str = "fresh"  # "prewarmed" when specialized from a warm generic container

    async def connection(self, connect_timeout_s: float) -> RuntimeConnection:
        """A persistent connection: reuse an idle one, or open one."""
        while self.idle:
            conn = self.idle.pop()
            if conn.usable:
                return conn
            conn.close()
        return await RuntimeConnection.open(self.socket, connect_timeout_s)

    def give_back(self, conn: RuntimeConnection) -> None:
        # Keep at most one idle connection per slot: more would never be used.
        if conn.usable and not self.retired and len(self.idle) < self.concurrency:
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        self.retired = True
        for conn in self.idle:
            conn.close()
        self.idle.clear()


@dataclass(eq=False, slots=True)
class FunctionRoute:
    """A function's entry of the routing table, with live container state."""

    name: str
    version: str
    concurrency: int
    timeout_s: float
    containers: list[Container] = field(default_factory=list)
    load_error: str | None = None
    webhook_secret: str | None = None  # set: the function takes signed hooks
