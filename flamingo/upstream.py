"""The recording origin: what each proxy under test *forwarded* (``upstream:`` in targets.yaml).

This module owns flamingo's own origin server and the tokens that tie what it receives to the
exchange that caused it. The proxies under test are configured to forward to it (as their origin,
or as one route); it answers every request with one configurable response and records the request
exactly as it arrived - request line, header lines in order and case, body, framing
(Content-Length vs chunked), and the request's position on its connection (reuse).

Theory of operation
-------------------
Before each exchange the send stage asks for a fresh token (`RecordingOrigin.new_token`,
``flamingo-`` + 16 hex digits, 25 characters) and puts it in the request:

* a request built from ``method``/``path``/``headers`` gets the header ``X-Flamingo-Token``;
* a raw request carries it wherever its template wrote ``{{ token }}`` (a header line, the
  path, the body); a raw request without ``{{ token }}`` cannot be matched.

The origin finds the token anywhere in what it receives (request line, any header value, the
body), files the request under it, and replaces every token it finds by ``{{ token }}`` so that
old's and new's forwarded requests compare equal where they only differ by token. After the
exchange the send stage takes the requests filed under its token (`take`) and attaches them to
the exchange's `Response` as an `UpstreamView`; the pure compare stage does the rest.

A proxy that strips or rewrites the token is reported, never silently matched: the origin counts
requests that arrived without any token, and the view of an exchange that found nothing under
its token says how many such requests arrived while it was in flight (`UpstreamView.untokened`).
compare reports that case as an ``upstream`` difference whatever the other side did.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from flamingo.errors import HarnessError
from flamingo.model import (
    Config,
    ForwardedRequest,
    RunSettings,
    UpstreamSettings,
    UpstreamView,
    header_values,
)
from flamingo.wire import Message, MessageReader

TOKEN_HEADER = "X-Flamingo-Token"
TOKEN_RE = re.compile(rb"flamingo-[0-9a-f]{16}")
TOKEN_PLACEHOLDER = b"{{ token }}"
#: Requests kept per token: a smuggled request can multiply them, but never without bound.
MAX_PER_TOKEN = 16
_READ = 1 << 16


def _latin(data: bytes) -> str:
    return data.decode("latin-1")


def _tokens_in(message: Message) -> Iterator[bytes]:
    yield from TOKEN_RE.findall(message.start_line.encode("latin-1"))
    for name, value in message.headers:
        yield from TOKEN_RE.findall(f"{name}:{value}".encode("latin-1"))
    yield from TOKEN_RE.findall(message.body)


def _untoken(text: str) -> str:
    return _latin(TOKEN_RE.sub(TOKEN_PLACEHOLDER, text.encode("latin-1")))


def _framing_label(message: Message) -> str:
    if message.framing == "content-length":
        size = message.body_size if message.body_size >= 0 else len(message.body)
        return f"content-length: {size}"
    return message.framing


def forwarded_record(message: Message, seq: int) -> ForwardedRequest:
    """The record of one received request, with every token replaced by ``{{ token }}``."""
    body, replaced = TOKEN_RE.subn(TOKEN_PLACEHOLDER, message.body)
    return ForwardedRequest(
        request_line=_untoken(message.start_line),
        headers=tuple((_untoken(name), _untoken(value)) for name, value in message.headers),
        body=body,
        framing=_framing_label(message),
        complete=message.complete,
        body_size=len(body) if replaced else message.body_size,
        body_sha256=message.body_sha256,
        connection_seq=seq,
        notes=message.notes,
    )


def with_target_host(view: UpstreamView, base_url: str) -> UpstreamView:
    """A built request's Host is the target's own ``host:port`` (two targets never share it);
    where a proxy passed it on unchanged, it reads ``{{ target }}``, so forwarding Host as
    received compares equal across targets while a rewritten Host still shows."""
    if not view.requests:
        return view
    url = urlsplit(base_url)
    default = {"http": 80, "https": 443}.get(url.scheme)
    authority = url.hostname or ""
    if ":" in authority:
        authority = f"[{authority}]"
    if url.port is not None and url.port != default:
        authority = f"{authority}:{url.port}"
    requests = tuple(
        replace(
            request,
            headers=tuple(
                (name, "{{ target }}" if value == authority else value)
                for name, value in request.headers
            ),
        )
        for request in view.requests
    )
    return replace(view, requests=requests)


class RecordingOrigin:
    """An asyncio HTTP/1.1 origin that answers one response and records what it received."""

    def __init__(self, settings: UpstreamSettings, max_body: int = 10 * 1024 * 1024) -> None:
        self.settings = settings
        self.max_body = max_body
        self.untokened = 0  # requests without any token, none explained by `untracked` exchanges
        self.untracked_requests = 0  # requests without a token while an untracked exchange ran
        self.received = 0
        self._untracked_in_flight = 0  # request lines of the untracked exchanges in flight
        self._untracked_budget = 0  # how many untokened requests they may still explain
        self._by_token: dict[bytes, list[ForwardedRequest]] = {}
        self._prefix = secrets.token_hex(3)
        self._counter = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = settings.port

    # -- tokens -------------------------------------------------------------------------------

    def new_token(self) -> str:
        return f"flamingo-{self._prefix}{next(self._counter) % 16**10:010x}"

    def take(self, token: str, untokened_before: int) -> UpstreamView:
        """The requests filed under ``token`` (removed from the store), and - when there are
        none - how many requests arrived without a token since ``untokened_before``."""
        requests = tuple(self._by_token.pop(token.encode("latin-1"), ()))
        lost = 0 if requests else self.untokened - untokened_before
        return UpstreamView(requests, lost)

    @contextlib.contextmanager
    def untracked(self, requests: int) -> Iterator[None]:
        """Around an exchange that carries no token (a raw request without ``{{ token }}``)
        and holds ``requests`` request lines: up to that many requests without a token that
        arrive meanwhile are put down to it, not counted as stripped tokens (a stripped token
        absorbed that way goes unnoticed - the price of sending untracked requests at the same
        time; every further one still counts)."""
        allowance = max(1, requests)
        self._untracked_in_flight += allowance
        self._untracked_budget += allowance
        try:
            yield
        finally:
            self._untracked_in_flight -= allowance
            self._untracked_budget = min(self._untracked_budget, self._untracked_in_flight)

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    def of(cls, config: Config, settings: RunSettings) -> RecordingOrigin | None:
        """The run's origin (not started), or None when targets.yaml has no ``upstream:``."""
        if config.upstream is None:
            return None
        return cls(config.upstream, settings.max_body_bytes)

    @property
    def listen(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def counts(self) -> dict[str, Any]:
        """For gate.json: requests received, without a token (a proxy stripped or rewrote it),
        and without a token while an untracked exchange ran."""
        return {
            "listen": self.listen,
            "received": self.received,
            "untokened": self.untokened,
            "untracked": self.untracked_requests,
        }

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._connection, self.settings.host, self.settings.port, reuse_address=True
            )
        except OSError as exc:
            raise HarnessError(
                f"upstream: cannot listen on {self.listen}: {exc.strerror or exc}"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> RecordingOrigin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- one connection -----------------------------------------------------------------------

    def _answer(self, close: bool, method: str) -> bytes:
        s = self.settings
        lines = [f"HTTP/1.1 {s.status} {'OK' if s.status == 200 else 'Status'}"]
        lines += [f"{name}: {value}" for name, value in s.headers]
        bodiless = s.status in (204, 304)
        if not bodiless:
            lines.append(f"Content-Length: {len(s.body)}")
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # No body after HEAD (or a 204/304): it would be read as the start of the next response
        # on a kept-alive connection.
        return head if bodiless or method == "HEAD" else head + s.body

    def _record(self, message: Message, seq: int) -> None:
        self.received += 1
        tokens = list(dict.fromkeys(_tokens_in(message)))
        if not tokens:
            if self._untracked_budget:
                self._untracked_budget -= 1
                self.untracked_requests += 1
            else:
                self.untokened += 1
            return
        record = forwarded_record(message, seq)
        for token in tokens:  # a request carrying two exchanges' tokens belongs to both
            kept = self._by_token.setdefault(token, [])
            if len(kept) < MAX_PER_TOKEN:
                kept.append(record)

    @staticmethod
    def _wants_close(message: Message) -> bool:
        connection = ",".join(header_values(message.headers, "connection")).lower()
        if "close" in connection:
            return True
        return message.start_line.endswith("HTTP/1.0") and "keep-alive" not in connection

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        parser = MessageReader("request", self.max_body)
        seq = 0
        continued = False
        try:
            while True:
                data = await reader.read(_READ)
                if not data:
                    parser.eof()
                parser.feed(data)
                if (
                    not continued
                    and parser.state != "head"
                    and any(
                        v.lower() == "100-continue"
                        for v in header_values(parser.current_headers, "expect")
                    )
                ):
                    continued = True
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                close = False
                for message in parser.take():
                    seq += 1
                    continued = False
                    self._record(message, seq)
                    if not message.complete:  # cut short (eof) or unreadable (error below)
                        close = True
                        break
                    close = self._wants_close(message)
                    writer.write(self._answer(close, message.method))
                    if close:
                        break
                if parser.error:
                    self._record_broken(parser, seq + 1)
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    close = True
                await writer.drain()
                if close or not data:
                    return
        except (OSError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # `stop` cancels open connections; ending quietly keeps asyncio's server callback
            # from logging the cancellation as an error.
            return
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    def _record_broken(self, parser: MessageReader, seq: int) -> None:
        """A request the origin could not read to the end is still recorded (incomplete)."""
        head = parser.unparsed_head()
        if head is None:
            return
        start, headers, notes = head
        message = Message(start, headers, b"", "none", complete=False, notes=(*notes, parser.error))
        self._record(message, seq)
