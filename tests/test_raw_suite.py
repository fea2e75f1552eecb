"""Raw requests in suites (raw, raw_b64, raw_chunks, raw_crlf, idle, timeout) and upstream: in
targets.yaml: loading and expansion, from literal YAML."""

from __future__ import annotations

from flamingo.expand import expand
from flamingo.load import parse_config, parse_suites
from flamingo.model import NO_TOKEN, TOKEN_SENTINEL, Case, RawRequest, UpstreamSettings
from flamingo.raw import raw_bytes


def cases(text: str) -> list[Case]:
    return list(expand(parse_suites(text, "s.yaml")))


def test_raw_text_is_sent_as_its_utf8_after_substitution_nothing_added() -> None:
    (case,) = cases(
        'suite: s\ndefaults: {headers: {X-Default: "not for raw"}}\nrequests:\n'
        '  - name: "r {{ v }}"\n    matrix: {v: [é]}\n'
        '    raw: "POST /p/{{ v }} HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n"\n'
    )
    assert case.raw == RawRequest((b"POST /p/\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",))
    assert (case.method, case.path, case.headers, case.body) == ("POST", "/p/é", (), None)


def test_block_scalars_keep_bare_lf_unless_raw_crlf() -> None:
    text = "suite: s\nrequests:\n  - name: r\n{crlf}    raw: |\n"
    text += "      GET / HTTP/1.1\n      Host: a\n\n"
    (plain,) = cases(text.format(crlf=""))
    assert plain.raw is not None and plain.raw.data == b"GET / HTTP/1.1\nHost: a\n"
    (crlf,) = cases(text.format(crlf="    raw_crlf: true\n"))
    assert crlf.raw is not None and crlf.raw.data == b"GET / HTTP/1.1\r\nHost: a\r\n"


def test_token_placeholder_b64_chunks_pauses_idle_and_timeout() -> None:
    (case,) = cases(
        "suite: s\nrequests:\n  - name: r\n    idle: 50ms\n    timeout: 2s\n    raw_chunks:\n"
        '      - "GET /{{ token }} HTTP/1.1\\r\\n"\n      - pause: 250ms\n'
        '      - b64: "DQo="\n'
    )
    assert case.raw == RawRequest(
        (b"GET /" + TOKEN_SENTINEL + b" HTTP/1.1\r\n", 0.25, b"\r\n"), idle=0.05, timeout=2.0
    )
    assert case.path == "/<token>"
    # Without a recording origin the token becomes a stand-in of the same length.
    first = raw_bytes(case.raw)[0]
    assert isinstance(first, bytes) and NO_TOKEN in first


def test_raw_b64_and_a_method_that_is_not_one() -> None:
    (case,) = cases('suite: s\nrequests:\n  - name: r\n    raw_b64: "AAEC"\n')
    assert case.raw is not None and case.raw.data == b"\x00\x01\x02"
    assert (case.method, case.path) == ("RAW", "")


def test_expect_upstream_headers_expand() -> None:
    (case,) = cases(
        "suite: s\nrequests:\n  - name: r\n    path: /x\n"
        "    expect:\n      upstream:\n        headers: {X-Forwarded-For: {regex: '^127'}}\n"
    )
    (header,) = case.expect.upstream_headers
    assert header.name == "x-forwarded-for" and header.regex is not None


def test_upstream_in_targets() -> None:
    config = parse_config(
        "targets:\n  old: {base_url: 'http://a'}\n  new: {base_url: 'http://b'}\n"
        "upstream:\n  listen: 127.0.0.1:9099\n"
        "  response: {status: 204, headers: {X-Origin: flamingo}, body: ''}\n",
        "t.yaml",
        env={},
    )
    assert config.upstream == UpstreamSettings(
        "127.0.0.1", 9099, status=204, headers=(("X-Origin", "flamingo"),), body=b""
    )
