"""The bundled edge suite end to end: raw requests and the upstream view through real proxies.

Two identical nginx must agree on every edge case; nginx against HAProxy (a different make) must
show differences we can explain. Both runs go through `flamingo run` with flamingo's recording
origin behind the proxies (``upstream:`` in targets.yaml).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import NginxFactory
from haproxy import start_haproxy

from flamingo.cli import main

SUITE = Path(__file__).resolve().parent.parent / "suites" / "edge"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def origin_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def haproxy_url(
    haproxy_binary: str, origin_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    proxy = start_haproxy(
        haproxy_binary,
        tmp_path_factory.mktemp("haproxy"),
        upstream=f"http://127.0.0.1:{origin_port}",
    )
    try:
        yield proxy.url
    finally:
        proxy.stop()


def run_edge(
    tmp_path: Path, old: str, new: str, port: int
) -> tuple[int, dict[str, Any], dict[str, dict[str, Any]]]:
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        f"""targets:
  old: {{base_url: "{old}"}}
  new: {{base_url: "{new}"}}
run: {{concurrency: 100, timeout: 3s, retries: 0}}
upstream: {{listen: "127.0.0.1:{port}"}}
"""
    )
    out = tmp_path / "out"
    code = main(["run", "--targets", str(targets), "--suites", str(SUITE), "--out", str(out)])
    gate = json.loads((out / "gate.json").read_text())
    results = {
        row["id"]: row for row in map(json.loads, (out / "results.jsonl").read_text().splitlines())
    }
    return code, gate, results


def test_two_identical_nginx_agree_on_every_edge_case(
    nginx_factory: NginxFactory, origin_port: int, tmp_path: Path
) -> None:
    upstream = f"http://127.0.0.1:{origin_port}"
    old = nginx_factory("# edge: old", upstream=upstream)
    new = nginx_factory("# edge: new", upstream=upstream)
    code, gate, results = run_edge(tmp_path, old, new, origin_port)
    differing = {k: v["differences"] for k, v in results.items() if v["outcome"] != "match"}
    assert differing == {}
    assert code == 0 and gate["verdict"] == "pass"


def _where(result: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {d["location"]: (d["old"], d["new"]) for d in result["differences"]}


def test_nginx_and_haproxy_differ_in_explainable_ways(
    nginx_factory: NginxFactory, haproxy_url: str, origin_port: int, tmp_path: Path
) -> None:
    upstream = f"http://127.0.0.1:{origin_port}"
    old = nginx_factory("# edge: old", upstream=upstream)
    code, gate, results = run_edge(tmp_path, old, haproxy_url, origin_port)
    assert code == 1 and gate["verdict"] == "fail"
    assert gate["totals"]["error"] == 0  # every ending is a behaviour, none a harness error
    assert gate["upstream"]["untokened"] == 0

    # CL and TE together: nginx refuses (400, closes); HAProxy drops Content-Length and forwards
    # the chunked body.
    cl_te = _where(results["edge::smuggling CL and TE"])
    assert cl_te["status"] == (400, 200)
    assert cl_te["upstream.requests"] == (0, 1)
    # nginx buffers a chunked body and forwards it with Content-Length; HAProxy streams it chunked.
    assert _where(results["edge::chunked body with a trailer"])["upstream.framing"] == (
        "content-length: 3",
        "chunked",
    )
    # nginx speaks HTTP/1.1 to the origin (proxy_http_version 1.1); HAProxy keeps the client's
    # version.
    assert _where(results["edge::version HTTP/1.0"])["upstream.request-line"] == (
        "GET /edge/version HTTP/1.1",
        "GET /edge/version HTTP/1.0",
    )
    # An absolute-form target: nginx rewrites it to origin-form, HAProxy forwards it as sent.
    assert _where(results["edge::absolute-form target, same host"])["upstream.request-line"] == (
        "GET /edge/absolute HTTP/1.1",
        "GET http://edge.test/edge/absolute HTTP/1.1",
    )
    # A header named in Connection is hop-by-hop: HAProxy removes it, nginx passes it on.
    connection = _where(results["edge::Connection lists a header (hop-by-hop by declaration)"])
    assert connection["upstream.header.x-hop"] == ("must not reach the origin", None)
    # Expect: 100-continue is answered by nginx itself; HAProxy forwards the header.
    assert _where(results["edge::Expect 100-continue"])["upstream.header.expect"] == (
        None,
        "100-continue",
    )
    # A 9000-byte header: over nginx's 8k buffer (400, closed), within HAProxy's 16k.
    long_header = _where(results["edge::very long header value (9000 bytes)"])
    assert long_header["status"] == (400, 200)
    assert long_header["ending"] == ("closed", "open")
    # Both wait for a body that never comes: the same timeout, a match.
    waits = results["edge::body shorter than its Content-Length (the proxy waits)"]
    assert waits["outcome"] == "match", (waits["differences"], waits["old"], waits["new"])
    # The evidence is plain data in results.jsonl and side by side in report.html.
    row = results["edge::absolute-form target, same host"]
    assert row["old"]["upstream"]["requests"][0]["request_line"] == "GET /edge/absolute HTTP/1.1"
    assert row["new"]["ending"] == "open"
    page = (tmp_path / "out" / "report.html").read_text()
    assert "GET http://edge.test/edge/absolute HTTP/1.1" in page
    assert "X-Hop: must not reach the origin" in page


def test_a_proxy_that_strips_the_token_is_never_a_silent_match(
    nginx_factory: NginxFactory, origin_port: int, tmp_path: Path
) -> None:
    upstream = f"http://127.0.0.1:{origin_port}"
    old = nginx_factory("# edge: old", upstream=upstream)
    # This nginx drops the header that carries flamingo's token on its way to the origin (in a
    # location of its own: nginx inherits no proxy_set_header into a block that sets any).
    stripping = """
        location /edge/ {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Flamingo-Token "";
        }
"""
    new = nginx_factory(stripping, upstream=upstream)
    code, gate, results = run_edge(tmp_path, old, new, origin_port)
    assert code == 1 and gate["upstream"]["untokened"] > 0
    built = _where(results["edge::baseline built request (aiohttp; the token travels in a header)"])
    assert built["upstream.token"][0] == "1 forwarded"
    assert built["upstream.token"][1].startswith("token lost")
    lost = 0
    for row in results.values():
        old_forwarded = row["old"].get("upstream", {}).get("requests")
        if old_forwarded and not row["new"].get("upstream", {}).get("requests"):
            assert row["outcome"] == "diff", row["id"]
            lost += "upstream.token" in _where(row)
    assert lost >= 10  # most: an untracked request in flight may explain away a few
    # Where the token travels in the path, the header's absence changes nothing: a match.
    assert results["edge::HTTP/0.9 request line"]["outcome"] == "match"


def test_pytest_plugin_checks_the_forwarded_request(
    nginx_factory: NginxFactory, origin_port: int, tmp_path: Path
) -> None:
    upstream = f"http://127.0.0.1:{origin_port}"
    proxy = nginx_factory("# edge: old", upstream=upstream)
    (tmp_path / "targets.yaml").write_text(
        f"targets:\n  old: {{base_url: '{proxy}'}}\n  new: {{base_url: '{proxy}'}}\n"
        f"upstream: {{listen: '127.0.0.1:{origin_port}'}}\n"
    )
    (tmp_path / "fwd.yaml").write_text(
        "suite: fwd\ncompare: {ignore_headers: [date]}\nrequests:\n"
        "  - name: forwarded for\n    path: /built\n"
        "    expect: {upstream: {headers: {X-Forwarded-For: {regex: '^127\\.'}}}}\n"
        "  - name: raw, hop header removed\n"
        '    raw: "GET /raw HTTP/1.1\\r\\nHost: a\\r\\nX-Flamingo-Token: {{ token }}\\r\\n'
        'Connection: X-Hop\\r\\nX-Hop: 1\\r\\n\\r\\n"\n'
        "    expect: {upstream: {headers: {X-Hop: {absent: true}}}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
         "--flamingo-targets", "targets.yaml", "fwd.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = proc.stdout
    lines = out.splitlines()
    assert any(line.startswith("PASSED") and "forwarded for" in line for line in lines), out
    # nginx passes a header named in Connection on to the origin: the expectation says so.
    assert any(line.startswith("FAILED") and "hop header removed" in line for line in lines)
    assert "upstream header x-hop" in out
