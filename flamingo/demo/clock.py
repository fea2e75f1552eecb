"""A clock origin: the noisiest honest endpoint there is, for noise learning that sees time.

``GET /clock`` answers ``{"msec": <epoch milliseconds>, "request_id": <uuid hex>}`` with a
``Date`` header. Every answer differs from every other, and the millisecond clock differs between
two requests sent at the same moment only when they straddle a tick - which is why counting
old-vs-old differences alone learns it in some runs and not in others.

``mode`` plants a regression in the answers of one instance (the ``new`` under test):

    ok         as above
    null       ``msec`` is null (a timestamp became null: a change of shape)
    constant   ``msec`` is the time the server started, forever (a clock that stopped)
    empty-id   ``request_id`` is ""

`running_clock` serves one instance on 127.0.0.1 from a thread (tests and bench/).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from aiohttp import web

__all__ = ["CLOCK_MODES", "make_clock_app", "running_clock"]

CLOCK_MODES = ("ok", "null", "constant", "empty-id")


def make_clock_app(mode: str = "ok") -> web.Application:
    if mode not in CLOCK_MODES:
        raise ValueError(f"unknown clock mode {mode!r} (one of {', '.join(CLOCK_MODES)})")
    started = int(time.time() * 1000)

    async def clock(request: web.Request) -> web.Response:
        body: dict[str, Any] = {"msec": int(time.time() * 1000), "request_id": uuid.uuid4().hex}
        if mode == "null":
            body["msec"] = None
        elif mode == "constant":
            body["msec"] = started
        elif mode == "empty-id":
            body["request_id"] = ""
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/clock", clock)
    return app


@contextlib.contextmanager
def running_clock(mode: str = "ok") -> Iterator[str]:
    """Serve a clock on 127.0.0.1 (a free port) from a thread; yields its base URL."""
    app = make_clock_app(mode)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        state["port"] = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        state["runner"] = runner
        ready.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(state["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name=f"clock-{mode}", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the clock server did not start within 10 s")
    try:
        yield f"http://127.0.0.1:{state['port']}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
