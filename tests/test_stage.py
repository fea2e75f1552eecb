"""Tests of flamingo.stage: fallbacks, the latency-regression test, resource bounds, min_duration
and the Kayenta view of a gate (pure: literal data, no servers)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from scipy.stats import mannwhitneyu

from flamingo.judge import Tally, evaluate_gate
from flamingo.model import (
    Case,
    CaseResult,
    FallbackRule,
    GateThresholds,
    LatencyRegression,
    ResourceBound,
    Response,
    TransportError,
)
from flamingo.stage import (
    MetricReading,
    ResourceScrapes,
    is_fallback,
    judge_result,
    mann_whitney_greater,
    parse_selector,
    read_metrics,
)

ONLY_STAGE = GateThresholds(min_match_rate=None, max_error_rate=None, min_cases=None)


def resp(status: int = 200, headers: tuple[tuple[str, str], ...] = (), ms: float = 1.0) -> Response:
    return Response(status, "OK", headers, b"ok", ms)


def result(i: int, old: Response | TransportError, new: Response | TransportError) -> CaseResult:
    case = Case(id=f"s::{i}", suite="s", name=str(i), template="s::t", method="GET", path="/")
    failed = isinstance(old, TransportError) or isinstance(new, TransportError)
    outcome = "error" if failed else "match"
    return CaseResult(case, outcome, old, new)  # type: ignore[arg-type]


def checks(gate: object) -> dict[str, object]:
    return {c.name: c for c in gate.checks}  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Fallbacks
# --------------------------------------------------------------------------------------------


def test_fallback_by_header_value_presence_and_status() -> None:
    by_value = FallbackRule(header="x-fallback", value="1")
    assert is_fallback(by_value, resp(headers=(("X-Fallback", "1"),)))
    assert not is_fallback(by_value, resp(headers=(("X-Fallback", "0"),)))
    assert not is_fallback(by_value, resp())
    by_presence = FallbackRule(header="x-served-by-old")
    assert is_fallback(by_presence, resp(headers=(("x-served-by-old", "anything"),)))
    by_status = FallbackRule(status=299)
    assert is_fallback(by_status, resp(299))
    assert not is_fallback(by_status, resp(200))


def test_fallback_rate_counts_judged_cases_on_new_and_gates() -> None:
    tally = Tally(fallback=FallbackRule(header="x-fallback", value="1"))
    marked = resp(headers=(("X-Fallback", "1"),))
    for i in range(8):
        tally.add(result(i, resp(), resp()))
    tally.add(result(8, resp(), marked))
    tally.add(result(9, marked, resp()))  # old's header is not new's fallback
    tally.add(result(10, TransportError("connect", "x", 1.0), marked))  # not judged: not counted
    assert tally.fallbacks == 1
    assert tally.fallback_examples == ["s::8"]
    strict = evaluate_gate(GateThresholds(max_fallback_rate=0.05, max_error_rate=1), None, tally)
    check = checks(strict)["max_fallback_rate"]
    assert (check.observed, check.passed) == (0.1, False)  # type: ignore[attr-defined]
    loose = evaluate_gate(GateThresholds(max_fallback_rate=0.1, max_error_rate=1), None, tally)
    assert loose.verdict == "pass"


def test_fallback_rate_without_judged_cases_does_not_pass() -> None:
    gate = evaluate_gate(
        GateThresholds(max_fallback_rate=1.0), None, Tally(FallbackRule(status=599))
    )
    assert checks(gate)["max_fallback_rate"].observed is None  # type: ignore[attr-defined]
    assert gate.verdict == "fail"


# --------------------------------------------------------------------------------------------
# Latency regression: Mann-Whitney U over histogram buckets
# --------------------------------------------------------------------------------------------


def buckets_of(values: list[int]) -> list[tuple[int, int]]:
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return sorted(counts.items())


@pytest.mark.parametrize("seed", range(12))
def test_mann_whitney_equals_scipy_asymptotic(seed: int) -> None:
    rng = random.Random(seed)
    shift = rng.choice([0, 0, 3, 10])
    old = [rng.randint(100, 140) for _ in range(rng.randint(1, 300))]
    new = [rng.randint(100, 140) + shift for _ in range(rng.randint(2, 300))]
    u, p = mann_whitney_greater(buckets_of(old), buckets_of(new))
    expected = mannwhitneyu(new, old, alternative="greater", method="asymptotic")
    assert u == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_mann_whitney_all_tied_is_no_evidence() -> None:
    assert mann_whitney_greater([(5, 10)], [(5, 20)]) == (100.0, 1.0)
    with pytest.raises(ValueError):
        mann_whitney_greater([], [(5, 1)])


def latency_tally(old_ms: list[float], new_ms: list[float]) -> Tally:
    tally = Tally()
    for i, (o, n) in enumerate(zip(old_ms, new_ms, strict=True)):
        tally.add(result(i, resp(ms=o), resp(ms=n)))
    return tally


REGRESSION = GateThresholds(
    min_match_rate=None,
    max_error_rate=None,
    min_cases=None,
    max_latency_ratio_p99=1.5,
    max_latency_regression=LatencyRegression(p=0.01, effect=1.1),
)


def test_one_noisy_p99_fails_the_ratio_but_not_the_regression_test() -> None:
    rng = random.Random(1)
    old = [rng.uniform(9, 11) for _ in range(200)]
    new = [rng.uniform(9, 11) for _ in range(200)]
    new[:3] = [400.0, 500.0, 450.0]  # three stalls: p99 and the mean jump, the ranks barely move
    found = checks(evaluate_gate(REGRESSION, None, latency_tally(old, new)))
    assert not found["max_latency_ratio_p99"].passed  # type: ignore[attr-defined]
    regression = found["max_latency_regression"]
    assert regression.observed > 1.1  # type: ignore[attr-defined]  # the mean moved...
    assert regression.passed  # type: ignore[attr-defined]  # ...but not significantly
    assert "p=" in regression.detail  # type: ignore[attr-defined]


def test_a_shifted_distribution_is_a_regression() -> None:
    rng = random.Random(2)
    old = [rng.uniform(9, 11) for _ in range(200)]
    new = [rng.uniform(11, 14) for _ in range(200)]
    gate = evaluate_gate(REGRESSION, None, latency_tally(old, new))
    regression = checks(gate)["max_latency_regression"]
    assert not regression.passed  # type: ignore[attr-defined]
    assert gate.verdict == "fail"


def test_a_significant_but_small_shift_passes_by_effect_size() -> None:
    rng = random.Random(3)
    old = [rng.uniform(10, 11) for _ in range(500)]
    new = [x * 1.03 for x in old]  # always 3% slower: significant, but under the 1.1 effect
    regression = checks(evaluate_gate(REGRESSION, None, latency_tally(old, new)))
    assert regression["max_latency_regression"].passed  # type: ignore[attr-defined]


def test_regression_without_samples_does_not_pass() -> None:
    tally = Tally()
    tally.add(result(0, resp(), TransportError("timeout", "x", 1.0)))
    check = checks(evaluate_gate(REGRESSION, None, tally))["max_latency_regression"]
    assert (check.observed, check.passed) == (None, False)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------

EXPOSITION = """\
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.5e+07
# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200"} 90
http_requests_total{code="500"} 10
# HELP latency_seconds A histogram.
# TYPE latency_seconds histogram
latency_seconds_bucket{le="+Inf"} 4
latency_seconds_sum 1.0
latency_seconds_count 4
untyped_thing 7
"""


def test_read_metrics_gauges_counters_labels() -> None:
    found = read_metrics(
        EXPOSITION,
        [
            "process_resident_memory_bytes",
            "http_requests_total",
            "http_requests",
            'http_requests_total{code="500"}',
            "latency_seconds_count",
            "untyped_thing",
            "absent_metric",
        ],
    )
    assert found["process_resident_memory_bytes"] == MetricReading("gauge", 1.5e7)
    assert found["http_requests_total"] == MetricReading("counter", 100.0)
    assert found["http_requests"] == MetricReading("counter", 100.0)
    assert found['http_requests_total{code="500"}'] == MetricReading("counter", 10.0)
    assert found["latency_seconds_count"].value == 4.0
    assert found["untyped_thing"] == MetricReading("gauge", 7.0)
    assert "absent_metric" not in found


@pytest.mark.parametrize("bad", ["", "a b", 'x{code="1"', "1abc", "a{b=c}"])
def test_parse_selector_refuses_what_is_not_a_metric(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_selector(bad)


def test_read_metrics_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        read_metrics("<html>not metrics</html>\n", ["x"])


Readings = dict[str, dict[str, MetricReading]]


def scrapes(
    before: Readings, after: Readings, elapsed: float = 10.0, error: str = ""
) -> ResourceScrapes:
    return ResourceScrapes(elapsed, before, after, error)


def gauge(v: float) -> MetricReading:
    return MetricReading("gauge", v)


def counter(v: float) -> MetricReading:
    return MetricReading("counter", v)


RSS = "process_resident_memory_bytes"
CPU = "process_cpu_seconds_total"


def resource_gate(*bounds: ResourceBound) -> GateThresholds:
    return replace(ONLY_STAGE, resources=bounds)


def run_resources(gate: GateThresholds, reading: ResourceScrapes) -> dict[str, object]:
    return checks(evaluate_gate(gate, None, latency_tally([1.0], [1.0]), resources=reading))


def test_gauge_ratio_uses_the_value_after_the_run() -> None:
    gate = resource_gate(ResourceBound(RSS, max_ratio_new_to_old=1.1))
    before = {"old": {RSS: gauge(100)}, "new": {RSS: gauge(100)}}
    ok = run_resources(gate, scrapes(before, {"old": {RSS: gauge(100)}, "new": {RSS: gauge(110)}}))
    check = ok[f"resources.{RSS}.max_ratio_new_to_old"]
    assert (check.observed, check.passed) == (1.1, True)  # type: ignore[attr-defined]
    bad = run_resources(gate, scrapes(before, {"old": {RSS: gauge(100)}, "new": {RSS: gauge(111)}}))
    assert not bad[f"resources.{RSS}.max_ratio_new_to_old"].passed  # type: ignore[attr-defined]


def test_counter_is_judged_as_a_rate_over_the_run() -> None:
    gate = resource_gate(ResourceBound(CPU, max_ratio_new_to_old=1.5, max_new=0.3))
    before = {"old": {CPU: counter(1000)}, "new": {CPU: counter(5)}}
    # old used 2 s of CPU in 10 s, new 2.5 s: ratio 1.25 though new's absolute total is tiny.
    after = {"old": {CPU: counter(1002)}, "new": {CPU: counter(7.5)}}
    found = run_resources(gate, scrapes(before, after))
    ratio = found[f"resources.{CPU}.max_ratio_new_to_old"]
    assert (ratio.observed, ratio.passed) == (1.25, True)  # type: ignore[attr-defined]
    absolute = found[f"resources.{CPU}.max_new"]
    assert (absolute.observed, absolute.passed) == (0.25, True)  # type: ignore[attr-defined]


def test_counter_reset_missing_metric_and_zero_old() -> None:
    gate = resource_gate(ResourceBound(CPU, max_ratio_new_to_old=2.0))
    name = f"resources.{CPU}.max_ratio_new_to_old"
    reset = scrapes(
        {"old": {CPU: counter(5)}, "new": {CPU: counter(9)}},
        {"old": {CPU: counter(6)}, "new": {CPU: counter(1)}},
    )
    assert run_resources(gate, reset)[name].passed is False  # type: ignore[attr-defined]
    missing = scrapes({"old": {}, "new": {}}, {"old": {}, "new": {}})
    assert run_resources(gate, missing)[name].observed is None  # type: ignore[attr-defined]
    idle = scrapes(
        {"old": {CPU: counter(1)}, "new": {CPU: counter(1)}},
        {"old": {CPU: counter(1)}, "new": {CPU: counter(1)}},
    )
    assert run_resources(gate, idle)[name].passed is True  # type: ignore[attr-defined]  # 0 <= 2 x 0
    busy = scrapes(
        {"old": {CPU: counter(1)}, "new": {CPU: counter(1)}},
        {"old": {CPU: counter(1)}, "new": {CPU: counter(2)}},
    )
    assert run_resources(gate, busy)[name].passed is False  # type: ignore[attr-defined]


def test_a_failed_scrape_is_an_error_verdict_never_a_pass() -> None:
    gate = resource_gate(ResourceBound(RSS, max_new=1e12))
    failed = scrapes({}, {}, error="new metrics_url http://x/metrics: connection refused")
    result = evaluate_gate(gate, "canary", latency_tally([1.0], [1.0]), resources=failed)
    assert result.verdict == "error"
    assert "connection refused" in result.reason


def test_resource_bounds_without_any_scrape_do_not_pass() -> None:
    gate = resource_gate(ResourceBound(RSS, max_new=1e12))
    assert evaluate_gate(gate, None, latency_tally([1.0], [1.0])).verdict == "fail"


# --------------------------------------------------------------------------------------------
# min_duration, and the Kayenta view
# --------------------------------------------------------------------------------------------


def test_min_duration_check() -> None:
    gate = GateThresholds(min_duration=5.0)
    tally = latency_tally([1.0], [1.0])
    assert checks(evaluate_gate(gate, None, tally, elapsed_s=5.2))["min_duration"].passed  # type: ignore[attr-defined]
    assert evaluate_gate(gate, None, tally, elapsed_s=4.9).verdict == "fail"
    assert evaluate_gate(gate, None, tally).verdict == "fail"  # elapsed unknown


def test_judge_result_scores_and_classifies() -> None:
    tally = latency_tally([1.0] * 10, [1.0] * 10)
    strict = GateThresholds(min_match_rate=1.0, max_error_rate=0.0, min_cases=1)
    passing = judge_result(evaluate_gate(strict, "canary", tally))
    assert passing["score"]["score"] == 100
    assert passing["score"]["classification"] == "Pass"
    assert {r["classification"] for r in passing["results"]} == {"Pass"}
    failing = evaluate_gate(replace(strict, min_cases=50, max_latency_ratio_p50=0.5), None, tally)
    view = judge_result(failing)
    assert view["score"]["score"] == 0  # two failed checks of four: never a share that passes
    by_name = {r["name"]: r["classification"] for r in view["results"]}
    assert by_name["min_cases"] == "Low"
    assert by_name["max_latency_ratio_p50"] == "High"
    empty = judge_result(evaluate_gate(GateThresholds(max_latency_ratio_p99=2.0), None, Tally()))
    assert {r["name"]: r["classification"] for r in empty["results"]}["max_latency_ratio_p99"] == (
        "Nodata"
    )
    incomplete = judge_result(evaluate_gate(strict, None, tally, complete=False))
    assert incomplete["score"] == {
        "score": 0,
        "classification": "Nodata",
        "classificationReason": "the run did not complete",
    }
