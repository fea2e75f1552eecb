"""``flamingo serve``: the gate server (CONTRACT §7), a front door over the one run engine.

    flamingo.server.app       routes, authentication, validation, the controllers' answers
    flamingo.server.executor  the run queue and thread; `run_stage`, the one call of the engine
    flamingo.server.store     runs and gate documents on disk (SQLite), restart recovery
    flamingo.server.metrics   ``GET /metrics`` (prometheus_client), computed from the store

`serve` loads the targets and suites once (a bad file: ``FILE:LINE: message``, exit 2, nothing
listens), refuses to start without ``FLAMINGO_TOKEN``, recovers the runs on disk, and serves
until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flamingo.errors import InputError

__all__ = ["DEFAULT_DATA", "DEFAULT_LISTEN", "parse_listen", "serve"]

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_DATA = "flamingo-data"
TOKEN_VARIABLE = "FLAMINGO_TOKEN"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port); `InputError` otherwise."""
    host, sep, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise InputError(f"--listen: expected HOST:PORT such as {DEFAULT_LISTEN}, got {text!r}")
    return host, int(port_text)


def serve(targets: str, suites: Sequence[str], listen: str, data: str) -> int:
    """Run the gate server until SIGINT/SIGTERM; the exit code."""
    from flamingo.engine import Session

    token = os.environ.get(TOKEN_VARIABLE, "").strip()  # a stray newline from a secret file
    if not token:
        raise InputError(
            f"{TOKEN_VARIABLE} is not set: the gate server refuses to start without a token "
            "(every route but GET /healthz requires 'Authorization: Bearer $FLAMINGO_TOKEN')"
        )
    host, port = parse_listen(listen)
    session = Session.from_files(targets, list(suites))
    stages = tuple(name for name, _ in session.config.stages)
    return asyncio.run(_serve(session, stages, token, host, port, Path(data)))


async def _serve(
    session: Any, stages: tuple[str, ...], token: str, host: str, port: int, data_dir: Path
) -> int:
    from aiohttp import web

    from flamingo.process import SIGNALS
    from flamingo.server.app import build_app
    from flamingo.server.executor import INTERRUPTED, Executor, gate_without_run, run_stage
    from flamingo.server.store import Store

    try:
        store = Store(data_dir)
    except OSError as exc:
        raise InputError(f"--data: cannot use {data_dir}: {exc.strerror or exc}") from exc
    except sqlite3.DatabaseError as exc:  # not a database, or one another program locked
        raise InputError(f"--data: {data_dir / 'flamingo.sqlite3'}: {exc}") from exc

    def interrupted(record: Any) -> dict[str, Any]:
        return gate_without_run(record, INTERRUPTED, complete=True)

    received: list[str] = []  # the signal that stops the server: the run in flight is told it

    executor = Executor(
        store,
        data_dir,
        lambda record, out, sink: run_stage(session, record, out, sink),
        redact=session.redactor.text,
        # The event loop below took SIGINT/SIGTERM from the process's guard; the run thread's
        # engine is stopped through the guard, as a signal would have stopped it.
        interrupt=lambda: SIGNALS.interrupt(received[0] if received else "SIGTERM"),
    )
    queued = store.recover(interrupted)  # runs that were running are dead either way
    app = build_app(store, executor, stages, token)
    # A webhook waiting for its run must not hold up a SIGTERM for aiohttp's default minute.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:  # nothing queued is started by a server that cannot listen
        await runner.cleanup()
        store.close()
        raise InputError(
            f"--listen: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    executor.start(queued)
    for address in runner.addresses:
        shown = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
        print(f"flamingo serve: listening on http://{shown}:{address[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, _stopping, stop, received, sig.name)
    try:
        await stop.wait()
    finally:
        # In order: stop accepting, stop the run in flight and wait for its thread, and only
        # then close the store (a run that would not stop in time is finished as error).
        print("flamingo serve: stopping", file=sys.stderr, flush=True)
        await runner.cleanup()
        if not await asyncio.to_thread(executor.stop):
            print("flamingo serve: the run in flight did not stop in time", file=sys.stderr)
        store.recover_running(interrupted)
        store.close()
    return 0


def _stopping(stop: asyncio.Event, received: list[str], name: str) -> None:
    received.append(name)
    stop.set()
