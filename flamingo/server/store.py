"""The gate server's state on disk: runs and their gate documents, in one SQLite file.

This module owns ``DATA/flamingo.sqlite3``. Every run the server accepted is a row from the
moment it is accepted (``queued``) until it is ``done`` with its gate document, so a restart
loses nothing: queued runs are run after the restart, and a run that was ``running`` when the
server stopped is finished as ``error`` (its cases were sent but never all judged: fail closed),
never left "running" forever and never re-sent behind the operator's back.

One run of a stage at a time: `create` refuses (`StageBusy`) a run of a stage that already has
one queued or running, atomically (the check and the insert are one transaction under the
store's lock), so two runs of one stage never interleave.

SQLite is used from the server's event loop and from the run thread; one connection guarded by
a lock, WAL journal, short transactions.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

__all__ = ["RunRecord", "StageBusy", "Store", "new_run_id", "valid_run_id"]

Status = Literal["queued", "running", "done"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    stage TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done')),
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    verdict TEXT,
    gate TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_stage ON runs (stage, status, seq);
"""

_ID_LENGTH = 32


def new_run_id() -> str:
    return uuid.uuid4().hex


def valid_run_id(text: str) -> bool:
    """A run id is 32 lower-case hex digits: nothing else ever reaches a query or a path."""
    return len(text) == _ID_LENGTH and all(c in "0123456789abcdef" for c in text)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StageBusy(Exception):
    """The stage already has a run queued or running (its id is ``run_id``)."""

    def __init__(self, stage: str, run_id: str) -> None:
        super().__init__(f"stage '{stage}' already has run {run_id} queued or running")
        self.stage = stage
        self.run_id = run_id


@dataclass(frozen=True)
class RunRecord:
    id: str
    stage: str  # a stage name, or "default"
    request: dict[str, Any]  # the selection asked for (k, tags, shard)
    status: Status
    created_at: str
    started_at: str | None
    finished_at: str | None
    verdict: str | None
    gate: dict[str, Any] | None  # the finished run's gate document


class Store:
    """Runs on disk (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "flamingo.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a finished gate survives a power cut
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            id=row["id"],
            stage=row["stage"],
            request=json.loads(row["request"]),
            status=row["status"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            verdict=row["verdict"],
            gate=json.loads(row["gate"]) if row["gate"] is not None else None,
        )

    # -- writing -------------------------------------------------------------------------

    def create(self, stage: str, request: dict[str, Any]) -> RunRecord:
        """A new queued run of ``stage``; `StageBusy` when the stage has one queued/running."""
        run_id = new_run_id()
        with self._lock, self._transaction() as db:
            busy = db.execute(
                "SELECT id FROM runs WHERE stage = ? AND status != 'done' LIMIT 1", (stage,)
            ).fetchone()
            if busy is not None:
                raise StageBusy(stage, busy["id"])
            db.execute(
                "INSERT INTO runs (id, stage, request, status, created_at) "
                "VALUES (?, ?, ?, 'queued', ?)",
                (run_id, stage, json.dumps(request, sort_keys=True), now()),
            )
        record = self.get(run_id)
        assert record is not None
        return record

    def mark_running(self, run_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET status = 'running', started_at = ? WHERE id = ?", (now(), run_id)
            )

    def finish(self, run_id: str, gate: dict[str, Any]) -> None:
        """Store the gate document; the run is ``done``."""
        verdict = gate.get("verdict")
        with self._lock:
            self._db.execute(
                "UPDATE runs SET status = 'done', finished_at = ?, verdict = ?, gate = ? "
                "WHERE id = ?",
                (now(), verdict if isinstance(verdict, str) else "error", json.dumps(gate), run_id),
            )

    def recover_running(self, interrupted_gate: Callable[[RunRecord], dict[str, Any]]) -> None:
        """Runs that are ``running`` (the server is stopping, or stopped without a chance to
        say so) are finished with ``interrupted_gate(record)``."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs WHERE status = 'running'").fetchall()
        for row in rows:
            record = self._record(row)
            self.finish(record.id, interrupted_gate(record))

    def recover(self, interrupted_gate: Callable[[RunRecord], dict[str, Any]]) -> list[RunRecord]:
        """After a restart: runs that were ``running`` are finished with
        ``interrupted_gate(record)``; the ``queued`` ones are returned, oldest first, to be run."""
        self.recover_running(interrupted_gate)
        with self._lock:
            queued = self._db.execute(
                "SELECT * FROM runs WHERE status = 'queued' ORDER BY seq"
            ).fetchall()
        return [self._record(row) for row in queued]

    # -- reading -------------------------------------------------------------------------

    def _one(self, sql: str, params: tuple[str, ...]) -> RunRecord | None:
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        return None if row is None else self._record(row)

    def get(self, run_id: str) -> RunRecord | None:
        if not valid_run_id(run_id):
            return None
        return self._one("SELECT * FROM runs WHERE id = ?", (run_id,))

    def latest_finished(self, stage: str) -> RunRecord | None:
        return self._one(
            "SELECT * FROM runs WHERE stage = ? AND status = 'done' ORDER BY seq DESC LIMIT 1",
            (stage,),
        )

    def active(self, stage: str) -> RunRecord | None:
        """The stage's queued or running run, if any."""
        return self._one(
            "SELECT * FROM runs WHERE stage = ? AND status != 'done' ORDER BY seq LIMIT 1",
            (stage,),
        )

    def latest_per_stage(self) -> list[RunRecord]:
        """Each stage's latest finished run (for /metrics)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM runs WHERE seq IN "
                "(SELECT MAX(seq) FROM runs WHERE status = 'done' GROUP BY stage) ORDER BY stage"
            ).fetchall()
        return [self._record(row) for row in rows]

    def counts(self) -> list[tuple[str, str, str | None, int]]:
        """``(stage, status, verdict, runs)`` for every combination present."""
        with self._lock:
            rows = self._db.execute(
                "SELECT stage, status, verdict, COUNT(*) AS n FROM runs "
                "GROUP BY stage, status, verdict ORDER BY stage, status, verdict"
            ).fetchall()
        return [(r["stage"], r["status"], r["verdict"], r["n"]) for r in rows]

    def case_totals(self) -> list[tuple[str, str, int]]:
        """``(stage, outcome, cases)`` summed over finished runs."""
        totals: dict[tuple[str, str], int] = {}
        with self._lock:
            rows = self._db.execute(
                "SELECT stage, json_extract(gate, '$.totals') AS totals FROM runs "
                "WHERE status = 'done' AND gate IS NOT NULL"
            ).fetchall()
        for row in rows:
            counted = json.loads(row["totals"]) if row["totals"] else {}
            for outcome in ("match", "diff", "fail", "error"):
                value = counted.get(outcome, 0) if isinstance(counted, dict) else 0
                if isinstance(value, int) and not isinstance(value, bool):
                    key = (row["stage"], outcome)
                    totals[key] = totals.get(key, 0) + value
        return [(stage, outcome, n) for (stage, outcome), n in sorted(totals.items())]
