"""The bundled demo targets: an origin, and an "old" and a "new" reverse proxy in front of it.

This module owns the three aiohttp.web applications that ``flamingo demo`` runs against, the
table of differences planted between the two proxies (:data:`DEMO_DIFFERENCES`), and the ways
to run them: in this event loop (:func:`running_demo`), as the ``serve`` command of
``python -m flamingo.demo`` (:func:`serve`), or as a child process (:func:`start_demo_process`).

Theory of operation
-------------------
The **origin** is deterministic apart from deliberate noise: every response carries a random
``X-Request-Id``, and the JSON APIs carry ``now`` timestamps and a ``request_id``. Nothing it
serves depends on earlier requests (``POST /api/items`` does not persist), so the two proxies,
which share one origin, can be compared case by case in any order and at any concurrency.

The two **proxies** run the same forwarding code (:func:`make_proxy_app`); everything that makes
them differ is data in a :class:`ProxyPolicy` (:data:`OLD_PROXY`, :data:`NEW_PROXY`). Some
differences are real (a suite should flag them) and some are mere encoding differences that a
correct harness must see through; :data:`DEMO_DIFFERENCES` lists both kinds, and the tests in
``tests/test_demo_servers.py`` check that each is really on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import gzip
import hashlib
import html
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TextIO

import aiohttp
import brotli
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from yarl import URL

__all__ = [
    "DEMO_DIFFERENCES",
    "DEMO_FALLBACK_PATHS",
    "METRICS_PATH",
    "NEW_PROXY",
    "OLD_PROXY",
    "DemoDifference",
    "DemoProcess",
    "DemoUrls",
    "ProxyPolicy",
    "make_origin_app",
    "make_proxy_app",
    "running_demo",
    "serve",
    "start_demo_process",
]

DemoUrls = dict[str, str]  # {"origin": url, "old": url, "new": url}


# --------------------------------------------------------------------------------------------
# The planted differences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoDifference:
    """One way the ``new`` proxy behaves unlike the ``old`` one."""

    route: str
    what: str
    why_realistic: str
    counts: bool  # True: a correct harness reports it; False: a correct harness must ignore it


DEMO_DIFFERENCES: tuple[DemoDifference, ...] = (
    # -- real differences: the example suites are written so that these are the only diffs --
    DemoDifference(
        route="/static/page.html",
        what="Cache-Control: public, max-age=300 (old passes the origin's max-age=60)",
        why_realistic="a per-location cache override ported to the new proxy with another TTL",
        counts=True,
    ),
    DemoDifference(
        route="/api/user/42",
        what='JSON field "role" is "admin" (old and the origin say "user"); nothing else differs',
        why_realistic="a leftover response-rewrite rule from a test fixture, hitting one user",
        counts=True,
    ),
    DemoDifference(
        route="any unknown path (the origin's HTML 404 page)",
        what="404 body is the new proxy's own JSON error, not the origin's HTML; status stays 404",
        why_realistic="the new proxy intercepts upstream HTML error pages and serves its own",
        counts=True,
    ),
    # -- encoding differences: a correct harness must not report these --
    DemoDifference(
        route="every compressible response",
        what="Content-Encoding br where old sends gzip (client accepts both); decoded bodies equal",
        why_realistic="the new proxy prefers brotli; old only knows gzip",
        counts=False,
    ),
    DemoDifference(
        route="every response with a body",
        what="Transfer-Encoding: chunked where old sends Content-Length",
        why_realistic="the new proxy streams bodies instead of buffering them",
        counts=False,
    ),
    DemoDifference(
        route="every response",
        what="header names in lower case and sorted by name (old: origin's case and order)",
        why_realistic="HTTP/2-era libraries store header names lower-cased",
        counts=False,
    ),
    DemoDifference(
        route="every 200 response",
        what='reason phrase "Okay" where old sends "OK"',
        why_realistic="reason phrases are free text; HTTP/2 drops them and gateways re-invent them",
        counts=False,
    ),
    DemoDifference(
        route="every response",
        what="Server, Via and X-Proxy-Request-Id values (noise; suites ignore them)",
        why_realistic="each proxy names itself and tags requests with its own id",
        counts=False,
    ),
)


# --------------------------------------------------------------------------------------------
# The origin
# --------------------------------------------------------------------------------------------

# The id of the request being handled. A context variable rather than request storage: each
# request runs in its own task, and this works the same on every aiohttp version we support.
_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("flamingo_demo_request_id")

_LAST_MODIFIED = "Wed, 01 Jan 2025 00:00:00 GMT"
_STATIC_CACHE_CONTROL = "public, max-age=60"

_HELLO_TXT = b"Hello from the flamingo demo origin!\nThis file is served as text/plain.\n"

_PAGE_HTML = (
    """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>flamingo demo</title>
  <style>body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }</style>
</head>
<body>
  <h1>flamingo demo origin</h1>
  <p>This page is served by the demo origin. An <em>old</em> and a <em>new</em> reverse proxy
  stand in front of it; flamingo sends every case to both and compares what comes back.</p>
  <ul>
"""
    + "".join(
        f'    <li><a href="/api/items/{n}">item {n}</a>: a line to make the page worth '
        "compressing</li>\n"
        for n in range(1, 21)
    )
    + """  </ul>
</body>
</html>
"""
).encode()

_DATA_JSON = json.dumps(
    {
        "name": "flamingo-demo",
        "version": 1,
        "colors": ["pink", "white", "black"],
        "habitat": {"continents": ["Africa", "Asia", "Europe", "South America"], "wetland": True},
        "facts": [{"n": n, "text": f"fact number {n}"} for n in range(1, 11)],
    },
    indent=2,
    sort_keys=True,
).encode()

# path -> (content type, body); the ETag is derived from the body so it is stable across runs.
_STATIC: dict[str, tuple[str, bytes]] = {
    "/static/hello.txt": ("text/plain; charset=utf-8", _HELLO_TXT),
    "/static/page.html": ("text/html; charset=utf-8", _PAGE_HTML),
    "/static/data.json": ("application/json", _DATA_JSON),
}

_ITEMS: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "anvil", "price": 19.99, "stock": 12},
    {"id": 2, "name": "bucket", "price": 4.5, "stock": 40},
    {"id": 3, "name": "compass", "price": 12.0, "stock": 0},
    {"id": 4, "name": "drum", "price": 89.9, "stock": 3},
    {"id": 5, "name": "easel", "price": 45.25, "stock": 7},
)

_PLANS = ("free", "pro", "team")
_MAX_USER_ID = 1000


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def _request_id() -> str:
    return _REQUEST_ID.get()


def _json(request: web.Request, data: dict[str, Any], status: int = 200) -> web.Response:
    """A JSON response carrying the noise every origin JSON body has: ``now`` and ``request_id``."""
    body = {**data, "now": time.time(), "request_id": _request_id()}
    return web.json_response(body, status=status)


def _not_found_page(request: web.Request) -> web.Response:
    path = html.escape(request.path)
    page = (
        "<!doctype html>\n<html><head><title>404 Not Found</title></head>\n"
        f"<body><h1>Not Found</h1><p>The origin has nothing at <code>{path}</code>.</p>"
        "</body></html>\n"
    )
    return web.Response(status=404, text=page, content_type="text/html")


@web.middleware
async def _origin_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # One id per request, in the header and (for JSON APIs) the body: the noise suites must mask.
    request_id = uuid.uuid4().hex
    _REQUEST_ID.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        # Unknown paths get an HTML page, like most origins; the new proxy replaces it (planted c).
        response = _not_found_page(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = request_id
        raise
    response.headers["X-Request-Id"] = request_id
    return response


async def _static(request: web.Request) -> web.StreamResponse:
    content_type, body = _STATIC[request.path]
    etag = _etag(body)
    headers = {
        "ETag": etag,
        "Last-Modified": _LAST_MODIFIED,
        "Cache-Control": _STATIC_CACHE_CONTROL,
    }
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        if "*" in tags or etag in tags:
            return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": content_type})


# Request headers /api/echo reflects. Chosen so that both proxies forward them unchanged:
# Authorization (only the new target gets one), Via and X-Forwarded-* would differ by design.
_ECHOED_HEADERS = ("accept", "accept-language", "content-type", "user-agent", "x-flamingo-case")


async def _echo(request: web.Request) -> web.Response:
    query: dict[str, str | list[str]] = {}
    for key in request.query:
        if key not in query:
            values = request.query.getall(key)
            query[key] = values[0] if len(values) == 1 else list(values)
    headers = {name: request.headers[name] for name in _ECHOED_HEADERS if name in request.headers}
    raw = await request.read()
    data: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "query": query,
        "headers": headers,
        "body": raw.decode("utf-8", errors="replace"),
    }
    if raw and request.content_type == "application/json":
        try:
            data["json"] = json.loads(raw)
        except ValueError:
            data["json"] = None
    return _json(request, data)


def _int_param(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > maximum:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name} must be an integer 0..{maximum}"}),
            content_type="application/json",
        )
    return int(raw)


def _item_view(item: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    # updated_at moves with the clock: it is noise, ignored by the suites ($.items[*].updated_at).
    updated = now - timedelta(minutes=int(item["id"]))
    return {**item, "updated_at": updated.isoformat(timespec="microseconds")}


async def _list_items(request: web.Request) -> web.Response:
    limit = _int_param(request, "limit", len(_ITEMS), 100)
    offset = _int_param(request, "offset", 0, 100)
    now = datetime.now(UTC)
    page = [_item_view(item, now) for item in _ITEMS[offset : offset + limit]]
    return _json(request, {"items": page, "count": len(page), "total": len(_ITEMS)})


async def _create_item(request: web.Request) -> web.Response:
    try:
        payload = json.loads(await request.read())
    except ValueError:
        payload = None
    name = payload.get("name") if isinstance(payload, dict) else None
    if not isinstance(name, str) or not name:
        return _json(request, {"error": 'body must be a JSON object with a non-empty "name"'}, 400)
    # Not stored: the origin stays stateless so that the order of cases never matters.
    item_id = uuid.uuid4().hex
    response = _json(request, {"id": item_id, "name": name, "stored": False}, 201)
    response.headers["Location"] = f"/api/items/{item_id}"
    return response


async def _get_item(request: web.Request) -> web.Response:
    item_id = int(request.match_info["id"])
    for item in _ITEMS:
        if item["id"] == item_id:
            return _json(request, {"item": _item_view(item, datetime.now(UTC))})
    return _json(request, {"error": "item not found", "id": item_id}, 404)


async def _get_user(request: web.Request) -> web.Response:
    user_id = int(request.match_info["id"])
    if not 1 <= user_id <= _MAX_USER_ID:
        return _json(request, {"error": "user not found", "id": user_id}, 404)
    created = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=user_id)
    profile = {
        "id": user_id,
        "name": f"user{user_id}",
        "email": f"user{user_id}@example.com",
        "role": "user",
        "plan": _PLANS[user_id % len(_PLANS)],
        "locale": "en-US",
        "created_at": created.date().isoformat(),
    }
    return _json(request, profile)


async def _time(request: web.Request) -> web.Response:
    return _json(request, {"tz": "UTC", "unit": "seconds since the epoch"})


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently(location="/static/hello.txt")


# Extra headers real servers send with some statuses; makes /status/{code} worth comparing.
_STATUS_HEADERS: dict[int, dict[str, str]] = {
    301: {"Location": "/static/hello.txt"},
    302: {"Location": "/static/hello.txt"},
    303: {"Location": "/static/hello.txt"},
    307: {"Location": "/static/hello.txt"},
    308: {"Location": "/static/hello.txt"},
    401: {"WWW-Authenticate": 'Bearer realm="demo"'},
    429: {"Retry-After": "1"},
    503: {"Retry-After": "1"},
}


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if not 200 <= code <= 599:
        return _json(request, {"error": "status must be 200..599", "code": code}, 400)
    headers = _STATUS_HEADERS.get(code, {})
    if code in (204, 304):
        return web.Response(status=code, headers=headers)
    response = web.Response(status=code, headers=headers)
    response.text = f"{code} {response.reason}\n"
    return response


def make_origin_app() -> web.Application:
    """The demo origin: static files, a small JSON API, redirects and arbitrary statuses."""
    app = web.Application(middlewares=[_origin_middleware])
    for path in _STATIC:
        app.router.add_get(path, _static)
    app.router.add_route("*", "/api/echo", _echo)
    app.router.add_get("/api/items", _list_items)
    app.router.add_post("/api/items", _create_item)
    app.router.add_get(r"/api/items/{id:\d+}", _get_item)
    app.router.add_get(r"/api/user/{id:\d+}", _get_user)
    app.router.add_get("/api/time", _time)
    app.router.add_get("/redirect", _redirect)
    app.router.add_route("*", r"/status/{code:\d+}", _status)
    return app


# --------------------------------------------------------------------------------------------
# The proxies
# --------------------------------------------------------------------------------------------

# RFC 9110 §7.6.1 hop-by-hop headers, plus the framing ones a proxy recomputes itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED_UP = _HOP_BY_HOP | {"host", "content-length", "accept-encoding"}
_NOT_FORWARDED_DOWN = _HOP_BY_HOP | {"content-length", "date", "server"}

_COMPRESSIBLE = ("text/", "application/json", "application/javascript", "image/svg+xml")
_MIN_COMPRESS_LENGTH = 20  # nginx's gzip_min_length default
_CHUNK_SIZE = 1024  # small, so that the new proxy's chunking is visible even on small pages


@dataclass(frozen=True)
class ProxyPolicy:
    """Everything that distinguishes one demo proxy from the other, as data."""

    name: str  # used in Via
    server: str
    codings: tuple[str, ...]  # content codings it can apply, in its order of preference
    chunked: bool  # stream bodies with Transfer-Encoding: chunked instead of Content-Length
    lower_case_sorted_headers: bool
    reasons: Mapping[int, str] = field(default_factory=dict)  # reason phrase overrides
    cache_control: Mapping[str, str] = field(default_factory=dict)  # path -> Cache-Control
    json_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # path -> fields
    intercept_html_404: bool = False  # replace the origin's HTML 404 page with its own JSON
    # Paths this proxy hands to a legacy code path, marked ``X-Fallback: 1`` (a "fallback", as
    # targets.yaml ``fallback:`` declares it; flamingo counts them for max_fallback_rate).
    fallback_paths: tuple[str, ...] = ()
    # Bytes kept for good after every request (a planted memory leak, off by default), shown
    # by the ``demo_proxy_retained_bytes`` gauge: what a ``resources:`` bound must catch.
    leak_bytes: int = 0


OLD_PROXY = ProxyPolicy(
    name="demo-old",
    server="flamingo-demo-old/1.0",
    codings=("gzip",),
    chunked=False,
    lower_case_sorted_headers=False,
)

NEW_PROXY = ProxyPolicy(
    name="demo-new",
    server="flamingo-demo-new/2.0",
    codings=("br", "gzip"),
    chunked=True,
    lower_case_sorted_headers=True,
    reasons={200: "Okay"},
    cache_control={"/static/page.html": "public, max-age=300"},  # planted difference (a)
    json_overrides={"/api/user/42": {"role": "admin"}},  # planted difference (b)
    intercept_html_404=True,  # planted difference (c)
)

#: Where ``flamingo demo`` has the new proxy fall back (``--fallback``; off unless asked, so
#: the planted differences above stay the only ones for a targets file that declares none).
DEMO_FALLBACK_PATHS = ("/api/time",)

#: Each proxy's own Prometheus metrics (``targets.X.metrics_url`` in the bundled targets.yaml).
METRICS_PATH = "/_demo/metrics"

_SESSION = web.AppKey("session", aiohttp.ClientSession)
_ORIGIN = web.AppKey("origin", str)
_POLICY = web.AppKey("policy", ProxyPolicy)
_METRICS = web.AppKey("metrics", CollectorRegistry)
_COUNTERS = web.AppKey("counters", dict)
_RETAINED = web.AppKey("retained", list)


def _accepted_codings(accept_encoding: str) -> set[str]:
    """The content codings a client accepts (q > 0); ``*`` stands for any."""
    accepted: set[str] = set()
    for part in accept_encoding.split(","):
        token, _, params = part.partition(";")
        token = token.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if token and quality > 0:
            accepted.add(token)
    return accepted


def _choose_coding(policy: ProxyPolicy, accept_encoding: str) -> str | None:
    accepted = _accepted_codings(accept_encoding)
    for coding in policy.codings:
        if coding in accepted or "*" in accepted:
            return coding
    return None


def _compress(coding: str, body: bytes) -> bytes:
    if coding == "br":
        # Quality 5, as proxies use for on-the-fly compression (11 is for precompressed assets).
        return bytes(brotli.compress(body, quality=5))
    # mtime=0 keeps the gzip bytes reproducible (the header would otherwise carry the clock).
    return gzip.compress(body, mtime=0)


def _header(pairs: list[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key.lower() == name:
            return value
    return None


def _set_header(pairs: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    kept = [(key, val) for key, val in pairs if key.lower() != name.lower()]
    return [*kept, (name, value)]


def _rewrite(
    policy: ProxyPolicy,
    request: web.Request,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
) -> tuple[list[tuple[str, str]], bytes]:
    """Apply the policy's content rules (the planted differences) to one upstream response."""
    content_type = (_header(headers, "content-type") or "").lower()
    if policy.intercept_html_404 and status == 404 and content_type.startswith("text/html"):
        error = {"error": "not_found", "status": 404, "path": request.path}
        body = json.dumps(error).encode()
        headers = _set_header(headers, "Content-Type", "application/json")
    overrides = policy.json_overrides.get(request.path)
    if overrides and content_type.startswith("application/json") and body:
        data = json.loads(body)
        if isinstance(data, dict):
            data.update(overrides)
            body = json.dumps(data).encode()
    cache_control = policy.cache_control.get(request.path)
    if cache_control is not None and status < 400:
        headers = _set_header(headers, "Cache-Control", cache_control)
    return headers, body


async def _forward(request: web.Request) -> web.StreamResponse:
    policy = request.app[_POLICY]
    session = request.app[_SESSION]
    counters = request.app[_COUNTERS]
    counters["requests"].inc()
    if policy.leak_bytes:
        request.app[_RETAINED].append(bytearray(policy.leak_bytes))
        counters["retained"].inc(policy.leak_bytes)
    proxy_request_id = uuid.uuid4().hex
    via = f"1.1 {policy.name}"

    connection_tokens = {
        token.strip().lower() for token in request.headers.get("Connection", "").split(",")
    }
    upstream_headers = CIMultiDict[str]()
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered not in _NOT_FORWARDED_UP and lowered not in connection_tokens:
            upstream_headers.add(name, value)
    # The proxy owns compression towards the client, so it asks the origin for identity.
    upstream_headers["Accept-Encoding"] = "identity"
    upstream_headers["Via"] = via
    upstream_headers["X-Forwarded-For"] = request.remote or "127.0.0.1"
    upstream_headers["X-Forwarded-Proto"] = request.scheme

    url = URL(request.app[_ORIGIN] + request.raw_path, encoded=True)
    payload = await request.read()
    counters["upstream"].inc()
    try:
        async with session.request(
            request.method,
            url,
            headers=upstream_headers,
            data=payload or None,
            allow_redirects=False,  # a proxy passes redirects on, it never follows them
        ) as upstream:
            status = upstream.status
            reason = upstream.reason
            raw_headers = upstream.raw_headers
            body = await upstream.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        text = f"502 Bad Gateway\n{type(exc).__name__}\n"
        return web.Response(
            status=502, text=text, headers={"Via": via, "X-Proxy-Request-Id": proxy_request_id}
        )

    headers = [
        (key.decode("latin-1"), value.decode("latin-1"))
        for key, value in raw_headers
        if key.decode("latin-1").lower() not in _NOT_FORWARDED_DOWN
    ]
    headers, body = _rewrite(policy, request, status, headers, body)

    content_type = (_header(headers, "content-type") or "").lower()
    compressible = content_type.startswith(_COMPRESSIBLE)
    if compressible:
        # Sent whether or not this client's response is compressed, so that Vary never depends
        # on which codings a proxy knows.
        headers.append(("Vary", "Accept-Encoding"))
    must_be_empty = request.method == "HEAD" or status in (204, 304) or status < 200
    if (
        compressible
        and not must_be_empty
        and len(body) >= _MIN_COMPRESS_LENGTH
        and _header(headers, "content-encoding") is None
    ):
        coding = _choose_coding(policy, request.headers.get("Accept-Encoding", ""))
        if coding is not None:
            body = _compress(coding, body)
            headers.append(("Content-Encoding", coding))

    headers.extend([("Via", via), ("X-Proxy-Request-Id", proxy_request_id)])
    if request.path.startswith(policy.fallback_paths):  # () matches nothing
        headers.append(("X-Fallback", "1"))
    headers.append(("Server", policy.server))
    if policy.lower_case_sorted_headers:
        headers.append(("Date", email.utils.formatdate(usegmt=True)))
        headers = sorted((key.lower(), value) for key, value in headers)
    out_headers = CIMultiDict[str](headers)
    reason = policy.reasons.get(status, reason)

    if policy.chunked and body and not must_be_empty and request.version >= (1, 1):
        response = web.StreamResponse(status=status, reason=reason, headers=out_headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), _CHUNK_SIZE):
            await response.write(body[start : start + _CHUNK_SIZE])
        await response.write_eof()
        return response
    return web.Response(status=status, reason=reason, body=body or None, headers=out_headers)


def make_proxy_app(origin_url: str, policy: ProxyPolicy) -> web.Application:
    """A reverse proxy forwarding every request to ``origin_url``, behaving as ``policy`` says."""

    async def client_session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=256)
        timeout = aiohttp.ClientTimeout(total=30)
        # auto_decompress=False: bodies are passed on exactly as the origin encoded them.
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),  # absent stays absent: /api/echo shows it
        ) as session:
            app[_SESSION] = session
            yield

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[_ORIGIN] = origin_url.rstrip("/")
    app[_POLICY] = policy
    registry = CollectorRegistry(auto_describe=True)
    app[_METRICS] = registry
    app[_COUNTERS] = {
        "requests": Counter(
            "demo_proxy_requests", "Requests this proxy answered.", registry=registry
        ),
        "upstream": Counter(
            "demo_proxy_upstream_requests", "Requests it sent to the origin.", registry=registry
        ),
        "retained": Gauge(
            "demo_proxy_retained_bytes", "Bytes it holds on to after answering.", registry=registry
        ),
    }
    app[_RETAINED] = []
    app.cleanup_ctx.append(client_session)
    app.router.add_get(METRICS_PATH, _metrics)
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app


async def _metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(request.app[_METRICS]))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


# --------------------------------------------------------------------------------------------
# Running the three servers
# --------------------------------------------------------------------------------------------


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _start(app: web.Application, host: str, port: int, runners: list[web.AppRunner]) -> str:
    # A short shutdown_timeout: in-flight demo requests finish in milliseconds, and SIGTERM
    # should not hang for aiohttp's default minute.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {_base_url(host, port)}: {exc}") from exc
    bound_port = int(runner.addresses[0][1])
    return _base_url(host, bound_port)


@contextlib.asynccontextmanager
async def running_demo(
    host: str = "127.0.0.1",
    origin_port: int = 0,
    old_port: int = 0,
    new_port: int = 0,
    fallback_paths: tuple[str, ...] = (),
    leak_bytes: int = 0,
) -> AsyncIterator[DemoUrls]:
    """Run origin, old and new in the current event loop; yields their base URLs.

    Port 0 picks a free ephemeral port. Everything is shut down when the block exits.
    """
    runners: list[web.AppRunner] = []
    try:
        origin = await _start(make_origin_app(), host, origin_port, runners)
        old = await _start(make_proxy_app(origin, OLD_PROXY), host, old_port, runners)
        new_policy = replace(NEW_PROXY, fallback_paths=fallback_paths, leak_bytes=leak_bytes)
        new = await _start(make_proxy_app(origin, new_policy), host, new_port, runners)
        yield {"origin": origin, "old": old, "new": new}
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def _stop_on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set ``stop`` when standard input reaches end of file.

    The parent holds the other end of our stdin pipe: when it exits, even by SIGKILL, the pipe
    closes and the demo stops instead of squatting on its ports as an orphan. Watched by the
    event loop on the raw fd (no thread: a daemon thread blocked in a buffered read aborts the
    interpreter at exit).
    """
    fd = sys.stdin.fileno()

    def on_readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    # Not pollable (a regular file, /dev/null): then there is no parent pipe to watch.
    with contextlib.suppress(OSError, ValueError):
        loop.add_reader(fd, on_readable)


async def serve(
    host: str = "127.0.0.1",
    origin_port: int = 0,
    old_port: int = 18081,
    new_port: int = 18082,
    *,
    out: TextIO | None = None,
    exit_on_stdin_eof: bool = False,
    fallback_paths: tuple[str, ...] = (),
    leak_bytes: int = 0,
) -> None:
    """Serve the demo until SIGTERM or SIGINT (or, if asked, until standard input closes).

    Once all three servers listen, writes one JSON line ``{"origin": .., "old": .., "new": ..}``
    to ``out`` (default stdout): the handshake :func:`start_demo_process` waits for.
    """
    stream = out if out is not None else sys.stdout
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Installed before the servers start, so an early SIGTERM still shuts down cleanly.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if exit_on_stdin_eof:
        _stop_on_stdin_eof(loop, stop)
    try:
        demo = running_demo(host, origin_port, old_port, new_port, fallback_paths, leak_bytes)
        async with demo as urls:
            stream.write(json.dumps(urls) + "\n")
            stream.flush()
            await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


# --------------------------------------------------------------------------------------------
# The demo as a child process
# --------------------------------------------------------------------------------------------

_STARTUP_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0


class DemoProcess:
    """A running ``python -m flamingo.demo serve`` child; a context manager that stops it."""

    def __init__(self, process: subprocess.Popen[bytes], urls: DemoUrls, stderr: IO[bytes]):
        self.process = process
        self.urls = urls
        self._stderr = stderr

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def stderr_text(self) -> str:
        """What the demo wrote to stderr so far (tracebacks, if it crashed); "" once stopped."""
        if self._stderr.closed:
            return ""
        position = self._stderr.tell()
        try:
            return _read_stderr(self._stderr)
        finally:
            self._stderr.seek(position)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int:
        """Terminate (SIGTERM), wait, kill if it does not exit in time; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self._stderr.close()
        return self.process.returncode

    def __enter__(self) -> DemoProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read_stderr(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    return stderr.read().decode("utf-8", errors="replace").strip()


def start_demo_process(
    old_port: int = 0,
    new_port: int = 0,
    *,
    origin_port: int = 0,
    host: str = "127.0.0.1",
    timeout: float = _STARTUP_TIMEOUT,
    fallback_paths: tuple[str, ...] = (),
    leak_bytes: int = 0,
) -> DemoProcess:
    """Start the demo targets in a child process and wait until they listen.

    Raises RuntimeError (with the child's stderr) if it exits or stays silent for ``timeout``.
    """
    command = [
        sys.executable,
        "-m",
        "flamingo.demo",
        "serve",
        "--host",
        host,
        "--origin-port",
        str(origin_port),
        "--old-port",
        str(old_port),
        "--new-port",
        str(new_port),
        "--exit-on-stdin-eof",
        *(f"--fallback={path}" for path in fallback_paths),
        f"--leak-bytes={leak_bytes}",
    ]
    env = dict(os.environ)
    # The child must import this same flamingo even when it is not installed (a source tree).
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # stderr goes to a file, not a pipe: nobody reads it while the demo runs, and a full pipe
    # would block the server.
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- owned and closed by DemoProcess
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env
    )
    assert process.stdout is not None
    stdout = process.stdout
    lines: queue.Queue[bytes] = queue.Queue()
    # A thread, because a pipe read cannot time out portably.
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = None
    urls: Any = None
    if line:
        try:
            urls = json.loads(line)
        except ValueError:
            urls = None
    if not isinstance(urls, dict) or set(urls) != {"origin", "old", "new"}:
        if line is None:
            problem = f"did not start within {timeout:g}s"
        elif not line:
            problem = "exited before it was listening"
        else:
            problem = f"printed {line!r} instead of its URLs"
        _reap(process)
        detail = _read_stderr(stderr) or "(no stderr)"
        for pipe in (process.stdin, stdout, stderr):
            if pipe is not None:
                pipe.close()
        raise RuntimeError(
            f"the flamingo demo targets {problem} (exit code {process.returncode});"
            f" stderr:\n{detail}"
        )
    return DemoProcess(process, {key: str(urls[key]) for key in ("origin", "old", "new")}, stderr)


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Make sure a failed child is gone: a short grace period to exit by itself, then kill."""
    try:
        process.wait(1.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
