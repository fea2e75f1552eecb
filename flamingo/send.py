"""The send stage: the only place flamingo touches the network.

Theory of operation
-------------------
A `Sender` owns one `Transport` per target and applies the run's policies around it:

* **concurrency** – one semaphore shared by both targets bounds the requests in flight;
* **rate limit**  – a per-target pacer spaces request *starts* ``1/rate`` seconds apart;
* **retries**     – only on transport errors of kind connect / reset / timeout, never on a
  response (a 502 is an answer to compare, not a fault to hide);
* **latency**     – measured per attempt from just before the request is written to the last
  body byte read (``time.perf_counter``), so time spent waiting for a concurrency slot or a
  rate-limit slot is *not* counted (see README, "coordinated omission").

A `Transport` sends exactly one request and returns an `Exchange` (a `Response` or a
`TransportError`); it never raises for a target's failure. `AiohttpTransport` is the default
HTTP/1.1 engine (measured ~10x httpx's own transport on loopback); `HttpxTransport` serves
``http2: true`` targets. Tests plug a fake transport into `Sender` through the same seam.

Redirects are never followed; bodies are transfer- and content-decoded (gzip, deflate, br) and
kept up to ``max_body_bytes``; beyond that the rest is hashed so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Protocol

import aiohttp

from flamingo.model import Case, Exchange, Headers, Response, RunSettings, Target, TransportError

RETRYABLE = frozenset({"connect", "reset", "timeout"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CHUNK = 1 << 16


class Transport(Protocol):
    """Sends one request to one target. Must not raise for a target's failure."""

    async def send(self, case: Case) -> Exchange: ...

    async def aclose(self) -> None: ...


def merge_headers(case_headers: Headers, target_headers: Headers) -> list[tuple[str, str]]:
    """Case headers, then the target's headers, which win on a (case-insensitive) name clash."""
    override = {name.lower() for name, _ in target_headers}
    merged = [(n, v) for n, v in case_headers if n.lower() not in override]
    merged.extend(target_headers)
    return merged


class _BodyReader:
    """Keeps the first ``limit`` bytes; hashes the whole body once it grows past them."""

    __slots__ = ("buf", "digest", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.size = 0
        self.digest: hashlib._Hash | None = None

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
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


async def _iter_body(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    async for chunk in content.iter_chunked(_CHUNK):
        yield chunk


def _classify(exc: BaseException) -> tuple[str, str]:
    """Map a client library exception to (kind, message). Order matters: subclasses first."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout", "timed out"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "tls", f"TLS error: {exc}"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect", f"cannot connect: {exc.os_error.strerror or exc}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "reset", "server closed the connection before the response was complete"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "protocol", f"bad response body: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "protocol", f"bad response: {exc.message or exc}"
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        return "reset", f"connection error: {exc}"
    if isinstance(exc, aiohttp.ClientError):
        return "protocol", f"{type(exc).__name__}: {exc}"
    return "protocol", f"{type(exc).__name__}: {exc}"


class AiohttpTransport:
    """HTTP/1.1 over one pooled aiohttp session per target (keep-alive connection reuse)."""

    def __init__(self, target: Target, settings: RunSettings) -> None:
        self.target = target
        self.base_url = target.base_url
        self.max_body = settings.max_body_bytes
        self.timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._session: aiohttp.ClientSession | None = None
        self._limit = settings.concurrency

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=0,
                ssl=self.target.verify_tls,  # True: default verification; False: none
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                # Only the Host/port of the target matter; cookies must never leak between cases.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def send(self, case: Case) -> Exchange:
        session = self._session_now()
        headers = merge_headers(case.headers, self.target.headers)
        start = time.perf_counter()
        try:
            async with session.request(
                case.method,
                self.base_url + case.path,
                headers=headers,
                data=case.body,
                allow_redirects=False,
                timeout=self.timeout,
            ) as resp:
                reader = _BodyReader(self.max_body)
                length = resp.content_length
                if (
                    length is not None
                    and length <= self.max_body
                    and "Content-Encoding" not in resp.headers
                ):
                    reader.feed(await resp.read())
                else:
                    async for chunk in _iter_body(resp.content):
                        reader.feed(chunk)
                latency = (time.perf_counter() - start) * 1000.0
                body, size, sha = reader.response_fields()
                return Response(
                    status=resp.status,
                    reason=resp.reason or "",
                    headers=tuple(
                        (k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers
                    ),
                    body=body,
                    latency_ms=latency,
                    body_size=size,
                    body_sha256=sha,
                )
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            kind, message = _classify(exc)
            latency = (time.perf_counter() - start) * 1000.0
            return TransportError(kind=kind, message=message, latency_ms=latency)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxTransport:
    """HTTP/2 (and HTTP/1.1 fallback) through httpx + h2, for ``http2: true`` targets."""

    def __init__(self, target: Target, settings: RunSettings) -> None:
        import httpx

        self._httpx = httpx
        self.target = target
        self.max_body = settings.max_body_bytes
        self.client = httpx.AsyncClient(
            http2=True,
            verify=target.verify_tls,
            timeout=settings.timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.concurrency),
        )

    async def send(self, case: Case) -> Exchange:
        httpx = self._httpx
        headers = merge_headers(case.headers, self.target.headers)
        start = time.perf_counter()
        try:
            request = self.client.build_request(
                case.method, self.target.base_url + case.path, headers=headers, content=case.body
            )
            resp = await self.client.send(request, stream=True)
            try:
                reader = _BodyReader(self.max_body)
                async for chunk in resp.aiter_bytes():
                    reader.feed(chunk)
            finally:
                await resp.aclose()
            latency = (time.perf_counter() - start) * 1000.0
            body, size, sha = reader.response_fields()
            return Response(
                status=resp.status_code,
                reason=resp.reason_phrase,
                headers=tuple(
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.headers.raw
                ),
                body=body,
                latency_ms=latency,
                body_size=size,
                body_sha256=sha,
            )
        except httpx.TimeoutException:
            kind, message = "timeout", "timed out"
        except httpx.ConnectError as exc:
            text = str(exc)
            tls = "CERTIFICATE" in text.upper() or "SSL" in text.upper()
            kind, message = ("tls", f"TLS error: {text}") if tls else ("connect", text)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            kind, message = "reset", f"connection error: {exc}"
        except (httpx.HTTPError, OSError, ValueError) as exc:
            kind, message = "protocol", f"{type(exc).__name__}: {exc}"
        latency = (time.perf_counter() - start) * 1000.0
        return TransportError(kind=kind, message=message, latency_ms=latency)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await self.client.aclose()


def default_transport(target: Target, settings: RunSettings) -> Transport:
    if target.http2:
        return HttpxTransport(target, settings)
    return AiohttpTransport(target, settings)


class Pacer:
    """Spaces request starts ``1/rate`` seconds apart (rate <= 0: no pacing)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await self._sleep(slot - now)


TransportFactory = Callable[[Target, RunSettings], Transport]


class Sender:
    """Sends cases to both targets with the run's concurrency, rate, timeout and retry policy."""

    def __init__(
        self,
        old: Target,
        new: Target,
        settings: RunSettings,
        transport_factory: TransportFactory = default_transport,
    ) -> None:
        self.settings = settings
        self.targets = {"old": old, "new": new}
        self.transports = {name: transport_factory(t, settings) for name, t in self.targets.items()}
        self.pacers = {name: Pacer(settings.rate_limit) for name in self.targets}
        self.slots = asyncio.Semaphore(max(1, settings.concurrency))
        self.requests_sent = 0

    async def send(self, which: str, case: Case) -> Exchange:
        transport = self.transports[which]
        pacer = self.pacers[which]
        attempts = 0
        while True:
            attempts += 1
            async with self.slots:
                await pacer.wait()
                self.requests_sent += 1
                exchange = await transport.send(case)
            if isinstance(exchange, Response):
                return exchange if attempts == 1 else replace(exchange, attempts=attempts)
            if exchange.kind not in RETRYABLE or attempts > self.settings.retries:
                return TransportError(
                    exchange.kind, exchange.message, exchange.latency_ms, attempts
                )

    async def send_pair(self, case: Case) -> tuple[Exchange, Exchange]:
        """Both targets concurrently: neither target sees the case before the other."""
        old, new = await asyncio.gather(self.send("old", case), self.send("new", case))
        return old, new

    async def aclose(self) -> None:
        for transport in self.transports.values():
            await transport.aclose()
