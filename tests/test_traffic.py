"""Suites from traffic, from literal data: reading HAR and access logs, and building the suite.

The end-to-end round trips (a HAR from real Chromium, logs from real nginx) are in
tests/test_traffic_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flamingo.cli import main
from flamingo.errors import InputError
from flamingo.expand import expand
from flamingo.load import parse_suites
from flamingo.traffic import BuildOptions, Observed, build_suite, read_access_log, read_har
from flamingo.traffic.build import is_sensitive, segment_kind


def _har(*requests: dict[str, Any]) -> str:
    entries = [{"request": {"headers": [], **r}, "response": {"status": 200}} for r in requests]
    return json.dumps({"log": {"version": "1.2", "entries": entries}}, indent=1)


def _get(url: str, **headers: str) -> dict[str, Any]:
    return {
        "method": "GET",
        "url": url,
        "headers": [{"name": k.replace("_", "-"), "value": v} for k, v in headers.items()],
    }


def _obs(target: str, method: str = "GET", **kw: Any) -> Observed:
    return Observed(method=method, target=target, **kw)


def _build(observed: list[Observed], **kw: Any) -> tuple[dict[str, Any], list[str]]:
    """The document written and the case paths it expands to (through flamingo's loader)."""
    imported = build_suite(observed, BuildOptions(suite="t", **kw))
    (suite,) = parse_suites(imported.text, "t.yaml")
    cases = list(expand([suite]))
    assert len(cases) == imported.cases
    return yaml.safe_load(imported.text), [f"{c.method} {c.path}" for c in cases]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def test_har_reads_origin_form_targets_and_skips_what_cannot_be_replayed() -> None:
    text = _har(
        _get("http://a.test:8080/x/1?q=%20b#frag", Accept="text/html", **{":authority": "a"}),
        _get("data:image/png;base64,AAAA"),
        _get("wss://a.test/socket"),
        {"method": "G ET", "url": "http://a.test/"},
        _get("http://a.test"),
    )
    reading = read_har(text, "f.har")
    assert [(o.host, o.target) for o in reading.observed] == [
        ("a.test:8080", "/x/1?q=%20b"),
        ("a.test", "/"),
    ]
    assert reading.observed[0].headers == (("Accept", "text/html"),)
    assert reading.observed[0].line == 6  # the line of the entry's "request" key
    assert dict(reading.skipped) == {
        "not an http(s) URL (data:, blob:, ws:, ...)": 2,
        "not an HTTP method": 1,
    }


def test_har_post_body_and_a_body_the_har_did_not_record() -> None:
    text = _har(
        {
            "method": "POST",
            "url": "http://a.test/api",
            "postData": {"mimeType": "application/json", "text": '{"n": 1}'},
        },
        {
            "method": "POST",
            "url": "http://a.test/api",
            "bodySize": 12,
            "postData": {"mimeType": "application/json", "text": ""},
        },
    )
    reading = read_har(text, "f.har")
    assert [(o.body, o.content_type) for o in reading.observed] == [
        ('{"n": 1}', "application/json")
    ]
    assert dict(reading.skipped) == {"request body not recorded in the HAR": 1}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('{"log": {"entries": [}', 1, "invalid JSON"),
        ('{\n"log": {}}', 1, "no log.entries list"),
        ("[1, 2]", 1, "no log.entries list"),
        (_har(_get("data:,x")), None, "no HTTP request could be read"),
    ],
)
def test_har_that_is_not_one_is_an_input_error(text: str, line: int | None, message: str) -> None:
    with pytest.raises(InputError) as info:
        read_har(text, "f.har")
    assert info.value.file == "f.har"
    assert info.value.line == line
    assert message in info.value.message


_AT = "127.0.0.1 - bob [27/Nov/2026:15:00:00 +0000] "
COMBINED = "".join(
    line + "\n"
    for line in [
        _AT + r'"GET /api/items/1 HTTP/1.1" 200 51 "-" "curl/8.0"',
        _AT + r'"GET /a%20b?x=\x22y\x22 HTTP/1.1" 404 10 "http://r/" "UA \"quoted\""',
        _AT + r'"\x16\x03\x01\x02\x00\x01\x00" 400 150 "-" "-"',
        _AT + r'"GET http://other.test/abs?q=1 HTTP/1.1" 200 1 "-" "-"',
        _AT + r'"GET /tab\x09here HTTP/1.1" 400 1 "-" "-"',
        _AT + r'"OPTIONS * HTTP/1.1" 200 0 "-" "-"',
        "10.0.0.1 - - [27/Nov/2026:15:00:06 +0000] " + '"HEAD /common HTTP/1.0" 200 0',
        "this is not a log line",
    ]
)


def test_combined_log() -> None:
    reading = read_access_log(COMBINED, "access.log", "combined")
    assert [(o.line, o.method, o.target) for o in reading.observed] == [
        (1, "GET", "/api/items/1"),
        (2, "GET", '/a%20b?x="y"'),
        (4, "GET", "/abs?q=1"),
        (7, "HEAD", "/common"),
    ]
    assert reading.observed[1].headers == (("Referer", "http://r/"), ("User-Agent", 'UA "quoted"'))
    assert dict(reading.skipped) == {
        "not a combined/common log line": 1,
        "not an HTTP request line (garbage, a TLS handshake, HTTP/0.9)": 1,
        "request target has spaces or control characters": 1,
        "request target is not a path (absolute-form, '*' or empty)": 1,
    }


def test_json_log_nginx_style_and_explicit_fields() -> None:
    lines = [
        {"request": "GET /x?q=1 HTTP/1.1", "http_accept": "text/html", "host": "A.test"},
        {
            "method": "post",
            "request_uri": "/y",
            "args": "k=v",
            "request_body": "b=1",
            "content_type": "application/x-www-form-urlencoded",
            "http_user_agent": "-",
        },
        {"method": "GET", "uri": "/z", "query_string": "a=1", "headers": {"Accept": "*/*"}},
        {"request": "-"},
        [1, 2],
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{broken\n"
    reading = read_access_log(text, "log.json", "json")
    got = [(o.method, o.target, o.headers, o.body, o.host) for o in reading.observed]
    assert got == [
        ("GET", "/x?q=1", (("Accept", "text/html"),), None, "a.test"),
        ("POST", "/y?k=v", (), "b=1", ""),
        ("GET", "/z?a=1", (("Accept", "*/*"),), None, ""),
    ]
    assert sum(n for _, n in reading.skipped) == 3


def test_a_log_with_nothing_usable_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"no HTTP request could be read.*2 not a JSON object"):
        read_access_log("{}\n[]\nnope\n", "log.json", "json")


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "variable"),
    [
        ("42", True),
        ("0", True),
        ("3f2504e0-4f89-11d3-9a0c-0305e82c3301", True),
        ("deadbeef12", True),
        ("5f3c9e1a", True),
        ("deadbeef", False),  # a word made of hex letters
        ("items", False),
        ("v2", False),
        ("page.html", False),
        ("a1b2c3d4e5f6g7h8i9j0kk", True),  # long opaque id
    ],
)
def test_segment_shapes(segment: str, variable: bool) -> None:
    assert (segment_kind(segment) is not None) is variable


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("Authorization", True),
        ("Cookie", True),
        ("X-Auth-Token", True),
        ("access_token", True),
        ("sessionId", True),
        ("sid", True),
        ("api_key", True),
        ("apiKey", True),
        ("password", True),
        ("X-CSRF-Token", True),
        ("q", False),
        ("limit", False),
        ("monkey", False),
        ("inside", False),
        ("Accept", False),
    ],
)
def test_sensitive_names(name: str, sensitive: bool) -> None:
    assert is_sensitive(name) is sensitive


def test_ids_become_one_axis_and_repeats_are_deduplicated() -> None:
    observed = [_obs(f"/api/items/{n}") for n in (3, 1, 3, 3, 2)] + [_obs("/api/items")]
    doc, cases = _build(observed)
    assert [r["name"] for r in doc["requests"]] == [
        "GET /api/items/{{ id }}",
        "GET /api/items",
    ]
    assert doc["requests"][0]["matrix"] == {"id": ["3", "1", "2"]}  # most frequent first
    assert cases == ["GET /api/items/3", "GET /api/items/1", "GET /api/items/2", "GET /api/items"]
    assert doc["compare"] == {"noise": "auto"}


def test_a_full_product_gets_one_axis_per_variable() -> None:
    uuid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    observed = [
        _obs(f"/u/{u}/o/{o}?limit={n}") for u in ("1", uuid) for o in ("7", "8") for n in "5"
    ]
    observed += [_obs(f"/u/1/o/7?limit={n}") for n in ("5",)]
    doc, cases = _build(observed)
    (request,) = doc["requests"]
    assert request["path"] == "/u/{{ id }}/o/{{ id_2 }}?limit=5"
    assert request["matrix"] == {"id": ["1", uuid], "id_2": ["7", "8"]}
    assert len(cases) == 4


def test_combinations_that_are_not_a_product_are_listed_never_invented() -> None:
    observed = [
        _obs("/u/1/o/7"),
        _obs("/u/2/o/8"),
        _obs("/search?q=a&page=1"),
        _obs("/search?q=b&page=2"),
    ]
    doc, cases = _build(observed)
    assert [r["path"] for r in doc["requests"]] == ["{{ target }}", "{{ target }}"]
    assert [r["name"] for r in doc["requests"]] == [
        "GET /u/<id>/o/<id> {{ target }}",
        "GET /search?q=<q>&page=<page> {{ target }}",
    ]
    assert sorted(cases) == sorted(
        ["GET /u/1/o/7", "GET /u/2/o/8", "GET /search?q=a&page=1", "GET /search?q=b&page=2"]
    )


def test_varying_query_values_of_one_path_are_an_axis_and_targets_are_kept_as_recorded() -> None:
    observed = [_obs(f"/api/echo?q={q}&fixed=1") for q in ("a", "b%20c", "d+e")]
    doc, cases = _build(observed)
    (request,) = doc["requests"]
    assert request["path"] == "/api/echo?q={{ q }}&fixed=1"
    assert cases == [
        "GET /api/echo?q=a&fixed=1",
        "GET /api/echo?q=b%20c&fixed=1",
        "GET /api/echo?q=d+e&fixed=1",
    ]


def test_secrets_never_reach_the_file() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P"
    observed = [
        _obs(
            "/p?q=1&access_token=SECRET-A&x=" + jwt,
            headers=(
                ("Authorization", "Bearer SECRET-B"),
                ("Cookie", "sid=SECRET-C"),
                ("X-Api-Key", "SECRET-D"),
                ("Accept", "application/json"),
            ),
        ),
        _obs("/reset/" + jwt),
        _obs(
            "/login",
            "POST",
            body='{"user": "u", "password": "SECRET-E", "nested": {"token": "SECRET-F"}}',
            content_type="application/json",
        ),
        _obs(
            "/form",
            "POST",
            body="a=1&session=SECRET-G",
            content_type="application/x-www-form-urlencoded",
        ),
    ]
    imported = build_suite(
        observed, BuildOptions(suite="t", include_unsafe=True, keep_headers=("Cookie", "X-Api-Key"))
    )
    assert "SECRET" not in imported.text and jwt not in imported.text
    doc = yaml.safe_load(imported.text)
    assert [r["path"] for r in doc["requests"]] == ["/p?q=1", "/login", "/form"]
    assert json.loads(doc["requests"][1]["body"]) == {"user": "u", "nested": {}}
    assert doc["requests"][2]["body"] == "a=1"
    assert dict(imported.left_out) == {"a token in the path": 1}
    assert dict(imported.secrets) == {
        "body field password": 1,
        "body field session": 1,
        "body field token": 1,
        "header Authorization": 1,
        "header Cookie": 1,
        "header X-Api-Key": 1,
        "query access_token": 1,
        "query x": 1,
    }
    assert 'Authorization: "${AUTHORIZATION}"' in imported.text  # the targets.yaml hint


def test_side_effecting_methods_only_when_asked() -> None:
    observed = [
        _obs("/a"),
        _obs("/a", "POST", body="x", content_type="text/plain"),
        _obs("/a", "DELETE"),
        _obs("/a", "HEAD"),
        _obs("/a", "CONNECT"),
    ]
    doc, cases = _build(observed)
    assert cases == ["GET /a", "HEAD /a"]
    doc, cases = _build(observed, include_unsafe=True)
    assert cases == ["GET /a", "POST /a", "DELETE /a", "HEAD /a"]
    assert doc["requests"][1]["body"] == "x"
    assert doc["requests"][1]["headers"] == {"Content-Type": "text/plain"}


def test_only_the_most_frequent_host_unless_told() -> None:
    observed = [_obs("/a", host="a.test"), _obs("/b", host="a.test"), _obs("/c", host="cdn.test")]
    _, cases = _build(observed)
    assert cases == ["GET /a", "GET /b"]
    _, cases = _build(observed, hosts=("CDN.test",))
    assert cases == ["GET /c"]


def test_headers_that_matter_and_the_ones_every_request_shares() -> None:
    observed = [
        _obs(
            "/a", headers=(("Accept", "text/html"), ("User-Agent", "x"), ("Accept-Language", "en"))
        ),
        _obs(
            "/b", headers=(("Accept", "*/*"), ("Sec-Fetch-Mode", "cors"), ("Accept-Language", "en"))
        ),
        _obs("/b", headers=(("Accept", "text/html"), ("Accept-Language", "en"))),
    ]
    doc, _ = _build(observed)
    assert doc["defaults"] == {"headers": {"Accept-Language": "en"}}
    assert [(r["name"], r["headers"]) for r in doc["requests"]] == [
        ("GET /a", {"Accept": "text/html"}),
        ("GET /b", {"Accept": "*/*"}),
        ("GET /b (variant 2)", {"Accept": "text/html"}),
    ]


def test_sample_is_stratified_by_template() -> None:
    observed = (
        [_obs(f"/items/{n}") for n in range(100) for _ in range(3)]  # heavy template
        + [_obs(f"/users/{n}") for n in range(10)]
        + [_obs("/static/a.css"), _obs("/static/b.css")]
    )
    _, cases = _build(observed, sample=10)
    by_template = {
        p: sum(1 for c in cases if c.startswith(f"GET {p}"))
        for p in ("/items/", "/users/", "/static/a", "/static/b")
    }
    assert len(cases) == 10
    assert all(n >= 1 for n in by_template.values())  # every template is represented
    assert by_template["/items/"] > by_template["/users/"]  # in proportion to traffic
    _, cases = _build(observed, sample=2)
    assert cases == ["GET /items/0", "GET /users/0"]  # fewer cases than templates: heaviest
    _, cases = _build(observed, sample=10_000)
    assert len(cases) == 112


@pytest.mark.parametrize(
    "value", ["1e3", "010", "0x1f", "yes", "null", "true", "~", "12345e67", ".5", "-", "1_000"]
)
def test_values_that_yaml_would_retype_stay_strings(value: str) -> None:
    observed = [_obs(f"/api/items/7?v={value}"), _obs("/api/items/7?v=plain")]
    _, cases = _build(observed)
    assert sorted(cases) == sorted([f"GET /api/items/7?v={value}", "GET /api/items/7?v=plain"])


def test_literal_template_syntax_in_traffic_is_escaped_or_left_out() -> None:
    observed = [
        _obs("/a/{{x}}?q={{y}}"),
        _obs("/b", headers=(("Accept", "{{ z }}"),)),
    ]
    imported = build_suite(observed, BuildOptions(suite="t"))
    (suite,) = parse_suites(imported.text, "t.yaml")
    assert [c.path for c in expand([suite])] == ["/a/%7B%7Bx%7D%7D?q=%7B%7By%7D%7D"]
    assert dict(imported.left_out) == {"a header value flamingo's template syntax cannot hold": 1}


def test_nothing_left_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"no request left to import \(1 x POST"):
        build_suite([_obs("/a", "POST")], BuildOptions(suite="t"), "f.har")


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_command_writes_a_suite_that_flamingo_check_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    har = tmp_path / "site.har"
    har.write_text(
        _har(_get("http://a.test/x/1"), _get("http://a.test/x/2"), _get("http://a.test/"))
    )
    out = tmp_path / "suites" / "site.yaml"
    assert main(["import", "har", str(har), "--suite", "site", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "imported 3 requests" in err and "2 templates, 3 cases" in err
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n  old: {base_url: 'http://127.0.0.1:1'}\n  new: {base_url: 'http://127.0.0.1:2'}\n"
    )
    assert main(["check", "--targets", str(targets), "--suites", str(out)]) == 0
    assert "1 suites (3 cases) are valid" in capsys.readouterr().out
    # never over an existing file without --force
    assert main(["import", "har", str(har), "--suite", "site", "--out", str(out)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["import", "har", str(har), "--suite", "site", "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["import", "har", "{dir}/missing.har", "--suite", "s"], "missing.har: no such file"),
        (["import", "har", "{dir}/log.txt", "--suite", "a::b"], "--suite: not a usable suite name"),
        (["import", "har", "{dir}/log.txt", "--suite", "s"], "log.txt:1: not a HAR file"),
        (["import", "access-log", "{dir}/log.txt", "--format", "xml"], "invalid choice"),
        (["import", "access-log", "{dir}/log.txt", "--format", "json"], "no HTTP request"),
        (["import", "har", "{dir}", "--suite", "s"], "is a directory"),
    ],
)
def test_command_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "log.txt").write_bytes(b"\xff\xfe not json at all\n")
    code = main([a.format(dir=tmp_path) for a in argv]) if "xml" not in argv else None
    if code is None:
        with pytest.raises(SystemExit) as info:
            main(argv)
        code = info.value.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_access_log_suite_name_defaults_to_the_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "edge-01.access.log"
    log.write_text(COMBINED)
    assert main(["import", "access-log", str(log), "--format", "combined"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["suite"] == "edge-01"
