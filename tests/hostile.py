"""An old and a new target that differ on purpose and answer with hostile content, for the report
tests: HTML and ``<script>`` in bodies, JSON keys and header values, a secret echoed back, a body
larger than the evidence limit, and a route on which new drops the connection.

    route           old                              new
    /item/N         JSON {id, role: user, tags}      role ``admin`` when N % 3 == 0;
                                                     status 500 when N % 10 == 5
    /evil           HTML page                        another HTML page with <script>, onerror
                                                     handlers, a hostile header and JSON key
    /evil.json      JSON                             JSON whose key and value close </script>
    /big            200 KiB of text                  the same, one byte changed at the end
    /echo           JSON of the Authorization header (so the secret is in the body)
    /broken         200                              closes the connection (a transport error)

Both run in one aiohttp loop in a daemon thread on 127.0.0.1 (ephemeral ports).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

EVIL_SCRIPT = "<script>window.__pwned = 1; document.title = 'pwned'</script>"
EVIL_HTML = (
    f"<html><body><h1 id='injected'>injected</h1>{EVIL_SCRIPT}"
    '<img src=x onerror="window.__pwned = 2"></script><!-- </body></html>'
)
EVIL_HEADER = "<script>window.__pwned = 3</script>\"'><img src=x onerror=alert(1)>"
EVIL_KEY = "</script><script>window.__pwned = 4</script>"


def _app(side: str) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        role = "admin" if side == "new" and n % 3 == 0 else "user"
        status = 500 if side == "new" and n % 10 == 5 else 200
        body = {"id": n, "role": role, "tags": ["a", "b"], "owner": {"name": f"user{n}"}}
        return web.json_response(body, status=status)

    async def evil(request: web.Request) -> web.Response:
        if side == "old":
            return web.Response(
                text="<html><body><p>fine</p></body></html>\n", content_type="text/html"
            )
        return web.Response(
            text=EVIL_HTML, content_type="text/html", headers={"X-Evil": EVIL_HEADER}
        )

    async def evil_json(request: web.Request) -> web.Response:
        body = {"ok": True} if side == "old" else {EVIL_KEY: EVIL_SCRIPT, "ok": "</script>"}
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def big(request: web.Request) -> web.Response:
        text = ("0123456789abcdef" * 64 + "\n") * 200  # ~200 KiB
        if side == "new":
            text = text[:-2] + "X\n"
        return web.Response(text=text, content_type="text/plain")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"side": side, "auth": request.headers.get("Authorization")})

    async def broken(request: web.Request) -> web.StreamResponse:
        if side == "new" and request.transport is not None:
            request.transport.close()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/item/{n}", item)
    app.router.add_get("/evil", evil)
    app.router.add_get("/evil.json", evil_json)
    app.router.add_get("/big", big)
    app.router.add_get("/echo", echo)
    app.router.add_get("/broken", broken)
    return app


@contextmanager
def hostile_pair() -> Iterator[dict[str, str]]:
    """``{"old": URL, "new": URL}`` while the two servers run."""
    loop = asyncio.new_event_loop()
    urls: dict[str, str] = {}
    runners: list[web.AppRunner] = []
    ready = threading.Event()

    async def start() -> None:
        for side in ("old", "new"):
            runner = web.AppRunner(_app(side), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            server = site._server
            assert server is not None
            port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            urls[side] = f"http://127.0.0.1:{port}"

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield urls
    finally:

        async def stop() -> None:
            for runner in runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


SUITE = """\
suite: hostile
tags: [report]
compare: { ignore_headers: [date] }
requests:
  - name: "item {{ n }}"
    path: "/item/{{ n }}"
    matrix: { n: [N_VALUES] }
  - name: evil page
    path: /evil
  - name: evil json
    path: /evil.json
  - name: big body
    path: /big
  - name: echo auth
    path: /echo
  - name: broken
    path: /broken
""".replace("N_VALUES", ", ".join(str(n) for n in range(1, 301)))

NEW_TOKEN = "hostile-t0ken-value-93c1"


def hostile_run(
    folder: Path,
    urls: dict[str, str],
    *extra: str,
    gate: str = "min_match_rate: 0.9, max_error_rate: 0.01",
    out: str = "out",
    env: dict[str, str] | None = None,
    progress: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``flamingo run`` of `SUITE` against the pair (``gate``: the default gate's keys), output
    in ``folder/out``."""
    (folder / "suite.yaml").write_text(SUITE)
    (folder / "targets.yaml").write_text(
        "targets:\n"
        f"  old:\n    base_url: {urls['old']}\n"
        f"  new:\n    base_url: {urls['new']}\n"
        '    headers: { Authorization: "Bearer ${NEW_TOKEN}" }\n'
        "run: { concurrency: 20, timeout: 5s, retries: 0 }\n"
        f"gates:\n  default: {{ {gate} }}\n"
    )
    env = {**os.environ, "NEW_TOKEN": NEW_TOKEN, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "flamingo", "run", "--targets", str(folder / "targets.yaml"),
         "--suites", str(folder / "suite.yaml"), "--out", str(folder / out),
         *([] if progress else ["--no-progress"]), *extra],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
