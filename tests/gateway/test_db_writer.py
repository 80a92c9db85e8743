"""The SQLite writer thread: group commit, per-job savepoints, and a clean stop."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.db_writer import DbClosed, DbWriter

SCHEMA = "CREATE TABLE IF NOT EXISTS t (v INTEGER UNIQUE);"


def insert(value: int):  # type: ignore[no-untyped-def]
    def job(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return job


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])


async def test_many_jobs_commit_and_a_failing_one_undoes_only_itself(tmp_path: Path) -> None:
    db = DbWriter(tmp_path / "w.db", "normal", SCHEMA)
    try:
        results = await asyncio.gather(*(db.run(insert(i % 50)) for i in range(100)),
                                       return_exceptions=True)
        # The second insert of each value breaks UNIQUE; its neighbours stand.
        assert sum(isinstance(r, sqlite3.IntegrityError) for r in results) == 50
        assert await db.run(count) == 50
    finally:
        await db.close()


async def test_jobs_around_the_close_are_run_or_refused_never_left_waiting(tmp_path: Path) -> None:
    db = DbWriter(tmp_path / "w.db", "normal", SCHEMA)
    jobs = [asyncio.create_task(db.run(insert(i))) for i in range(200)]
    await asyncio.sleep(0)
    closing = asyncio.create_task(db.close())
    late = [asyncio.create_task(db.run(insert(1000 + i))) for i in range(50)]
    _done, pending = await asyncio.wait([*jobs, *late, closing], timeout=10)
    assert not pending, f"{len(pending)} jobs were never answered"
    for task in late:
        assert isinstance(task.exception(), DbClosed)
    with pytest.raises(DbClosed):
        await db.run(count)
