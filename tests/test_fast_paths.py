"""The hot-path shortcuts give exactly what the general code gives.

Each fast path (a plain-match row, a cached JSON encoder, bucketed latency recording, a cheaper
pair send) is checked against the slow path it replaces on many generated inputs, so a change to
one side that the other does not follow fails here. The one-pass header normalization has no
slow twin: it is checked against the rules its module documents.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from flamingo import normalize
from flamingo.judge import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS, _Latency
from flamingo.model import (
    Case,
    CaseResult,
    CompareRules,
    Difference,
    Exchange,
    Mask,
    Response,
    RunSettings,
    Target,
    TransportError,
)
from flamingo.report import files, rows
from flamingo.report.redact import Redactor
from flamingo.send import Sender

# --------------------------------------------------------------------------------------------
# Header normalization: the one-pass implementation does what the rules document
# --------------------------------------------------------------------------------------------

NAMES = st.sampled_from(
    [
        "Connection",
        "connection",
        "Keep-Alive",
        "Content-Length",
        "Content-Encoding",
        "Transfer-Encoding",
        "Date",
        "Server",
        "X-Request-Id",
        "X-A",
        "x-a",
        "Vary",
        "Set-Cookie",
        "X-Listed",
    ]
)
VALUES = st.one_of(
    st.sampled_from(["", " v ", "a, b", "x-listed", "keep-alive, X-A", "close", "0" * 32]),
    st.text(max_size=12),
)
HEADERS = st.lists(st.tuples(NAMES, VALUES), max_size=10).map(tuple)
RULES = st.builds(
    CompareRules,
    ignore_headers=st.frozensets(st.sampled_from(["date", "SERVER", "x-a", "vary"])),
    mask=st.sampled_from([(), (Mask.of("[0-9]+", "<n>"),), (Mask.of("a", "b"),)]),
)


def _documented_drops(headers: tuple[tuple[str, str], ...], rules: CompareRules) -> set[str]:
    """The names normalize.py's docstring says are dropped, read straight off its table."""
    listed = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    ignored = {name.lower() for name in rules.ignore_headers}
    return listed | set(normalize.TRANSPORT_HEADERS) | ignored


@settings(max_examples=400)
@given(HEADERS, RULES)
def test_header_normalization_does_what_the_rules_document(
    headers: tuple[tuple[str, str], ...], rules: CompareRules
) -> None:
    got = normalize.normalize_headers(headers, rules)
    dropped = _documented_drops(headers, rules)
    # Every field line of a kept name survives, stripped, masked in order, with its name's
    # other lines, sorted; a dropped name leaves nothing; no name appears that was not sent.
    expected: dict[str, list[str]] = {}
    for name, value in headers:
        if name.lower() not in dropped:
            masked = normalize.mask_text_value(value.strip(), rules.mask)
            expected.setdefault(name.lower(), []).append(masked)
    assert got == {name: tuple(sorted(values)) for name, values in expected.items()}
    assert all(list(values) == sorted(values) for values in got.values())
    assert not dropped & set(got)


def test_connection_lists_names_dropped_wherever_they_appear() -> None:
    # The listed name comes before Connection itself, and is listed in two field lines.
    headers = (("X-B", "1"), ("X-A", "2"), ("Connection", "x-a"), ("connection", " X-B ,"))
    assert normalize.normalize_headers(headers, CompareRules()) == {}


# --------------------------------------------------------------------------------------------
# results.jsonl and junit.xml: the plain-match row == the general row
# --------------------------------------------------------------------------------------------

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # no lone surrogates (not UTF-8)
    max_size=20,
)
LATENCY = st.one_of(
    st.floats(min_value=0, max_value=1e7, allow_nan=False),
    st.sampled_from([0.0, 0.0004, 0.0005, 1e-9, 12.3456789, 1e15, float("nan"), float("inf")]),
)


def _response(latency: float, size: int, reason: str, attempts: int = 1, sha: str = "") -> Any:
    return Response(200, reason, (("X", "y"),), b"body", latency, size, sha, attempts)


EXCHANGES = st.one_of(
    st.builds(_response, LATENCY, st.sampled_from([-1, 0, 4, 10**12]), TEXT),
    st.builds(
        _response,
        LATENCY,
        st.just(4),
        st.just("OK"),
        st.sampled_from([1, 2]),
        st.sampled_from(["", "ab" * 32]),
    ),
    st.just(TransportError("connect", "refused", 1.5)),
    st.just(Response(200, "OK", (), b"", 3)),  # an int latency (fake transports)
)


def _result(
    name: str, path: str, old: Exchange, new: Exchange, differ: bool, replica: bool
) -> CaseResult:
    case = Case(
        id=f"s::{name}", suite=f"suite {name[:3]}", name=name, template="s::t", method="GET",
        path=path,
    )  # fmt: skip
    differences = (Difference("status", "status", 200, 500),) if differ else ()
    return CaseResult(
        case,
        "diff" if differ else "match",
        old,
        new,
        differences,
        old_replica=old if replica else None,
    )


RESULTS = st.builds(
    _result, TEXT, TEXT, EXCHANGES, EXCHANGES, st.booleans(), st.sampled_from([False, False, True])
)


def _written(tmp: Path, results: list[CaseResult], fast: bool) -> tuple[str, str]:
    writer = files.RunFiles(tmp, Redactor())
    redactor = Redactor(["secret", "s::"])
    with pytest.MonkeyPatch.context() as patch:
        if not fast:  # every row through dumps(result_view(...)) and the row-based junit case
            patch.setattr(rows, "_plain_match_line", lambda result: None)
        for result in results:
            writer.write(redactor.result(result))  # as the engine hands them over
    writer.flush()
    return (
        (tmp / "results.jsonl").read_text(encoding="utf-8"),
        (tmp / ".junit.xml.part").read_text(encoding="utf-8"),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(RESULTS, min_size=1, max_size=6))
def test_plain_match_rows_are_written_as_the_general_writer_writes_them(
    tmp_path_factory: pytest.TempPathFactory, results: list[CaseResult]
) -> None:
    fast = _written(tmp_path_factory.mktemp("fast"), results, fast=True)
    slow = _written(tmp_path_factory.mktemp("slow"), results, fast=False)
    assert fast == slow


@settings(max_examples=300)
@given(RESULTS)
def test_result_line_is_dumps_of_the_result_view(result: CaseResult) -> None:
    line, _ = rows.result_line(result)
    assert line == rows.dumps(rows.result_view(result))


def test_the_plain_match_line_takes_plain_matches_only() -> None:
    plain = _result("a", "/a", _response(1.5, 4, "OK"), _response(2.5, 4, "OK"), False, False)
    assert rows._plain_match_line(plain) is not None
    assert rows.result_line(plain)[1] is None  # the fast path was taken
    retried = _result("a", "/a", _response(1.5, 4, "OK", attempts=2), plain.new, False, False)
    assert rows._plain_match_line(retried) is None
    assert rows._plain_match_line(_result("a", "/a", plain.old, plain.new, True, False)) is None


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_dumps_is_json_dumps(value: Any) -> None:
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    assert rows.dumps(value) == expected


def test_dumps_keeps_the_default_for_other_types() -> None:
    assert rows.dumps({"a": Path("x"), "b": (1, 2)}) == '{"a":"x","b":[1,2]}'


@given(st.text())
def test_xml_attr_is_quoteattr_of_legal_xml(text: str) -> None:
    assert files._xml_attr(text) == quoteattr(files._XML_ILLEGAL.sub("\ufffd", text))


# --------------------------------------------------------------------------------------------
# Latency: bucketed recording == one record_value per sample
# --------------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-1, max_value=2e6),
            st.floats(min_value=0, max_value=5),
            st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e12]),
        ),
        max_size=300,
    )
)
def test_latency_percentiles_equal_a_plain_histogram(samples: list[float]) -> None:
    latency = _Latency()
    plain = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for ms in samples:
        latency.record(ms)
        raw = ms * 1000.0
        if raw != raw:
            continue
        us = HIGHEST_US if raw >= HIGHEST_US else LOWEST_US if raw <= LOWEST_US else round(raw)
        plain.record_value(us)
    assert latency.count == plain.get_total_count()
    for percentile in (0, 1, 50, 90, 99, 99.9, 100):
        assert latency.percentile_us(percentile) == plain.get_value_at_percentile(percentile)
    assert list(latency.histogram.counts) == list(plain.counts)


def test_latency_flushes_pending_buckets_when_many() -> None:
    latency = _Latency()
    for us in range(_Latency.PENDING_MAX + 10):
        latency.record(us / 1000.0)
    assert len(latency.pending) < _Latency.PENDING_MAX
    assert latency.count == _Latency.PENDING_MAX + 10


# --------------------------------------------------------------------------------------------
# send_pair: both sides concurrently, both cancelled with the caller
# --------------------------------------------------------------------------------------------


class _Gate:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.release = asyncio.Event()

    def factory(self, target: Target, settings: RunSettings) -> Any:
        gate = self

        class _Transport:
            async def send(self, case: Case) -> Exchange:
                gate.started.append(target.name)
                try:
                    await gate.release.wait()
                except asyncio.CancelledError:
                    gate.cancelled.append(target.name)
                    raise
                return Response(200, "OK", (), target.name.encode(), 1.0)

            async def aclose(self) -> None:
                pass

        return _Transport()


def _sender(gate: _Gate) -> Sender:
    return Sender(Target("old", "http://o"), Target("new", "http://n"), RunSettings(), gate.factory)


CASE = Case(id="s::a", suite="s", name="a", template="s::a", method="GET", path="/")


def test_send_pair_sends_both_before_either_answers() -> None:
    async def main() -> tuple[Exchange, Exchange]:
        gate = _Gate()
        pair = asyncio.ensure_future(_sender(gate).send_pair(CASE))
        for _ in range(5):
            await asyncio.sleep(0)
        assert sorted(gate.started) == ["new", "old"]
        gate.release.set()
        return await pair

    old, new = asyncio.run(main())
    assert isinstance(old, Response) and old.body == b"old"
    assert isinstance(new, Response) and new.body == b"new"


def test_cancelling_send_pair_cancels_both_sides() -> None:
    async def main() -> list[str]:
        gate = _Gate()
        pair = asyncio.ensure_future(_sender(gate).send_pair(CASE))
        for _ in range(5):
            await asyncio.sleep(0)
        pair.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pair
        for _ in range(5):
            await asyncio.sleep(0)
        return gate.cancelled

    assert sorted(asyncio.run(main())) == ["new", "old"]
