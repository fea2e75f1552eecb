"""The lenient HTTP/1.x reader (flamingo.wire): pure, from literal bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flamingo.wire import MessageReader, framing_of, parse_head, request_methods


def read(kind: str, data: bytes, *, eof: bool = True, **kw: object) -> MessageReader:
    reader = MessageReader(kind, 1 << 20, **kw)  # type: ignore[arg-type]
    reader.feed(data)
    if eof:
        reader.eof()
    return reader


def test_response_with_content_length_then_a_pipelined_chunked_one() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nhi"
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n0\r\nT: x\r\n\r\n"
    )
    reader = read("response", data, eof=False)
    first, second = reader.take()
    assert (first.status, first.reason, first.body, first.framing) == (
        200,
        "OK",
        b"hi",
        "content-length",
    )
    assert first.headers == (("Content-Length", "2"), ("X-A", "1"))
    assert (second.status, second.body, second.framing, second.trailers) == (
        404,
        b"abc",
        "chunked",
        (("T", "x"),),
    )
    assert not reader.in_message and not reader.error


def test_byte_by_byte_feeding_gives_the_same_messages() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    reader = MessageReader("response", 1 << 20)
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
    (message,) = reader.take()
    assert message.body == b"hello" and message.complete


def test_read_until_close_and_an_incomplete_body() -> None:
    reader = read("response", b"HTTP/1.0 200 OK\r\n\r\nall of it")
    (message,) = reader.take()
    assert message.framing == "close" and message.body == b"all of it" and message.complete
    reader = read("response", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    (message,) = reader.take()
    assert not message.complete and message.body == b"abc"


def test_garbage_is_an_error_and_its_bytes_are_kept() -> None:
    reader = read("response", b"SSH-2.0-OpenSSH\r\n", eof=False)
    assert reader.error.startswith("not an HTTP response")
    assert reader.leftover() == (b"SSH-2.0-OpenSSH\r\n", 17, "")
    assert reader.take() == []


def test_a_head_cut_short_is_kept_as_leftover_not_an_error() -> None:
    reader = read("response", b"HTTP/1.1 200 OK\r\nX-")
    assert not reader.error and reader.truncated_head
    assert reader.leftover() is not None


def test_interim_and_head_responses_have_no_body() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"  # answers HEAD: no body follows
        b"HTTP/1.1 204 No Content\r\n\r\n"
    )
    reader = read("response", data, eof=False, methods=("HEAD", "GET"))
    assert [m.status for m in reader.take()] == [100, 200, 204]
    assert not reader.in_message


def test_leniencies_are_applied_and_noted() -> None:
    start, headers, notes = parse_head(b"GET / HTTP/1.1\nHost: a\nX-Fold: one\n two\nbroken line")
    assert start == "GET / HTTP/1.1"
    assert headers == (("Host", "a"), ("X-Fold", "one two"), ("broken line", ""))
    assert notes == ("bare LF", "obs-fold", "line without colon")


def test_request_framing() -> None:
    assert framing_of("request", (("Content-Length", "3"),)) == ("content-length", 3)
    assert framing_of("request", (("Transfer-Encoding", "gzip, chunked"),)) == ("chunked", -1)
    assert framing_of("request", ()) == ("none", 0)
    # Both: Transfer-Encoding wins (RFC 9112 §6.3); the CL header is still recorded.
    both = (("Content-Length", "3"), ("Transfer-Encoding", "chunked"))
    assert framing_of("request", both) == ("chunked", -1)
    reader = read(
        "request",
        b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n",
        eof=False,
    )
    first, second = reader.take()
    assert (first.method, first.body, second.start_line) == ("POST", b"abc", "GET /b HTTP/1.1")


def test_invalid_chunk_size_fails_and_keeps_the_message_so_far() -> None:
    reader = read(
        "request", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", eof=False
    )
    assert reader.error.startswith("invalid chunk-size")
    (message,) = reader.take()
    assert not message.complete


def test_oversized_head_and_body_are_bounded() -> None:
    reader = MessageReader("response", 4, max_head=100)
    reader.feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 50)
    assert reader.error.startswith("message head larger")
    reader = read("response", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
    reader2 = MessageReader("response", 4)
    reader2.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
    (message,) = reader2.take()
    assert message.body == b"0123" and message.body_size == 10 and len(message.body_sha256) == 64
    assert reader.take()[0].body == b"0123456789"


def test_request_methods() -> None:
    raw = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.0\r\n\r\n"
    assert request_methods(raw) == ("HEAD", "GET")
    # Framed by Content-Length, so a request right after a body counts (no line start needed).
    raw = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiHEAD /3 HTTP/1.1\r\n\r\n"
    assert request_methods(raw) == ("POST", "HEAD")
    # Past what cannot be read as a request, line starts are the best guess.
    raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nHEAD /x HTTP/1.1\r\n"
    assert request_methods(raw) == ("POST", "HEAD")


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=20))
def test_never_raises_and_split_points_do_not_matter(data: bytes, step: int) -> None:
    whole = read("response", data)
    pieces = MessageReader("response", 1 << 20)
    for i in range(0, len(data), step):
        pieces.feed(data[i : i + step])
    pieces.eof()
    assert [m.status for m in whole.take()] == [m.status for m in pieces.take()]
    assert bool(whole.error) == bool(pieces.error)
