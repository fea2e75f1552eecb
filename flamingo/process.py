"""Process-level settings of a flamingo process: signals, the event loop, the garbage
collector, memory.

Shared by the command line, the engine (the judging process) and the send workers
(`flamingo.workers`). Imports nothing heavy: ``python -m flamingo`` takes the signals (`SIGNALS`)
before it imports the rest of flamingo.
"""

from __future__ import annotations

import contextlib
import gc
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

#: Net new container objects that trigger a young-generation collection during a run (CPython's
#: default is 700). See `quiet_gc`.
GC_YOUNG_THRESHOLD = 20_000


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Keep the cyclic garbage collector out of the hot loop; restored afterwards.

    Nearly everything a case allocates dies by reference counting when the case is done, but
    with 100 requests in flight the young generation keeps crossing CPython's default threshold
    of 700 live allocations: ~1,000 collections per 10k cases, which promote in-flight request
    objects and so trigger full collections that walk every object the process holds (~40k
    after imports). Measured: ~10% of a run's CPU. So, for the run only: everything allocated
    before it (modules, config, suites) is frozen out of the collector's walks, and a young
    collection needs `GC_YOUNG_THRESHOLD` net new objects - which a run only reaches when it
    really accumulates (the noise learner's held results), so cycles are still collected.
    """
    thresholds = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0  # leave a caller's own freeze alone
    if freeze:
        gc.freeze()
    if thresholds[0]:  # 0: the collector is switched off; keep it so
        gc.set_threshold(max(GC_YOUNG_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freeze:
            gc.unfreeze()


def peak_rss_mb() -> float | None:
    """This process's own peak resident memory (VmHWM), in MiB; None where /proc has none.

    Not ``getrusage().ru_maxrss``: across a (v)fork + exec Linux carries the parent's peak into
    it, so a flamingo started by a large process would report that process's memory.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def new_event_loop() -> asyncio.AbstractEventLoop:
    import asyncio

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional (not on every platform)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped what flamingo was doing; raised by `SignalGuard` only where
    stopping at once is safe (loading, counting, listing). A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` turns it into an input or harness error."""

    def __init__(self, name: str) -> None:
        super().__init__(f"interrupted by {name}")
        self.signal = name


class SignalGuard:
    """SIGINT and SIGTERM for the whole life of a flamingo process: never a traceback, never
    a death by signal, so every interrupted run can still write gate.json (``error``, exit 3).

    Theory of operation: one handler is installed once (``python -m flamingo`` does it before
    importing anything else) and never taken away while flamingo runs, so there is no window in
    which Python's default handlers (KeyboardInterrupt, death by SIGTERM) are back - not between
    two phases, not for the tenth Ctrl-C in a row. What a signal *does* depends on the phase:

        phase        set by        a signal ...
        deferring    (default)     is noted (`received`): imports, setting up, writing the report
        raising      `raising`     is noted and raises `Interrupted` once: loading, counting,
                                   listing - pure work that may stop anywhere
        calling      `calling`     is noted and handed to a callback: the send loop stops itself
                                   (from its own event loop, never from inside the handler)

    A stop is acted on once: after `Interrupted` was raised or a callback took a signal, no
    later signal raises, in any phase - the clean-up (gate.json, the report) is never cut short,
    and a run already under way is never reported as "interrupted before any case was sent".
    Front doors run the engine inside `deferring` (the engine has the signals during a run).

    Only the main thread can take signals; elsewhere `install` does nothing and Python's own
    handling stays.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received = ""  # the name of the first signal since `install`, "" for none
        self._raise = False
        self._raised = False
        self._callback: Callable[[str], None] | None = None
        self._saved: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._saved)

    def install(self) -> bool:
        """Take SIGINT and SIGTERM, with a fresh state; False when already installed (then
        nothing changes) or when this is not the main thread."""
        if self._saved:
            return False
        try:
            for sig in self.SIGNALS:
                self._saved[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            self.restore()
            return False
        self.received, self._raised = "", False
        self._raise, self._callback = False, None
        return True

    def restore(self) -> None:
        """Give the signals back to whoever had them before `install`."""
        saved, self._saved = self._saved, {}
        for sig, previous in saved.items():
            signal.signal(sig, previous)

    @contextlib.contextmanager
    def session(self) -> Iterator[SignalGuard]:
        """Installed for the block (unless it already was: then left as it is)."""
        installed = self.install()
        try:
            yield self
        finally:
            if installed:
                self.restore()

    def note(self, signum: int) -> None:
        """A signal that arrived before `install` (``python -m flamingo``'s first instants)."""
        self.received = self.received or signal.Signals(signum).name

    def _handle(self, signum: int, frame: object) -> None:
        self.interrupt(signal.Signals(signum).name)
        if self._raise and not self._raised:
            self._raised = True  # once: the next Ctrl-C must not interrupt the clean-up
            raise Interrupted(self.received)

    def interrupt(self, name: str) -> None:
        """Stop what is running as a signal would, from any thread: for a front door that took
        the signals itself (the gate server's event loop) and stops its run thread this way.
        Never raises here: a run that is counting sees it when it starts sending."""
        self.received = self.received or name
        callback = self._callback
        if callback is not None:
            # Acted on: the stop is under way; a later signal, in whatever phase comes next,
            # must not cut its clean-up short (or report the run as never begun).
            self._raised = True
            callback(self.received)

    @contextlib.contextmanager
    def _phase(self, raising: bool, callback: Callable[[str], None] | None) -> Iterator[None]:
        previous = self._raise, self._callback
        self._raise, self._callback = raising, callback
        try:
            yield
        finally:
            self._raise, self._callback = previous

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """A signal within the block - or one noted before it - raises `Interrupted` (once)."""
        with self._phase(True, None):
            if self.received and not self._raised and self.installed:
                self._raised = True
                raise Interrupted(self.received)
            yield

    def deferring(self) -> contextlib.AbstractContextManager[None]:
        """A signal within the block is only noted."""
        return self._phase(False, None)

    def calling(self, callback: Callable[[str], None]) -> contextlib.AbstractContextManager[None]:
        """A signal within the block is noted and ``callback(name)`` is called (from the signal
        handler: it must only schedule, e.g. ``loop.call_soon_threadsafe``)."""
        return self._phase(False, callback)


#: The process's one guard (see `SignalGuard`).
SIGNALS = SignalGuard()
