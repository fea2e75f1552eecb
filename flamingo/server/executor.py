"""Running the gate server's runs: one thread, one run at a time, through the one engine.

This module owns the run queue, the live progress of the run in flight, the waiters (a Flagger
webhook with ``run: "true"`` waits for its run), and `run_stage` - the one function that calls
the engine (`flamingo.engine.Session`), so the server never has a run loop of its own.

Runs go one at a time, in the order they were accepted: two stages never share the targets'
capacity (a latency ratio measured while another stage's run is sending would be meaningless),
and `Store.create` already refuses a second run of a stage that has one queued or running.

Stopping is ordered (`Executor.stop`): no new run starts, the run in flight is told to stop
(``interrupt``: the engine ends it as an interrupted ``error`` run, keeping what it judged), and
the thread is joined - bounded - before the caller closes the store. A run thread left running
while the interpreter shuts down is what crashed the server at exit (SIGSEGV): a daemon thread
inside the engine's event loop and aiohttp client when the main thread finalizes.

Runs never fork send workers here (``workers: 1``): a fork of a process that has a server
thread and its listening socket would copy both into each worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flamingo.model import GateResult, Totals
from flamingo.server.store import RunRecord, Store
from flamingo.stage import judge_result

__all__ = ["INTERRUPTED", "Executor", "ProgressSink", "gate_without_run", "run_stage"]

#: The reason of a run the server stopped under (finished by the executor or, after a crash,
#: by recovery at the next start).
INTERRUPTED = "the server stopped while the run was in progress; its cases were not all judged"
#: How long `Executor.stop` waits for the run in flight to wind down by default (seconds).
STOP_WAIT = 10.0

ProgressSink = Callable[[dict[str, Any]], None]
RunFunction = Callable[[RunRecord, Path, ProgressSink], dict[str, Any]]


def gate_without_run(
    record: RunRecord, reason: str, *, complete: bool, totals: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A gate document the engine did not write: a run still going (``complete: false``), or
    one that could not run or finish (``error``). Never ``pass``."""
    counted = Totals(**{k: v for k, v in (totals or {}).items() if k in Totals.__annotations__})
    gate = GateResult(
        "error", None if record.stage == "default" else record.stage, counted, (), reason
    )
    return {
        "id": record.id,
        "verdict": "error",
        "complete": complete,
        "stage": gate.stage,
        "reason": reason,
        "totals": counted.as_dict(),
        "checks": [],
        "judgeResult": judge_result(gate),
    }


def run_stage(
    session: Any, record: RunRecord, out_dir: Path, progress: ProgressSink
) -> dict[str, Any]:
    """Run ``record`` through the engine and return its gate document (gate.json as written).

    The adapter between the server and the engine: the only place the server starts a run.
    """
    from flamingo.engine import Observer, RunOptions, Selection

    class Progress(Observer):
        def __init__(self) -> None:
            self.total = 0

        def started(self, run: Any) -> None:
            self.total = run.total
            progress({"cases": 0, "total": run.total})

        def progress(self, totals: Totals) -> None:
            progress({"cases": totals.cases, "total": self.total, "totals": totals.as_dict()})

    request = record.request
    selection = Selection(
        keyword=request.get("k"),
        tags=tuple(request.get("tags") or ()),
        shard=request.get("shard"),
    )
    stage = None if record.stage == "default" else record.stage
    options = RunOptions(stage=stage, out_dir=out_dir, workers=1)
    run = session.run(selection, options, observers=[Progress()])
    summary = run.wait()
    return dict(summary.document)


class Executor:
    """The queue and its thread (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        run: RunFunction,
        redact: Callable[[str], str] = str,
        interrupt: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.redact = redact  # secrets out of messages the engine did not write
        self.data_dir = data_dir
        self.run = run
        self.interrupt = interrupt  # tells the run in flight to stop (from another thread)
        self._stopping = threading.Event()
        self._current: str | None = None  # the run in flight
        self._queue: queue.Queue[RunRecord | None] = queue.Queue()
        self._progress: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="flamingo-runs", daemon=True)

    def start(self, queued: list[RunRecord]) -> None:
        for record in queued:
            self._queue.put(record)
        self._thread.start()

    def stop(self, timeout: float = STOP_WAIT) -> bool:
        """Start no other run, stop the one in flight, and wait for the thread (at most
        ``timeout`` seconds); True when it ended. The store may be closed only after this."""
        with self._lock:  # a run starts under this lock, or not at all once stopping is set
            self._stopping.set()
            busy = self._current is not None
        self._queue.put(None)
        if busy:
            self.interrupt()
        if not self._thread.is_alive():
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def submit(self, record: RunRecord) -> None:
        self._queue.put(record)

    def progress(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._progress.get(run_id)
            return dict(found) if found is not None else None

    async def wait(self, run_id: str, timeout: float) -> bool:
        """Wait until ``run_id`` is done (True) or ``timeout`` seconds passed (False)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters.setdefault(run_id, []).append((loop, future))
        record = self.store.get(run_id)  # after registering: a finish in between is not missed
        if record is None or record.status == "done":
            return True
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiting = self._waiters.get(run_id, [])
                with contextlib.suppress(ValueError):
                    waiting.remove((loop, future))
        return True

    def _work(self) -> None:
        while True:
            record = self._queue.get()
            with self._lock:
                if record is None or self._stopping.is_set():  # queued runs wait for a restart
                    return
                self._current = record.id
            try:
                self._one(record)
            except sqlite3.ProgrammingError:  # the store was closed under a run stop() gave up on
                return
            finally:
                with self._lock:
                    self._current = None

    def _one(self, record: RunRecord) -> None:
        self.store.mark_running(record.id)
        started = time.monotonic()

        def sink(update: dict[str, Any]) -> None:
            update["elapsed_s"] = round(time.monotonic() - started, 3)
            with self._lock:
                self._progress[record.id] = update

        sink({"cases": 0})
        out_dir = self.data_dir / "runs" / record.id
        try:
            gate = self.run(record, out_dir, sink)
        except Exception as exc:  # input error, harness error, a bug: the run is error
            text = self.redact(str(exc))
            message = text.splitlines()[0] if text else type(exc).__name__
            gate = gate_without_run(record, f"the run could not run: {message}", complete=True)
            with contextlib.suppress(OSError):
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / "server-error.log").write_text(self.redact(traceback.format_exc()))
        gate = {"id": record.id, **gate}
        if self._stopping.is_set() and gate.get("verdict") not in ("pass", "fail"):
            told = str(gate.get("reason") or "").strip()
            gate["reason"] = f"{INTERRUPTED} ({told})" if told else INTERRUPTED
        self.store.finish(record.id, gate)  # closed under the run: recovery finishes it
        with self._lock:
            self._progress.pop(record.id, None)
            waiters = self._waiters.pop(record.id, [])
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
