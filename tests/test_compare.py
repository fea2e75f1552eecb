"""Tests of flamingo.compare: the differences between two responses."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamingo.compare import MAX_BODY_DIFFERENCES, compare, first_difference
from flamingo.model import CompareRules, Difference, Headers, Mask, Response
from flamingo.normalize import normalize_body

NO_RULES = CompareRules()
JSON_CT = (("Content-Type", "application/json"),)


def resp(
    status: int = 200,
    headers: Headers = (),
    body: bytes | str = b"",
    reason: str = "OK",
    **kwargs: Any,
) -> Response:
    raw = body.encode() if isinstance(body, str) else body
    return Response(status, reason, headers, raw, 1.0, **kwargs)


def jresp(data: Any, headers: Headers = JSON_CT, **kwargs: Any) -> Response:
    return resp(headers=headers, body=json.dumps(data), **kwargs)


def body_diffs(old: Response, new: Response, rules: CompareRules = NO_RULES) -> list[Difference]:
    return [d for d in compare(old, new, rules) if d.kind == "body"]


# --------------------------------------------------------------------------------------------
# Status and headers
# --------------------------------------------------------------------------------------------


def test_identical_responses_match() -> None:
    a = jresp({"a": 1}, headers=(("X-A", "1"), *JSON_CT))
    assert compare(a, a, NO_RULES) == ()


def test_status_difference() -> None:
    assert compare(resp(200), resp(404), NO_RULES) == (Difference("status", "status", 200, 404),)


def test_reason_phrase_is_never_compared() -> None:
    assert compare(resp(200, reason="OK"), resp(200, reason="Fine"), NO_RULES) == ()


def test_header_name_case_and_order_do_not_count() -> None:
    a = resp(headers=(("X-A", "1"), ("Cache-Control", "no-store")))
    b = resp(headers=(("cache-control", "no-store"), ("x-a", "1")))
    assert compare(a, b, NO_RULES) == ()


def test_header_missing_on_one_side() -> None:
    a = resp(headers=(("X-Cache", "HIT"),))
    b = resp(headers=(("X-Served-By", "new"),))
    assert compare(a, b, NO_RULES) == (
        Difference("header", "x-cache", "HIT", None),
        Difference("header", "x-served-by", None, "new"),
    )


def test_header_values_are_joined_sorted() -> None:
    a = resp(headers=(("Vary", "Origin"), ("Vary", "Accept")))
    b = resp(headers=(("Vary", "Accept"),))
    assert compare(a, b, NO_RULES) == (Difference("header", "vary", "Accept, Origin", "Accept"),)


def test_same_text_in_different_field_lines_is_noted() -> None:
    a = resp(headers=(("Vary", "Accept"), ("Vary", "Origin")))
    b = resp(headers=(("Vary", "Accept, Origin"),))
    (difference,) = compare(a, b, NO_RULES)
    assert difference.old == difference.new == "Accept, Origin"
    assert difference.note == "2 vs 1 field lines"


def test_hop_by_hop_and_framing_headers_do_not_count() -> None:
    a = resp(
        headers=(("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("Content-Length", "2"))
    )
    b = resp(
        headers=(("Transfer-Encoding", "chunked"), ("Connection", "close, X-Hop"), ("X-Hop", "1"))
    )
    assert compare(a, b, NO_RULES) == ()


@pytest.mark.parametrize(
    ("old_encoding", "new_encoding"),
    [("gzip", "identity"), ("gzip", None), ("br", "deflate"), (None, "gzip")],
)
def test_content_encoding_alone_never_counts(
    old_encoding: str | None, new_encoding: str | None
) -> None:
    def with_encoding(encoding: str | None) -> Response:
        headers = JSON_CT + ((("Content-Encoding", encoding),) if encoding else ())
        return resp(headers=headers, body=b'{"a": 1}')

    assert compare(with_encoding(old_encoding), with_encoding(new_encoding), NO_RULES) == ()


def test_ignored_headers_and_masks() -> None:
    rules = CompareRules(
        ignore_headers=frozenset({"date", "server"}),
        mask=(Mask.of(r"[0-9a-f]{32}", "<id>"),),
    )
    a = resp(headers=(("Date", "Mon"), ("Server", "nginx"), ("X-Trace", "a" * 32)))
    b = resp(headers=(("Date", "Tue"), ("Server", "rust"), ("X-Trace", "b" * 32)))
    assert compare(a, b, rules) == ()


def test_differences_come_in_order_status_headers_body() -> None:
    a = resp(200, headers=(("X-B", "1"), ("X-A", "1")), body="one")
    b = resp(500, headers=(("X-B", "2"), ("X-A", "2")), body="two")
    assert [(d.kind, d.location) for d in compare(a, b, NO_RULES)] == [
        ("status", "status"),
        ("header", "x-a"),
        ("header", "x-b"),
        ("body", "text"),
    ]


# --------------------------------------------------------------------------------------------
# JSON bodies
# --------------------------------------------------------------------------------------------


def test_json_key_order_and_whitespace_do_not_count() -> None:
    a = resp(headers=JSON_CT, body='{"a": 1, "b": [1, 2]}')
    b = resp(headers=JSON_CT, body='{ "b":[1,2],\n"a":1 }')
    assert compare(a, b, NO_RULES) == ()


def test_json_detected_without_content_type() -> None:
    assert compare(resp(body='{"a":1,"b":2}'), resp(body='{"b":2,"a":1}'), NO_RULES) == ()


def test_json_value_change_has_a_path() -> None:
    a = jresp({"user": {"roles": ["admin", "dev"]}})
    b = jresp({"user": {"roles": ["admin", "ops"]}})
    assert body_diffs(a, b) == [Difference("body", "$.user.roles[1]", "dev", "ops")]


def test_json_added_and_removed_keys() -> None:
    assert body_diffs(jresp({"a": 1, "b": 2}), jresp({"a": 1, "c": {"x": 1}})) == [
        Difference("body", "$.b", 2, None, "removed"),
        Difference("body", "$.c", None, {"x": 1}, "added"),
    ]


def test_json_list_grows_and_shrinks() -> None:
    assert body_diffs(jresp([1]), jresp([1, 2, 3])) == [
        Difference("body", "$[1]", None, 2, "added"),
        Difference("body", "$[2]", None, 3, "added"),
    ]
    assert body_diffs(jresp({"a": [1, 2]}), jresp({"a": [1]})) == [
        Difference("body", "$.a[1]", 2, None, "removed")
    ]


def test_json_type_change() -> None:
    assert body_diffs(jresp({"a": "1"}), jresp({"a": 1})) == [
        Difference("body", "$.a", "1", 1, "type string -> number")
    ]
    assert body_diffs(jresp({"a": None}), jresp({"a": {"b": 1}})) == [
        Difference("body", "$.a", None, {"b": 1}, "type null -> object")
    ]


def test_json_root_type_change() -> None:
    assert body_diffs(jresp({"a": 1}), jresp([1])) == [
        Difference("body", "$", {"a": 1}, [1], "type object -> array")
    ]


def test_json_bool_is_not_a_number() -> None:
    assert body_diffs(jresp({"a": True}), jresp({"a": 1})) == [
        Difference("body", "$.a", True, 1, "type boolean -> number")
    ]


def test_json_int_and_float_of_equal_value_match() -> None:
    assert compare(resp(body='{"a": 1}'), resp(body='{"a": 1.0}'), NO_RULES) == ()


def test_json_int_and_float_of_different_value() -> None:
    a, b = resp(body='{"a": 1, "b": 2}'), resp(body='{"a": 1.5, "b": 2.0}')
    assert body_diffs(a, b) == [Difference("body", "$.a", 1, 1.5)]


def test_json_keys_that_are_not_identifiers_are_quoted() -> None:
    a = jresp({"key with.dot": 1, "0": 1, "x-y": [{"a b": 1}]})
    b = jresp({"key with.dot": 2, "0": 2, "x-y": [{"a b": 2}]})
    assert [d.location for d in body_diffs(a, b)] == [
        '$["0"]',
        '$["key with.dot"]',
        '$["x-y"][0]["a b"]',
    ]


def test_json_list_insertion_is_reported_as_one_addition() -> None:
    # deepdiff aligns ordered lists (difflib), so one inserted element is not N changed ones.
    assert body_diffs(jresp([1, 2, 3, 4]), jresp([0, 1, 2, 3, 4])) == [
        Difference("body", "$[0]", None, 0, "added")
    ]


def test_json_differences_sorted_by_path_indices_numerically() -> None:
    a = jresp({"items": list(range(12))})
    b = jresp({"items": [i + 1 if i in (2, 10) else i for i in range(12)]})
    assert [d.location for d in body_diffs(a, b)] == ["$.items[2]", "$.items[10]"]


def test_json_dicts_with_few_common_keys_are_diffed_key_by_key() -> None:
    # deepdiff >= 8 would otherwise report the whole object as one value change.
    assert [d.location for d in body_diffs(jresp({"a": 1, "b": 2}), jresp({"c": 1}))] == [
        "$.a",
        "$.b",
        "$.c",
    ]


def test_json_ignore_paths_and_masks() -> None:
    rules = CompareRules(
        ignore_json_paths=("$.now", "$.items[*].updated_at"),
        mask=(Mask.of(r"req-\d+", "req-<n>"),),
    )
    a = jresp({"now": 1, "trace": "req-1", "items": [{"id": 1, "updated_at": 5}]})
    b = jresp({"now": 2, "trace": "req-2", "items": [{"id": 1, "updated_at": 6}]})
    assert compare(a, b, rules) == ()
    c = jresp({"now": 2, "trace": "req-2", "items": [{"id": 2, "updated_at": 6}]})
    assert compare(a, c, rules) == (Difference("body", "$.items[0].id", 1, 2),)


def test_json_differences_are_capped() -> None:
    n = MAX_BODY_DIFFERENCES + 5
    found = body_diffs(
        jresp({f"k{i}": i for i in range(n)}), jresp({f"k{i}": -i - 1 for i in range(n)})
    )
    assert len(found) == MAX_BODY_DIFFERENCES + 1
    assert found[-1] == Difference("body", "$", None, None, "5 more differences not listed")


def test_json_vs_non_json() -> None:
    (difference,) = body_diffs(jresp({"a": 1}), resp(body="<html>oops</html>"))
    assert difference == Difference(
        "body", "$", '{"a": 1}', "<html>oops</html>", "json vs non-json"
    )


def test_json_vs_binary() -> None:
    (difference,) = body_diffs(jresp({"a": 1}), resp(body=b"\xff\x00"))
    assert difference.location == "$"
    assert difference.new == "2 bytes sha256:" + hashlib.sha256(b"\xff\x00").hexdigest()[:12]
    assert difference.note == "json vs non-json"


# --------------------------------------------------------------------------------------------
# Text and binary bodies
# --------------------------------------------------------------------------------------------


def test_text_difference_reports_line_and_column() -> None:
    a = resp(body="line one\nline two\nline three")
    b = resp(body="line one\nline 2wo\nline three")
    (difference,) = body_diffs(a, b)
    assert difference.location == "text"
    assert difference.note == "first difference at line 2, column 6"
    assert difference.old == a.body.decode()
    assert difference.new == b.body.decode()


def test_text_excerpt_is_a_window_around_the_difference() -> None:
    a = "x" * 1000 + "A" + "y" * 1000
    b = "x" * 1000 + "B" + "y" * 1000
    (difference,) = body_diffs(resp(body=a), resp(body=b))
    assert len(difference.old) == 120
    assert difference.old.startswith("x" * 40 + "A")
    assert difference.new.startswith("x" * 40 + "B")
    assert difference.note == "first difference at line 1, column 1001"


def test_text_prefix() -> None:
    (difference,) = body_diffs(resp(body="abc"), resp(body="abcdef"))
    assert difference.note == "first difference at line 1, column 4"


def test_text_masks() -> None:
    rules = CompareRules(mask=(Mask.of(r"\d{4}-\d\d-\d\d", "<date>"),))
    assert compare(resp(body="on 2024-01-01"), resp(body="on 2025-02-02"), rules) == ()


def test_binary_difference() -> None:
    a, b = b"\xff\x00\x01", b"\xff\x00\x02\x03"
    assert body_diffs(resp(body=a), resp(body=b)) == [
        Difference(
            "body",
            "bytes",
            f"3 bytes sha256:{hashlib.sha256(a).hexdigest()[:12]}",
            f"4 bytes sha256:{hashlib.sha256(b).hexdigest()[:12]}",
        )
    ]


def test_text_vs_binary_is_a_bytes_difference() -> None:
    (difference,) = body_diffs(resp(body="hello"), resp(body=b"\xffhello"))
    assert difference.location == "bytes"


# --------------------------------------------------------------------------------------------
# Truncated (large) bodies
# --------------------------------------------------------------------------------------------


def big(prefix: bytes, size: int, sha: str) -> Response:
    return resp(body=prefix, body_size=size, body_sha256=sha)


def test_truncated_bodies_with_equal_hash_match() -> None:
    sha = "ab" * 32
    assert compare(big(b"x", 100, sha), big(b"y", 100, sha), NO_RULES) == ()


def test_truncated_bodies_with_different_hash() -> None:
    (difference,) = compare(big(b"x", 100, "ab" * 32), big(b"x", 100, "cd" * 32), NO_RULES)
    assert difference == Difference(
        "body",
        "bytes",
        "100 bytes sha256:abababababab",
        "100 bytes sha256:cdcdcdcdcdcd",
        "compared by hash: body larger than max_body_bytes",
    )


def test_truncated_against_whole_body_compares_hashes() -> None:
    small = resp(body=b"abc")
    (difference,) = compare(small, big(b"abc", 5000, "ab" * 32), NO_RULES)
    assert difference.old == f"3 bytes sha256:{hashlib.sha256(b'abc').hexdigest()[:12]}"
    assert difference.new == "5000 bytes sha256:abababababab"


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
header_pairs = st.lists(
    st.tuples(
        st.sampled_from(["X-A", "x-b", "Vary", "ETag", "Content-Type", "Set-Cookie"]),
        st.text(alphabet="abc ,=;1", max_size=6),
    ),
    max_size=6,
)
responses = st.builds(
    resp,
    status=st.integers(100, 599),
    headers=header_pairs.map(tuple),
    body=st.binary(max_size=64) | json_values.map(json.dumps) | st.text(max_size=32),
)
rule_sets = st.sampled_from(
    [
        NO_RULES,
        CompareRules(ignore_json_paths=("$.a", "$[*].b"), mask=(Mask.of("a+", "<a>"),)),
        CompareRules(ignore_headers=frozenset({"x-a"}), mask=(Mask.of("[0-9]", "#"),)),
    ]
)


@given(responses, rule_sets)
def test_compare_with_itself_finds_nothing(a: Response, rules: CompareRules) -> None:
    assert compare(a, a, rules) == ()
    # A distinct but equal object takes the same path as a real second response.
    twin = dataclasses.replace(a, body=bytes(bytearray(a.body)), headers=tuple(a.headers))
    assert compare(a, twin, rules) == ()


@given(json_values, rule_sets)
def test_json_reserialized_finds_nothing(value: Any, rules: CompareRules) -> None:
    a = resp(body=json.dumps(value))
    b = resp(body=json.dumps(value, indent=2, sort_keys=True))
    assert compare(a, b, rules) == ()


def reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reverse_keys(v) for v in value]
    return value


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_json_key_order_never_counts(value: dict[str, Any]) -> None:
    a = jresp(value)
    b = jresp(reverse_keys(value))
    assert compare(a, b, NO_RULES) == ()


@given(responses, st.randoms())
def test_header_order_and_case_never_count(a: Response, rnd: Any) -> None:
    headers = list(a.headers)
    rnd.shuffle(headers)
    recased = tuple((n.swapcase() if rnd.random() < 0.5 else n, v) for n, v in headers)
    assert compare(a, dataclasses.replace(a, headers=recased), NO_RULES) == ()


@given(responses, st.sampled_from(["gzip", "br", "deflate", "identity"]))
def test_content_encoding_header_never_counts(a: Response, encoding: str) -> None:
    encoded = dataclasses.replace(a, headers=(*a.headers, ("Content-Encoding", encoding)))
    assert compare(a, encoded, NO_RULES) == ()


@given(responses, responses, rule_sets)
def test_differences_are_json_serializable_and_ordered(
    a: Response, b: Response, rules: CompareRules
) -> None:
    found = compare(a, b, rules)
    json.dumps([dataclasses.asdict(d) for d in found])
    order = {"status": 0, "header": 1, "body": 2}
    kinds = [order[d.kind] for d in found]
    assert kinds == sorted(kinds)
    headers = [d.location for d in found if d.kind == "header"]
    assert headers == sorted(headers)
    assert (not found) == (compare(b, a, rules) == ())


json_like_bodies = json_values.map(json.dumps).map(str.encode) | st.sampled_from(
    [b'{"a": 1, "b": "aaa"}', b'{"a": 2, "b": "a"}', b'[{"b": 1}, {"b": 2}]', b"[{}, {}]", b"aa 1"]
)


@given(json_like_bodies, json_like_bodies, rule_sets)
def test_staged_normalization_agrees_with_normalize_body(
    a: bytes, b: bytes, rules: CompareRules
) -> None:
    old, new = resp(body=a), resp(body=b)
    same = a == b or normalize_body(a, None, rules) == normalize_body(b, None, rules)
    assert same == (body_diffs(old, new, rules) == [])


@given(st.text(alphabet="ab\n", max_size=40), st.text(alphabet="ab\n", max_size=40))
def test_first_difference_matches_a_naive_scan(a: str, b: str) -> None:
    naive = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    assert first_difference(a, b) == naive


def test_first_difference_across_blocks() -> None:
    a = "x" * 10_000
    assert first_difference(a, a[:9000] + "y" + a[9001:]) == 9000
    assert first_difference(a, a) == 10_000
    assert first_difference(a, a[:8192]) == 8192


def test_a_filter_json_path_loads_and_applies_with_one_dialect() -> None:
    """The loader validates JSON paths with the very parser compare applies (jsonpath_ng's
    extended dialect), so a filter path is accepted at load and ignores what it selects."""
    from flamingo.load import parse_suites

    (suite,) = parse_suites(
        "suite: filtered\n"
        "requests:\n"
        "  - { name: items, path: /api/items }\n"
        "compare:\n"
        '  ignore_json_paths: ["$.items[?(@.volatile == true)].updated_at"]\n',
        "filtered.yaml",
    )
    rules = suite.compare

    def items(stamp: str, kept: str) -> Response:
        return jresp(
            {
                "items": [
                    {"id": 1, "volatile": True, "updated_at": stamp},
                    {"id": 2, "volatile": False, "updated_at": kept},
                ]
            }
        )

    assert body_diffs(items("t1", "k"), items("t2", "k"), rules) == []
    (diff,) = body_diffs(items("t1", "k1"), items("t1", "k2"), rules)
    assert diff.location == "$.items[1].updated_at"
