"""Stage rules: the gate checks a rollout stage adds to the plain match/error/latency ratios.

This module owns fallback detection (the ``max_fallback_rate`` check itself is a plain ratio,
evaluated with the others in `flamingo.judge`), the latency-regression test, resource bounds
over scraped Prometheus metrics, the ``min_duration`` check, and the Kayenta-style view of a
verdict (``judgeResult``). It is pure: the scrapes arrive as text or as readings
(`flamingo.scrape` does the HTTP), elapsed time arrives as a number.

Theory of operation
-------------------
Checks added to a gate (CONTRACT §3), after the `flamingo.judge` ones, in this order:

    check                                observed                         passes when
    max_latency_regression               mean latency new / old           not (p < t.p and
                                         (p of a one-sided Mann-Whitney     observed > t.effect)
                                         U test, in ``detail``)
    min_duration                         seconds the run took             observed >= t
    resources.METRIC.max_ratio_new_to_old  value(new) / value(old)        observed <= t
    resources.METRIC.max_new             value(new)                       observed <= t

``value`` is a gauge's value after the run, or a counter's increase over the run divided by the
seconds between the two scrapes. Like every check, one that cannot be computed (no samples, a
metric missing from a scrape, a counter that went backwards) does not pass; a scrape that failed
makes the whole verdict ``error`` (`flamingo.judge.evaluate_gate`).

Latency regression, and why from histogram buckets: Kayenta's judge classifies a metric High only
when a Mann-Whitney U test says the experiment is significantly larger AND the effect size (the
ratio of means) passes a critical value, so one slow outlier cannot flip a stage while a shift
of the whole distribution does. flamingo keeps no per-request latency list (a 1M-case run would
hold 2M floats); it keeps HdrHistograms at 3 significant digits. The U statistic depends only on
ranks, and both targets' histograms share one bucket layout, so the test is computed exactly over
the bucketed values: two samples in one bucket (values within 0.1% of each other) count as a
tie, which the tie-corrected normal approximation (scipy's ``method="asymptotic"``, continuity
corrected) handles. tests/test_stage.py checks the result against ``scipy.stats.mannwhitneyu``
on the same bucketed samples. The means in the effect size are exact (sums are kept beside the
histograms).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client.parser import text_string_to_metric_families

from flamingo.model import (
    Check,
    FallbackRule,
    GateResult,
    GateThresholds,
    ResourceBound,
    Response,
    header_values,
)

if TYPE_CHECKING:
    from flamingo.judge import Tally

__all__ = [
    "MetricReading",
    "MetricSelector",
    "ResourceScrapes",
    "is_fallback",
    "judge_result",
    "mann_whitney_greater",
    "parse_selector",
    "read_metrics",
    "stage_checks",
]

# --------------------------------------------------------------------------------------------
# Fallbacks
# --------------------------------------------------------------------------------------------


def is_fallback(rule: FallbackRule, response: Response) -> bool:
    """Whether ``response`` shows the hand-off ``rule`` describes."""
    if rule.status is not None and response.status == rule.status:
        return True
    if rule.header is not None:
        values = header_values(response.headers, rule.header)
        return any(rule.value is None or value.strip() == rule.value for value in values)
    return False


# --------------------------------------------------------------------------------------------
# Latency regression: a one-sided Mann-Whitney U test over histogram buckets
# --------------------------------------------------------------------------------------------

Buckets = Sequence[tuple[int, int]]  # (bucket value, samples), ascending by value


def mann_whitney_greater(old: Buckets, new: Buckets) -> tuple[float, float]:
    """``(U, p)`` for "new is stochastically greater than old" (scipy's
    ``mannwhitneyu(new, old, alternative="greater", method="asymptotic")``): U of ``new`` with
    mid-ranks for ties, p from the tie-corrected normal approximation with continuity correction.
    With every sample tied there is no evidence either way: p is 1."""
    n_new = sum(count for _, count in new)
    n_old = sum(count for _, count in old)
    if n_new == 0 or n_old == 0:
        raise ValueError("both samples need at least one value")
    merged: dict[int, list[int]] = {}
    for value, count in old:
        merged.setdefault(value, [0, 0])[0] += count
    for value, count in new:
        merged.setdefault(value, [0, 0])[1] += count
    below = 0  # samples with a smaller value
    twice_rank_sum = 0  # 2 x the rank sum of new (mid-ranks are halves: keep integers)
    tie_term = 0
    for value in sorted(merged):
        from_old, from_new = merged[value]
        tied = from_old + from_new
        twice_rank_sum += from_new * (2 * below + tied + 1)
        tie_term += tied**3 - tied
        below += tied
    n = n_old + n_new
    u = Fraction(twice_rank_sum, 2) - Fraction(n_new * (n_new + 1), 2)
    variance = Fraction(n_old * n_new, 12) * ((n + 1) - Fraction(tie_term, n * (n - 1) or 1))
    if variance <= 0:
        return float(u), 1.0
    z = (float(u - Fraction(n_old * n_new, 2)) - 0.5) / math.sqrt(variance)
    p = 0.5 * math.erfc(z / math.sqrt(2))
    return float(u), min(1.0, max(0.0, p))


def _regression_check(threshold: Any, tally: Tally) -> Check:
    name = "max_latency_regression"
    p_limit, effect_limit = threshold.p, threshold.effect
    old, new = tally.latency_buckets("old"), tally.latency_buckets("new")
    old_mean, new_mean = tally.mean_us("old"), tally.mean_us("new")
    if not old or not new or not old_mean or new_mean is None:
        detail = "no latency samples on one side"
        return Check(name, effect_limit, None, False, detail)
    _, p = mann_whitney_greater(old, new)
    effect = new_mean / old_mean
    regressed = p < p_limit and effect > effect_limit
    detail = (
        f"Mann-Whitney U, new slower than old: p={p:.3g} (significant below {p_limit:g}); "
        f"mean latency new/old {effect:.3f} (effect limit {effect_limit:g})"
    )
    return Check(name, effect_limit, round(effect, 6), not regressed, detail)


# --------------------------------------------------------------------------------------------
# Resources: scraped Prometheus metrics
# --------------------------------------------------------------------------------------------

MetricKind = Literal["counter", "gauge"]


@dataclass(frozen=True)
class MetricSelector:
    """A sample name and the labels a sample must carry (a subset); values of every matching
    series are summed."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class MetricReading:
    kind: MetricKind  # a counter is judged as a rate over the run, anything else by its value
    value: float


@dataclass(frozen=True)
class ResourceScrapes:
    """What was scraped for a run: per target, per bound's metric, before and after."""

    elapsed_s: float  # between the two scrapes
    before: Mapping[str, Mapping[str, MetricReading]]  # target -> metric -> reading
    after: Mapping[str, Mapping[str, MetricReading]]
    error: str = ""  # a scrape failed: the verdict is "error" with this reason


def parse_selector(text: str) -> MetricSelector:
    """``name`` or ``name{label="value",...}`` in Prometheus' own syntax (read by its parser).
    Raises ValueError when it is not one."""
    try:
        families = list(text_string_to_metric_families(f"{text.strip()} 0\n"))
    except Exception as exc:  # the parser raises several types for bad text
        raise ValueError(f"not a metric name with optional labels: {text!r}") from exc
    samples = [sample for family in families for sample in family.samples]
    if len(samples) != 1:
        raise ValueError(f"not a metric name with optional labels: {text!r}")
    sample = samples[0]
    return MetricSelector(sample.name, tuple(sorted(sample.labels.items())))


def read_metrics(text: str, metrics: Iterable[str]) -> dict[str, MetricReading]:
    """The readings of ``metrics`` (selectors, see `parse_selector`) in a Prometheus text
    exposition; a metric with no matching sample is absent. Raises ValueError on text the
    Prometheus parser refuses.

    A counter may be named with or without its ``_total`` suffix."""
    wanted = {metric: parse_selector(metric) for metric in metrics}
    found: dict[str, MetricReading] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:
        raise ValueError(f"not Prometheus text format: {exc}") from exc
    for metric, selector in wanted.items():
        total: float | None = None
        kind: MetricKind = "gauge"
        for family in families:
            for sample in family.samples:
                names = {sample.name}
                if family.type == "counter" and sample.name == family.name + "_total":
                    names.add(family.name)
                if selector.name not in names:
                    continue
                if any(sample.labels.get(k) != v for k, v in selector.labels):
                    continue
                if math.isnan(sample.value):
                    continue
                total = (total or 0.0) + sample.value
                kind = "counter" if family.type == "counter" else "gauge"
        if total is not None:
            found[metric] = MetricReading(kind, total)
    return found


def _run_value(scrapes: ResourceScrapes, target: str, metric: str) -> float | None:
    after = scrapes.after.get(target, {}).get(metric)
    if after is None:
        return None
    if after.kind == "gauge":
        return after.value
    before = scrapes.before.get(target, {}).get(metric)
    if before is None or after.value < before.value or scrapes.elapsed_s <= 0:
        return None  # a counter that went backwards was reset: no rate over the run
    return (after.value - before.value) / scrapes.elapsed_s


def _resource_checks(bound: ResourceBound, scrapes: ResourceScrapes | None) -> Iterable[Check]:
    prefix = f"resources.{bound.metric}"
    new = old = None
    if scrapes is not None:
        new = _run_value(scrapes, "new", bound.metric)
        old = _run_value(scrapes, "old", bound.metric)
    shown = {"old": old, "new": new}
    detail = ", ".join(f"{t} {'n/a' if v is None else f'{v:.6g}'}" for t, v in shown.items())
    if bound.max_ratio_new_to_old is not None:
        limit = bound.max_ratio_new_to_old
        ratio: float | None = None
        passed = False
        if new is not None and old is not None:
            # new <= limit x old, so that 0 against 0 passes and anything against 0 fails.
            passed = new <= limit * old
            ratio = round(new / old, 6) if old else (0.0 if new == 0 else None)
        yield Check(f"{prefix}.max_ratio_new_to_old", limit, ratio, passed, detail)
    if bound.max_new is not None:
        passed = new is not None and new <= bound.max_new
        shown_new = None if new is None else round(new, 6)
        yield Check(f"{prefix}.max_new", bound.max_new, shown_new, passed, detail)


# --------------------------------------------------------------------------------------------
# All stage checks of one gate
# --------------------------------------------------------------------------------------------


def stage_checks(
    thresholds: GateThresholds,
    tally: Tally,
    *,
    resources: ResourceScrapes | None = None,
    elapsed_s: float | None = None,
) -> tuple[Check, ...]:
    """The stage-rule checks ``thresholds`` asks for (table in the module docstring)."""
    checks: list[Check] = []
    if thresholds.max_latency_regression is not None:
        checks.append(_regression_check(thresholds.max_latency_regression, tally))
    if thresholds.min_duration is not None:
        limit = thresholds.min_duration
        passed = elapsed_s is not None and elapsed_s >= limit
        shown_s = None if elapsed_s is None else round(elapsed_s, 3)
        checks.append(Check("min_duration", limit, shown_s, passed))
    for bound in thresholds.resources:
        checks.extend(_resource_checks(bound, resources))
    return tuple(checks)


# --------------------------------------------------------------------------------------------
# The Kayenta view of a verdict
# --------------------------------------------------------------------------------------------


def _classification(check: Check) -> str:
    if check.passed:
        return "Pass"
    if check.observed is None:
        return "Nodata"
    return "Low" if check.name.startswith("min_") else "High"


def judge_result(gate: GateResult) -> dict[str, Any]:
    """gate.json's ``judgeResult``: the shape of Kayenta's ``CanaryJudgeResult`` (score 0-100,
    per-check classification), so a Kayenta reader or Spinnaker can use flamingo as its judge.

    The score is 100 for ``pass`` and 0 otherwise, never the share of passing checks: a reader
    with any marginal/pass threshold then reads exactly flamingo's verdict (a share would let a
    gate that failed one of ten checks score 90 and pass a threshold of 75)."""
    score = 100 if gate.verdict == "pass" else 0
    classification = {"pass": "Pass", "fail": "Fail", "error": "Nodata"}[gate.verdict]
    results = [
        {
            "name": check.name,
            "id": check.name,
            "classification": _classification(check),
            "classificationReason": check.detail
            or f"observed {check.observed} against threshold {check.threshold}",
            "groups": ["flamingo"],
            "critical": True,
        }
        for check in gate.checks
    ]
    return {
        "judgeName": "flamingo",
        "score": {
            "score": score,
            "classification": classification,
            "classificationReason": gate.reason,
        },
        "groupScores": [{"name": "flamingo", "score": score, "classification": classification}],
        "results": results,
    }
