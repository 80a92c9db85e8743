"""The durable call store: async calls and webhook deliveries in SQLite, WAL mode.

Every change is one short job on the store's writer thread (see
db_writer: concurrent jobs share a commit). Claims are single UPDATE ...
RETURNING statements, so a call is handed to exactly one worker.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson

from gateway.call import (
    CB_DELIVERED,
    CB_FAILED,
    CB_PENDING,
    CB_SENDING,
    FAILED,
    QUEUED,
    RUNNING,
    Call,
    Outcome,
    Request,
)
from gateway.db_writer import DbWriter

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    function TEXT NOT NULL,
    source TEXT NOT NULL,
    method TEXT NOT NULL, path TEXT NOT NULL, query TEXT NOT NULL,
    headers BLOB NOT NULL, body BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    deferrals INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    error TEXT,
    status INTEGER, result_headers BLOB, result_body BLOB,
    callback_url TEXT, callback_state TEXT,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_next_at REAL, callback_error TEXT,
    dedup_key TEXT UNIQUE,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL
);
CREATE INDEX IF NOT EXISTS calls_due ON calls (state, next_at);
CREATE INDEX IF NOT EXISTS calls_callbacks ON calls (callback_state, callback_next_at);
CREATE INDEX IF NOT EXISTS calls_function ON calls (function);
"""
SUMMARY = (
    "id, function, source, state, attempts, deferrals, error, status, callback_url, callback_state, "
    "callback_attempts, callback_next_at, callback_error, created_at, updated_at, finished_at"
)
LOST_BODY = orjson.dumps({"error": {
    "code": "gateway_restarted",
    "message": "the gateway stopped twice while this call was running; it is not retried again",
}})
PURGE_BATCH = 5000


class CallStore:
    """Calls on disk under ``HEARTH_DATA_DIR/gateway/calls.db``."""

    def __init__(self, path: Path, synchronous: str = "full") -> None:
        self.path = path
        self.db = DbWriter(path, synchronous, SCHEMA)

    async def close(self) -> None:
        await self.db.close()

    async def add(self, call_id: str, req: Request, now: float, dedup_since: float) -> tuple[str, bool]:
        """Store a new call; returns its id and True, or an earlier call's id and False (a repeat)."""

        def job(conn: sqlite3.Connection) -> tuple[str, bool]:
            if req.dedup_key is not None:
                row = conn.execute(
                    "SELECT id, created_at FROM calls WHERE dedup_key = ?", (req.dedup_key,)
                ).fetchone()
                if row is not None and row["created_at"] >= dedup_since:
                    return str(row["id"]), False
                if row is not None:  # an old delivery, outside the window: it may run again
                    conn.execute("UPDATE calls SET dedup_key = NULL WHERE id = ?", (row["id"],))
            conn.execute(
                "INSERT INTO calls (id, function, source, method, path, query, headers, body, state, "
                "next_at, callback_url, dedup_key, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (call_id, req.function, req.source, req.method, req.path, req.query,
                 orjson.dumps(req.headers), req.body, QUEUED, now, req.callback_url, req.dedup_key,
                 now, now),
            )
            return call_id, True

        return await self.db.run(job)

    async def claim(self, limit: int, now: float) -> tuple[list[Call], float | None]:
        """Up to ``limit`` due calls, now ``running``; and when the next queued one is due."""

        def job(conn: sqlite3.Connection) -> tuple[list[Call], float | None]:
            rows = conn.execute(
                "UPDATE calls SET state = ?, attempts = attempts + 1, updated_at = ? WHERE seq IN "
                "(SELECT seq FROM calls WHERE state = ? AND next_at <= ? ORDER BY next_at, seq LIMIT ?) "
                "RETURNING *",
                (RUNNING, now, QUEUED, now, limit),
            ).fetchall() if limit > 0 else []
            due = conn.execute("SELECT MIN(next_at) FROM calls WHERE state = ?", (QUEUED,)).fetchone()[0]
            return [Call.from_row(r) for r in rows], due

        return await self.db.run(job)

    async def defer(self, call_id: str, next_at: float, error: str, now: float) -> None:
        """Put back a call that reached no container: it did not run, so the attempt is undone."""
        await self._update(
            "UPDATE calls SET state = ?, attempts = attempts - 1, deferrals = deferrals + 1, "
            "next_at = ?, error = ?, updated_at = ? WHERE id = ? AND state = ?",
            (QUEUED, next_at, error, now, call_id, RUNNING),
        )

    async def finish(self, call_id: str, outcome: Outcome, now: float) -> None:
        """Record the result; a call with a callback URL now owes one (``pending``, due now)."""
        await self._update(
            "UPDATE calls SET state = ?, status = ?, result_headers = ?, result_body = ?, error = ?, "
            "finished_at = ?, updated_at = ?, "
            "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE ? END, callback_next_at = ? "
            "WHERE id = ? AND state = ?",
            (outcome.state, outcome.status, orjson.dumps(outcome.headers), outcome.body, outcome.error,
             now, now, CB_PENDING, now, call_id, RUNNING),
        )

    async def claim_callbacks(self, limit: int, now: float) -> tuple[list[Call], float | None]:
        """Up to ``limit`` due callback retries, now ``sending``; and when the next one is due."""

        def job(conn: sqlite3.Connection) -> tuple[list[Call], float | None]:
            rows = conn.execute(
                "UPDATE calls SET callback_state = ?, updated_at = ? WHERE seq IN "
                "(SELECT seq FROM calls WHERE callback_state = ? AND callback_next_at <= ? "
                "ORDER BY callback_next_at LIMIT ?) RETURNING *",
                (CB_SENDING, now, CB_PENDING, now, limit),
            ).fetchall() if limit > 0 else []
            due = conn.execute(
                "SELECT MIN(callback_next_at) FROM calls WHERE callback_state = ?", (CB_PENDING,)
            ).fetchone()[0]
            return [Call.from_row(r) for r in rows], due

        return await self.db.run(job)

    async def callback_delivered(self, call_id: str, attempts: int, now: float) -> None:
        await self._update(
            "UPDATE calls SET callback_state = ?, callback_attempts = ?, callback_next_at = NULL, "
            "updated_at = ? WHERE id = ?",
            (CB_DELIVERED, attempts, now, call_id),
        )

    async def callback_retry(
        self, call_id: str, attempts: int, next_at: float, error: str, now: float
    ) -> None:
        await self._update(
            "UPDATE calls SET callback_state = ?, callback_attempts = ?, callback_next_at = ?, "
            "callback_error = ?, updated_at = ? WHERE id = ?",
            (CB_PENDING, attempts, next_at, error, now, call_id),
        )

    async def callback_dead(self, call_id: str, attempts: int, error: str, now: float) -> None:
        """Out of retries: the call joins the dead-letter list (state ``failed``)."""
        await self._update(
            "UPDATE calls SET state = ?, callback_state = ?, callback_attempts = ?, callback_next_at = NULL, "
            "callback_error = ?, error = COALESCE(error, ?), updated_at = ? WHERE id = ?",
            (FAILED, CB_FAILED, attempts, error, f"callback not delivered: {error}", now, call_id),
        )

    async def recover(self, now: float, max_runs: int) -> dict[str, int]:
        """After a crash: re-queue calls left ``running`` (up to ``max_runs`` runs), resume callbacks."""

        def job(conn: sqlite3.Connection) -> dict[str, int]:
            lost = conn.execute(
                "UPDATE calls SET state = ?, status = 500, result_headers = ?, result_body = ?, "
                "error = 'gateway stopped during the last allowed run', finished_at = ?, updated_at = ?, "
                "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE ? END, callback_next_at = ? "
                "WHERE state = ? AND attempts >= ?",
                (FAILED, orjson.dumps([["Content-Type", "application/json"]]), LOST_BODY, now, now,
                 CB_PENDING, now, RUNNING, max_runs),
            ).rowcount
            requeued = conn.execute(
                "UPDATE calls SET state = ?, next_at = ?, updated_at = ? WHERE state = ?",
                (QUEUED, now, now, RUNNING),
            ).rowcount
            callbacks = conn.execute(
                "UPDATE calls SET callback_state = ?, callback_next_at = ? WHERE callback_state = ?",
                (CB_PENDING, now, CB_SENDING),
            ).rowcount
            return {"requeued": requeued, "failed": lost, "callbacks": callbacks}

        return await self.db.run(job)

    async def get(self, call_id: str) -> Call | None:
        def job(conn: sqlite3.Connection) -> Call | None:
            row = conn.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
            return None if row is None else Call.from_row(row)

        return await self.db.run(job)

    async def list(self, state: str | None, function: str | None, limit: int) -> list[Call]:
        """The most recent calls first, without request or result bodies."""
        where, args = ["1 = 1"], []
        if state:
            where.append("state = ?")
            args.append(state)
        if function:
            where.append("function = ?")
            args.append(function)
        sql = f"SELECT {SUMMARY} FROM calls WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"

        def job(conn: sqlite3.Connection) -> list[Call]:
            return [Call.from_row(r) for r in conn.execute(sql, (*args, limit)).fetchall()]

        return await self.db.run(job)

    async def counts(self, function: str | None = None) -> dict[str, int]:
        """Calls by state, of one function or of all."""
        where, args = ("WHERE function = ?", (function,)) if function else ("", ())
        sql = f"SELECT state, COUNT(*) FROM calls {where} GROUP BY state"

        def job(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(sql, args).fetchall()
            return {str(r[0]): int(r[1]) for r in rows}

        return await self.db.run(job)

    async def purge(self, now: float, retention_s: float, failed_retention_s: float) -> int:
        """Delete finished calls past their retention; never one whose callback is still owed."""
        sql = (
            "DELETE FROM calls WHERE seq IN (SELECT seq FROM calls WHERE state = ? AND finished_at < ? "
            "AND COALESCE(callback_state, '') NOT IN (?, ?) LIMIT ?)"
        )

        def job(conn: sqlite3.Connection) -> int:
            done = conn.execute(sql, ("succeeded", now - retention_s, CB_PENDING, CB_SENDING, PURGE_BATCH))
            dead = conn.execute(sql, (FAILED, now - failed_retention_s, CB_PENDING, CB_SENDING, PURGE_BATCH))
            return int(done.rowcount + dead.rowcount)

        return await self.db.run(job)

    async def _update(self, sql: str, args: tuple[Any, ...]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(sql, args)

        await self.db.run(job)
