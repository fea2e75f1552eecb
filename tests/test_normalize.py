"""Tests of flamingo.normalize: header and body rules, JSON helpers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamingo.model import CompareRules, Mask
from flamingo.normalize import (
    BODY_RULES,
    TRANSPORT_HEADERS,
    NormalizedBody,
    compile_json_path,
    detect_body,
    format_json_path,
    is_json_content_type,
    json_equal,
    load_json,
    normalize_body,
    normalize_headers,
)

NO_RULES = CompareRules()
DIGITS = Mask.of(r"[0-9]+", "<n>")
HEX_ID = Mask.of(r"[0-9a-f]{32}", "<id>")


def rules(**kwargs: object) -> CompareRules:
    return CompareRules(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------


def test_names_are_lower_cased() -> None:
    assert normalize_headers((("X-Cache", "HIT"),), NO_RULES) == {"x-cache": ("HIT",)}


def test_values_keep_their_case_and_lose_surrounding_space() -> None:
    assert normalize_headers((("x-a", "  MiXeD  "),), NO_RULES) == {"x-a": ("MiXeD",)}


@pytest.mark.parametrize("name", sorted(TRANSPORT_HEADERS))
def test_transport_headers_are_dropped(name: str) -> None:
    headers = ((name.title(), "whatever"), ("x-keep", "1"))
    assert normalize_headers(headers, NO_RULES) == {"x-keep": ("1",)}


def test_transport_header_table_is_the_contract_list_plus_content_encoding() -> None:
    assert {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
    } == TRANSPORT_HEADERS


def test_headers_listed_in_connection_are_dropped() -> None:
    headers = (
        ("Connection", "keep-alive, X-Hop"),
        ("Connection", "X-Other"),
        ("X-Hop", "1"),
        ("x-other", "2"),
        ("X-Stay", "3"),
    )
    assert normalize_headers(headers, NO_RULES) == {"x-stay": ("3",)}


def test_ignored_headers_are_dropped_case_insensitively() -> None:
    headers = (("Date", "now"), ("Server", "nginx"), ("X-Keep", "1"))
    # Hand-built rules may carry mixed case; the loader's are lower-case already.
    got = normalize_headers(headers, rules(ignore_headers=frozenset({"date", "SERVER"})))
    assert got == {"x-keep": ("1",)}


def test_masks_apply_to_header_values() -> None:
    headers = (("X-Request-Id", "a" * 32), ("ETag", '"v12"'))
    got = normalize_headers(headers, rules(mask=(HEX_ID, DIGITS)))
    assert got == {"x-request-id": ("<id>",), "etag": ('"v<n>"',)}


def test_masks_apply_in_order() -> None:
    first = Mask.of("a", "b")
    second = Mask.of("b", "c")
    assert normalize_headers((("x", "a"),), rules(mask=(first, second))) == {"x": ("c",)}


def test_repeated_values_are_sorted() -> None:
    a = normalize_headers((("Vary", "b"), ("vary", "a")), NO_RULES)
    b = normalize_headers((("vary", "a"), ("VARY", "b")), NO_RULES)
    assert a == b == {"vary": ("a", "b")}


def test_header_order_does_not_matter() -> None:
    one = (("A", "1"), ("B", "2"), ("C", "3"))
    assert normalize_headers(one, NO_RULES) == normalize_headers(one[::-1], NO_RULES)


def test_body_rule_table_is_a_tuple_of_callables() -> None:
    assert all(callable(rule) for rule in BODY_RULES)


header_names = st.text(alphabet="abcXYZ-_0123456789", min_size=1, max_size=8) | st.sampled_from(
    ["Connection", "content-length", "Content-Encoding", "TE", "Date", "x-a", "X-A"]
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
header_lists = st.lists(st.tuples(header_names, header_values), max_size=10)
rule_sets = st.builds(
    CompareRules,
    ignore_headers=st.frozensets(st.sampled_from(["date", "x-a", "server"])),
    mask=st.sampled_from([(), (DIGITS,), (HEX_ID, DIGITS)]),
)


def as_pairs(normalized: dict[str, tuple[str, ...]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, values in normalized.items() for value in values)


@given(header_lists, rule_sets)
def test_normalize_headers_is_idempotent(
    headers: list[tuple[str, str]], compare_rules: CompareRules
) -> None:
    once = normalize_headers(tuple(headers), compare_rules)
    assert normalize_headers(as_pairs(once), compare_rules) == once


@given(header_lists, st.randoms())
def test_header_order_and_name_case_never_count(
    headers: list[tuple[str, str]], rnd: object
) -> None:
    shuffled = list(headers)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    recased = tuple(
        (name.upper() if i % 2 else name.lower(), value) for i, (name, value) in enumerate(shuffled)
    )
    assert normalize_headers(recased, NO_RULES) == normalize_headers(tuple(headers), NO_RULES)


# --------------------------------------------------------------------------------------------
# Body detection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/problem+json", True),
        ("application/vnd.api+json ; q=1", True),
        ("text/plain", False),
        ("application/jsonp", False),
        ("", False),
        (None, False),
    ],
)
def test_json_content_types(content_type: str | None, expected: bool) -> None:
    assert is_json_content_type(content_type) is expected


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"a": 1}', {"a": 1}),
        (b"  [1, 2]", [1, 2]),
        (b'"s"', "s"),
        (b"42", 42),
        (b"-1.5", -1.5),
        (b"true", True),
        (b"false", False),
        (b"null", None),
        (b"\n\t {}", {}),
    ],
)
def test_json_detected_by_parse(body: bytes, value: object) -> None:
    got = detect_body(body, None)
    assert got.kind == "json"
    assert got.value == value


def test_json_detected_by_content_type_even_with_odd_start() -> None:
    # The first byte is a BOM, which parse-sniffing would not accept.
    got = detect_body('\ufeff{"a": 1}'.encode(), "application/json")
    assert got == NormalizedBody("json", {"a": 1})


@pytest.mark.parametrize(
    "body", [b"{not json", b"hello", b"12 apples", b"[NaN]", b"Infinity", b"", b"tru"]
)
def test_text_when_not_json(body: bytes) -> None:
    assert detect_body(body, None).kind == "text"


def test_declared_json_that_does_not_parse_is_text() -> None:
    assert detect_body(b"<html>", "application/json") == NormalizedBody("text", "<html>")


def test_non_utf8_is_bytes() -> None:
    assert detect_body(b"\xff\xfe\x00", "application/json") == NormalizedBody(
        "bytes", b"\xff\xfe\x00"
    )


def test_load_json_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        load_json("[NaN]")


def test_deeply_nested_json_is_not_json() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    assert detect_body(body, None).kind == "text"


# --------------------------------------------------------------------------------------------
# Body rules
# --------------------------------------------------------------------------------------------


def test_no_rules_means_detection_only() -> None:
    body = b'{"a": "' + b"f" * 32 + b'"}'
    assert normalize_body(body, None, NO_RULES) == detect_body(body, None)


def test_ignore_path_removes_a_field_from_every_list_element() -> None:
    doc = {"items": [{"id": 1, "updated_at": "t1"}, {"id": 2, "updated_at": "t2"}, {"id": 3}]}
    got = normalize_body(
        json.dumps(doc).encode(), None, rules(ignore_json_paths=("$.items[*].updated_at",))
    )
    assert got.value == {"items": [{"id": 1}, {"id": 2}, {"id": 3}]}


def test_ignore_path_removes_a_top_level_key() -> None:
    got = normalize_body(b'{"now": 1, "a": 2}', None, rules(ignore_json_paths=("$.now",)))
    assert got.value == {"a": 2}


def test_ignore_path_nested_key() -> None:
    got = normalize_body(b'{"a": {"b": 1, "c": 2}}', None, rules(ignore_json_paths=("$.a.b",)))
    assert got.value == {"a": {"c": 2}}


def test_ignore_path_list_index_removes_the_element() -> None:
    got = normalize_body(b'{"a": [1, 2, 3]}', None, rules(ignore_json_paths=("$.a[0]",)))
    assert got.value == {"a": [2, 3]}


def test_ignore_path_quoted_key_and_filter_expression() -> None:
    body = b'{"k.x": 1, "items": [{"id": 1, "t": 1}, {"id": 2, "t": 2}]}'
    paths = ("$['k.x']", "$.items[?(@.id == 2)].t")
    got = normalize_body(body, None, rules(ignore_json_paths=paths))
    assert got.value == {"items": [{"id": 1, "t": 1}, {"id": 2}]}


@pytest.mark.parametrize("body", [b"[1, 2]", b"5", b'{"a": {"x": 1}}', b'"s"', b"null"])
def test_ignore_path_that_does_not_fit_the_shape_removes_nothing(body: bytes) -> None:
    compare_rules = rules(ignore_json_paths=("$.now", "$.a[0]", "$.items[*].x"))
    assert normalize_body(body, None, compare_rules) == detect_body(body, None)


def test_ignore_paths_leave_text_alone() -> None:
    got = normalize_body(b"now: 1", None, rules(ignore_json_paths=("$.now",)))
    assert got == NormalizedBody("text", "now: 1")


def test_masks_apply_to_every_json_string_leaf_but_not_keys() -> None:
    body = json.dumps({"id": "a" * 32, "a" * 32: ["x" + "b" * 32, 7, True, None]}).encode()
    got = normalize_body(body, None, rules(mask=(HEX_ID,)))
    assert got.value == {"id": "<id>", "a" * 32: ["x<id>", 7, True, None]}


def test_masks_apply_to_text() -> None:
    got = normalize_body(b"order 123 at 456", "text/plain", rules(mask=(DIGITS,)))
    assert got == NormalizedBody("text", "order <n> at <n>")


def test_masks_leave_bytes_alone() -> None:
    body = b"\xff123"
    assert normalize_body(body, None, rules(mask=(DIGITS,))) == NormalizedBody("bytes", body)


def test_compile_json_path_is_cached_and_validates() -> None:
    assert compile_json_path("$.a.b") is compile_json_path("$.a.b")
    with pytest.raises(ValueError, match="invalid JSONPath"):
        compile_json_path("$.[")


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        ({"a": [1, 2.0]}, {"a": [1.0, 2]}, True),
        (True, 1, False),
        (False, 0, False),
        (1.0, True, False),
        ([True], [1], False),
        ({"a": {"b": False}}, {"a": {"b": 0}}, False),
        (True, True, True),
        (None, None, True),
        ("1", 1, False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
    ],
)
def test_json_equal(a: object, b: object, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal


def test_normalized_body_equality() -> None:
    assert NormalizedBody("json", {"a": 1}) == NormalizedBody("json", {"a": 1.0})
    assert NormalizedBody("json", {"a": True}) != NormalizedBody("json", {"a": 1})
    assert NormalizedBody("text", "1") != NormalizedBody("json", 1)
    assert NormalizedBody("bytes", b"x") != NormalizedBody("text", "x")
    assert NormalizedBody("text", "x") != "x"


@pytest.mark.parametrize(
    ("parts", "path"),
    [
        ([], "$"),
        (["a", "b"], "$.a.b"),
        (["a", 0], "$.a[0]"),
        (["items", 10, "updated_at"], "$.items[10].updated_at"),
        (["key with.dot"], '$["key with.dot"]'),
        (["0"], '$["0"]'),
        (["content-type"], '$["content-type"]'),
        (['q"uote'], '$["q\\"uote"]'),
        (["é"], '$["é"]'),
        ([""], '$[""]'),
        ([3], "$[3]"),
    ],
)
def test_format_json_path(parts: list[str | int], path: str) -> None:
    assert format_json_path(parts) == path


def test_json_with_a_duplicate_key_is_not_data() -> None:
    assert detect_body(b'{"a": 1, "a": 2}', "application/json").kind == "text"
    assert detect_body(b'{"a": {"b": 1, "b": 1}}', None).kind == "text"
    assert detect_body(b'{"a": 1, "b": {"a": 2}}', None).kind == "json"


def test_numbers_a_float_cannot_hold_stay_exact() -> None:
    big, bigger = load_json("[1e400]"), load_json("[2e400]")
    assert not json_equal(big, bigger)
    assert json_equal(big, load_json("[10e399]"))  # one value, two spellings
    assert json_equal(big, [10**400])  # the same value as an integer
    assert not json_equal(big, ["1E+400"])  # never equal to a string
    assert not json_equal(load_json("[1e-400]"), [0.0])
    assert not json_equal(load_json("[0.1000000000000000000001]"), [0.1])
    assert json_equal(load_json("[0.10, 1.0]"), [0.1, 1])  # floats that are exact stay floats
    assert type(load_json("0.5")) is float
