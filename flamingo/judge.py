"""Judgement: one case's outcome, the running tally of a run, and the gate verdict.

This module owns `judge_case`, `Tally` and `evaluate_gate`. It is pure: no sockets, no clocks,
no printing, no files (`Tally` is mutable, but only ever holds what it was given).

Theory of operation
-------------------
A case's outcome is the first row that applies (CONTRACT §6):

    outcome   when
    error     either exchange is a TransportError (the target could not answer)
    fail      an ``expect`` failed on either response
    diff      the normalized responses differ
    match     none of the above

Differences are computed for ``fail`` as well as ``diff`` so a report can show both why a case
failed and how the targets disagreed.

`Tally` folds results into counters, per-target latency histograms (HdrHistogram, 1 µs .. 10 min
at 3 significant digits, recorded in µs) and difference clusters keyed by signature
(`flamingo.signature`: request template, kind, location with list indices generalized, shape of the
change), so 500 items that all changed the same field, or 2,000 cases with the same bug, form one
cluster. A matched case adds counters and histogram
entries only; memory is bounded by `MAX_CLUSTERS`.

A gate evaluates one `Check` per configured threshold, in `GATE_KEYS` order:

    threshold               observed                     passes when     not computable when
    min_match_rate          match / (cases - error)      observed >= t   cases == error
    max_error_rate          error / cases                observed <= t   cases == 0
    min_cases               cases                        observed >= t   never
    max_latency_ratio_p50   new p50 / old p50            observed <= t   a side has no samples
    max_latency_ratio_p99   new p99 / old p99            observed <= t   a side has no samples
    max_fallback_rate       fallbacks / (cases - error)  observed <= t   cases == error

then the stage rules (`flamingo.stage`: latency regression, min_duration, resources).

Fail closed: a check that cannot be computed (observed None) or whose threshold is not a number
never passes; a gate with no checks fails; an incomplete run is ``error`` whatever the checks say.
Comparisons are made on exact rationals (the threshold read back from its shortest decimal form),
so 999/1000 against 0.999 passes exactly and rounding ``observed`` for display (6 decimals) can
never turn a failing check into a passing one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from hdrh.histogram import HdrHistogram

from flamingo.compare import compare
from flamingo.expect import check_expect
from flamingo.model import (
    GATE_KEYS,
    OUTCOMES,
    Case,
    CaseResult,
    Check,
    Difference,
    Exchange,
    ExpectFailure,
    FallbackRule,
    GateResult,
    GateThresholds,
    Response,
    Totals,
    TransportError,
    Verdict,
)
from flamingo.signature import SignatureKey, example_change, signature_id, signature_key
from flamingo.stage import ResourceScrapes, is_fallback, stage_checks

# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------


def judge_case(case: Case, old: Exchange, new: Exchange) -> CaseResult:
    """The outcome of one case from its two exchanges (precedence error > fail > diff > match)."""
    failures: tuple[ExpectFailure, ...] = ()
    if not case.expect.empty:
        if isinstance(old, Response):
            failures += check_expect(case.expect, old, "old")
        if isinstance(new, Response):
            failures += check_expect(case.expect, new, "new")
    if isinstance(old, TransportError) or isinstance(new, TransportError):
        # Any failure of the side that did answer is kept for the report; the outcome is error.
        return CaseResult(case, "error", old, new, (), failures)
    differences = compare(old, new, case.compare)
    if failures:
        return CaseResult(case, "fail", old, new, differences, failures)
    if differences:
        return CaseResult(case, "diff", old, new, differences)
    return CaseResult(case, "match", old, new)


# --------------------------------------------------------------------------------------------
# The tally of a run
# --------------------------------------------------------------------------------------------

#: Histogram range in microseconds: 1 µs .. 10 minutes, 3 significant digits.
LOWEST_US = 1
HIGHEST_US = 10 * 60 * 1_000_000
SIGNIFICANT_DIGITS = 3
#: Distinct difference clusters kept; beyond this, differences count into `OTHER`.
MAX_CLUSTERS = 10_000
#: Example case ids kept per cluster.
MAX_EXAMPLES = 3
#: The cluster key that absorbs everything past `MAX_CLUSTERS`.
OTHER: SignatureKey = ("(other)", "(other)", "(other)", "(other)")

TARGETS = ("old", "new")

ClusterKey = SignatureKey  # (case template, kind, generalized location, shape of the change)


@dataclass(frozen=True)
class TopRow:
    """One difference signature of a run: how many cases, which ones, and what changed."""

    key: SignatureKey
    count: int
    examples: tuple[str, ...]
    example_change: str

    @property
    def id(self) -> str:
        return signature_id(self.key)


class _Cluster:
    __slots__ = ("count", "example_change", "examples")

    def __init__(self, example_change: str) -> None:
        self.count = 0
        self.examples: list[str] = []
        self.example_change = example_change


class _Latency:
    """One target's latencies: an HdrHistogram for percentiles, exact sum/max beside it.

    Samples are first counted per histogram bucket in a small dict (keyed by the bucket's lowest
    value, which lands in the same bucket) and added to the histogram in bulk before any read:
    the bucket counts, hence every percentile, are exactly those of one ``record_value`` per
    sample, but the pure-Python ``record_value`` (~20x a dict increment) runs once per bucket
    instead of twice per case. Only the histogram's own min/max would differ; they are not used
    (``max_us`` is kept exactly, beside it).
    """

    __slots__ = ("_bits", "_unit", "histogram", "max_us", "pending", "sum_us")

    #: Distinct pending buckets that force a flush into the histogram (bounds the dict).
    PENDING_MAX = 8192

    def __init__(self) -> None:
        self.histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        self.sum_us = 0
        self.max_us = 0
        self.pending: dict[int, int] = {}  # bucket's lowest µs -> samples not yet recorded
        # HdrHistogram's layout: a value's bucket is 2**shift wide, where
        # shift = max(bit_length(value) - (sub_bucket_half_count_magnitude + 1), unit_magnitude)
        self._bits = int(self.histogram.sub_bucket_half_count_magnitude) + 1
        self._unit = int(self.histogram.unit_magnitude)

    def record(self, latency_ms: float) -> None:
        raw = latency_ms * 1000.0
        if math.isnan(raw):
            return  # a broken clock reading is no sample; skipping it never helps a gate pass
        # Clamp into the histogram's range (comparisons first, so +-inf never reaches round()).
        us = HIGHEST_US if raw >= HIGHEST_US else LOWEST_US if raw <= LOWEST_US else round(raw)
        shift = us.bit_length() - self._bits
        if shift < self._unit:
            shift = self._unit
        bucket = us >> shift << shift
        pending = self.pending
        pending[bucket] = pending.get(bucket, 0) + 1
        if len(pending) >= self.PENDING_MAX:
            self._flush()
        self.sum_us += us
        if us > self.max_us:
            self.max_us = us

    def _flush(self) -> None:
        record = self.histogram.record_value
        for us, samples in self.pending.items():
            record(us, samples)
        self.pending.clear()

    @property
    def count(self) -> int:
        self._flush()
        return int(self.histogram.get_total_count())

    def percentile_us(self, percentile: float) -> int:
        self._flush()
        return int(self.histogram.get_value_at_percentile(percentile))

    def state(self) -> LatencyState:
        self._flush()
        encoded = self.histogram.encode()
        return LatencyState(
            encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded),
            int(self.histogram.get_total_count()),
            self.sum_us,
            self.max_us,
        )

    def absorb(self, state: LatencyState) -> None:
        if state.count:
            self._flush()
            self.histogram.decode_and_add(state.histogram)
        self.sum_us += state.sum_us
        self.max_us = max(self.max_us, state.max_us)

    def buckets(self) -> list[tuple[int, int]]:
        """``(bucket value, samples)`` ascending: the data of the latency-regression test."""
        self._flush()
        histogram = self.histogram
        # The counts array read directly: ~10x faster than hdrh's recorded iterator (a Python
        # object per step) and the same buckets; a bucket is named by its lowest value.
        value_at = histogram.get_value_from_index
        return [(int(value_at(i)), int(n)) for i, n in enumerate(histogram.counts) if n]


@dataclass(frozen=True)
class ErrorRow:
    """One error signature of a run: transport errors of one target, kind and reason, grouped
    like differences (309 refused connections are one row, not 309)."""

    target: str  # "old" | "new"
    kind: str  # connect | timeout | reset | tls | protocol | ...
    reason: str  # the message's reason part, numbers generalized: "connection refused"
    count: int  # cases
    example: str  # the first case id
    message: str  # that case's message, whole


_NUMBER = re.compile(r"\d+")


def error_reason(message: str) -> str:
    """What a transport error message says, without what varies per case: the part after its
    last ``: `` (the library's reason, not the address), numbers as ``N``."""
    reason = message.rsplit(": ", 1)[-1].strip() or message
    return _NUMBER.sub("N", reason)


class Tally:
    """Accumulates `CaseResult`s into totals, latencies, difference and error signatures."""

    def __init__(self, fallback: FallbackRule | None = None) -> None:
        self.counts: dict[str, int] = {"match": 0, "diff": 0, "fail": 0, "error": 0}
        self.accepted = 0  # matches that are matches only through accepted differences
        self.fallback = fallback  # how new shows a hand-off to old (targets.new.fallback)
        self.fallbacks = 0  # judged cases (outcome not error) whose new response was a fallback
        self.fallback_examples: list[str] = []
        self.top_differences: dict[ClusterKey, _Cluster] = {}
        self.errors: dict[tuple[str, str, str], ErrorRow] = {}  # (target, kind, reason)
        self._latency = {target: _Latency() for target in TARGETS}

    def add(self, result: CaseResult) -> None:
        """Count one result."""
        self.counts[result.outcome] += 1
        if result.accepted and result.outcome == "match":
            self.accepted += 1
        if isinstance(result.old, Response):
            self._latency["old"].record(result.old.latency_ms)
        if isinstance(result.new, Response):
            self._latency["new"].record(result.new.latency_ms)
        if result.differences:
            self._cluster(result)
        if result.outcome == "error":
            for target, exchange in (("old", result.old), ("new", result.new)):
                if isinstance(exchange, TransportError):
                    self._error(target, exchange, result.case.id)
        if (
            self.fallback is not None
            and result.outcome != "error"
            and isinstance(result.new, Response)
            and is_fallback(self.fallback, result.new)
        ):
            self.fallbacks += 1
            if len(self.fallback_examples) < MAX_EXAMPLES:
                self.fallback_examples.append(result.case.id)

    def _error(self, target: str, error: TransportError, case_id: str) -> None:
        key = (target, error.kind, error_reason(error.message))
        row = self.errors.get(key)
        if row is None:
            if len(self.errors) >= MAX_CLUSTERS:
                key = (target, error.kind, "(other)")
                row = self.errors.get(key)
            if row is None:
                row = ErrorRow(*key, 0, case_id, error.message)
        self.errors[key] = replace(row, count=row.count + 1)

    def top_errors(self) -> list[ErrorRow]:
        """Every error signature: most cases first, ties by key."""
        return sorted(self.errors.values(), key=lambda e: (-e.count, e.target, e.kind, e.reason))

    def _cluster(self, result: CaseResult) -> None:
        template = result.case.template
        seen: set[ClusterKey] = set()  # a case counts once per signature
        for difference in result.differences:
            key = signature_key(template, difference)
            cluster = self.top_differences.get(key)
            if cluster is None:
                if len(self.top_differences) >= MAX_CLUSTERS:
                    key = OTHER
                    cluster = self.top_differences.get(OTHER)
                if cluster is None:
                    cluster = self.top_differences[key] = _Cluster(example_change(difference))
            if key in seen:
                continue
            seen.add(key)
            cluster.count += 1
            if len(cluster.examples) < MAX_EXAMPLES:
                cluster.examples.append(result.case.id)

    @property
    def totals(self) -> Totals:
        c = self.counts
        cases = c["match"] + c["diff"] + c["fail"] + c["error"]
        return Totals(cases, c["match"], c["diff"], c["fail"], c["error"], self.accepted)

    def latency(self, target: str) -> dict[str, float | int | None]:
        """``{"p50", "p90", "p99", "max", "mean": ms or None, "count": n}`` for "old" or "new"."""
        latency = self._latency[target]
        count = latency.count
        if count == 0:
            return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None, "count": 0}
        return {
            "p50": latency.percentile_us(50) / 1000,
            "p90": latency.percentile_us(90) / 1000,
            "p99": latency.percentile_us(99) / 1000,
            "max": latency.max_us / 1000,
            "mean": round(latency.sum_us / count / 1000, 3),
            "count": count,
        }

    def percentile_us(self, target: str, percentile: float) -> int | None:
        """A latency percentile in whole µs, or None without samples."""
        latency = self._latency[target]
        return latency.percentile_us(percentile) if latency.count else None

    def latency_buckets(self, target: str) -> list[tuple[int, int]]:
        """One target's latencies as ``(bucket value in µs, samples)``, ascending."""
        return self._latency[target].buckets()

    def mean_us(self, target: str) -> float | None:
        """One target's exact mean latency in µs, or None without samples."""
        latency = self._latency[target]
        count = latency.count
        return latency.sum_us / count if count else None

    def new_signatures(self, baseline: frozenset[str]) -> list[str]:
        """Ids of this run's signatures that are not in ``baseline``; past `MAX_CLUSTERS` the
        overflow counts as one new signature (what it holds cannot be told apart)."""
        return sorted(
            sid
            for key in self.top_differences
            if (sid := signature_id(key)) not in baseline or key == OTHER
        )

    def top(self, n: int | None) -> list[TopRow]:
        """The ``n`` largest clusters (all with None): most cases first, ties by key."""
        ranked = sorted(self.top_differences.items(), key=lambda kv: (-kv[1].count, kv[0]))
        return [
            TopRow(key, cluster.count, tuple(cluster.examples), cluster.example_change)
            for key, cluster in ranked[:n]
        ]

    # -- a tally as a record, and tallies added together (`flamingo.merge`) ------------------

    def state(self) -> TallyState:
        """Everything this tally holds, as a record another tally can `absorb`."""
        return TallyState(
            counts=tuple((outcome, self.counts[outcome]) for outcome in OUTCOMES),
            accepted=self.accepted,
            latency=tuple((target, self._latency[target].state()) for target in TARGETS),
            clusters=tuple(self.top(None)),
            fallbacks=self.fallbacks,
            fallback_examples=tuple(self.fallback_examples),
            errors=tuple(self.top_errors()),
        )

    def absorb(self, state: TallyState) -> None:
        """Add another tally's state to this one: counters and histogram buckets add up, so
        totals and percentiles are those of one tally that was given every result.
        Clusters add by signature; past `MAX_CLUSTERS` distinct ones, new ones count into
        `OTHER`, as in `add` (which signatures those are can then depend on the order)."""
        for outcome, count in state.counts:
            self.counts[outcome] += count
        self.accepted += state.accepted
        self.fallbacks += state.fallbacks
        room = MAX_EXAMPLES - len(self.fallback_examples)
        self.fallback_examples.extend(state.fallback_examples[: max(room, 0)])
        for target, latency in state.latency:
            self._latency[target].absorb(latency)
        for error in state.errors:
            where = (error.target, error.kind, error.reason)
            mine = self.errors.get(where)
            self.errors[where] = (
                error if mine is None else replace(mine, count=mine.count + error.count)
            )
        for row in state.clusters:
            key = row.key
            cluster = self.top_differences.get(key)
            if cluster is None:
                if len(self.top_differences) >= MAX_CLUSTERS:
                    key = OTHER
                    cluster = self.top_differences.get(OTHER)
                if cluster is None:
                    cluster = self.top_differences[key] = _Cluster(row.example_change)
            cluster.count += row.count
            room = MAX_EXAMPLES - len(cluster.examples)
            if room > 0:
                cluster.examples.extend(row.examples[:room])


@dataclass(frozen=True)
class LatencyState:
    """One target's latencies as a record: HdrHistogram's own compressed base64 encoding
    (``HdrHistogram.encode``) and the exact count, sum and maximum kept beside it."""

    histogram: str
    count: int
    sum_us: int
    max_us: int


@dataclass(frozen=True)
class TallyState:
    """A `Tally` as plain data: what a shard or a worker hands over to be added up."""

    counts: tuple[tuple[str, int], ...]  # (outcome, cases), in `OUTCOMES` order
    accepted: int
    latency: tuple[tuple[str, LatencyState], ...]  # ("old", ...), ("new", ...)
    clusters: tuple[TopRow, ...]  # every signature cluster, largest first
    fallbacks: int = 0  # judged cases whose new response was a fallback (targets.new.fallback)
    fallback_examples: tuple[str, ...] = ()
    errors: tuple[ErrorRow, ...] = ()  # every error signature


# --------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------


def _exact(threshold: object) -> Fraction | float | None:
    """The threshold as an exact rational; None (never passes) when it is not a number."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        return None
    if isinstance(threshold, int):
        return Fraction(threshold)
    if math.isnan(threshold):
        return None
    if math.isinf(threshold):
        return threshold  # compares correctly with any Fraction: "no limit" / "impossible"
    # repr gives the shortest decimal that reads back as this float: 0.999 -> 999/1000.
    return Fraction(repr(threshold))


def _ratio(numerator: int | None, denominator: int | None) -> Fraction | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return Fraction(numerator, denominator)


def _observe(
    name: str, totals: Totals, tally: Tally, baseline: frozenset[str] | None
) -> Fraction | None:
    if name == "min_match_rate":
        return _ratio(totals.match, totals.cases - totals.error)
    if name == "max_error_rate":
        return _ratio(totals.error, totals.cases)
    if name == "min_cases":
        return Fraction(totals.cases)
    if name == "max_latency_ratio_p50":
        return _ratio(tally.percentile_us("new", 50), tally.percentile_us("old", 50))
    if name == "max_latency_ratio_p99":
        return _ratio(tally.percentile_us("new", 99), tally.percentile_us("old", 99))
    if name == "max_fallback_rate":
        return _ratio(tally.fallbacks, totals.cases - totals.error)
    if name == "max_new_signatures":
        # Without a baseline run nothing can be said to be new: not computable, never passes.
        return None if baseline is None else Fraction(len(tally.new_signatures(baseline)))
    raise ValueError(f"unknown gate threshold {name!r}")


def _check(name: str, threshold: Any, observed: Fraction | None) -> Check:
    limit = _exact(threshold)
    if observed is None or limit is None:
        passed = False
    elif name.startswith("min_"):
        passed = observed >= limit
    else:
        passed = observed <= limit
    shown: float | None
    if observed is None:
        shown = None
    elif name in ("min_cases", "max_new_signatures"):
        shown = int(observed)  # a count stays an integer in gate.json
    else:
        shown = round(float(observed), 6)
    return Check(name, threshold, shown, passed)


def evaluate_gate(
    thresholds: GateThresholds,
    stage: str | None,
    tally: Tally,
    *,
    complete: bool = True,
    reason: str = "",
    resources: ResourceScrapes | None = None,
    elapsed_s: float | None = None,
    baseline: frozenset[str] | None = None,
) -> GateResult:
    """The verdict of one gate over a run's tally (see the table in the module docstring), with
    the stage rules of `flamingo.stage` after it; a failed metrics scrape is an incomplete run."""
    totals = tally.totals
    checks = tuple(
        _check(name, threshold, _observe(name, totals, tally, baseline))
        for name in GATE_KEYS
        if (threshold := getattr(thresholds, name)) is not None
    ) + stage_checks(thresholds, tally, resources=resources, elapsed_s=elapsed_s)
    if resources is not None and resources.error and complete:
        complete, reason = False, resources.error
    if not complete:
        return GateResult("error", stage, totals, checks, reason or "the run did not complete")
    if not checks:
        return GateResult("fail", stage, totals, checks, "no gate thresholds configured")
    verdict: Verdict = "pass" if all(check.passed for check in checks) else "fail"
    judged = totals.cases - totals.error
    if verdict == "pass" and judged < 1:
        # Fail closed even when no threshold looks at errors: a run in which no case could be
        # judged (none selected, or every one a transport error) proves nothing.
        implicit = Check("min_judged_cases", 1, judged, False)
        reason = "no case could be judged (every case was a transport error, or none ran)"
        return GateResult("fail", stage, totals, (*checks, implicit), reason)
    return GateResult(verdict, stage, totals, checks)


def set_aside(result: CaseResult, kept: Sequence[Difference], **moved: Any) -> CaseResult:
    """A result with only ``kept`` differences left (the others moved to ``noise`` or
    ``accepted``): a ``diff`` with nothing left becomes a ``match``; error and fail stay."""
    outcome = result.outcome
    if outcome == "diff" and not kept:
        outcome = "match"
    return replace(result, differences=tuple(kept), outcome=outcome, **moved)


#: How a transport error kind reads in a one-line reason ("309 of 309 cases could not connect").
_ERROR_PHRASES = {
    "connect": "could not connect",
    "timeout": "timed out",
    "reset": "were cut off (reset or closed)",
    "tls": "failed TLS",
    "protocol": "got no valid HTTP response",
}


def gate_reason(gate: GateResult, errors: Sequence[ErrorRow]) -> str:
    """One line saying why a verdict is not ``pass`` ('' for a pass): the run's own reason when
    it did not complete; else the largest error signature (``new: 309 of 309 cases could not
    connect (connection refused)``) and the gate's reason or first failing check."""
    if gate.verdict == "pass":
        return ""
    if gate.verdict == "error":
        return gate.reason or "the run did not complete"
    said = []
    if errors:
        top = errors[0]
        phrase = _ERROR_PHRASES.get(top.kind, f"failed ({top.kind})")
        line = f"{top.target}: {top.count} of {gate.totals.cases} cases {phrase} ({top.reason})"
        if len(errors) > 1:
            line += f", and {len(errors) - 1} more error signature(s)"
        said.append(line)
    why = gate.reason
    failing = [c for c in gate.checks if not c.passed]
    if not why and failing:
        first = failing[0]
        more = f" (and {len(failing) - 1} more failing checks)" if len(failing) > 1 else ""
        observed, threshold = value_text(first.observed), value_text(first.threshold)
        why = f"{first.name} observed {observed}, threshold {threshold}"
        why += more
    if why:
        # Errors lead when they are most of the run (a target down); else the failing check.
        mostly_errors = 2 * gate.totals.error >= gate.totals.cases > 0
        said = [*said, why] if mostly_errors else [why, *said]
    parts = said
    return "; ".join(parts) or "the gate failed"


def value_text(value: object) -> str:
    """A check's threshold or observed value as text (the reason, the console, the page)."""
    if value is None:
        return "n/a"
    return f"{value:g}" if isinstance(value, float) else str(value)
