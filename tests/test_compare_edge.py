"""compare over raw exchanges (endings, pipelined responses) and the upstream view: pure."""

from __future__ import annotations

from flamingo.compare import compare
from flamingo.expect import check_expect
from flamingo.model import (
    NO_RESPONSE,
    CompareRules,
    Expect,
    ForwardedRequest,
    HeaderExpect,
    Response,
    UpstreamView,
)

RULES = CompareRules(ignore_headers=frozenset({"date"}))


def response(status: int = 200, ending: str = "open", **kw: object) -> Response:
    return Response(status, "", (), b"", 1.0, ending=ending, **kw)  # type: ignore[arg-type]


def forwarded(line: str = "GET / HTTP/1.1", **kw: object) -> ForwardedRequest:
    fields: dict[str, object] = {"headers": (("Host", "a"),), "body": b"", "framing": "none"}
    fields.update(kw)
    return ForwardedRequest(line, **fields)  # type: ignore[arg-type]


def where(old: Response, new: Response) -> list[tuple[str, str, object, object]]:
    return [(d.kind, d.location, d.old, d.new) for d in compare(old, new, RULES)]


def test_old_closing_and_new_answering_400_is_a_difference() -> None:
    old = response(NO_RESPONSE, "closed")
    new = response(400, "closed")
    assert where(old, new) == [("status", "status", None, 400), ("exchange", "responses", 0, 1)]


def test_both_closing_without_a_response_match() -> None:
    assert where(response(NO_RESPONSE, "closed"), response(NO_RESPONSE, "closed")) == []


def test_endings_compare() -> None:
    assert where(response(ending="open"), response(ending="closed")) == [
        ("exchange", "ending", "open", "closed")
    ]


def test_pipelined_responses_compare_position_by_position() -> None:
    old = response(more=(response(200, ""), response(404, "")))
    new = response(more=(response(200, ""),))
    assert where(old, new) == [("exchange", "responses", 3, 2)]
    new = response(more=(response(200, ""), response(400, "")))
    assert where(old, new) == [("status", "response[3].status", 404, 400)]


def test_upstream_request_line_headers_body_and_framing() -> None:
    a = forwarded(
        headers=(("Host", "a"), ("X-Forwarded-For", "127.0.0.1"), ("Date", "x")),
        body=b"abc",
        framing="content-length: 3",
    )
    b = forwarded(
        "GET /./ HTTP/1.1",
        headers=(("host", "a"), ("Date", "y")),
        body=b"abc",
        framing="chunked",
    )
    old = response(upstream=UpstreamView((a,)))
    new = response(upstream=UpstreamView((b,)))
    assert where(old, new) == [
        ("upstream", "upstream.request-line", "GET / HTTP/1.1", "GET /./ HTTP/1.1"),
        ("upstream", "upstream.framing", "content-length: 3", "chunked"),
        ("upstream", "upstream.header.x-forwarded-for", "127.0.0.1", None),
    ]


def test_upstream_json_body_path_and_count() -> None:
    old = response(upstream=UpstreamView((forwarded(body=b'{"a": 1}'),)))
    new = response(upstream=UpstreamView((forwarded(body=b'{"a": 2}'), forwarded())))
    assert where(old, new) == [
        ("upstream", "upstream.requests", 1, 2),
        ("upstream", "upstream.body.a", 1, 2),
    ]


def test_a_lost_token_is_never_a_silent_match() -> None:
    lost = response(upstream=UpstreamView((), untokened=1))
    assert where(lost, lost)[0][:2] == ("upstream", "upstream.token")
    nothing = response(upstream=UpstreamView(()))
    assert where(nothing, nothing) == []


def test_expect_upstream_headers() -> None:
    expect = Expect(upstream_headers=(HeaderExpect("x-forwarded-for", equals="127.0.0.1"),))
    ok = response(upstream=UpstreamView((forwarded(headers=(("X-Forwarded-For", "127.0.0.1"),)),)))
    assert check_expect(expect, ok, "old") == ()
    (failure,) = check_expect(expect, response(upstream=UpstreamView((forwarded(),))), "new")
    assert (failure.what, failure.actual) == ("upstream header x-forwarded-for", None)
    (failure,) = check_expect(expect, response(), "new")
    assert failure.what == "upstream" and "no upstream" in failure.actual
    (failure,) = check_expect(expect, response(upstream=UpstreamView(())), "new")
    assert failure.actual == "nothing forwarded"
