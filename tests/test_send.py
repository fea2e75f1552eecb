"""The send stage against a real aiohttp server on 127.0.0.1 (no mocks on the network path)."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import brotli
import pytest
from aiohttp import web

from flamingo.model import Case, Response, RunSettings, Target, TransportError
from flamingo.send import Pacer, Sender, merge_headers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _app(calls: dict[str, int]) -> web.Application:
    async def ok(request: web.Request) -> web.StreamResponse:
        calls["ok"] = calls.get("ok", 0) + 1
        return web.json_response(
            {"auth": request.headers.get("Authorization"), "ua": request.headers.get("X-Case")}
        )

    async def gz(request: web.Request) -> web.StreamResponse:
        return web.Response(body=gzip.compress(b"hello gzip"), headers={"Content-Encoding": "gzip"})

    async def br(request: web.Request) -> web.StreamResponse:
        return web.Response(body=brotli.compress(b"hello br"), headers={"Content-Encoding": "br"})

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/ok")

    async def slow(request: web.Request) -> web.StreamResponse:
        calls["slow"] = calls.get("slow", 0) + 1
        await asyncio.sleep(2)
        return web.Response(text="late")

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"x" * 1024)
        await resp.write_eof()
        return resp

    async def status(request: web.Request) -> web.StreamResponse:
        calls["502"] = calls.get("502", 0) + 1
        return web.Response(status=502, text="bad gateway")

    app = web.Application()
    for path, handler in [
        ("/ok", ok),
        ("/gzip", gz),
        ("/br", br),
        ("/redirect", redirect),
        ("/slow", slow),
        ("/big", big),
        ("/502", status),
    ]:
        app.router.add_route("*", path, handler)
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(scenario: Callable[[str, dict[str, int]], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        calls: dict[str, int] = {}
        runner = web.AppRunner(_app(calls))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            return await scenario(f"http://127.0.0.1:{port}", calls)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def _case(path: str, method: str = "GET", **kw: Any) -> Case:
    return Case(
        id=f"t::{path}", suite="t", name=path, template="t::x", method=method, path=path, **kw
    )


def _sender(base: str, **settings: Any) -> Sender:
    target_old = Target("old", base)
    target_new = Target("new", base, headers=(("Authorization", "Bearer s3cret"),))
    return Sender(target_old, target_new, RunSettings(**settings))


def test_pair_sent_with_target_headers_and_decoded_bodies() -> None:
    async def scenario(base: str, calls: dict[str, int]) -> Any:
        sender = _sender(base)
        pair = await sender.send_pair(_case("/ok", headers=(("X-Case", "1"),)))
        gz = await sender.send("old", _case("/gzip", headers=(("Accept-Encoding", "gzip"),)))
        br = await sender.send("old", _case("/br", headers=(("Accept-Encoding", "br"),)))
        await sender.aclose()
        return pair, gz, br

    (old, new), gz, br = _run(scenario)
    assert isinstance(old, Response) and isinstance(new, Response)
    assert b'"auth":null' in old.body.replace(b" ", b"")
    assert b"Bearer s3cret" in new.body
    assert old.latency_ms > 0
    assert isinstance(gz, Response) and gz.body == b"hello gzip"
    assert isinstance(br, Response) and br.body == b"hello br"
    assert ("Content-Encoding", "gzip") in gz.headers


def test_redirects_are_never_followed() -> None:
    async def scenario(base: str, calls: dict[str, int]) -> Any:
        sender = _sender(base)
        try:
            return await sender.send("old", _case("/redirect"))
        finally:
            await sender.aclose()

    resp = _run(scenario)
    assert isinstance(resp, Response)
    assert resp.status == 301
    assert dict((k.lower(), v) for k, v in resp.headers)["location"] == "/ok"


def test_timeout_is_an_error_retried_once() -> None:
    async def scenario(base: str, calls: dict[str, int]) -> Any:
        sender = _sender(base, timeout=0.2, retries=1)
        try:
            return await sender.send("old", _case("/slow")), dict(calls)
        finally:
            await sender.aclose()

    exchange, calls = _run(scenario)
    assert isinstance(exchange, TransportError)
    assert exchange.kind == "timeout"
    assert exchange.attempts == 2
    assert calls["slow"] == 2


def test_responses_are_never_retried() -> None:
    async def scenario(base: str, calls: dict[str, int]) -> Any:
        sender = _sender(base, retries=3)
        try:
            return await sender.send("old", _case("/502")), dict(calls)
        finally:
            await sender.aclose()

    exchange, calls = _run(scenario)
    assert isinstance(exchange, Response) and exchange.status == 502
    assert calls["502"] == 1


def test_connection_refused_is_a_connect_error() -> None:
    async def scenario() -> Any:
        sender = _sender(f"http://127.0.0.1:{_free_port()}", retries=2)
        try:
            return await sender.send("old", _case("/ok"))
        finally:
            await sender.aclose()

    exchange = asyncio.run(scenario())
    assert isinstance(exchange, TransportError)
    assert exchange.kind == "connect"
    assert exchange.attempts == 3


def test_bodies_past_max_body_bytes_are_hashed_not_kept() -> None:
    async def scenario(base: str, calls: dict[str, int]) -> Any:
        sender = _sender(base, max_body_bytes=1000)
        try:
            return await sender.send("old", _case("/big"))
        finally:
            await sender.aclose()

    resp = _run(scenario)
    assert isinstance(resp, Response)
    assert len(resp.body) == 1000
    assert resp.body_size == 64 * 1024
    assert resp.truncated
    import hashlib

    assert resp.body_sha256 == hashlib.sha256(b"x" * 64 * 1024).hexdigest()


def test_merge_headers_target_wins_case_insensitively() -> None:
    merged = merge_headers((("authorization", "a"), ("X-A", "1")), (("Authorization", "b"),))
    assert merged == [("X-A", "1"), ("Authorization", "b")]


def test_pacer_spaces_starts() -> None:
    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))

    async def scenario() -> None:
        pacer = Pacer(10.0, clock=lambda: now[0], sleep=fake_sleep)
        for _ in range(3):
            await pacer.wait()

    asyncio.run(scenario())
    assert slept == [0.1, 0.2]


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_pacer_unlimited(rate: float) -> None:
    asyncio.run(Pacer(rate).wait())


def test_non_idempotent_requests_are_not_resent_after_a_timeout() -> None:
    async def scenario(base: str, calls: dict[str, int]) -> Any:
        sender = _sender(base, timeout=0.2, retries=2)
        try:
            return await sender.send("old", _case("/slow", method="POST")), dict(calls)
        finally:
            await sender.aclose()

    exchange, calls = _run(scenario)
    assert isinstance(exchange, TransportError)
    assert exchange.kind == "timeout"
    assert exchange.attempts == 1
    assert calls["slow"] == 1
