"""Tests of case selection: -k, --tag, --shard."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from itertools import count, islice

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamingo.errors import InputError
from flamingo.model import Case
from flamingo.select import compile_keyword, parse_shard, resolve_shard, select, shard_index


def case(case_id: str, tags: tuple[str, ...] = ()) -> Case:
    suite, _, name = case_id.partition("::")
    return Case(
        id=case_id, suite=suite, name=name, template=case_id, method="GET", path="/", tags=tags
    )


IDS = [
    "static-assets::get /static/hello.txt (identity)",
    "static-assets::get /static/hello.txt (gzip)",
    "static-assets::missing file",
    "api::echo a#1",
    "api::echo a#2",
    "api::create item",
]


# --------------------------------------------------------------------------------------------
# --shard
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "shard"), [("1/1", (1, 1)), ("2/5", (2, 5)), (" 3 / 3 ", (3, 3))])
def test_parse_shard(text: str, shard: tuple[int, int]) -> None:
    assert parse_shard(text) == shard


@pytest.mark.parametrize("text", ["3/2", "0/2", "1", "a/b", "1/0", "-1/2", "", "1/2/3"])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(InputError) as info:
        parse_shard(text)
    assert str(info.value) == f"--shard: expected K/N with 1 <= K <= N, got '{text}'"


def test_shard_formula_is_the_documented_one() -> None:
    for case_id in IDS:
        digest = hashlib.blake2b(case_id.encode(), digest_size=8).digest()
        assert shard_index(case_id, 7) == int.from_bytes(digest, "big") % 7 + 1


@given(st.lists(st.text(min_size=1), unique=True, max_size=60), st.integers(1, 6))
def test_shards_partition_the_cases(ids: list[str], n: int) -> None:
    cases = [case(i) for i in ids]
    shards = [[c.id for c in select(cases, shard=(k, n))] for k in range(1, n + 1)]
    assert sorted(i for shard in shards for i in shard) == sorted(ids)
    # Membership depends on the id only, not on which other cases are present.
    for k, shard in enumerate(shards, start=1):
        for case_id in shard:
            assert [c.id for c in select([case(case_id)], shard=(k, n))] == [case_id]


def test_select_rejects_a_bad_shard_tuple() -> None:
    with pytest.raises(InputError, match="--shard"):
        select([], shard=(4, 3))


# --------------------------------------------------------------------------------------------
# -k
# --------------------------------------------------------------------------------------------


def ids_for(expr: str) -> list[str]:
    matches = compile_keyword(expr)
    return [i for i in IDS if matches(i)]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("GZIP", [IDS[1]]),
        ("echo", [IDS[3], IDS[4]]),
        ("not static", IDS[3:]),
        ("hello and not gzip", [IDS[0]]),
        ("missing or create", [IDS[2], IDS[5]]),
        ("api and (a#2 or item)", [IDS[4], IDS[5]]),
        ("not (api or hello)", [IDS[2]]),
        ("not not missing", [IDS[2]]),
        ("static or echo and #1", [*IDS[:3], IDS[3]]),  # and binds tighter than or
        ("'hello.txt (gzip)'", [IDS[1]]),
        ('"missing file"', [IDS[2]]),
        ("", IDS),
        ("   ", IDS),
    ],
)
def test_keyword(expr: str, expected: list[str]) -> None:
    assert ids_for(expr) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("and", "-k: expected an identifier, 'not' or '(' at column 1, got 'and' in 'and'"),
        (
            "a or",
            "-k: expected an identifier, 'not' or '(' at column 5, got end of expression in 'a or'",
        ),
        ("(a", "-k: expected ')' at column 3, got end of expression in '(a'"),
        ("a)", "-k: expected 'and', 'or' or end of expression at column 2, got ')' in 'a)'"),
        ("a b", "-k: expected 'and', 'or' or end of expression at column 3, got 'b' in 'a b'"),
        (
            "not",
            "-k: expected an identifier, 'not' or '(' at column 4, got end of expression in 'not'",
        ),
        ("'open", '-k: unterminated quote at column 1 in "\'open"'),
        ("()", "-k: expected an identifier, 'not' or '(' at column 2, got ')' in '()'"),
    ],
)
def test_keyword_errors(expr: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        compile_keyword(expr)
    assert str(info.value) == message


# --------------------------------------------------------------------------------------------
# select
# --------------------------------------------------------------------------------------------


def test_tags_keep_cases_with_any_tag() -> None:
    cases = [case("s::a", ("smoke",)), case("s::b", ("slow", "api")), case("s::c")]
    assert [c.id for c in select(cases, tags=["api", "smoke"])] == ["s::a", "s::b"]
    assert [c.id for c in select(cases, tags=[])] == ["s::a", "s::b", "s::c"]


def test_filters_combine() -> None:
    cases = [case(i, ("api",) if i.startswith("api") else ()) for i in IDS]
    kept = [c.id for c in select(cases, keyword="echo or hello", tags=["api"])]
    assert kept == [IDS[3], IDS[4]]
    everything = [c.id for c in select(cases)]
    assert everything == IDS


def test_select_is_lazy_and_checks_its_options_up_front() -> None:
    def endless() -> Iterator[Case]:
        for n in count():
            yield case(f"s::case {n}")

    kept = select(endless(), keyword="7")
    assert [c.id for c in islice(kept, 2)] == ["s::case 7", "s::case 17"]
    with pytest.raises(InputError):
        select(endless(), keyword="(")


# --------------------------------------------------------------------------------------------
# Where a shard comes from: --shard, --shards with JOB_COMPLETION_INDEX, FLAMINGO_SHARD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "shards", "env", "shard"),
    [
        (None, None, {}, None),
        ("2/3", None, {}, "2/3"),
        (" 2 / 3 ", None, {"FLAMINGO_SHARD": "1/5"}, "2/3"),  # the option wins
        (None, 3, {"JOB_COMPLETION_INDEX": "1"}, "2/3"),  # 0-based index
        (None, 3, {"JOB_COMPLETION_INDEX": "0", "FLAMINGO_SHARD": "3/3"}, "1/3"),
        (None, 1, {"JOB_COMPLETION_INDEX": "0"}, "1/1"),
        (None, None, {"FLAMINGO_SHARD": "4/4"}, "4/4"),
        (None, None, {"FLAMINGO_SHARD": "  "}, None),
        (None, None, {"JOB_COMPLETION_INDEX": "2"}, None),  # an index alone shards nothing
    ],
)
def test_resolve_shard(
    option: str | None, shards: int | None, env: dict[str, str], shard: str | None
) -> None:
    assert resolve_shard(option, shards, env) == shard


@pytest.mark.parametrize(
    ("option", "shards", "env", "message"),
    [
        ("1/2", 2, {"JOB_COMPLETION_INDEX": "0"}, "--shard and --shards: give one of them"),
        (None, 3, {}, "--shards 3: JOB_COMPLETION_INDEX is not set"),
        (
            None,
            3,
            {"JOB_COMPLETION_INDEX": "3"},
            "JOB_COMPLETION_INDEX='3' is not an index from 0 to 2",
        ),
        (None, 3, {"JOB_COMPLETION_INDEX": "-1"}, "is not an index from 0 to 2"),
        (None, 3, {"JOB_COMPLETION_INDEX": "x"}, "is not an index"),
        (None, 0, {"JOB_COMPLETION_INDEX": "0"}, "--shards: expected an integer >= 1"),
        (
            None,
            None,
            {"FLAMINGO_SHARD": "3/2"},
            "FLAMINGO_SHARD: expected K/N with 1 <= K <= N, got '3/2'",
        ),
        ("0/2", None, {}, "--shard: expected K/N"),
    ],
)
def test_resolve_shard_rejects(
    option: str | None, shards: int | None, env: dict[str, str], message: str
) -> None:
    with pytest.raises(InputError) as info:
        resolve_shard(option, shards, env)
    assert message in str(info.value)
