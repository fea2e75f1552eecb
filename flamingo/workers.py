"""Send workers: the send stage spread over several processes, every case judged in one.

Why: flamingo's own process is CPU-bound long before a loopback target is. Per case pair,
aiohttp's request path for the two requests costs about as much as a whole plain client loop;
expanding, judging, tallying and writing come on top (docs/DESIGN-NOTES.md). With
``--workers N`` the parent forks N processes that only *send*; the parent keeps everything else.

Shape: the parent expands the cases, hands each worker batches of `WireRequest` tuples (the
method, path, headers and body of a case - nothing else crosses the process boundary), and
receives the exchanges back; it then judges, learns noise, tallies and writes exactly as in a
single-process run. So the pure core, the noise learner (which needs every sample of a template
in one place) and the writers stay single and unchanged; a worker is a `Sender` in another
process, with its share of the run's concurrency and of each target's rate limit.

Wire: a duplex `multiprocessing.connection.Connection` per worker (`multiprocessing.Pipe`: a
socketpair whose length-prefixed messages are the standard library's framing), each message a
pickle. Parent to worker: a batch ``[(seq, learn, WireRequest), ...]``; an empty batch means
"no more cases". Worker to parent: ``("results", [(seq, old, new, replica), ...])``, finally
``("done", peak_rss_mb)``, or ``("crash", traceback)`` when the worker itself failed. Flow control
is by credit: a worker never holds more than `window` cases the parent has not seen back, so the
parent's table of cases in flight stays bounded whatever the suite's size.

A `Connection` blocks, an event loop must not: each side reads in a thread that only receives
(so the peer's sends always drain, whatever the loop is doing, and two sides both sending large
frames cannot deadlock), and the parent also sends from a thread (so a stalled worker - a full
socket buffer - never freezes the loop that must still answer a signal). A worker sends from
its loop: its only reader is the parent's always-draining thread. Bytes cross the threads;
pickling and unpickling stay on the loop threads.

Stopping: the parent stops a worker by shutting its connection down (on a signal, or when a worker
died); the worker drops what it has in flight and exits. A worker ignores SIGINT - Ctrl-C in a
terminal reaches the whole process group, and it is the parent's to handle (flush, gate
``error``, exit 3). Any worker failure fails the run closed: the parent reports ``error``, never
``pass``.

Worker processes are forked (they inherit the loaded configuration and the transport factory
without pickling), before the parent starts its event loop or any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from flamingo.errors import WorkerFailed
from flamingo.model import Case, Exchange, RunSettings, Target
from flamingo.process import new_event_loop, peak_rss_mb, quiet_gc
from flamingo.send import Handle, Sender, TransportFactory, WireRequest, pair_tasks

#: Seconds a worker gets to exit after its connection is shut down, before it is killed (and a
#: thread of the parent's to return after it).
EXIT_GRACE = 5.0


def fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def worker_settings(settings: RunSettings, workers: int) -> list[RunSettings]:
    """Each worker's share: the concurrency split (the total in flight stays the run's), each
    target's rate limit divided, no request cap (a capped run is not split; see `plan`)."""
    base, extra = divmod(settings.concurrency, workers)
    return [
        replace(
            settings,
            concurrency=base + (1 if k < extra else 0),
            rate_limit=settings.rate_limit / workers,
            max_requests=0,
        )
        for k in range(workers)
    ]


#: ``workers: auto`` sends from this process alone below this many cases: forking costs ~50 ms
#: and ~40 MB per worker, more than a small run can win back.
AUTO_MIN_CASES = 2_000
#: ``auto`` never starts more workers than this: the parent judges every case, and at about
#: four senders its own share (~1/5 of a pair's CPU) becomes the limit.
AUTO_MAX_WORKERS = 4


def plan(
    requested: int, settings: RunSettings, total: int, one_process: str = ""
) -> tuple[int, str]:
    """How many send workers a run uses (1: none, send in this process), and why it is fewer
    than explicitly requested ('' when it is not). ``one_process``: why this run must send from
    one process whatever was asked (said whenever workers would otherwise be used).

    ``requested`` 0 is ``auto``: one worker per CPU this process may use (at most
    `AUTO_MAX_WORKERS`) for an unpaced run of at least `AUTO_MIN_CASES`, else none. Never
    workers for a run capped by ``max_requests`` (the hard cap is one counter, retries included)
    or where fork is missing; never more than the concurrency or the cases can feed.
    """
    if settings.max_requests:
        why = "--max-requests keeps a run in one process (one hard counter)"
        return 1, why if requested > 1 else ""
    if not fork_available():  # pragma: no cover - Linux and macOS have fork
        return 1, "this platform cannot fork worker processes" if requested > 1 else ""
    if requested == 0:
        cpus = cpu_count()
        if settings.rate_limit or total < AUTO_MIN_CASES or cpus < 2:
            return 1, ""  # a paced run goes at its rate; a small one is over before forks pay
        requested, explicit = min(cpus, AUTO_MAX_WORKERS), False
    else:
        explicit = True
    usable = max(1, min(requested, settings.concurrency, total))
    if one_process and usable > 1:
        return 1, one_process
    if usable < requested and explicit:
        return usable, f"{requested} workers for concurrency {settings.concurrency}, {total} cases"
    return usable, ""


# --------------------------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------------------------


def _pack(message: Any) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _receive(conn: Connection, deliver: Callable[[bytes | None], object]) -> None:
    """Thread body: every message ``conn`` receives to ``deliver``, then None at EOF."""
    while True:
        try:
            data: bytes | None = conn.recv_bytes()
        except (EOFError, OSError):
            data = None
        try:
            deliver(data)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            return
        if data is None:
            return


def _to_loop(
    loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[bytes | None]
) -> Callable[[bytes | None], object]:
    """A thread's way to put into ``inbox``, which belongs to ``loop``."""
    return lambda data: loop.call_soon_threadsafe(inbox.put_nowait, data)


def _hang_up(conn: Connection) -> None:
    """Shut both directions of ``conn`` down: the peer sees EOF, and a thread of ours blocked in
    a receive or a send on it returns at once (closing the descriptor under it would not)."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class _Link:
    """The parent's end of one worker's connection, for its event loop: `put` queues a message
    to a sender thread, `get` awaits the next one from a receiver thread (None: the worker has
    gone), `hang_up` stops both threads and tells the worker to stop."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._conn = conn
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        deliver = _to_loop(loop, self._inbox)
        self._threads = (
            threading.Thread(target=_receive, args=(conn, deliver), name=f"{name}-in", daemon=True),
            threading.Thread(target=self._send, name=f"{name}-out", daemon=True),
        )
        for thread in self._threads:
            thread.start()

    def _send(self) -> None:
        while (data := self._outbox.get()) is not None:
            try:
                self._conn.send_bytes(data)
            except OSError:  # the worker has gone; its receiver says so
                return

    def put(self, message: Any) -> None:
        self._outbox.put(_pack(message))

    async def get(self) -> Any:
        data = await self._inbox.get()
        return None if data is None else pickle.loads(data)

    def hang_up(self) -> None:
        self._outbox.put(None)
        _hang_up(self._conn)
        for thread in self._threads:
            thread.join(EXIT_GRACE)


# --------------------------------------------------------------------------------------------
# The worker process
# --------------------------------------------------------------------------------------------


def _worker_main(
    conn: Connection,
    inherited: list[Connection],
    old: Target,
    new: Target,
    replica: Target | None,
    settings: RunSettings,
    factory: TransportFactory,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's deferral (engine.py)
    for other in inherited:  # the parent's ends of earlier workers: they must see EOF, not us
        other.close()
    loop = new_event_loop()
    try:
        with quiet_gc():
            loop.run_until_complete(
                _serve(conn, lambda: Sender(old, new, settings, factory, replica=replica))
            )
    finally:
        loop.close()


async def _serve(conn: Connection, make_sender: Callable[[], Sender]) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
    receiver = threading.Thread(
        target=_receive,
        args=(conn, _to_loop(loop, inbox)),
        daemon=True,
    )
    receiver.start()
    todo: asyncio.Queue[tuple[int, bool, WireRequest] | None] = asyncio.Queue()
    outbox: list[tuple[int, Exchange, Exchange, Exchange | None]] = []
    sender: Sender | None = None
    tasks: list[asyncio.Task[None]] = []

    def post(message: Any) -> None:
        # The parent's receiver always drains, so this blocks only for the copy. When the
        # parent has gone, the receiver's EOF ends the worker; nothing to do here.
        with contextlib.suppress(OSError):
            conn.send_bytes(_pack(message))

    def flush() -> None:
        # Everything that finished in one turn of the loop goes back as one message.
        if outbox:
            post(("results", outbox[:]))
            outbox.clear()

    crashed = False

    def crash() -> None:
        # At once: a dead sending task would leave its case unanswered and the run waiting.
        # The parent answers by hanging up, which ends this worker.
        nonlocal crashed
        if not crashed:
            crashed = True
            post(("crash", traceback.format_exc()))

    async def send_cases(sender: Sender) -> None:
        try:
            while (job := await todo.get()) is not None:
                seq, learn, request = job
                old, new, replica = await sender.exchange(request, learn)
                if not outbox:
                    loop.call_soon(flush)
                outbox.append((seq, old, new, replica))
        except Exception:
            crash()
            raise

    try:
        sender = make_sender()
        tasks = [
            asyncio.ensure_future(send_cases(sender))
            for _ in range(pair_tasks(sender.settings.concurrency))
        ]
        while True:
            data = await inbox.get()
            if data is None:  # the parent stopped the run (or died): drop what is in flight
                return
            batch = pickle.loads(data)
            if not batch:
                break
            for job in batch:
                todo.put_nowait(job)
        for _ in tasks:
            todo.put_nowait(None)
        await asyncio.gather(*tasks)
        flush()
        post(("done", peak_rss_mb()))
    except Exception:
        with contextlib.suppress(Exception):
            crash()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if sender is not None:
            await sender.aclose()
        # The receiver may still wait on the parent; the process exits under it (a daemon).


# --------------------------------------------------------------------------------------------
# The parent's side
# --------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    window: int
    outstanding: int = 0
    peak_rss_mb: float | None = None


class SendPool:
    """N forked send workers. Start it before the event loop and any thread; use as a context
    manager (leaving it makes sure no worker outlives the run)."""

    def __init__(
        self,
        workers: int,
        old: Target,
        new: Target,
        settings: RunSettings,
        factory: TransportFactory,
        replica: Target | None = None,
    ) -> None:
        self.size = workers
        self._args = (old, new, replica)
        self._shares = worker_settings(settings, workers)
        self._factory = factory
        self.workers: list[_Worker] = []

    def __enter__(self) -> SendPool:
        context = multiprocessing.get_context("fork")
        # A forked child flushes the standard streams when it exits: nothing may be pending.
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            for index, share in enumerate(self._shares):
                mine, theirs = context.Pipe(duplex=True)
                process = context.Process(
                    target=_worker_main,
                    # The child must not hold any parent end, its own included: a worker learns
                    # that the parent stopped from EOF on its connection.
                    args=(
                        theirs,
                        [*(w.conn for w in self.workers), mine],
                        *self._args,
                        share,
                        self._factory,
                    ),
                    name=f"flamingo-send-{index}",
                    daemon=True,
                )
                process.start()
                theirs.close()
                window = max(8, 4 * pair_tasks(share.concurrency))
                self.workers.append(_Worker(index, process, mine, window=window))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def peak_rss_mb(self) -> list[float | None]:
        return [w.peak_rss_mb for w in self.workers]

    def close(self) -> None:
        """Hang up every connection (a worker still running drops its work and exits), reap
        the workers."""
        for worker in self.workers:
            _hang_up(worker.conn)
            worker.conn.close()
        for worker in self.workers:
            worker.process.join(EXIT_GRACE)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(EXIT_GRACE)

    async def aclose(self) -> None:
        """Nothing to do in the event loop: `close` (leaving the context) reaps the workers."""

    async def run(self, cases: Iterator[Case], handle: Handle) -> str:
        """Send every case through the workers; ``handle`` each exchange as it comes back.

        Returns '' when every case came back (a pooled run has no request cap: see `plan`);
        raises `WorkerFailed` when a worker died. Cancelling
        it (a signal) hangs up on the workers: they stop, and what they had in flight is
        dropped (it was never judged, so nothing judged is lost).
        """
        pending: dict[int, Case] = {}
        seqs = itertools.count()
        exhausted = False
        loop = asyncio.get_running_loop()
        links: list[_Link] = []

        async def feed(worker: _Worker, link: _Link, room: asyncio.Event) -> None:
            nonlocal exhausted
            while not exhausted:
                while worker.outstanding > worker.window // 2:
                    room.clear()
                    await room.wait()
                want = worker.window - worker.outstanding
                batch = []
                for case in islice(cases, want):  # one shared iterator: each case sent once
                    seq = next(seqs)
                    pending[seq] = case
                    batch.append((seq, bool(case.compare.noise), WireRequest.of(case)))
                if len(batch) < want:
                    exhausted = True
                if batch:
                    worker.outstanding += len(batch)
                    link.put(batch)
            link.put([])  # no more cases: finish what you have, then report

        async def collect(worker: _Worker, link: _Link, room: asyncio.Event) -> None:
            while True:
                message = await link.get()
                if message is None:
                    for _ in range(100):  # a moment for it to be reaped: say how it ended
                        if worker.process.exitcode is not None:
                            break
                        await asyncio.sleep(0.01)
                    code = worker.process.exitcode
                    raise WorkerFailed(
                        f"send worker {worker.index} exited before it finished"
                        + (f" (exit code {code})" if code is not None else "")
                    )
                kind, payload = message
                if kind == "results":
                    worker.outstanding -= len(payload)
                    for seq, old, new, replica in payload:
                        handle(pending.pop(seq), old, new, replica)
                    if worker.outstanding <= worker.window // 2:
                        room.set()
                elif kind == "done":
                    worker.peak_rss_mb = payload
                    return
                else:
                    failure = WorkerFailed(f"send worker {worker.index} crashed")
                    failure.add_note(str(payload))
                    raise failure

        jobs = []
        try:
            for worker in self.workers:
                link = _Link(worker.conn, loop, f"flamingo-send-{worker.index}")
                links.append(link)
                room = asyncio.Event()
                jobs.append(asyncio.ensure_future(feed(worker, link, room)))
                jobs.append(asyncio.ensure_future(collect(worker, link, room)))
            await asyncio.gather(*jobs)
            return ""
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            for link in links:
                link.hang_up()  # a worker still running sees EOF, drops its work and exits


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1
