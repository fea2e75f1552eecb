"""A lenient, incremental HTTP/1.x message reader over bytes (sans-IO: no sockets, no clocks).

This module owns reading what a peer *actually* sent, for the two places where flamingo must see
the wire rather than a client library's opinion of it: the raw transport (`flamingo.raw`, reading
a target's responses to byte-exact requests) and the recording origin (`flamingo.upstream`,
reading what a proxy forwarded). It never raises for odd input: whatever cannot be read becomes
an `error` on the reader, and the bytes before it stay readable.

Theory of operation
-------------------
`MessageReader.feed` takes bytes as they arrive; `take` returns the messages completed so far;
`eof` says the peer closed (which completes a read-until-close body, or leaves the message in
progress incomplete). The reader is a small state machine:

    state      waits for                                  then
    head       a blank line (CRLF CRLF, or bare LF)       framing decides the body state
    length     Content-Length more bytes                  head
    chunk      a chunk-size line (hex; extensions and     data (size > 0) / trailer (size 0)
               whitespace after it tolerated)
    data       size bytes, then a line end                chunk
    trailer    a blank line (trailer fields kept)         head
    close      the peer closing                           done
    failed     nothing: `error` says why                  -

Leniency, on purpose (a proxy's oddities are what is being recorded, not refused): bare LF line
ends; obs-fold continuation lines (joined to the previous value with one space, and noted); a
header line without a colon (kept with the whole line as its name and an empty value); leading
blank lines before a message (RFC 9112 §2.2). Framing follows RFC 9112 §6.3 with one leniency:
several Content-Length values use the first (the message records them all as headers).

    message                                   body framing
    response 1xx / 204 / 304, or to HEAD      none (a 1xx is an interim message; reading goes on)
    Transfer-Encoding ending in chunked       chunked
    Transfer-Encoding, not chunked            response: until close; request: none
    Content-Length                            that many bytes
    otherwise                                 response: until close; request: none

Bodies keep the first ``max_body`` bytes and hash the whole once it grows past them (`BodyReader`),
so a peer that streams forever costs bounded memory.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from flamingo.model import Headers

Kind = Literal["request", "response"]
Framing = Literal["none", "content-length", "chunked", "close"]

#: A head larger than this is an error (nginx's default large_client_header_buffers is 4 x 8k).
MAX_HEAD_BYTES = 64 * 1024
_LINE_END = re.compile(rb"\r?\n")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(r"HTTP/(\d)\.(\d)[ \t]+(\d{3})(?:[ \t](.*))?$")
_CHUNK_SIZE = re.compile(rb"[ \t]*([0-9A-Fa-f]+)[ \t]*(?:;.*)?$")


class BodyReader:
    """Keeps the first ``limit`` bytes; hashes the whole body once it grows past them
    (``limit`` < 0: keeps nothing, only counts)."""

    __slots__ = ("buf", "digest", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.size = 0
        self.digest: hashlib._Hash | None = None

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.limit < 0:  # counting only (`request_methods` needs no body)
            return
        if self.digest is None:
            if len(self.buf) + len(chunk) <= self.limit:
                self.buf += chunk
                return
            self.digest = hashlib.sha256(self.buf)
            room = self.limit - len(self.buf)
            self.buf += chunk[:room]
        self.digest.update(chunk)

    def response_fields(self) -> tuple[bytes, int, str]:
        sha = self.digest.hexdigest() if self.digest is not None else ""
        return bytes(self.buf), self.size, sha


@dataclass(frozen=True)
class Message:
    """One HTTP/1.x message as it was received.

    ``start_line`` is the first line as sent (latin-1, line end removed); ``headers`` are the
    field lines in order and case, values without surrounding whitespace. For a response,
    ``status`` is the code (0 for a request). ``complete`` is False when the peer closed (or the
    reader failed) before the body ended.
    """

    start_line: str
    headers: Headers
    body: bytes
    framing: Framing
    complete: bool = True
    status: int = 0
    reason: str = ""
    body_size: int = -1
    body_sha256: str = ""
    trailers: Headers = ()
    notes: tuple[str, ...] = ()  # leniencies applied: "bare LF", "obs-fold", ...

    @property
    def method(self) -> str:
        return self.start_line.split(" ", 1)[0]


def parse_head(block: bytes) -> tuple[str, Headers, tuple[str, ...]]:
    """The start line, the field lines and the leniencies applied, of one head (no blank line)."""
    notes: list[str] = []
    if b"\n" in block.replace(b"\r\n", b""):
        notes.append("bare LF")
    lines = _LINE_END.split(block)
    start = lines[0].decode("latin-1")
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        line = raw.decode("latin-1")
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            if "obs-fold" not in notes:
                notes.append("obs-fold")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            if "line without colon" not in notes:
                notes.append("line without colon")
            headers.append((line, ""))
            continue
        headers.append((name, value.strip(" \t")))
    return start, tuple(headers), tuple(notes)


def _values(headers: Headers, name: str) -> list[str]:
    return [value for key, value in headers if key.strip().lower() == name]


def framing_of(
    kind: Kind, headers: Headers, status: int = 0, method: str = ""
) -> tuple[Framing, int]:
    """How the body of a message with these headers is delimited, and its length if known."""
    if kind == "response" and (status < 200 or status in (204, 304) or method == "HEAD"):
        return "none", 0
    codings = [
        c.strip().lower() for v in _values(headers, "transfer-encoding") for c in v.split(",")
    ]
    codings = [c for c in codings if c]
    if codings:
        if codings[-1] == "chunked":
            return "chunked", -1
        return ("close", -1) if kind == "response" else ("none", 0)
    lengths = _values(headers, "content-length")
    if lengths:
        first = lengths[0].split(",")[0].strip()
        if first.isdigit():
            return "content-length", int(first)
        return ("close", -1) if kind == "response" else ("none", 0)
    return ("close", -1) if kind == "response" else ("none", 0)


class MessageReader:
    """Reads consecutive messages of one direction of one connection (see the module doc)."""

    def __init__(
        self,
        kind: Kind,
        max_body: int,
        *,
        methods: tuple[str, ...] = (),
        max_head: int = MAX_HEAD_BYTES,
    ) -> None:
        self.kind = kind
        self.max_body = max_body
        self.max_head = max_head
        #: Methods of the requests the responses answer, in order (HEAD has no response body).
        self.methods = methods
        self.buffer = bytearray()
        self.state = "head"
        self.error = ""
        self.truncated_head = False  # the peer closed in the middle of a message head
        self._failed_in = ""
        self.closed = False
        self.received = 0  # bytes fed in all
        self.finished: list[Message] = []
        self._answered = 0  # final responses read (to pair them with `methods`)
        self._reset_message()

    def _reset_message(self) -> None:
        self._start = ""
        self._headers: Headers = ()
        self._notes: tuple[str, ...] = ()
        self._status = 0
        self._reason = ""
        self._framing: Framing = "none"
        self._remaining = 0
        self._trailers: list[tuple[str, str]] = []
        self._body = BodyReader(self.max_body)

    # -- input --------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if not data or self.state == "failed" or self.closed:
            return
        self.received += len(data)
        self.buffer += data
        self._advance()

    def eof(self) -> None:
        """The peer closed its side: a read-until-close body ends; anything else in progress
        is an incomplete message."""
        if self.closed:
            return
        self.closed = True
        if self.state == "close":
            self._finish(complete=True)
        elif self.state in ("length", "chunk", "data", "trailer"):
            self._finish(complete=False)
        elif self.state == "head" and self.buffer.strip():
            self.truncated_head = True
            if self.kind == "response":
                self._body.feed(bytes(self.buffer))

    def abort(self) -> None:
        """Reading stops here (the exchange ran out of time): a message whose head was read is
        kept as incomplete, so its status and headers are still compared."""
        if self.state in ("length", "chunk", "data", "trailer", "close"):
            self._finish(complete=False)

    def take(self) -> list[Message]:
        """The messages completed since the last call."""
        done, self.finished = self.finished, []
        return done

    @property
    def in_message(self) -> bool:
        """True while a message has started but not ended."""
        return self.state != "head" or bool(self.buffer.strip())

    @property
    def current_headers(self) -> Headers:
        """The header lines of the message whose body is being read (empty between messages)."""
        return self._headers

    def unparsed_head(self) -> tuple[str, Headers, tuple[str, ...]] | None:
        """When reading failed on a message head: what of it could be read."""
        if self._failed_in != "head" or not self.buffer:
            return None
        end = _BLANK_LINE.search(self.buffer)
        return parse_head(bytes(self.buffer[: end.start() if end else self.max_head]))

    def leftover(self) -> tuple[bytes, int, str] | None:
        """Response bytes that are no complete message - a head cut short, or what followed the
        point where reading failed - as (first bytes, size, sha256 when over max_body)."""
        if not (self.error or self.truncated_head) or self.kind != "response":
            return None
        body, size, sha = self._body.response_fields()
        return (body, size, sha) if size else None

    # -- the state machine --------------------------------------------------------------------

    def _fail(self, why: str, *, keep_partial: bool = False) -> None:
        self._failed_in = self.state
        if self.state in ("length", "chunk", "data", "trailer"):
            self._finish(complete=False)  # what was read of the broken message stays visible
        self.error = why
        if keep_partial and self.kind == "response":
            self._body.feed(bytes(self.buffer))
        self.state = "failed"

    def _advance(self) -> None:
        while self.state != "failed":
            before = (self.state, len(self.buffer))
            step = getattr(self, f"_on_{self.state}")
            step()
            if (self.state, len(self.buffer)) == before:
                return

    def _on_head(self) -> None:
        # Leading empty lines before a message are ignored (RFC 9112 §2.2).
        while self.buffer[:2] == b"\r\n" or self.buffer[:1] == b"\n":
            del self.buffer[: 2 if self.buffer[:1] == b"\r" else 1]
        if self.kind == "response" and len(self.buffer) >= 5 and self.buffer[:5] != b"HTTP/":
            # Not a response, and no more bytes will make it one: fail now, not at the timeout.
            start = bytes(self.buffer[:60]).decode("latin-1")
            self._fail(f"not an HTTP response: {start!r}", keep_partial=True)
            return
        match = _BLANK_LINE.search(self.buffer)
        if match is None:
            if len(self.buffer) > self.max_head:
                self._fail(f"message head larger than {self.max_head} bytes")
            return
        start, headers, notes = parse_head(bytes(self.buffer[: match.start()]))
        status, reason = 0, ""
        if self.kind == "response":
            line = _STATUS_LINE.match(start)
            if line is None:  # the bytes stay in the buffer: they are what the peer said
                self._fail(f"not an HTTP response: {start[:60]!r}", keep_partial=True)
                return
            status, reason = int(line.group(3)), (line.group(4) or "").strip()
        del self.buffer[: match.end()]
        method = ""
        if self.kind == "response" and status >= 200 and self._answered < len(self.methods):
            method = self.methods[self._answered]
        self._start, self._headers, self._notes = start, headers, notes
        self._status, self._reason = status, reason
        self._framing, self._remaining = framing_of(self.kind, headers, status, method)
        if self._framing == "none":
            self._finish(complete=True)
        elif self._framing == "content-length":
            self.state = "length" if self._remaining else "head"
            if not self._remaining:
                self._finish(complete=True)
        elif self._framing == "chunked":
            self.state = "chunk"
        else:
            self.state = "close"

    def _on_length(self) -> None:
        take = bytes(self.buffer[: self._remaining])
        del self.buffer[: len(take)]
        self._body.feed(take)
        self._remaining -= len(take)
        if self._remaining == 0:
            self._finish(complete=True)

    def _on_chunk(self) -> None:
        match = _LINE_END.search(self.buffer)
        if match is None:
            if len(self.buffer) > 1024:
                self._fail("chunk-size line longer than 1024 bytes")
            return
        line = bytes(self.buffer[: match.start()])
        del self.buffer[: match.end()]
        size = _CHUNK_SIZE.match(line)
        if size is None:
            self._fail(f"invalid chunk-size line {line[:40]!r}")
            return
        self._remaining = int(size.group(1), 16)
        self.state = "data" if self._remaining else "trailer"

    def _on_data(self) -> None:
        if self._remaining:
            take = bytes(self.buffer[: self._remaining])
            del self.buffer[: len(take)]
            self._body.feed(take)
            self._remaining -= len(take)
            if self._remaining:
                return
        match = _LINE_END.match(self.buffer)
        if match is None:
            if len(self.buffer) >= 2:
                self._fail("chunk data not followed by a line end")
            return
        del self.buffer[: match.end()]
        self.state = "chunk"

    def _on_trailer(self) -> None:
        match = _LINE_END.search(self.buffer)
        if match is None:
            return
        line = bytes(self.buffer[: match.start()]).decode("latin-1")
        del self.buffer[: match.end()]
        if not line:
            self._finish(complete=True)
            return
        name, _, value = line.partition(":")
        self._trailers.append((name, value.strip(" \t")))

    def _on_close(self) -> None:
        self._body.feed(bytes(self.buffer))
        self.buffer.clear()

    def _finish(self, *, complete: bool) -> None:
        body, size, sha = self._body.response_fields()
        self.finished.append(
            Message(
                start_line=self._start,
                headers=self._headers,
                body=body,
                framing=self._framing,
                complete=complete,
                status=self._status,
                reason=self._reason,
                body_size=size,
                body_sha256=sha,
                trailers=tuple(self._trailers),
                notes=self._notes,
            )
        )
        if self.kind == "response" and self._status >= 200:
            self._answered += 1
        self._reset_message()
        self.state = "head"


_REQUEST_LINE = re.compile(rb"([A-Z]{3,10}) [^\r\n]* HTTP/\d")


def request_methods(raw: bytes) -> tuple[str, ...]:
    """Methods of the requests in raw request bytes, in order: to know which responses answer
    HEAD (and so have no body). The bytes are read as requests by this module's own reader
    (framing by Content-Length / chunked, as RFC 9112 says); where that stops (bytes it cannot
    read), line starts that look like request lines are taken as a best effort."""
    reader = MessageReader("request", -1)
    reader.feed(raw)
    reader.eof()
    methods = [message.method for message in reader.take()]
    rest = bytes(reader.buffer) if reader.error else b""
    start = 0
    while start < len(rest):  # only line starts are tried: one regex search over a 32 MB
        match = _REQUEST_LINE.match(rest, start)  # line would take seconds
        if match is not None:
            methods.append(match.group(1).decode("ascii"))
        newline = rest.find(b"\n", start)
        if newline < 0:
            break
        start = newline + 1
    return tuple(methods)
