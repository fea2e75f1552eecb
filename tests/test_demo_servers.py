"""End-to-end tests of the bundled demo targets and of the nginx fixtures.

Every test here opens real sockets on 127.0.0.1. Responses are read with http.client so that
what is on the wire (header case and order, chunking, content coding, reason phrase) is visible.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import brotli
import pytest

import flamingo
from flamingo.demo import DEMO_DIFFERENCES, METRICS_PATH, running_demo, start_demo_process

if TYPE_CHECKING:
    from conftest import NginxFactory

HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # wire case and order
    raw: bytes  # as sent, after de-chunking, before content decoding
    chunked: bool

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def body(self) -> bytes:
        coding = self.header("content-encoding")
        if coding == "gzip":
            return gzip.decompress(self.raw)
        if coding == "br":
            return bytes(brotli.decompress(self.raw))
        assert coding is None, coding
        return self.raw

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(
    base_url: str,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    parts = urlsplit(base_url)
    assert parts.hostname == "127.0.0.1", base_url  # every socket stays on loopback
    connection = HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        return Reply(response.status, response.reason, response.getheaders(), raw, response.chunked)
    finally:
        connection.close()


# Noise the suites' compare rules remove; what is left must be equal unless a difference is planted.
_IGNORED_HEADERS = {
    "date",
    "server",
    "via",
    "x-request-id",
    "x-proxy-request-id",
    # framing and coding: the contract says these never count
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "content-encoding",
}


def _strip_noise(data: Any) -> Any:
    if isinstance(data, dict):
        return {
            key: _strip_noise(value)
            for key, value in data.items()
            if key not in ("now", "request_id", "updated_at")
        }
    if isinstance(data, list):
        return [_strip_noise(value) for value in data]
    if isinstance(data, str):
        return re.sub(r"[0-9a-f]{32}", "<id>", data)
    return data


def normalized(reply: Reply) -> tuple[int, list[tuple[str, str]], Any]:
    headers = sorted(
        (key.lower(), re.sub(r"[0-9a-f]{32}", "<id>", value))
        for key, value in reply.headers
        if key.lower() not in _IGNORED_HEADERS
    )
    try:
        body: Any = _strip_noise(json.loads(reply.body))
    except ValueError:
        body = reply.body
    return reply.status, headers, body


# --------------------------------------------------------------------------------------------
# The demo process
# --------------------------------------------------------------------------------------------


def test_demo_targets_listen_on_loopback(demo_targets: dict[str, str]) -> None:
    assert set(demo_targets) == {"origin", "old", "new"}
    assert len(set(demo_targets.values())) == 3
    for url in demo_targets.values():
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert fetch(url, "/static/hello.txt").status == 200


def test_origin_noise_differs_between_requests(demo_targets: dict[str, str]) -> None:
    first = fetch(demo_targets["origin"], "/api/time")
    second = fetch(demo_targets["origin"], "/api/time")
    ids = [first.header("X-Request-Id"), second.header("X-Request-Id")]
    assert all(value is not None and HEX32.match(value) for value in ids)
    assert ids[0] != ids[1]
    assert first.json()["request_id"] == ids[0]  # the same id in header and body
    assert isinstance(first.json()["now"], float)
    assert first.header("Date") is not None
    assert normalized(first) == normalized(second)


def test_proxies_add_their_own_noise(demo_targets: dict[str, str]) -> None:
    for name in ("old", "new"):
        first = fetch(demo_targets[name], "/static/hello.txt")
        second = fetch(demo_targets[name], "/static/hello.txt")
        assert first.header("Via") == f"1.1 demo-{name}"
        proxy_ids = [first.header("X-Proxy-Request-Id"), second.header("X-Proxy-Request-Id")]
        assert all(value is not None and HEX32.match(value) for value in proxy_ids)
        assert proxy_ids[0] != proxy_ids[1]
        assert first.header("X-Request-Id") != second.header("X-Request-Id")
    old_server = fetch(demo_targets["old"], "/").header("Server")
    new_server = fetch(demo_targets["new"], "/").header("Server")
    assert old_server != new_server


def test_planted_a_cache_control_on_page_html(demo_targets: dict[str, str]) -> None:
    old = fetch(demo_targets["old"], "/static/page.html")
    new = fetch(demo_targets["new"], "/static/page.html")
    assert old.header("Cache-Control") == "public, max-age=60"
    assert new.header("Cache-Control") == "public, max-age=300"
    assert old.body == new.body
    # Only page.html: the other static files keep the origin's header.
    for path in ("/static/hello.txt", "/static/data.json"):
        assert normalized(fetch(demo_targets["old"], path)) == normalized(
            fetch(demo_targets["new"], path)
        )


def test_planted_b_admin_role_for_user_42_only(demo_targets: dict[str, str]) -> None:
    old = fetch(demo_targets["old"], "/api/user/42").json()
    new = fetch(demo_targets["new"], "/api/user/42").json()
    assert old["role"] == "user"
    assert new["role"] == "admin"
    assert {**_strip_noise(new), "role": "user"} == _strip_noise(old)
    for user in (1, 41, 43, 1000):
        old_user = fetch(demo_targets["old"], f"/api/user/{user}")
        new_user = fetch(demo_targets["new"], f"/api/user/{user}")
        assert new_user.json()["role"] == "user"
        assert normalized(old_user) == normalized(new_user)


def test_planted_c_404_page(demo_targets: dict[str, str]) -> None:
    old = fetch(demo_targets["old"], "/no/such/page")
    new = fetch(demo_targets["new"], "/no/such/page")
    assert old.status == new.status == 404
    assert old.header("Content-Type") == "text/html; charset=utf-8"
    assert b"<h1>Not Found</h1>" in old.body
    assert new.json() == {"error": "not_found", "status": 404, "path": "/no/such/page"}
    # JSON 404s of the API and plain-text /status/404 pass the new proxy unchanged.
    for path in ("/api/user/5000", "/status/404"):
        assert normalized(fetch(demo_targets["old"], path)) == normalized(
            fetch(demo_targets["new"], path)
        )


def test_encoding_differences_decode_to_the_same_body(demo_targets: dict[str, str]) -> None:
    headers = {"Accept-Encoding": "gzip, br"}
    old = fetch(demo_targets["old"], "/static/page.html", headers=headers)
    new = fetch(demo_targets["new"], "/static/page.html", headers=headers)
    origin = fetch(demo_targets["origin"], "/static/page.html")
    assert old.header("Content-Encoding") == "gzip"
    assert new.header("Content-Encoding") == "br"
    assert old.header("Content-Length") is not None and not old.chunked
    assert new.header("Content-Length") is None and new.chunked
    assert old.raw != new.raw
    assert old.body == new.body == origin.body
    # A client that only takes br: old cannot compress, new can; still the same content.
    only_br = {"Accept-Encoding": "br"}
    assert (
        fetch(demo_targets["old"], "/static/data.json", headers=only_br).header("Content-Encoding")
        is None
    )
    assert (
        fetch(demo_targets["old"], "/static/data.json", headers=only_br).body
        == fetch(demo_targets["new"], "/static/data.json", headers=only_br).body
    )


def test_header_case_order_reason_and_server_differ(demo_targets: dict[str, str]) -> None:
    old = fetch(demo_targets["old"], "/static/hello.txt")
    new = fetch(demo_targets["new"], "/static/hello.txt")
    assert "Content-Type" in [key for key, _ in old.headers]
    new_names = [key for key, _ in new.headers]
    assert all(key == key.lower() for key in new_names if key != "Transfer-Encoding")
    assert [key.lower() for key, _ in old.headers] != [key.lower() for key, _ in new.headers]
    assert (old.reason, new.reason) == ("OK", "Okay")
    assert old.header("Server") == "flamingo-demo-old/1.0"
    assert new.header("Server") == "flamingo-demo-new/2.0"
    assert normalized(old) == normalized(new)


# Requests whose normalized responses must be equal through both proxies: everything that is
# not a planted difference. Mirrors what the bundled suites send.
_EQUAL_ROUTES: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("GET", "/static/hello.txt", {"Accept-Encoding": "gzip"}, None),
    ("GET", "/static/data.json", {"Accept-Encoding": "br"}, None),
    ("HEAD", "/static/hello.txt", {}, None),
    ("GET", "/static/hello.txt", {"If-None-Match": "*"}, None),
    ("GET", "/api/echo?q=a&q=b", {"User-Agent": "flamingo-test", "X-Flamingo-Case": "1"}, None),
    ("POST", "/api/echo", {"Content-Type": "application/json"}, b'{"a": 1}'),
    ("GET", "/api/items", {}, None),
    ("GET", "/api/items?limit=2&offset=1", {}, None),
    ("GET", "/api/items?limit=lots", {}, None),
    ("GET", "/api/items/3", {}, None),
    ("POST", "/api/items", {"Content-Type": "application/json"}, b'{"name": "w"}'),
    ("POST", "/api/items", {"Content-Type": "text/plain"}, b"not json"),
    ("GET", "/api/user/7", {}, None),
    ("GET", "/api/user/1001", {}, None),
    ("GET", "/api/time", {}, None),
    ("GET", "/redirect", {}, None),
    ("GET", "/status/204", {}, None),
    ("GET", "/status/304", {}, None),
    ("GET", "/status/401", {}, None),
    ("GET", "/status/503", {}, None),
    ("GET", "/status/999", {}, None),
    ("DELETE", "/static/hello.txt", {}, None),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), _EQUAL_ROUTES)
def test_everything_else_is_equal_after_removing_noise(
    demo_targets: dict[str, str],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
) -> None:
    old = fetch(demo_targets["old"], path, method=method, headers=headers, body=body)
    new = fetch(demo_targets["new"], path, method=method, headers=headers, body=body)
    assert normalized(old) == normalized(new)


def test_fallback_marker_and_metrics(demo_targets: dict[str, str]) -> None:
    """Asked to (``--fallback /api/time``), new hands /api/time to its legacy path and says so
    (X-Fallback: 1); never otherwise. Each proxy serves its own Prometheus metrics, counting
    what it really did."""
    assert fetch(demo_targets["new"], "/api/time").header("X-Fallback") is None
    with start_demo_process(fallback_paths=("/api/time",)) as demo:
        assert fetch(demo.urls["new"], "/api/time").header("X-Fallback") == "1"
        assert fetch(demo.urls["old"], "/api/time").header("X-Fallback") is None
        assert fetch(demo.urls["new"], "/api/items").header("X-Fallback") is None
    for name in ("old", "new"):
        before = _upstream_requests(demo_targets[name])
        fetch(demo_targets[name], "/static/hello.txt")
        assert _upstream_requests(demo_targets[name]) == before + 1


def _upstream_requests(base: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    reply = fetch(base, METRICS_PATH)
    assert reply.status == 200
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            if sample.name == "demo_proxy_upstream_requests_total":
                return float(sample.value)
    raise AssertionError("no demo_proxy_upstream_requests_total")


def test_origin_routes(demo_targets: dict[str, str]) -> None:
    origin = demo_targets["origin"]
    redirect = fetch(origin, "/redirect")
    assert (redirect.status, redirect.header("Location")) == (301, "/static/hello.txt")
    created = fetch(
        origin,
        "/api/items",
        method="POST",
        headers={"Content-Type": "application/json"},
        body=b'{"name": "widget"}',
    )
    assert created.status == 201
    assert HEX32.match(created.json()["id"])
    assert created.header("Location") == f"/api/items/{created.json()['id']}"
    items = fetch(origin, "/api/items").json()
    assert [item["id"] for item in items["items"]] == [1, 2, 3, 4, 5]  # POST does not persist
    assert all("updated_at" in item for item in items["items"])
    echo = fetch(origin, "/api/echo?q=x", headers={"User-Agent": "t", "Authorization": "s"}).json()
    assert echo["query"] == {"q": "x"}
    assert echo["headers"] == {"user-agent": "t"}  # Authorization is never echoed
    user = fetch(origin, "/api/user/42").json()
    assert (user["role"], user["plan"]) == ("user", "free")
    assert fetch(origin, "/static/page.html").header("ETag") == fetch(
        origin, "/static/page.html"
    ).header("ETag")
    assert fetch(origin, "/status/418").status == 418
    assert fetch(origin, "/nope").status == 404


def test_differences_table_lists_the_three_real_plants() -> None:
    real = [difference.route for difference in DEMO_DIFFERENCES if difference.counts]
    assert real == [
        "/static/page.html",
        "/api/user/42",
        "any unknown path (the origin's HTML 404 page)",
    ]
    assert all(difference.why_realistic for difference in DEMO_DIFFERENCES)


# --------------------------------------------------------------------------------------------
# Process lifecycle
# --------------------------------------------------------------------------------------------


def _refused(url: str) -> bool:
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_stop_leaves_no_process() -> None:
    demo = start_demo_process()
    pid = demo.pid
    assert fetch(demo.urls["new"], "/api/time").status == 200
    assert demo.stop() == 0  # SIGTERM is a clean shutdown
    assert demo.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    assert all(_refused(url) for url in demo.urls.values())
    assert demo.stop() == 0  # idempotent


def test_sigint_is_a_clean_shutdown_too() -> None:
    with start_demo_process() as demo:
        demo.process.send_signal(signal.SIGINT)
        assert demo.process.wait(10) == 0


def test_demo_stops_when_its_parent_goes_away() -> None:
    # The parent's end of the child's stdin closes when the parent dies, even by SIGKILL.
    with start_demo_process() as demo:
        assert demo.stderr_text() == ""
        assert demo.process.stdin is not None
        demo.process.stdin.close()
        assert demo.process.wait(10) == 0


def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match="exited before it was listening") as info:
            start_demo_process(old_port=port)
    assert f"127.0.0.1:{port}" in str(info.value)


def test_serve_command_prints_one_json_line() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "flamingo.demo", "serve", "--old-port", "0", "--new-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(flamingo.__file__).resolve().parents[1])},
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        urls = json.loads(line)
        assert list(urls) == ["origin", "old", "new"]
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert out == ""


def test_running_demo_in_this_event_loop() -> None:
    async def scenario() -> tuple[str, str]:
        async with running_demo() as urls, aiohttp.ClientSession() as session:
            roles = []
            for name in ("old", "new"):
                async with session.get(urls[name] + "/api/user/42") as response:
                    roles.append((await response.json())["role"])
            return roles[0], roles[1]

    assert asyncio.run(scenario()) == ("user", "admin")


# --------------------------------------------------------------------------------------------
# The nginx fixtures
# --------------------------------------------------------------------------------------------


def test_nginx_proxies_to_the_demo_origin(nginx_proxy: str, demo_targets: dict[str, str]) -> None:
    via_nginx = fetch(nginx_proxy, "/static/hello.txt")
    direct = fetch(demo_targets["origin"], "/static/hello.txt")
    assert via_nginx.status == 200
    assert (via_nginx.header("Server") or "").startswith("nginx")
    assert via_nginx.body == direct.body
    assert via_nginx.header("ETag") == direct.header("ETag")
    request_id = via_nginx.header("X-Request-Id")
    assert request_id is not None and HEX32.match(request_id)  # it really came from the origin
    assert fetch(nginx_proxy, "/api/user/42").json()["role"] == "user"
    assert fetch(nginx_proxy, "/nope").status == 404


def test_nginx_factory_plants_a_difference(nginx_factory: NginxFactory, nginx_proxy: str) -> None:
    planted = nginx_factory("add_header X-Planted yes always;")
    assert planted != nginx_proxy
    assert nginx_factory("add_header X-Planted yes always;") == planted  # started once
    assert fetch(planted, "/static/hello.txt").header("X-Planted") == "yes"
    assert fetch(nginx_proxy, "/static/hello.txt").header("X-Planted") is None
    hidden = nginx_factory("proxy_hide_header ETag;")
    assert fetch(hidden, "/static/hello.txt").header("ETag") is None


def test_nginx_can_front_another_upstream(
    nginx_factory: NginxFactory, demo_targets: dict[str, str]
) -> None:
    in_front_of_new = nginx_factory(upstream=demo_targets["new"])
    assert fetch(in_front_of_new, "/api/user/42").json()["role"] == "admin"
