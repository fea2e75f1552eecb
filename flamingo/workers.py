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

Wire: in each direction a stream of frames (8-byte big-endian length + pickle) over a
socketpair. Parent to worker: a batch ``[(seq, learn, WireRequest), ...]``; an empty batch means
"no more cases". Worker to parent: ``("results", [(seq, old, new, replica), ...])``, finally
``("done", peak_rss_mb)``, or ``("crash", traceback)`` when the worker itself failed. Flow control
is by credit: a worker never holds more than `window` cases the parent has not seen back, so the
parent's table of cases in flight stays bounded whatever the suite's size.

Stopping: the parent stops a worker by closing its socket (on a signal, or when a worker died);
the worker drops what it has in flight and exits. A worker ignores SIGINT - Ctrl-C in a terminal
reaches the whole process group, and it is the parent's to handle (flush, gate ``error``,
exit 3). Any worker failure fails the run closed: the parent reports ``error``, never ``pass``.

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
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from multiprocessing.process import BaseProcess
from typing import Any

from flamingo.errors import WorkerFailed
from flamingo.model import Case, Exchange, RunSettings, Target
from flamingo.process import new_event_loop, peak_rss_mb, quiet_gc
from flamingo.send import Handle, Sender, TransportFactory, WireRequest, pair_tasks

#: Seconds a worker gets to exit after its socket is closed, before it is killed.
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


def plan(requested: int, settings: RunSettings, total: int) -> tuple[int, str]:
    """How many send workers a run uses (1: none, send in this process), and why it is fewer
    than explicitly requested ('' when it is not).

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
    if usable < requested and explicit:
        return usable, f"{requested} workers for concurrency {settings.concurrency}, {total} cases"
    return usable, ""


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def _frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(8, "big") + payload


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message, or None when the other side has gone (EOF or reset)."""
    try:
        head = await reader.readexactly(8)
        payload = await reader.readexactly(int.from_bytes(head, "big"))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return pickle.loads(payload)


# --------------------------------------------------------------------------------------------
# The worker process
# --------------------------------------------------------------------------------------------


def _worker_main(
    sock: socket.socket,
    inherited: list[socket.socket],
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
                _serve(sock, lambda: Sender(old, new, settings, factory, replica=replica))
            )
    finally:
        loop.close()


async def _serve(sock: socket.socket, make_sender: Callable[[], Sender]) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(sock=sock)
    queue: asyncio.Queue[tuple[int, bool, WireRequest] | None] = asyncio.Queue()
    outbox: list[tuple[int, Exchange, Exchange, Exchange | None]] = []
    sender: Sender | None = None
    tasks: list[asyncio.Task[None]] = []

    def flush() -> None:
        # Everything that finished in one turn of the loop goes back as one frame.
        if outbox:
            writer.write(_frame(("results", outbox[:])))
            outbox.clear()

    crashed = False

    def crash() -> None:
        # At once: a dead sending task would leave its case unanswered and the run waiting.
        # The parent answers by closing the socket, which ends this worker.
        nonlocal crashed
        if not crashed:
            crashed = True
            writer.write(_frame(("crash", traceback.format_exc())))

    async def send_cases(sender: Sender) -> None:
        try:
            while (job := await queue.get()) is not None:
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
            batch = await _read_frame(reader)
            if batch is None:  # the parent stopped the run (or died): drop what is in flight
                return
            if not batch:
                break
            for job in batch:
                queue.put_nowait(job)
        for _ in tasks:
            queue.put_nowait(None)
        await asyncio.gather(*tasks)
        flush()
        writer.write(_frame(("done", peak_rss_mb())))
        await writer.drain()
    except Exception:
        with contextlib.suppress(Exception):
            crash()
            await writer.drain()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if sender is not None:
            await sender.aclose()
        writer.close()


# --------------------------------------------------------------------------------------------
# The parent's side
# --------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    sock: socket.socket
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
                mine, theirs = socket.socketpair()
                process = context.Process(
                    target=_worker_main,
                    # The child must not hold any parent end, its own included: a worker learns
                    # that the parent stopped from EOF on its socket.
                    args=(
                        theirs,
                        [*(w.sock for w in self.workers), mine],
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
        """Close every socket (a worker still running drops its work and exits), reap them."""
        for worker in self.workers:
            worker.sock.close()
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
        it (a signal) closes the workers' sockets: they stop, and what they had in flight is
        dropped (it was never judged, so nothing judged is lost).
        """
        pending: dict[int, Case] = {}
        seqs = itertools.count()
        exhausted = False
        streams = []
        for worker in self.workers:
            streams.append(await asyncio.open_connection(sock=worker.sock))

        async def feed(worker: _Worker, writer: asyncio.StreamWriter, room: asyncio.Event) -> None:
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
                    writer.write(_frame(batch))
                    await writer.drain()
            writer.write(_frame([]))  # no more cases: finish what you have, then report
            await writer.drain()

        async def collect(
            worker: _Worker, reader: asyncio.StreamReader, room: asyncio.Event
        ) -> None:
            while True:
                message = await _read_frame(reader)
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
        for worker, (reader, writer) in zip(self.workers, streams, strict=True):
            room = asyncio.Event()
            jobs.append(asyncio.ensure_future(feed(worker, writer, room)))
            jobs.append(asyncio.ensure_future(collect(worker, reader, room)))
        try:
            await asyncio.gather(*jobs)
            return ""
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            for _, writer in streams:
                writer.close()  # a worker still running sees EOF, drops its work and exits


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1
