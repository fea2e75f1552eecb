"""Tests of flamingo.expect: a suite's assertions about one response."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamingo.expect import MISSING, check_expect, json_subset_mismatches
from flamingo.model import Expect, ExpectFailure, HeaderExpect, Headers, Response
from flamingo.regex import Regex


def resp(status: int = 200, headers: Headers = (), body: bytes | str = b"", **kw: Any) -> Response:
    raw = body.encode() if isinstance(body, str) else body
    return Response(status, "OK", headers, raw, 1.0, **kw)


def json_expect(value: Any) -> Expect:
    return Expect(json=value, has_json=True)


def failures_of(expect: Expect, response: Response) -> list[ExpectFailure]:
    return list(check_expect(expect, response, "new"))


def test_empty_expect_always_holds() -> None:
    assert check_expect(Expect(), resp(599, body=b"\xff"), "old") == ()


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


def test_status_holds() -> None:
    assert failures_of(Expect(status=(200, 204)), resp(204)) == []


def test_status_fails_with_single_expected_value() -> None:
    assert failures_of(Expect(status=(200,)), resp(404)) == [
        ExpectFailure("new", "status", 200, 404)
    ]


def test_status_fails_with_several_expected_values() -> None:
    assert check_expect(Expect(status=(200, 204)), resp(500), "old") == (
        ExpectFailure("old", "status", [200, 204], 500),
    )


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------


def header(name: str, **kw: Any) -> Expect:
    return Expect(headers=(HeaderExpect(name, **kw),))


def test_header_equals_is_case_insensitive_on_the_name_only() -> None:
    response = resp(headers=(("X-Cache", "HIT"),))
    assert failures_of(header("x-cache", equals="HIT"), response) == []
    assert failures_of(header("x-cache", equals="hit"), response) == [
        ExpectFailure("new", "header x-cache", "hit", "HIT")
    ]


def test_header_equals_missing_header() -> None:
    assert failures_of(header("x-cache", equals="HIT"), resp()) == [
        ExpectFailure("new", "header x-cache", "HIT", None)
    ]


def test_header_equals_any_field_line_or_the_combined_value() -> None:
    response = resp(headers=(("Vary", "Accept"), ("Vary", "Origin")))
    assert failures_of(header("vary", equals="Origin"), response) == []
    assert failures_of(header("vary", equals="Accept, Origin"), response) == []
    assert failures_of(header("vary", equals="Origin, Accept"), response) == [
        ExpectFailure("new", "header vary", "Origin, Accept", "Accept, Origin")
    ]


def test_header_regex_searches() -> None:
    response = resp(headers=(("Cache-Control", "public, max-age=60"),))
    assert failures_of(header("cache-control", regex=Regex(r"max-age=\d+")), response) == []
    anchored = Regex(r"^max-age=\d+$")
    assert failures_of(header("cache-control", regex=anchored), response) == [
        ExpectFailure(
            "new", "header cache-control", {"regex": anchored.pattern}, "public, max-age=60"
        )
    ]


def test_header_regex_on_missing_header_fails() -> None:
    assert failures_of(header("etag", regex=Regex(".*")), resp()) == [
        ExpectFailure("new", "header etag", {"regex": ".*"}, None)
    ]


def test_header_absent() -> None:
    assert failures_of(header("x-debug", absent=True), resp()) == []
    assert failures_of(header("x-debug", absent=True), resp(headers=(("X-Debug", "1"),))) == [
        ExpectFailure("new", "header x-debug", None, "1")
    ]


def test_header_present() -> None:
    assert failures_of(header("etag"), resp(headers=(("ETag", '"1"'),))) == []
    assert failures_of(header("etag"), resp()) == [
        ExpectFailure("new", "header etag", {"present": True}, None)
    ]


def test_header_equals_and_regex_both_checked() -> None:
    expect = header("x-a", equals="b", regex=Regex("c"))
    assert [f.expected for f in failures_of(expect, resp(headers=(("x-a", "a"),)))] == [
        "b",
        {"regex": "c"},
    ]


# --------------------------------------------------------------------------------------------
# JSON subset
# --------------------------------------------------------------------------------------------


def test_json_subset_holds_with_extra_keys() -> None:
    body = json.dumps({"user": {"id": 1, "role": "admin", "extra": True}, "n": 2})
    assert failures_of(json_expect({"user": {"role": "admin"}}), resp(body=body)) == []


def test_json_subset_reports_the_path() -> None:
    body = json.dumps({"user": {"role": "dev"}})
    assert failures_of(json_expect({"user": {"role": "admin"}}), resp(body=body)) == [
        ExpectFailure("new", "json $.user.role", "admin", "dev")
    ]


def test_json_missing_key() -> None:
    assert failures_of(json_expect({"a": None}), resp(body="{}")) == [
        ExpectFailure("new", "json $.a", None, MISSING)
    ]


def test_json_all_mismatches_are_reported() -> None:
    body = json.dumps({"a": 1, "b": {"c": 2}})
    found = failures_of(json_expect({"a": 2, "b": {"c": 3, "d": 4}}), resp(body=body))
    assert [f.what for f in found] == ["json $.a", "json $.b.c", "json $.b.d"]


def test_json_lists_are_element_wise_and_equal_length() -> None:
    body = json.dumps({"items": [{"id": 1, "x": 0}, {"id": 2, "x": 0}]})
    assert failures_of(json_expect({"items": [{"id": 1}, {"id": 2}]}), resp(body=body)) == []
    assert failures_of(json_expect({"items": [{"id": 1}]}), resp(body=body)) == [
        ExpectFailure("new", "json $.items", [{"id": 1}], [{"id": 1, "x": 0}, {"id": 2, "x": 0}])
    ]
    assert failures_of(json_expect({"items": [{"id": 1}, {"id": 3}]}), resp(body=body)) == [
        ExpectFailure("new", "json $.items[1].id", 3, 2)
    ]


@pytest.mark.parametrize(
    ("expected", "actual", "holds"),
    [
        (1, 1.0, True),
        (1.0, 1, True),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (None, None, True),
        ("1", 1, False),
        ({"a": 1}, [1], False),
        ([1], {"a": 1}, False),
        ([], [], True),
        ({}, {"any": 1}, True),
    ],
)
def test_json_scalars_and_types(expected: Any, actual: Any, holds: bool) -> None:
    found = failures_of(json_expect(expected), resp(body=json.dumps(actual)))
    assert (found == []) is holds


def test_json_null_expectation_is_checked() -> None:
    assert failures_of(json_expect(None), resp(body="null")) == []
    assert failures_of(json_expect(None), resp(body="{}")) == [
        ExpectFailure("new", "json $", None, {})
    ]


def test_json_on_a_non_json_body() -> None:
    (failure,) = failures_of(json_expect({"a": 1}), resp(body="<html>"))
    assert failure.what == "json $"
    assert failure.actual == "not JSON: <html>"
    (failure,) = failures_of(json_expect({"a": 1}), resp(body=b"\xff\xfe"))
    assert failure.actual.startswith("not JSON: ")


def test_json_on_a_truncated_body_fails_closed() -> None:
    response = resp(body=b'{"a": 1', body_size=10**9, body_sha256="ab" * 32)
    (failure,) = failures_of(json_expect({"a": 1}), response)
    assert "larger than max_body_bytes" in failure.actual


def test_json_keys_with_odd_characters_are_quoted_in_what() -> None:
    body = json.dumps({"a.b": {"0": 1}})
    assert failures_of(json_expect({"a.b": {"0": 2}}), resp(body=body)) == [
        ExpectFailure("new", 'json $["a.b"]["0"]', 2, 1)
    ]


def test_json_yaml_integer_keys_match_string_keys() -> None:
    assert failures_of(json_expect({1: "x"}), resp(body='{"1": "x"}')) == []


def test_everything_is_collected_and_json_able() -> None:
    expect = Expect(
        status=(200,),
        headers=(HeaderExpect("x-a", equals="1"), HeaderExpect("x-b", absent=True)),
        json={"a": [1, {"b": 2}]},
        has_json=True,
    )
    response = resp(404, headers=(("X-B", "1"),), body='{"a": [1, {"b": 3}]}')
    found = failures_of(expect, response)
    assert [f.what for f in found] == ["status", "header x-a", "header x-b", "json $.a[1].b"]
    json.dumps([f.__dict__ for f in found])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=15,
)


@given(json_values)
def test_a_document_contains_itself(value: Any) -> None:
    assert list(json_subset_mismatches(value, value)) == []
    assert failures_of(json_expect(value), resp(body=json.dumps(value))) == []


@given(st.dictionaries(st.text(max_size=4), json_values, max_size=4), json_values)
def test_a_document_contains_any_subset_of_its_keys(value: dict[str, Any], extra: Any) -> None:
    bigger = {**value, "\x00extra": extra}
    assert list(json_subset_mismatches(value, bigger)) == []
