"""The recording origin (flamingo.upstream) over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio

from flamingo.model import UpstreamSettings
from flamingo.upstream import RecordingOrigin


async def talk(port: int, data: bytes, *, replies: int = 1, close: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    got = b""
    while got.count(b"HTTP/1.1 ") < replies:
        chunk = await asyncio.wait_for(reader.read(65536), 2)
        if not chunk:
            break
        got += chunk
    if close:
        writer.close()
    else:
        writer.transport.abort()
    return got


def run(coro_factory):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        async with RecordingOrigin(UpstreamSettings("127.0.0.1", 0, body=b"hi")) as origin:
            return origin, await coro_factory(origin)

    return asyncio.run(main())


def test_records_request_line_headers_in_order_and_case_and_the_body() -> None:
    async def scenario(origin: RecordingOrigin) -> bytes:
        token = origin.new_token()
        request = (
            f"POST /p/{token}?q=1 HTTP/1.1\r\nHost: up\r\nX-Flamingo-Token: {token}\r\n"
            "x-lower: a\r\nX-Dup: 1\r\nX-Dup: 2\r\nContent-Length: 5\r\n\r\nhello"
        ).encode()
        reply = await talk(origin.port, request)
        view = origin.take(token, 0)
        assert len(view.requests) == 1 and view.untokened == 0
        forwarded = view.requests[0]
        assert forwarded.request_line == "POST /p/{{ token }}?q=1 HTTP/1.1"
        assert forwarded.headers == (
            ("Host", "up"),
            ("X-Flamingo-Token", "{{ token }}"),
            ("x-lower", "a"),
            ("X-Dup", "1"),
            ("X-Dup", "2"),
            ("Content-Length", "5"),
        )
        assert (forwarded.body, forwarded.framing, forwarded.connection_seq) == (
            b"hello",
            "content-length: 5",
            1,
        )
        assert origin.take(token, 0).requests == ()  # taken once
        return reply

    _, reply = run(scenario)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nhi")


def test_chunked_framing_and_connection_reuse() -> None:
    async def scenario(origin: RecordingOrigin) -> None:
        a, b = origin.new_token(), origin.new_token()
        assert a != b and len(a) == 25
        request = (
            f"POST /{a} HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nabc\r\n0\r\n\r\n"
            f"GET /{b} HTTP/1.1\r\nHost: up\r\n\r\n"
        ).encode()
        await talk(origin.port, request, replies=2)
        first, second = origin.take(a, 0).requests[0], origin.take(b, 0).requests[0]
        assert (first.framing, first.body, first.connection_seq) == ("chunked", b"abc", 1)
        assert (second.framing, second.connection_seq) == ("none", 2)

    run(scenario)


def test_a_request_without_token_is_counted_not_matched() -> None:
    async def scenario(origin: RecordingOrigin) -> None:
        token = origin.new_token()
        before = origin.untokened
        await talk(origin.port, b"GET /stripped HTTP/1.1\r\nHost: up\r\n\r\n")
        view = origin.take(token, before)
        assert view.requests == () and view.untokened == 1

    run(scenario)


def test_expect_100_continue_is_answered_before_the_body() -> None:
    async def scenario(origin: RecordingOrigin) -> None:
        token = origin.new_token()
        reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
        head = f"PUT /{token} HTTP/1.1\r\nHost: up\r\nExpect: 100-continue\r\n"
        writer.write(head.encode() + b"Content-Length: 2\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ok")
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert final.startswith(b"HTTP/1.1 200")
        writer.close()
        assert origin.take(token, 0).requests[0].body == b"ok"

    run(scenario)


def test_a_broken_request_is_recorded_incomplete_and_answered_400() -> None:
    async def scenario(origin: RecordingOrigin) -> None:
        token = origin.new_token()
        reply = await talk(
            origin.port,
            f"POST /{token} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n".encode(),
        )
        assert reply.startswith(b"HTTP/1.1 400")
        (record,) = origin.take(token, 0).requests
        assert not record.complete

    run(scenario)


def test_a_client_closing_mid_body_is_recorded_incomplete() -> None:
    async def scenario(origin: RecordingOrigin) -> None:
        token = origin.new_token()
        _, writer = await asyncio.open_connection("127.0.0.1", origin.port)
        writer.write(f"POST /{token} HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc".encode())
        await writer.drain()
        writer.close()
        for _ in range(100):
            await asyncio.sleep(0.01)
            view = origin.take(token, 0)
            if view.requests:
                break
        (record,) = view.requests
        assert (record.complete, record.body) == (False, b"abc")

    run(scenario)


def test_head_is_answered_without_a_body() -> None:
    async def scenario(origin: RecordingOrigin) -> bytes:
        token = origin.new_token()
        return await talk(
            origin.port,
            f"HEAD /{token} HTTP/1.1\r\nHost: up\r\n\r\nGET /{token} HTTP/1.1\r\n\r\n".encode(),
            replies=2,
        )

    _, reply = run(scenario)
    first, second = reply.split(b"HTTP/1.1 200 OK", 2)[1:]
    assert first.endswith(b"Content-Length: 2\r\n\r\n") and second.endswith(b"\r\n\r\nhi")
