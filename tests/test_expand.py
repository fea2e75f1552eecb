"""Tests of the expand stage: suites -> an iterator of cases."""

from __future__ import annotations

import json
import math
import types
from itertools import islice
from pathlib import Path
from urllib.parse import quote, urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from flamingo.errors import InputError
from flamingo.expand import expand, expand_suite
from flamingo.load import parse_suites
from flamingo.model import Case, CompareRules
from flamingo.suite import RequestSpec, Suite

CONTRACT_SUITE = (Path(__file__).parent / "contract" / "suite.yaml").read_text()


def cases_of(text: str) -> list[Case]:
    return list(expand(parse_suites(text, "s.yaml")))


def test_contract_suite_expands_in_order() -> None:
    cases = cases_of(CONTRACT_SUITE)
    assert [c.id for c in cases] == [
        "static-assets::get /static/hello.txt (identity)",
        "static-assets::get /static/hello.txt (gzip)",
        "static-assets::get /static/page.html (identity)",
        "static-assets::get /static/page.html (gzip)",
        "static-assets::get /static/data.json (identity)",
        "static-assets::get /static/data.json (gzip)",
        "static-assets::missing file",
        *(f"static-assets::echo {q}#{k}" for q in "abc" for k in (1, 2, 3)),
        "static-assets::create item",
    ]
    first = cases[0]
    assert first.suite == "static-assets"
    assert first.name == "get /static/hello.txt (identity)"
    assert first.template == "static-assets::get {{ path }} ({{ encoding }})"
    assert first.method == "GET" and first.path == "/static/hello.txt"
    assert first.headers == (("User-Agent", "flamingo-test"), ("Accept-Encoding", "identity"))
    assert first.body is None and first.expect.status == (200,)
    assert first.tags == ("static", "smoke") and first.source == "s.yaml:10"
    assert first.compare.ignore_headers == frozenset({"date", "server", "x-request-id"})
    echo = cases[7]
    assert echo.path == "/api/echo?q=a" and echo.name == "echo a" and echo.expect.empty
    create = cases[-1]
    assert create.method == "POST" and create.body == b'{"name":"x"}'
    assert create.headers == (("User-Agent", "flamingo-test"), ("Content-Type", "application/json"))
    assert create.source == "s.yaml:23"


def test_expansion_is_lazy() -> None:
    values = "[" + ", ".join(str(i) for i in range(100)) + "]"
    name = "{{ a }}-{{ b }}-{{ c }}"
    text = f"suite: big\nmatrix: {{a: {values}, b: {values}, c: {values}}}\n" + (
        f'requests:\n  - {{name: "{name}", path: /}}\n'
    )
    [suite] = parse_suites(text, "s.yaml")
    stream = expand([suite])
    assert isinstance(stream, types.GeneratorType)
    assert [c.id for c in islice(stream, 3)] == ["big::0-0-0", "big::0-0-1", "big::0-0-2"]


def test_query_encoding() -> None:
    text = """\
suite: q
matrix: {word: ["hello world", "a&b=c"]}
requests:
  - name: "search {{ word }}"
    path: /search
    query: {q: "{{ word }}", tag: [x, "y z"], n: 1, on: true}
  - name: keep path
    path: "/a%20b/?fixed=1"
    query: {more: "2"}
  - name: no query
    path: /plain?x=1
"""
    paths = [c.path for c in cases_of(text)]
    assert paths == [
        "/search?q=hello%20world&tag=x&tag=y%20z&n=1&on=true",
        "/search?q=a%26b%3Dc&tag=x&tag=y%20z&n=1&on=true",
        "/a%20b/?fixed=1&more=2",
        "/plain?x=1",
    ]


def test_json_values_keep_their_yaml_type_when_whole() -> None:
    text = """\
suite: j
matrix: {n: [1, 2.5], flag: [true]}
requests:
  - name: "post {{ n }} {{ flag }}"
    method: POST
    path: /
    headers: {content-type: application/json; charset=utf-8}
    json: {n: "{{ n }}", label: "n={{ n }}", nested: [{"f": "{{ flag }}"}, "{{flag}}"], k: 0}
"""
    first, second = cases_of(text)
    assert json.loads(first.body or b"") == {
        "n": 1,
        "label": "n=1",
        "nested": [{"f": True}, True],
        "k": 0,
    }
    assert json.loads(second.body or b"")["n"] == 2.5
    assert first.id == "j::post 1 true"
    assert first.headers == (("content-type", "application/json; charset=utf-8"),)
    assert first.body == b'{"n":1,"label":"n=1","nested":[{"f":true},true],"k":0}'


def test_text_body_and_method_templates() -> None:
    text = """\
suite: b
matrix: {verb: [put, patch]}
requests:
  - name: "{{ verb }} café"
    method: "{{ verb }}"
    path: /items/1
    body: "verb={{ verb }} café"
"""
    cases = cases_of(text)
    assert [c.method for c in cases] == ["PUT", "PATCH"]
    assert cases[0].body == "verb=put café".encode()
    assert cases[0].headers == ()


def test_expect_templates() -> None:
    text = """\
suite: e
matrix: {code: [200, 404], host: [a.example]}
requests:
  - name: "get {{ code }} {{ host }}"
    path: "/status/{{ code }}"
    expect:
      status: ["{{ code }}", 500]
      headers:
        Location: {regex: "^https://{{ host }}/"}
        X-Code: "{{ code }}"
      json: {code: "{{ code }}", host: "{{ host }}"}
"""
    first, second = cases_of(text)
    assert first.expect.status == (200, 500) and second.expect.status == (404, 500)
    location, x_code = first.expect.headers
    assert location.name == "location" and location.regex is not None
    assert location.regex.pattern == r"^https://a\.example/"  # values match literally
    assert location.regex.search("https://a.example/x") and not location.regex.search(
        "https://aXexample/"
    )
    assert x_code.equals == "200"
    assert first.expect.json == {"code": 200, "host": "a.example"} and first.expect.has_json
    assert first.expect.headers[0].regex is second.expect.headers[0].regex  # compiled once


def test_constant_expect_is_shared() -> None:
    text = (
        "suite: c\nrequests: [{name: a, path: /, repeat: 3, expect: {headers: {A: {regex: x}}}}]\n"
    )
    cases = cases_of(text)
    assert [c.id for c in cases] == ["c::a#1", "c::a#2", "c::a#3"]
    assert cases[0].expect is cases[2].expect
    assert all(c.template == "c::a" for c in cases)


def test_allow_side_effects_and_suite_order() -> None:
    text = """\
suite: one
allow_side_effects: true
requests: [{name: a, method: POST, path: /}]
---
suite: two
requests: [{name: b, path: /}, {name: c, path: /}]
"""
    cases = cases_of(text)
    assert [(c.id, c.allow_side_effects) for c in cases] == [
        ("one::a", True),
        ("two::b", False),
        ("two::c", False),
    ]


def test_expand_suite_from_records() -> None:
    request = RequestSpec(
        name="r {{ x }}", path="/{{ x }}", line=3, matrix=(("x", ("a", "b")),), repeat=2
    )
    suite = Suite(name="s", file="f.yaml", line=1, requests=(request,), compare=CompareRules())
    assert [c.id for c in expand_suite(suite)] == ["s::r a#1", "s::r a#2", "s::r b#1", "s::r b#2"]
    assert [c.path for c in expand_suite(suite)] == ["/a", "/a", "/b", "/b"]


# --------------------------------------------------------------------------------------------
# Properties: count, uniqueness, determinism
# --------------------------------------------------------------------------------------------

_values = st.lists(
    st.one_of(st.integers(-50, 50), st.text("abcxyz", min_size=1, max_size=4)),
    min_size=1,
    max_size=4,
    unique_by=str,
)


@settings(max_examples=150, deadline=None)
@given(
    axes=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), _values, max_size=4),
    repeat=st.integers(1, 3),
    own=st.booleans(),
)
def test_expansion_properties(axes: dict[str, list[object]], repeat: int, own: bool) -> None:
    name = "r " + " ".join(f"{{{{ {var} }}}}" for var in axes)
    request: dict[str, object] = {"name": name, "path": "/x", "repeat": repeat}
    document: dict[str, object] = {"suite": "p", "requests": [request]}
    if own:
        request["matrix"] = axes
    else:
        document["matrix"] = axes
    # JSON is YAML: a safe way to write any generated document.
    [suite] = parse_suites(json.dumps(document), "p.yaml")
    first = [c.id for c in expand_suite(suite)]
    second = [c.id for c in expand_suite(suite)]
    expected = math.prod(len(values) for values in axes.values()) * repeat
    assert len(first) == expected == suite.case_count
    assert len(set(first)) == len(first)
    assert first == second
    assert list(expand_suite(suite)) == list(expand_suite(suite))


@settings(max_examples=100, deadline=None)
@given(
    key=st.text(min_size=1, max_size=8),
    literal=st.text(max_size=8),
    values=st.lists(st.text(max_size=8), min_size=1, max_size=3, unique=True),
)
def test_query_string_equals_urlencode(key: str, literal: str, values: list[str]) -> None:
    """The precompiled query string is exactly urlencode(pairs, quote_via=quote)."""
    document = {
        "suite": "u",
        "matrix": {"v": values},
        "requests": [
            {
                "name": "r {{ v }}",
                "path": "/{{ v }}" if "?" in "".join(values) else "/p",
                "query": {key: f"{literal}{{{{ v }}}}", "fixed": literal},
            }
        ],
    }
    try:
        [suite] = parse_suites(json.dumps(document), "u.yaml")
    except InputError:
        return  # e.g. a control character in a path value: rejected at load time, by design
    for value, case in zip(values, expand_suite(suite), strict=True):
        path = "/" + value if "?" in "".join(values) else "/p"
        pairs = [(key, literal + value), ("fixed", literal)]
        expected = urlencode(pairs, quote_via=quote)
        assert case.path == path + ("&" if "?" in path else "?") + expected
