"""Tests of flamingo.judge: case outcomes, the tally, and the gate."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamingo import judge
from flamingo.judge import OTHER, Tally, evaluate_gate, judge_case
from flamingo.model import (
    GATE_KEYS,
    Case,
    CaseResult,
    Check,
    Difference,
    Exchange,
    Expect,
    GateThresholds,
    Outcome,
    Response,
    TransportError,
)
from flamingo.signature import generalize as cluster_location


def resp(status: int = 200, body: bytes = b"ok", latency_ms: float = 1.0) -> Response:
    return Response(status, "OK", (), body, latency_ms)


NO_EXPECT = Expect()


def case(id: str = "s::a", template: str = "s::a", expect: Expect = NO_EXPECT) -> Case:
    return Case(id=id, suite="s", name=id, template=template, method="GET", path="/", expect=expect)


ERROR = TransportError("connect", "refused", 3.0)
EXPECT_200 = Expect(status=(200,))


# --------------------------------------------------------------------------------------------
# judge_case
# --------------------------------------------------------------------------------------------


def test_match() -> None:
    result = judge_case(case(expect=EXPECT_200), resp(), resp())
    assert result.outcome == "match"
    assert result.differences == ()
    assert result.failures == ()


def test_diff() -> None:
    result = judge_case(case(), resp(body=b"a"), resp(body=b"b"))
    assert result.outcome == "diff"
    assert [d.location for d in result.differences] == ["text"]


def test_fail_keeps_the_differences_too() -> None:
    result = judge_case(case(expect=EXPECT_200), resp(200), resp(500))
    assert result.outcome == "fail"
    assert result.differences == (Difference("status", "status", 200, 500),)
    assert [(f.target, f.what) for f in result.failures] == [("new", "status")]


def test_fail_even_when_both_responses_match() -> None:
    result = judge_case(case(expect=EXPECT_200), resp(404), resp(404))
    assert result.outcome == "fail"
    assert [f.target for f in result.failures] == ["old", "new"]
    assert result.differences == ()


def test_error_keeps_the_answering_side_failures() -> None:
    result = judge_case(case(expect=EXPECT_200), resp(500), ERROR)
    assert result.outcome == "error"
    assert result.differences == ()
    assert [f.target for f in result.failures] == ["old"]


@pytest.mark.parametrize(
    ("old_error", "new_error", "old_fails", "new_fails", "differ"),
    list(itertools.product([False, True], repeat=5)),
)
def test_precedence_table(
    old_error: bool, new_error: bool, old_fails: bool, new_fails: bool, differ: bool
) -> None:
    # Status 200 satisfies the expectation, 201 does not; bodies make the difference.
    old: Exchange = ERROR if old_error else resp(201 if old_fails else 200, body=b"x")
    new: Exchange = (
        ERROR if new_error else resp(201 if new_fails else 200, body=b"y" if differ else b"x")
    )
    differences_exist = differ or old_fails != new_fails
    expected: Outcome
    if old_error or new_error:
        expected = "error"
    elif old_fails or new_fails:
        expected = "fail"
    elif differences_exist:
        expected = "diff"
    else:
        expected = "match"
    result = judge_case(case(expect=EXPECT_200), old, new)
    assert result.outcome == expected
    if expected in ("fail", "diff"):
        assert bool(result.differences) is differences_exist


# --------------------------------------------------------------------------------------------
# Tally
# --------------------------------------------------------------------------------------------


def result(
    outcome: Outcome = "match",
    differences: tuple[Difference, ...] = (),
    id: str = "s::a",
    template: str = "s::a",
    old: Exchange | None = None,
    new: Exchange | None = None,
) -> CaseResult:
    return CaseResult(case(id, template), outcome, old or resp(), new or resp(), differences)


def test_empty_tally() -> None:
    tally = Tally()
    assert tally.totals.as_dict() == {
        "cases": 0, "match": 0, "diff": 0, "fail": 0, "error": 0, "accepted": 0
    }  # fmt: skip
    assert tally.latency("old") == {
        "p50": None, "p90": None, "p99": None, "max": None, "mean": None, "count": 0
    }  # fmt: skip
    assert tally.top(10) == []


def test_tally_counts_outcomes() -> None:
    tally = Tally()
    for outcome in ["match", "match", "diff", "fail", "error", "error"]:
        tally.add(result(outcome))  # type: ignore[arg-type]
    assert tally.totals.as_dict() == {
        "cases": 6, "match": 2, "diff": 1, "fail": 1, "error": 2, "accepted": 0
    }  # fmt: skip


def test_tally_latency_in_ms() -> None:
    tally = Tally()
    for ms in (1.0, 2.0, 3.0, 4.0):
        tally.add(result(old=resp(latency_ms=ms), new=resp(latency_ms=ms * 2)))
    old = tally.latency("old")
    assert old["count"] == 4
    assert old["p50"] == pytest.approx(2.0, rel=1e-3)
    assert old["max"] == 4.0
    assert old["mean"] == 2.5
    assert tally.latency("new")["p99"] == pytest.approx(8.0, rel=1e-3)


def test_tally_skips_transport_errors_and_clamps_latency() -> None:
    tally = Tally()
    tally.add(result("error", old=resp(latency_ms=0.0), new=ERROR))
    tally.add(result("match", old=resp(latency_ms=1e12), new=resp(latency_ms=math.nan)))
    tally.add(result("match", old=resp(latency_ms=-5.0), new=resp(latency_ms=math.inf)))
    assert tally.latency("old")["count"] == 3
    assert tally.latency("old")["max"] == 600_000.0  # 10 minutes
    assert tally.latency("new")["count"] == 1  # the error and the NaN are no samples


def test_tally_clusters_differences() -> None:
    tally = Tally()
    status = Difference("status", "status", 200, 500)
    for i in range(5):
        tally.add(result("diff", (status,), id=f"s::a#{i}"))
    tally.add(result("diff", (status,), id="s::b", template="s::b"))
    tally.add(result("match", id="s::c", template="s::c"))
    assert [(r.key, r.count, r.examples) for r in tally.top(10)] == [
        (("s::a", "status", "status", "200 → 500"), 5, ("s::a#0", "s::a#1", "s::a#2")),
        (("s::b", "status", "status", "200 → 500"), 1, ("s::b",)),
    ]
    assert tally.top(10)[0].example_change == "200 → 500"
    assert tally.top(10)[0].id.startswith("sig-")
    assert tally.top(1) == tally.top(10)[:1]


def test_tally_clusters_generalize_list_indices_and_count_a_case_once() -> None:
    tally = Tally()
    differences = tuple(Difference("body", f"$.items[{i}].id", i, i + 1) for i in range(50))
    tally.add(result("diff", differences, id="s::x"))
    tally.add(result("fail", differences[:1], id="s::y"))
    assert [(r.key, r.count, r.examples) for r in tally.top(5)] == [
        (("s::a", "body", "$.items[*].id", "number changed"), 2, ("s::x", "s::y"))
    ]
    assert tally.top(5)[0].example_change == "0 → 1"


@pytest.mark.parametrize(
    ("location", "cluster"),
    [
        ("$.a[0].b[12]", "$.a[*].b[*]"),
        ('$["x[1]"]', '$["x[*]"]'),
        ("x-cache", "x-cache"),
        ("$", "$"),
    ],
)
def test_cluster_location(location: str, cluster: str) -> None:
    assert cluster_location(location) == cluster


def test_tally_cluster_cap_spills_into_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(judge, "MAX_CLUSTERS", 3)
    tally = Tally()
    for i in range(6):
        tally.add(result("diff", (Difference("header", f"x-{i}", "a", "b"),), id=f"s::{i}"))
    assert len(tally.top_differences) == 4
    top = tally.top(10)[0]
    assert (top.key, top.count, top.examples) == (OTHER, 3, ("s::3", "s::4", "s::5"))


def test_matched_cases_keep_no_clusters() -> None:
    tally = Tally()
    for i in range(100):
        tally.add(result(id=f"s::{i}"))
    assert tally.top_differences == {}


# --------------------------------------------------------------------------------------------
# Gate
# --------------------------------------------------------------------------------------------

ALL = GateThresholds(
    min_match_rate=0.999,
    max_error_rate=0.001,
    min_cases=1,
    max_latency_ratio_p50=1.25,
    max_latency_ratio_p99=1.5,
    max_fallback_rate=0.0,
)


def only(**thresholds: Any) -> GateThresholds:
    """A gate with exactly these checks (every other key switched off), to test one check."""
    return GateThresholds(**{name: None for name in GATE_KEYS} | thresholds)


def test_every_gate_fails_closed_by_default() -> None:
    """CONTRACT §3: a gate that sets nothing wants every case to match, none to be an error,
    and at least one case."""
    gate = GateThresholds()
    assert (gate.min_match_rate, gate.max_error_rate, gate.min_cases) == (1.0, 0.0, 1)
    assert evaluate_gate(gate, None, tally_of(match=10)).verdict == "pass"
    for outcome in ("diff", "fail", "error"):
        tally = tally_of(match=9, **{outcome: 1})
        assert evaluate_gate(gate, None, tally).verdict == "fail", outcome
    # A gate that sets only one key keeps the others' fail-closed defaults.
    strict_on_diffs = GateThresholds(max_error_rate=0.5)
    assert evaluate_gate(strict_on_diffs, None, tally_of(diff=10)).verdict == "fail"
    loose = GateThresholds(min_match_rate=0.99)
    assert evaluate_gate(loose, None, tally_of(match=1, error=9)).verdict == "fail"


def tally_of(match: int = 0, diff: int = 0, fail: int = 0, error: int = 0, **lat: float) -> Tally:
    tally = Tally()
    old = resp(latency_ms=lat.get("old", 1.0))
    new = resp(latency_ms=lat.get("new", 1.0))
    for outcome, n in (("match", match), ("diff", diff), ("fail", fail), ("error", error)):
        for _ in range(n):
            tally.add(result(outcome, old=old, new=ERROR if outcome == "error" else new))  # type: ignore[arg-type]
    return tally


def checks_by_name(gate: Any) -> dict[str, Any]:
    return {check.name: check for check in gate.checks}


def test_gate_passes() -> None:
    every = dataclasses.replace(ALL, max_new_signatures=0)
    gate = evaluate_gate(every, "canary", tally_of(match=1000), baseline=frozenset())
    assert gate.verdict == "pass"
    assert gate.stage == "canary"
    assert [c.name for c in gate.checks] == list(GATE_KEYS)
    assert all(c.passed for c in gate.checks)
    assert gate.reason == ""


def test_max_new_signatures_counts_what_the_baseline_lacks() -> None:
    tally = Tally()
    for location in ("$.a", "$.b", "$.c"):
        tally.add(result("diff", (Difference("body", location, 1, 2),)))
    ids = sorted(judge.signature_id(key) for key in tally.top_differences)
    gate_only = only(max_new_signatures=1)
    old_two = evaluate_gate(gate_only, None, tally, baseline=frozenset(ids[:2]))
    assert checks_by_name(old_two)["max_new_signatures"].observed == 1
    assert old_two.verdict == "pass"
    old_one = evaluate_gate(gate_only, None, tally, baseline=frozenset(ids[:1]))
    assert checks_by_name(old_one)["max_new_signatures"].observed == 2
    assert old_one.verdict == "fail"
    # no baseline: nothing can be called new, so the check cannot pass (fail closed)
    none = evaluate_gate(gate_only, None, tally)
    assert checks_by_name(none)["max_new_signatures"].observed is None
    assert none.verdict == "fail"


def test_gate_exact_threshold_equality_passes() -> None:
    # 999 / 1000 == 0.999 and 1 / 1000 == 0.001 exactly; latency 1.25 ms / 1.0 ms == 1.25.
    gate = evaluate_gate(ALL, None, tally_of(match=999, diff=0, fail=1, old=1.0, new=1.25))
    checks = checks_by_name(gate)
    assert checks["min_match_rate"].observed == 0.999
    assert checks["min_match_rate"].passed
    assert checks["max_latency_ratio_p50"].observed == 1.25
    assert checks["max_latency_ratio_p50"].passed
    assert gate.verdict == "pass"
    errors = evaluate_gate(only(max_error_rate=0.001), None, tally_of(match=999, error=1))
    assert errors.checks[0].observed == 0.001
    assert errors.verdict == "pass"


def test_gate_just_below_a_threshold_fails_even_if_rounding_would_hide_it() -> None:
    # 9_999_999 / 10_000_000 rounds to 1.0 at 6 decimals but is below 1.0.
    tally = Tally()
    tally.counts.update(match=9_999_999, diff=1)
    gate = evaluate_gate(only(min_match_rate=1.0), None, tally)
    assert gate.checks[0].observed == 1.0
    assert not gate.checks[0].passed
    assert gate.verdict == "fail"


def test_gate_zero_cases_fails_closed() -> None:
    gate = evaluate_gate(ALL, None, Tally())
    checks = checks_by_name(gate)
    assert gate.verdict == "fail"
    assert checks["min_match_rate"].observed is None
    assert checks["max_error_rate"].observed is None
    assert checks["min_cases"].observed == 0
    assert isinstance(checks["min_cases"].observed, int)
    assert checks["max_latency_ratio_p50"].observed is None
    assert not any(c.passed for c in gate.checks)


def test_gate_all_errors() -> None:
    tally = Tally()
    for _ in range(10):
        tally.add(result("error", old=ERROR, new=ERROR))
    checks = checks_by_name(evaluate_gate(ALL, None, tally))
    assert checks["min_match_rate"].observed is None
    assert not checks["min_match_rate"].passed
    assert checks["max_error_rate"].observed == 1.0
    assert not checks["max_error_rate"].passed
    assert checks["min_cases"].passed
    assert checks["max_latency_ratio_p99"].observed is None


def test_gate_latency_ratio_needs_both_sides() -> None:
    tally = Tally()
    tally.add(result("error", old=resp(), new=ERROR))
    check = evaluate_gate(only(max_latency_ratio_p50=10.0), None, tally).checks[0]
    assert check.observed is None
    assert not check.passed


def test_gate_only_configured_checks() -> None:
    gate = evaluate_gate(only(min_cases=5), None, tally_of(match=4))
    assert [(c.name, c.threshold, c.observed, c.passed) for c in gate.checks] == [
        ("min_cases", 5, 4, False)
    ]
    assert gate.verdict == "fail"


def test_gate_without_checks_fails() -> None:
    gate = evaluate_gate(only(), None, tally_of(match=10))
    assert gate.verdict == "fail"
    assert gate.checks == ()
    assert gate.reason


def test_gate_incomplete_run_is_error_whatever_the_checks() -> None:
    gate = evaluate_gate(ALL, None, tally_of(match=1000), complete=False, reason="crashed")
    assert gate.verdict == "error"
    assert gate.reason == "crashed"
    assert all(c.passed for c in gate.checks)
    assert evaluate_gate(ALL, None, Tally(), complete=False).reason


@pytest.mark.parametrize("bad", [math.nan, "0.5", True])
def test_gate_non_numeric_threshold_never_passes(bad: Any) -> None:
    gate = evaluate_gate(only(min_cases=bad), None, tally_of(match=10))
    assert not gate.checks[0].passed
    assert gate.verdict == "fail"


def test_gate_infinite_thresholds_compare_as_numbers() -> None:
    tally = tally_of(match=1)
    unlimited = evaluate_gate(only(max_latency_ratio_p99=math.inf), None, tally)
    assert unlimited.checks[0].passed
    impossible = evaluate_gate(only(min_match_rate=math.inf), None, tally)
    assert not impossible.checks[0].passed


def test_gate_observed_rounded_to_6_decimals() -> None:
    gate = evaluate_gate(only(min_match_rate=0.5), None, tally_of(match=2, diff=1))
    assert gate.checks[0].observed == 0.666667


def test_gate_match_rate_excludes_errors_from_the_denominator() -> None:
    gate = evaluate_gate(only(min_match_rate=1.0), None, tally_of(match=5, error=5))
    assert gate.checks[0].observed == 1.0
    assert gate.verdict == "pass"


@given(
    st.integers(0, 50),
    st.integers(0, 50),
    st.integers(0, 50),
    st.integers(0, 50),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_gate_is_nan_free_and_json_able(
    match: int, diff: int, fail: int, error: int, min_rate: float, max_error: float
) -> None:
    thresholds = dataclasses.replace(ALL, min_match_rate=min_rate, max_error_rate=max_error)
    gate = evaluate_gate(thresholds, None, tally_of(match, diff, fail, error))
    json.dumps([dataclasses.asdict(c) for c in gate.checks], allow_nan=False)
    cases = match + diff + fail + error
    for check in gate.checks:
        if check.observed is None:
            assert not check.passed
    assert gate.totals.cases == cases
    assert gate.verdict in ("pass", "fail")
    if gate.verdict == "pass":
        assert cases > error


def test_a_run_with_no_judged_case_never_passes_even_without_error_thresholds() -> None:
    tally = Tally()
    for i in range(3):
        tally.add(result("error", id=f"s::{i}", new=ERROR))
    gate = evaluate_gate(only(min_cases=1), None, tally)
    assert gate.verdict == "fail"
    assert gate.checks[-1] == Check("min_judged_cases", 1, 0, False)
    assert evaluate_gate(only(min_cases=0), None, Tally()).verdict == "fail"
    tally.add(result("match", id="s::ok"))
    assert evaluate_gate(only(min_cases=1), None, tally).verdict == "pass"
