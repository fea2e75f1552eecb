"""Process-level settings of a flamingo process: the event loop, the garbage collector, memory.

Shared by the engine (the judging process) and the send workers (`flamingo.workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator

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
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional (not on every platform)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
