"""The raw transport: byte-exact requests on a fresh connection, read back leniently.

This module owns sending a case's `RawRequest` exactly as written (nothing added, not even Host)
and turning whatever comes back into one comparable `Response`. It is a `flamingo.send.Transport`
like the aiohttp and httpx ones, so the compare stage never knows which one answered.

Theory of operation
-------------------
One exchange = one new TCP connection (TLS when the target is https, verified unless the target
says ``verify_tls: false``). A writer task sends the parts in order, sleeping for the pauses
between them (``raw_chunks``); meanwhile the reader feeds every byte into a
`flamingo.wire.MessageReader`. The exchange ends at the first of:

    ending       when                                                        responses
    closed       the target closed the connection cleanly                    0..n complete
    incomplete   the target closed in the middle of a response               the last is partial
    open         the connection stayed quiet for ``idle`` after a complete   1..n
                 response and everything was sent
    reset        the connection was reset (RST)                              0..n
    timeout      the deadline passed without that (no answer in time)        0..n (+ partial)
    invalid      the target sent bytes that are not an HTTP response         0..n (the bytes
                                                                             kept as a body)

Every one of these is a behaviour to compare, not a harness error: a target that closes where
the other answers 400 is a ``diff``; two that both close ``match``. Only not reaching the target
at all (connection refused, DNS, a TLS handshake that fails) is a `TransportError` (``error``).

The first response is the `Response` itself; later ones (pipelining, or a final response after
a ``100 Continue``) are in ``more``; with no response at all the status is `NO_RESPONSE` (0)
and, for ``invalid``, the body holds the bytes that were received.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from flamingo.model import (
    NO_RESPONSE,
    NO_TOKEN,
    TOKEN_SENTINEL,
    Exchange,
    RawRequest,
    Response,
    RunSettings,
    Target,
    TransportError,
)
from flamingo.wire import Message, MessageReader, request_methods

_READ = 1 << 16


def _tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def raw_bytes(raw: RawRequest) -> tuple[bytes | float, ...]:
    """The parts as they go on the wire: a ``{{ token }}`` left unstamped (no recording
    origin) becomes the stand-in token, so lengths written around it stay right."""
    return tuple(
        part.replace(TOKEN_SENTINEL, NO_TOKEN) if isinstance(part, bytes) else part
        for part in raw.parts
    )


class RawTransport:
    """Sends `Case.raw` bytes to one target; see the module docstring for the endings."""

    def __init__(self, target: Target, settings: RunSettings) -> None:
        self.target = target
        self.settings = settings
        url = urlsplit(target.base_url)
        self.host = url.hostname or "127.0.0.1"
        self.tls = url.scheme == "https"
        self.port = url.port or (443 if self.tls else 80)

    @functools.cached_property
    def _context(self) -> ssl.SSLContext | None:
        """Built on the first raw request: every target gets a RawTransport, and a TLS context
        costs ~40 ms that a run without raw cases never needs to pay."""
        return _tls_context(self.target.verify_tls) if self.tls else None

    async def send(self, case: object) -> Exchange:
        raw = getattr(case, "raw", None)
        if not isinstance(raw, RawRequest):
            raise TypeError("RawTransport sends raw requests only")
        parts = raw_bytes(raw)
        timeout = raw.timeout if raw.timeout is not None else self.settings.timeout
        start = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._context,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            return self._error("timeout", f"no connection within {timeout:g}s", start)
        except ssl.SSLError as exc:
            return self._error("tls", f"TLS error: {exc}", start)
        except OSError as exc:
            why = "connection refused" if isinstance(exc, ConnectionRefusedError) else exc
            return self._error(
                "connect", f"cannot connect to {self.host}:{self.port}: {why}", start
            )
        data = b"".join(p for p in parts if isinstance(p, bytes))
        parser = MessageReader(
            "response", self.settings.max_body_bytes, methods=request_methods(data)
        )
        written = asyncio.Event()
        sender = asyncio.ensure_future(self._write(writer, parts, written))
        try:
            ending, last_response = await self._read(reader, parser, written, raw.idle, deadline)
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            writer.transport.abort()
        if ending in ("timeout", "reset"):
            parser.abort()  # a response cut short still shows its status and headers
        return self._response(parser, ending, start, last_response)

    @staticmethod
    async def _write(
        writer: asyncio.StreamWriter, parts: tuple[bytes | float, ...], written: asyncio.Event
    ) -> None:
        try:
            for part in parts:
                if isinstance(part, float):
                    await asyncio.sleep(part)
                else:
                    writer.write(part)
                    await writer.drain()
        except (OSError, RuntimeError):
            pass  # the target closed or reset while we wrote: the reader reports how it ended
        finally:
            written.set()

    async def _read(
        self,
        reader: asyncio.StreamReader,
        parser: MessageReader,
        written: asyncio.Event,
        idle: float,
        deadline: float,
    ) -> tuple[str, float]:
        """Read until the exchange ends: how it ended, and the time the last complete response
        ended."""
        loop = asyncio.get_running_loop()
        last_response = time.perf_counter()
        responses = 0
        done_writing = asyncio.ensure_future(written.wait())
        read: asyncio.Future[bytes] | None = None
        try:
            while True:
                if read is None:
                    read = asyncio.ensure_future(reader.read(_READ))
                quiet = responses and written.is_set() and not parser.in_message
                wait_until = min(deadline, loop.time() + idle) if quiet else deadline
                waiting: set[asyncio.Future[Any]] = {read}
                if not written.is_set():
                    waiting.add(done_writing)
                await asyncio.wait(
                    waiting,
                    timeout=max(0.0, wait_until - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not read.done():
                    quiet = responses and written.is_set() and not parser.in_message
                    if quiet and loop.time() >= wait_until:
                        # Quiet after a complete response: the connection stayed open. Also
                        # when the deadline came first (a busy machine): what ran out was the
                        # wait for more, not the answer.
                        return "open", last_response
                    if loop.time() >= deadline:
                        return "timeout", last_response
                    continue  # the last part just went out: from now on, quiet time counts
                try:
                    chunk = read.result()
                except (OSError, ssl.SSLError):
                    return "reset", last_response
                finally:
                    read = None
                if not chunk:
                    in_message = parser.in_message and parser.state != "close"
                    parser.eof()
                    if parser.finished:
                        last_response = time.perf_counter()
                    if parser.error:
                        return "invalid", last_response
                    return ("incomplete" if in_message else "closed"), last_response
                parser.feed(chunk)
                if parser.finished:
                    responses = len(parser.finished)
                    last_response = time.perf_counter()
                if parser.error:
                    return "invalid", last_response
        finally:
            for task in (read, done_writing):
                if task is not None and not task.done():
                    task.cancel()

    def _response(self, parser: MessageReader, ending: str, start: float, end: float) -> Response:
        messages = parser.take()
        latency = (max(end, start) - start) * 1000.0
        leftover = parser.leftover()
        responses = [_as_response(m, latency) for m in messages]
        if leftover is not None:
            # Bytes that are no complete HTTP response (garbage, a head cut short): one more
            # "response" without a status, so they are compared too.
            body, size, sha = leftover
            responses.append(
                Response(NO_RESPONSE, "", (), body, latency, body_size=size, body_sha256=sha)
            )
        if not responses:
            return Response(NO_RESPONSE, "", (), b"", latency, ending=ending)
        first, *rest = responses
        return replace(first, ending=ending, more=tuple(rest))

    def _error(self, kind: str, message: str, start: float) -> TransportError:
        latency = (time.perf_counter() - start) * 1000.0
        return TransportError(kind=kind, message=message, latency_ms=latency)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        return None


def _as_response(message: Message, latency: float) -> Response:
    return Response(
        status=message.status,
        reason=message.reason,
        headers=message.headers,
        body=message.body,
        latency_ms=latency,
        body_size=message.body_size,
        body_sha256=message.body_sha256,
        ending="" if message.complete else "incomplete",
    )
