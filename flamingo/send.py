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
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.http_exceptions import ContentLengthError, TransferEncodingError
from multidict import CIMultiDict

from flamingo.model import (
    TOKEN_SENTINEL,
    Case,
    Exchange,
    Headers,
    RawRequest,
    Response,
    RunSettings,
    Target,
    TransportError,
)
from flamingo.raw import RawTransport
from flamingo.upstream import TOKEN_HEADER, RecordingOrigin, with_target_host
from flamingo.wire import BodyReader as _BodyReader
from flamingo.wire import request_methods

RETRYABLE = frozenset({"connect", "reset", "timeout"})
RETRYABLE_UNSAFE = frozenset({"connect"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CHUNK = 1 << 16


class Request(Protocol):
    """What the send stage reads of a case: a `Case`, or a `WireRequest` in a send worker."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def headers(self) -> Headers: ...

    @property
    def body(self) -> bytes | None: ...

    @property
    def raw(self) -> RawRequest | None: ...


class WireRequest(NamedTuple):
    """The part of a `Case` a send worker process needs (cheap to pickle: a plain tuple)."""

    method: str
    path: str
    headers: Headers
    body: bytes | None
    raw: RawRequest | None = None

    @classmethod
    def of(cls, case: Case) -> WireRequest:
        return cls(case.method, case.path, case.headers, case.body, case.raw)


def stamped(case: Request, token: str) -> WireRequest:
    """The request carrying an upstream token (`flamingo.upstream`): in the ``X-Flamingo-Token``
    header of a built request, or wherever a raw request's template wrote ``{{ token }}``."""
    raw = case.raw
    if raw is None:
        headers = (*case.headers, (TOKEN_HEADER, token))
        return WireRequest(case.method, case.path, headers, case.body)
    value = token.encode("ascii")
    parts = tuple(
        p.replace(TOKEN_SENTINEL, value) if isinstance(p, bytes) else p for p in raw.parts
    )
    return WireRequest(case.method, case.path, case.headers, case.body, replace(raw, parts=parts))


class Transport(Protocol):
    """Sends one request to one target. Must not raise for a target's failure."""

    async def send(self, case: Request) -> Exchange: ...

    async def aclose(self) -> None: ...


def merge_headers(case_headers: Headers, target_headers: Headers) -> list[tuple[str, str]]:
    """Case headers, then the target's headers, which win on a (case-insensitive) name clash."""
    merged = CIMultiDict(case_headers)
    for name, _ in target_headers:
        merged.popall(name, None)
    merged.extend(target_headers)
    return list(merged.items())


def _read_whole(body: bytes, limit: int) -> tuple[bytes, int, str]:
    reader = _BodyReader(limit)
    reader.feed(body)
    return reader.response_fields()


async def _iter_body(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    async for chunk in content.iter_chunked(_CHUNK):
        yield chunk


def _one_line(text: object) -> str:
    """Library messages span lines (aiohttp's parser draws a caret); a record keeps one."""
    lines = (line for line in str(text).splitlines() if line.strip(" ^"))
    return " ".join(" ".join(lines).split())


def _truncated(exc: aiohttp.ClientPayloadError) -> bool:
    """The body ended early (connection closed or reset mid-body), not a malformed body."""
    cause = exc.__cause__
    if isinstance(cause, ContentLengthError | TransferEncodingError):
        return True
    return "not completed" in str(exc)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (httpx wraps httpcore wraps OSError)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _chain_text(exc: BaseException) -> str:
    """The first non-empty message along the chain (httpx's own is often empty)."""
    for link in _chain(exc):
        if str(link):
            return str(link)
    return type(exc).__name__


def _in_chain(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(link, kind) for link in _chain(exc))


def _classify(exc: BaseException) -> tuple[str, str]:
    """Map a client library exception to (kind, message). Order matters: subclasses first.

    Observed on real sockets (tests/test_faults.py): a certificate that does not verify raises
    `ClientConnectorCertificateError`; a refused port `ClientConnectorError`; a connection that
    is reset or closed mid-body `ClientPayloadError` caused by a `ContentLengthError` (a
    truncated response is a transport fault, so ``reset``, which is retried); a garbage status
    line `ClientResponseError` with status 400 from the parser (never a response to compare).
    """
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout", "timed out"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        reason = getattr(cert, "verify_message", "") or getattr(cert, "reason", "") or cert
        return "tls", _one_line(
            f"TLS error: certificate verify failed for {exc.host}:{exc.port}: {reason}"
        )
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return "tls", _one_line(f"TLS error: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        why = "connection refused" if isinstance(os_error, ConnectionRefusedError) else os_error
        return "connect", _one_line(f"cannot connect to {exc.host}:{exc.port}: {why}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "reset", "server closed the connection before the response was complete"
    if isinstance(exc, aiohttp.ClientPayloadError):
        if _truncated(exc):
            cause = exc.__cause__
            detail = getattr(cause, "message", "") or "body incomplete"
            how = "reset" if "reset" in str(exc).lower() else "closed"
            return "reset", _one_line(f"connection {how} mid-body: {detail}")
        return "protocol", _one_line(f"bad response body: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        # The parser's own errors (bad status line, bad header) arrive here with status 400;
        # that 400 is aiohttp's, not the target's, so the message never shows it as a status.
        return "protocol", _one_line(f"invalid response: {exc.message or exc}")
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        return "reset", _one_line(f"connection error: {exc}")
    return "protocol", _one_line(f"{type(exc).__name__}: {exc}")


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
            # aiohttp silently re-sends an idempotent request once when the connection drops
            # (no public switch; its own test_utils turns it off the same way). Retries are
            # flamingo's policy - counted in `attempts`, bounded by `retries` and by the hard
            # --max-requests cap - so the hidden one is off.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    async def send(self, case: Request) -> Exchange:
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
                length = resp.content_length
                if (
                    length is not None
                    and length <= self.max_body
                    and "Content-Encoding" not in resp.headers
                ):
                    # The common case: a framed body known to fit, read whole (no copies, no
                    # reader); the parser holds it to Content-Length, the check is belt and braces.
                    body = await resp.read()
                    latency = (time.perf_counter() - start) * 1000.0
                    size, sha = len(body), ""
                    if size > self.max_body:
                        body, size, sha = _read_whole(body, self.max_body)
                else:
                    reader = _BodyReader(self.max_body)
                    async for chunk in _iter_body(resp.content):
                        reader.feed(chunk)
                    latency = (time.perf_counter() - start) * 1000.0
                    body, size, sha = reader.response_fields()
                return Response(
                    status=resp.status,
                    reason=resp.reason or "",
                    headers=tuple(
                        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
                    ),
                    body=body,
                    latency_ms=latency,
                    body_size=size,
                    body_sha256=sha,
                )
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            kind, message = _classify(exc)
            if kind == "timeout":
                message = f"timed out: no complete response within {self.timeout.total:g}s"
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
        # httpx's timeout bounds each connect/read/write, not the exchange: a body dripping
        # one chunk per second would never time out. `send` bounds the whole, as aiohttp does.
        self.total_timeout = settings.timeout
        self._where = urlsplit(target.base_url).netloc
        self.client = httpx.AsyncClient(
            http2=True,
            verify=target.verify_tls,
            timeout=settings.timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.concurrency),
        )

    async def send(self, case: Request) -> Exchange:
        httpx = self._httpx
        headers = merge_headers(case.headers, self.target.headers)
        start = time.perf_counter()
        try:
            request = self.client.build_request(
                case.method, self.target.base_url + case.path, headers=headers, content=case.body
            )
            async with asyncio.timeout(self.total_timeout):
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
        except (httpx.TimeoutException, TimeoutError):
            kind = "timeout"
            message = f"timed out: no complete response within {self.total_timeout:g}s"
        except httpx.ConnectError as exc:
            text = _chain_text(exc)
            tls = "CERTIFICATE" in text.upper() or "SSL" in text.upper()
            if tls:
                kind, message = "tls", f"TLS error: {text}"
            elif _in_chain(exc, ConnectionRefusedError):
                kind, message = "connect", f"cannot connect to {self._where}: connection refused"
            else:
                kind, message = "connect", f"cannot connect to {self._where}: {text}"
        except httpx.RemoteProtocolError as exc:
            text = _chain_text(exc)
            if "disconnected" in text.lower() or "peer closed" in text.lower():
                kind, message = "reset", f"connection error: {text}"
            else:  # h11/h2 could not parse what the server sent: an answer, but not HTTP
                kind, message = "protocol", f"invalid response: {text}"
        except (httpx.ReadError, httpx.WriteError) as exc:
            kind, message = "reset", f"connection error: {_chain_text(exc)}"
        except (httpx.HTTPError, OSError, ValueError) as exc:
            kind, message = "protocol", f"{type(exc).__name__}: {exc}"
        message = _one_line(message)
        latency = (time.perf_counter() - start) * 1000.0
        return TransportError(kind=kind, message=message, latency_ms=latency)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await self.client.aclose()


class EitherTransport:
    """A target's two ways of sending behind one seam: byte-exact requests (``case.raw``) over
    `RawTransport`, everything else over the client library's transport."""

    def __init__(self, http: Transport, raw: Transport) -> None:
        self.http = http
        self.raw = raw

    async def send(self, case: Request) -> Exchange:
        return await (self.http if case.raw is None else self.raw).send(case)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.raw.aclose()


def default_transport(target: Target, settings: RunSettings) -> Transport:
    http: Transport = (
        HttpxTransport(target, settings) if target.http2 else AiohttpTransport(target, settings)
    )
    return EitherTransport(http, RawTransport(target, settings))


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
#: One case's exchanges: old, new, and old's replica when noise is learned.
Triple = tuple[Exchange, Exchange, Exchange | None]
#: Called with each case and its exchanges as they come back (in the judging process).
Handle = Callable[[Case, Exchange, Exchange, Exchange | None], None]


def pair_tasks(concurrency: int) -> int:
    """Sending tasks that keep ``concurrency`` requests in flight: each case sends two."""
    return max(1, (concurrency + 1) // 2)


class Sender:
    """Sends cases to both targets with the run's concurrency, rate, timeout and retry policy."""

    def __init__(
        self,
        old: Target,
        new: Target,
        settings: RunSettings,
        transport_factory: TransportFactory = default_transport,
        replica: Target | None = None,
        origin: RecordingOrigin | None = None,
    ) -> None:
        self.settings = settings
        self.origin = origin  # the recording origin: each exchange carries a token to it
        # The replica (a second instance of old, or old itself) answers noise-learning requests.
        self.targets = {"old": old, "new": new, "old_replica": replica or old}
        self._factory = transport_factory
        self.transports = {
            name: transport_factory(self.targets[name], settings) for name in ("old", "new")
        }
        self.pacers = {name: Pacer(settings.rate_limit) for name in ("old", "new")}
        # The rate limit is per target: old and its stand-in replica share one pacer.
        self.pacers["old_replica"] = (
            self.pacers["old"] if replica is None else Pacer(settings.rate_limit)
        )
        self.slots = asyncio.Semaphore(max(1, settings.concurrency))
        self.requests_sent = 0
        self.requests_reserved = 0  # taken from the --max-requests budget (see `reserve`)
        self.budget_exhausted = False

    def reserve(self, requests: int) -> bool:
        """Take ``requests`` from the run's ``max_requests`` budget (0: no cap). False, and
        nothing taken, when that would exceed it. The cap is hard: a retry takes from it too,
        and a retry that finds it spent is not sent (the error stands)."""
        cap = self.settings.max_requests
        if cap and self.requests_reserved + requests > cap:
            self.budget_exhausted = True
            return False
        self.requests_reserved += requests
        return True

    async def _exchange(self, which: str, transport: Transport, case: Request) -> Exchange:
        """One attempt; with a recording origin, the request carries a fresh token and the
        response what the origin received under it."""
        origin = self.origin
        if origin is None:
            return await transport.send(case)
        data = case.raw.data if case.raw is not None else None  # joined once
        if data is not None and TOKEN_SENTINEL not in data:
            with origin.untracked(len(request_methods(data))):  # no {{ token }}
                return await transport.send(case)
        token, before = origin.new_token(), origin.untokened
        exchange = await transport.send(stamped(case, token))
        if not isinstance(exchange, Response):
            return exchange
        view = origin.take(token, before)
        if case.raw is None:
            view = with_target_host(view, self.targets[which].base_url)
        return replace(exchange, upstream=view)

    async def send(self, which: str, case: Request) -> Exchange:
        transport = self.transports.get(which)
        if transport is None:  # the replica's own connections, opened on first use
            transport = self.transports[which] = self._factory(self.targets[which], self.settings)
        pacer = self.pacers[which]
        attempts = 0
        while True:
            attempts += 1
            async with self.slots:
                if pacer.interval:  # no coroutine at all when the rate is unlimited
                    await pacer.wait()
                self.requests_sent += 1
                exchange = await self._exchange(which, transport, case)
            if isinstance(exchange, Response):
                return exchange if attempts == 1 else replace(exchange, attempts=attempts)
            # A POST that reset or timed out may have been applied: only a request that never
            # reached the target (connect) is sent again when it is not idempotent.
            retryable = RETRYABLE if case.method not in UNSAFE_METHODS else RETRYABLE_UNSAFE
            if (
                exchange.kind not in retryable
                or attempts > self.settings.retries
                or not self.reserve(1)
            ):
                return TransportError(
                    exchange.kind, exchange.message, exchange.latency_ms, attempts
                )

    async def send_pair(self, case: Request) -> tuple[Exchange, Exchange]:
        """Both targets concurrently: neither target sees the case before the other.

        old is sent from the calling task and new from one more task, which starts as soon as
        old's request is on its way: the overlap (and order) of ``asyncio.gather`` at half its
        cost - one task per pair instead of two plus a gathering future. Cancelling the caller
        cancels both.
        """
        new_task = asyncio.ensure_future(self.send("new", case))
        try:
            old = await self.send("old", case)
        except BaseException:
            new_task.cancel()
            raise
        return old, await new_task

    async def send_triple(self, case: Request) -> tuple[Exchange, Exchange, Exchange]:
        """old, new and old again (or old_replica), concurrently: the third is for noise."""
        old, new, replica = await asyncio.gather(
            self.send("old", case), self.send("new", case), self.send("old_replica", case)
        )
        return old, new, replica

    async def exchange(self, case: Request, learn: bool) -> Triple:
        r"""What one case needs: old and new, plus old's replica when noise is ``learn``\ed.
        The one place a case becomes its exchanges - in this process and in a send worker."""
        if learn:
            return await self.send_triple(case)
        old, new = await self.send_pair(case)
        return old, new, None

    async def aclose(self) -> None:
        for transport in self.transports.values():
            await transport.aclose()


class SendEngine(Protocol):
    """How a run's cases reach the targets: from this process (`LocalEngine`) or from forked
    send workers (`flamingo.workers.SendPool`). The engine never asks which."""

    async def run(self, cases: Iterator[Case], handle: Handle) -> str:
        """Send every case, ``handle`` its exchanges as they come back; '' when every case was
        sent, else why the run stopped early (a request cap). Cancelling it stops sending."""
        ...

    async def aclose(self) -> None: ...

    @property
    def peak_rss_mb(self) -> list[float | None]:
        """The peak memory of each process this engine forked (none for a local one)."""
        ...


class LocalEngine:
    """Sends from this process: `pair_tasks` tasks share one iterator of cases."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    @property
    def peak_rss_mb(self) -> list[float | None]:
        return []

    async def run(self, cases: Iterator[Case], handle: Handle) -> str:
        sender = self.sender
        cap = sender.settings.max_requests

        async def send_cases() -> None:
            for case in cases:  # a shared iterator: each case is taken by exactly one task
                if sender.budget_exhausted:  # a case (or a retry) found the cap spent
                    return
                learn = bool(case.compare.noise)
                if not sender.reserve(3 if learn else 2):  # a hard cap: retries draw from it too
                    return
                old, new, replica = await sender.exchange(case, learn)
                handle(case, old, new, replica)

        tasks = [
            asyncio.ensure_future(send_cases())
            for _ in range(pair_tasks(sender.settings.concurrency))
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if sender.budget_exhausted:  # a case or a retry refused by the cap stops the run
            return f"--max-requests {cap} reached"
        return ""

    async def aclose(self) -> None:
        await self.sender.aclose()
