"""Suites from real traffic, end to end: a HAR written by real headless Chromium (Debian's
``chromium`` driven by Playwright for Python) browsing the demo, and access logs written by real
nginx; each is imported, checked, and run against identical targets, where it must match.
"""

from __future__ import annotations

import json
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CHROMIUM_ARGS, chromium_path, start_nginx

from flamingo.cli import main

SECRETS = ("SECRET-QUERY", "SECRET-BEARER", "SECRET-COOKIE")


def _targets(path: Path, old: str, new: str) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            targets:
              old: {{ base_url: "{old}" }}
              new: {{ base_url: "{new}" }}
            run: {{ concurrency: 10, timeout: 5s, workers: 1 }}
            gates:
              default: {{ min_match_rate: 1.0, max_error_rate: 0, min_cases: 1 }}
            """
        )
    )
    return path


def _run_clean(tmp_path: Path, suite: Path, base: str) -> dict[str, Any]:
    """Run the imported suite with old and new both pointing at ``base``: everything matches."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    targets = _targets(tmp_path / "targets.yaml", base, base)
    assert main(["check", "--targets", str(targets), "--suites", str(suite)]) == 0
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--targets",
            str(targets),
            "--suites",
            str(suite),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    gate: dict[str, Any] = json.loads((out / "gate.json").read_text())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert code == 0, [r for r in rows if r["outcome"] != "match"]
    assert gate["verdict"] == "pass"
    assert {r["outcome"] for r in rows} == {"match"}
    return gate


def test_har_recorded_by_chromium_imports_and_runs_clean(
    demo_targets: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import sync_playwright

    base = demo_targets["old"]
    har = tmp_path / "browse.har"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(record_har_path=str(har), record_har_content="embed")
            context.add_cookies([{"name": "sid", "value": "SECRET-COOKIE", "url": base}])
            page = context.new_page()
            page.goto(f"{base}/static/page.html")
            for n in (1, 2, 3, 2):
                page.goto(f"{base}/api/items/{n}")
            page.goto(f"{base}/api/echo?q=a&access_token=SECRET-QUERY")
            page.evaluate(
                "async () => { await (await fetch('/api/echo?q=b', "
                "{headers: {Authorization: 'Bearer SECRET-BEARER'}})).text();"
                " await (await fetch('/api/items', {method: 'POST', headers: "
                "{'Content-Type': 'application/json'}, body: '{\"name\": \"x\"}'})).text(); }"
            )
            context.close()  # writes the HAR
        finally:
            browser.close()
    recorded = json.loads(har.read_text())["log"]["entries"]
    assert len(recorded) >= 8

    suite = tmp_path / "suites" / "browsed.yaml"
    assert main(["import", "har", str(har), "--suite", "browsed", "--out", str(suite)]) == 0
    err = capsys.readouterr().err
    text = suite.read_text()
    for secret in SECRETS:
        assert secret not in text and secret not in err
    assert (
        "header Authorization" in text and "header Cookie" in text and "query access_token" in text
    )
    assert "1 x POST (side-effecting; --include-unsafe to keep)" in text
    doc = yaml.safe_load(text)
    items = next(r for r in doc["requests"] if r["path"] == "/api/items/{{ id }}")
    assert items["matrix"] == {"id": ["2", "1", "3"]}  # deduplicated, most frequent first
    gate = _run_clean(tmp_path, suite, demo_targets["new"])
    assert gate["totals"]["cases"] == 6

    # With --include-unsafe the POST (and its JSON body) is replayed too.
    unsafe = tmp_path / "suites" / "browsed-unsafe.yaml"
    assert (
        main(["import", "har", str(har), "--suite", "b2", "--include-unsafe", "--out", str(unsafe)])
        == 0
    )
    post = next(r for r in yaml.safe_load(unsafe.read_text())["requests"] if r.get("method"))
    assert (post["method"], json.loads(post["body"])) == ("POST", {"name": "x"})


JSON_LOG = (
    "log_format flamingo_json escape=json '{"
    '"request":"$request","status":"$status","host":"$host",'
    '"http_accept":"$http_accept","http_authorization":"$http_authorization",'
    '"content_type":"$content_type","request_body":"$request_body"'
    "}';\n"
    "    access_log {prefix}/access.json flamingo_json;"
)


def test_nginx_access_logs_import_and_run_clean(
    nginx_binary: str,
    demo_targets: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    nginx = start_nginx(
        nginx_binary,
        prefix,
        upstream=demo_targets["origin"],
        extra_http_directives=JSON_LOG.replace("{prefix}", str(prefix)),
    )
    try:
        sent = [
            *(f"/api/items/{n}" for n in (1, 2, 3, 4, 5, 1, 1)),
            "/api/items?limit=2&offset=1",
            "/api/items?limit=5&offset=1",
            "/api/echo?q=x&session_id=SECRET-QUERY",
            "/static/hello.txt",
            "/static/nope.txt",
        ]
        for path in sent:
            request = urllib.request.Request(
                nginx.url + path,
                headers={"Accept": "application/json", "Authorization": "Bearer SECRET-BEARER"},
            )
            try:
                urllib.request.urlopen(request, timeout=5).read()
            except urllib.error.HTTPError as exc:  # the 404 is traffic too
                exc.read()
        post = urllib.request.Request(
            nginx.url + "/api/items",
            data=b'{"name": "y"}',
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(post, timeout=5).read()
        # A line that is not HTTP at all (what a TLS client sends to a plain port).
        with __import__("socket").create_connection(("127.0.0.1", nginx.port), 5) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x05hello\r\n\r\n")
            sock.recv(1024)

        # nginx writes a log line once it is done with the request, which can be just after the
        # client has its answer: wait for all of them (the requests, the POST, the garbage).
        deadline = time.monotonic() + 10
        logs = (prefix / "access.log", prefix / "access.json")
        while any(len(p.read_text().splitlines()) < len(sent) + 2 for p in logs):
            assert time.monotonic() < deadline, [p.read_text() for p in logs]
            time.sleep(0.05)
        # Both logs are imported before anything runs: the runs go through this nginx too.
        suites = {}
        for fmt, log in (("combined", prefix / "access.log"), ("json", prefix / "access.json")):
            suite = suites[fmt] = tmp_path / f"suite-{fmt}.yaml"
            argv = [
                "import",
                "access-log",
                str(log),
                "--format",
                fmt,
                "--suite",
                f"from-{fmt}",
                "--out",
                str(suite),
            ]
            assert main(argv) == 0
            err = capsys.readouterr().err
            text = suite.read_text()
            assert "SECRET" not in text and "SECRET" not in err
            assert f"{len(sent) + 1} requests read" in text  # + the POST
            doc = yaml.safe_load(text)
            by_path = {r["path"]: r for r in doc["requests"]}
            assert by_path["/api/items/{{ id }}"]["matrix"] == {"id": ["1", "2", "3", "4", "5"]}
            assert by_path["/api/items?limit={{ limit }}&offset=1"]["matrix"] == {
                "limit": ["2", "5"]
            }
            assert "/api/echo?q=x" in by_path  # the session id is gone, the rest stays
            assert "1 x POST (side-effecting; --include-unsafe to keep)" in text
            if fmt == "combined":
                assert "skipped 1 x not an HTTP request line" in err
            else:
                assert "header Authorization" in text
                assert doc["defaults"]["headers"] == {"Accept": "application/json"}
        for fmt, suite in suites.items():
            gate = _run_clean(tmp_path / fmt, suite, nginx.url)
            assert gate["totals"]["cases"] == 10
    finally:
        nginx.stop()
