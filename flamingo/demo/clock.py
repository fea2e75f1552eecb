"""A clock origin: the noisiest honest endpoint there is, for noise learning that sees time.

``GET /clock`` answers ``{"msec": <epoch milliseconds>, "request_id": <uuid hex>, "expires_at":
<epoch milliseconds an hour ahead>}`` with a ``Date`` header and an ``Expires`` an hour ahead.
Every answer differs from every other, and the millisecond clock differs between two requests
sent at the same moment only when they straddle a tick - which is why counting old-vs-old
differences alone learns it in some runs and not in others.

``mode`` plants a regression in the answers of one instance (the ``new`` under test):

    ok         as above
    null       ``msec`` is null (a timestamp became null: a change of shape)
    constant   ``msec`` is a minute before the server started, forever (a clock that stopped,
               a cached answer)
    empty-id   ``request_id`` is ""
    lifetime   ``expires_at`` and ``Expires`` are five minutes ahead, not an hour (a lifetime cut:
               both still look like "now", a day's window wide)

`running_clock` serves one instance on 127.0.0.1 from a thread, and `clock_run` runs the clock
suite (one case repeated, ``noise: auto``, no ignore rule) against two of them through the engine
(tests and ``bench/clock_noise.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from flamingo.demo.servers import _start

if TYPE_CHECKING:
    from flamingo.engine import RunSummary

__all__ = ["CLOCK_MODES", "CLOCK_SUITE", "clock_run", "make_clock_app", "running_clock"]

#: The clock case, sent ``repeat`` times, with noise learning and no ignore rule at all.
CLOCK_SUITE = """\
suite: clock
requests:
  - name: clock
    path: /clock
    repeat: {repeat}
compare:
  noise: auto
"""

CLOCK_MODES = ("ok", "null", "constant", "empty-id", "lifetime")


def make_clock_app(mode: str = "ok") -> web.Application:
    if mode not in CLOCK_MODES:
        raise ValueError(f"unknown clock mode {mode!r} (one of {', '.join(CLOCK_MODES)})")
    stopped = int(time.time() * 1000) - 60_000

    lifetime = 300 if mode == "lifetime" else 3600

    async def clock(request: web.Request) -> web.Response:
        now = time.time()
        body: dict[str, Any] = {
            "msec": int(now * 1000),
            "request_id": uuid.uuid4().hex,
            "expires_at": int((now + lifetime) * 1000),
        }
        if mode == "null":
            body["msec"] = None
        elif mode == "constant":
            body["msec"] = stopped
        elif mode == "empty-id":
            body["request_id"] = ""
        expires = formatdate(now + lifetime, usegmt=True)
        return web.json_response(body, headers={"Expires": expires})

    app = web.Application()
    app.router.add_get("/clock", clock)
    return app


@contextlib.contextmanager
def running_clock(mode: str = "ok") -> Iterator[str]:
    """Serve a clock on 127.0.0.1 (a free port) from a thread; yields its base URL."""
    app = make_clock_app(mode)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runners: list[web.AppRunner] = []
    state: dict[str, str] = {}

    async def start() -> None:
        state["url"] = await _start(app, "127.0.0.1", 0, runners)  # the demo servers' own start
        ready.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(runners[0].cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name=f"clock-{mode}", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the clock server did not start within 10 s")
    try:
        yield state["url"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def clock_run(old: str, new: str, folder: Path, repeat: int = 30) -> RunSummary:
    """One run of the clock suite, old and new as given (files written to ``folder``)."""
    from flamingo.engine import RunOptions, Session

    targets = folder / "targets.yaml"
    targets.write_text(
        "targets:\n"
        f'  old: {{ base_url: "{old}" }}\n'
        f'  new: {{ base_url: "{new}" }}\n'
        "run: { concurrency: 20, timeout: 5s, workers: 1 }\n"
    )
    suite = folder / "clock.yaml"
    suite.write_text(CLOCK_SUITE.format(repeat=repeat))
    return Session.from_files(targets, [suite]).run(options=RunOptions()).wait()
