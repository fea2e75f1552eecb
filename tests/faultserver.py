"""Raw HTTP/1.1 servers on 127.0.0.1 that misbehave on purpose, for the fault, secret and safety
tests. No mocks: every fault is real bytes (or a real RST, or real silence) on a real socket.

A `FaultServer` runs an ``asyncio.start_server`` loop in a daemon thread and records every
connection and request it sees (so a test can assert that *nothing* was sent). The route is the
last segment of the request path, so a target may have a path prefix:

    route        behaviour
    /ok          200, a small JSON body (also any unknown route)
    /echo        200, JSON of the request headers and path; the Authorization header is echoed in
                 the ``X-Echo-Authorization`` response header; ``Set-Cookie`` when configured
    /echo.txt    200, the same as text, one ``name: value`` line per header
    /keyed       200, JSON with the Authorization header value as an object *key*
    /excerpt     ``?layout=tail|head&pad=N``: text laid out so that the ~120-character excerpt
                 of its first difference cuts the Authorization (tail) or Cookie (head) value
    /reset       headers with Content-Length 1000, 100 bytes of body, then RST (SO_LINGER 0)
    /stall       reads the request, never answers (until the server stops)
    /drip        ``?n=N&gap=S``: Content-Length N*1024, then N chunks of 1 KiB, S seconds apart
    /big         ``?mb=M&fill=C``: an M MiB body of the byte C (default: the server's
                 ``big_fill``), streamed in 64 KiB writes
    /garbage     a garbage status line, then close
    /close       closes the connection without answering
    /job         ``?n=N&fail_below=K``: text ``job N token=<random, 1-5 dash-separated groups>
                 status=OK``; the server named "new" says ``status=FAILED`` when N <= K
    /flap        ``?n=N``: old flaps (status 200/503, ``X-Cache`` HIT/MISS, at random); new
                 flaps alike, except status 500 when N <= 5 and ``X-Cache: ERROR`` when N <= 10
    /said        ``?old=BODY&new=BODY``: 200 with the body given under the server's own name
                 (``&type=`` its Content-Type, default application/json): planted differences

`running()` is the context manager the test fixtures wrap: it starts servers on demand and stops
every one of them (cancelling stalled handlers) on exit, so no test leaves a thread behind.
`self_signed_cert()` writes a certificate for 127.0.0.1 with the ``cryptography`` package when
it is installed, else with the ``openssl`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import random
import shutil
import socket
import ssl
import string
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

STALL_SECONDS = 60.0  # far beyond any timeout a test uses; stop() cancels it sooner
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Seen:
    """One request as the server read it."""

    at: float  # time.monotonic() when the request head was complete
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]


@dataclass
class FaultServer:
    name: str = "server"
    ssl_context: ssl.SSLContext | None = None
    set_cookie: str | None = None  # a Set-Cookie header value sent with /echo responses
    big_fill: str = "x"  # the byte of a /big body when the query names none
    port: int = 0
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        return len(self.requests)

    def start(self) -> FaultServer:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            self._server = await asyncio.start_server(
                self._connection, "127.0.0.1", 0, ssl=self.ssl_context, limit=1 << 20
            )
            self.port = self._server.sockets[0].getsockname()[1]

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=main, name=f"faultserver-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(10)
        self._loop = self._thread = None

    # -- HTTP ---------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): not re-raised, or asyncio logs every stalled handler it cancelled
        finally:
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; False when the connection is done."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = tuple(
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        )
        length = int(next((v for n, v in headers if n.lower() == "content-length"), "0"))
        if length:
            await reader.readexactly(length)
        self.requests.append(Seen(time.monotonic(), method, target, headers))
        parts = urlsplit(target)
        route = "/" + parts.path.rstrip("/").rsplit("/", 1)[-1]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        handler = _ROUTES.get(route, _ok)
        return await handler(self, writer, method, target, headers, query)


Handler = Callable[..., Any]


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{n}: {v}" for n, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _respond(
    writer: asyncio.StreamWriter,
    body: bytes,
    content_type: str,
    extra: list[tuple[str, str]] | None = None,
) -> bool:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *(extra or [])]
    writer.write(_head("200 OK", headers) + body)
    await writer.drain()
    return True


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    return next((v for n, v in headers if n.lower() == name), None)


async def _ok(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    method, target = args[0], args[1]
    body = json.dumps({"ok": True, "method": method, "path": target}).encode()
    return await _respond(writer, body, "application/json")


def _echo_headers(
    server: FaultServer, headers: tuple[tuple[str, str], ...]
) -> list[tuple[str, str]]:
    extra = []
    auth = _header(headers, "authorization")
    if auth is not None:
        extra.append(("X-Echo-Authorization", auth))
    if server.set_cookie is not None:
        extra.append(("Set-Cookie", server.set_cookie))
    return extra


async def _echo(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    _method, target, headers, _query = args
    document: dict[str, Any] = {
        "server": server.name,
        "path": target,
        "headers": {n.lower(): v for n, v in headers if n.lower() not in ("host",)},
    }
    if server.set_cookie is not None:
        document["session"] = server.set_cookie.split(";", 1)[0].split("=", 1)[1]
    body = json.dumps(document).encode()
    return await _respond(writer, body, "application/json", _echo_headers(server, headers))


async def _echo_text(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    _method, target, headers, _query = args
    lines = [f"served by {server.name}", f"path: {target}"]
    lines += [f"{n.lower()}: {v}" for n, v in sorted(headers) if n.lower() != "host"]
    body = ("\n".join(lines) + "\n").encode()
    return await _respond(writer, body, "text/plain", _echo_headers(server, headers))


async def _excerpt(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    """Text whose first difference sits where a compare excerpt cuts a secret in half."""
    headers, query = args[2], args[3]
    pad = "x" * int(query.get("pad", "0"))
    auth = _header(headers, "authorization") or "none"
    cookie = _header(headers, "cookie") or "none"
    if query.get("layout") == "head":  # equal text up to "served by": the cut is before it
        text = f"{pad}\ncookie: {cookie}\nserved by {server.name}\n"
    else:  # "served by" differs at once: the cut is 120 characters on
        text = f"served by {server.name}\n{pad}\nauthorization: {auth}\n"
    return await _respond(writer, text.encode(), "text/plain")


async def _keyed(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    headers = args[2]
    auth = _header(headers, "authorization") or "anonymous"
    body = json.dumps({"tokens": {auth: True}}).encode()
    return await _respond(writer, body, "application/json")


async def _reset(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    writer.write(_head("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "1000")]))
    writer.write(b"x" * 100)
    await writer.drain()
    await asyncio.sleep(0.05)  # let the client read the head and the first 100 bytes
    sock = writer.get_extra_info("socket")
    # SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return False


async def _stall(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    await asyncio.sleep(STALL_SECONDS)
    return False


async def _drip(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    query = args[3]
    chunks, gap = int(query.get("n", "10")), float(query.get("gap", "0.1"))
    length = chunks * 1024
    writer.write(_head("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(length))]))
    await writer.drain()
    for i in range(chunks):
        await asyncio.sleep(gap)
        writer.write(bytes([ord("a") + i % 26]) * 1024)
        await writer.drain()
    return True


async def _big(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    query = args[3]
    size = int(query.get("mb", "50")) * 1024 * 1024
    chunk = query.get("fill", server.big_fill).encode()[:1] * _CHUNK
    head = [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    writer.write(_head("200 OK", head))
    sent = 0
    while sent < size:
        piece = chunk[: size - sent]
        writer.write(piece)
        sent += len(piece)
        await writer.drain()
    return True


async def _garbage(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    writer.write(b"HTTQ/9.9 two hundred banana\r\nContent-Length: 2\r\n\r\nhi")
    await writer.drain()
    await asyncio.sleep(0.05)
    return False


async def _close(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    return False


async def _job(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    query = args[3]
    n = int(query.get("n", "0"))
    token = "-".join(
        "".join(random.choices(string.ascii_letters + string.digits, k=random.randint(2, 9)))
        for _ in range(random.randint(1, 5))
    )
    failed = server.name == "new" and n <= int(query.get("fail_below", "0"))
    body = f"job {n} token={token} status={'FAILED' if failed else 'OK'}\n".encode()
    return await _respond(writer, body, "text/plain")


async def _flap(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    n = int(args[3].get("n", "0"))
    status = random.choice(["200 OK", "503 Service Unavailable"])
    cache = random.choice(["HIT", "MISS"])
    if server.name == "new" and n <= 5:
        status = "500 Internal Server Error"
    elif server.name == "new" and n <= 10:
        cache = "ERROR"
    body = b'{"served": true}'
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Cache", cache),
    ]
    writer.write(_head(status, headers) + body)
    await writer.drain()
    return True


async def _said(server: FaultServer, writer: asyncio.StreamWriter, *args: Any) -> bool:
    query = args[3]
    body = query.get(server.name, "").encode()
    return await _respond(writer, body, query.get("type", "application/json"))


_ROUTES: dict[str, Handler] = {
    "/said": _said,
    "/job": _job,
    "/flap": _flap,
    "/ok": _ok,
    "/echo": _echo,
    "/echo.txt": _echo_text,
    "/keyed": _keyed,
    "/excerpt": _excerpt,
    "/reset": _reset,
    "/stall": _stall,
    "/drip": _drip,
    "/big": _big,
    "/garbage": _garbage,
    "/close": _close,
}


# --------------------------------------------------------------------------------------------


ServerFactory = Callable[..., FaultServer]


@contextlib.contextmanager
def running() -> Iterator[ServerFactory]:
    """``start(name=..., ssl_context=..., set_cookie=...)`` starts a server; all stop on exit."""
    started: list[FaultServer] = []

    def start(**kwargs: Any) -> FaultServer:
        server = FaultServer(**kwargs).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def closed_port_url() -> str:
    """The URL of a port nothing listens on (bound a moment ago, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for CN=127.0.0.1 (and IP SAN 127.0.0.1), valid for a day."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        _cert_with_cryptography(cert, key)
    except ImportError:
        if shutil.which("openssl") is None:
            raise RuntimeError(
                "neither the 'cryptography' package nor the 'openssl' command is available "
                "to make a self-signed certificate"
            ) from None
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    return cert, key


def _cert_with_cryptography(cert_path: Path, key_path: Path) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def server_tls_context(directory: Path) -> ssl.SSLContext:
    cert, key = self_signed_cert(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


# --------------------------------------------------------------------------------------------
# Running flamingo against them
# --------------------------------------------------------------------------------------------


def write_targets(
    path: Path,
    old: str,
    new: str,
    *,
    run: str = "",
    gates: str = "default: { min_match_rate: 1.0, max_error_rate: 0, min_cases: 1 }",
    old_extra: str = "",
    new_extra: str = "",
) -> Path:
    """A targets.yaml; ``*_extra``, ``run`` and ``gates`` are YAML lines for those sections."""

    def block(text: str, indent: str) -> str:
        return "".join(f"{indent}{line}\n" for line in text.splitlines())

    defaults = {"concurrency": "20", "timeout": "5s", "retries": "1"}
    for line in run.splitlines():
        defaults.pop(line.split(":", 1)[0].strip(), None)  # ``run`` overrides a default
    run = "".join(f"{key}: {value}\n" for key, value in defaults.items()) + run
    text = (
        "targets:\n"
        f"  old:\n    base_url: {old}\n{block(old_extra, '    ')}"
        f"  new:\n    base_url: {new}\n{block(new_extra, '    ')}"
        f"run:\n{block(run, '  ')}"
        f"gates:\n{block(gates, '  ')}"
    )
    path.write_text(text)
    return path


def flamingo_command(*args: object) -> list[str]:
    """``python -m flamingo ARGS``: the real command line, in a child process."""
    return [sys.executable, "-m", "flamingo", *(str(a) for a in args)]


def read_rows(out: Path) -> dict[str, dict[str, Any]]:
    """results.jsonl by case id."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {row["id"]: row for row in rows}


def read_gate(out: Path) -> dict[str, Any]:
    gate: dict[str, Any] = json.loads((out / "gate.json").read_text())
    return gate
