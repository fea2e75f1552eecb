"""Tests of flamingo.merge's pure part: partial runs added up equal one run over every result."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flamingo import judge
from flamingo.errors import InputError
from flamingo.judge import Tally
from flamingo.merge import (
    PartialRun,
    RunIdentity,
    check_parts,
    fingerprint,
    merge_accepted,
    merge_parts,
    part_from_view,
    part_view,
)
from flamingo.model import (
    Case,
    CaseResult,
    CompareRules,
    Difference,
    GateThresholds,
    Outcome,
    Response,
    TransportError,
)
from flamingo.noise import NoiseModel
from flamingo.regex import Regex
from flamingo.select import select, shard_index

OUTCOMES: tuple[Outcome, ...] = ("match", "diff", "fail", "error")


def resp(latency_ms: float, status: int = 200, body: bytes = b"{}") -> Response:
    return Response(status, "OK", (("content-type", "application/json"),), body, latency_ms)


def result(i: int, outcome: Outcome, latency_old: float, latency_new: float) -> CaseResult:
    template = f"s::t{i % 7}"
    case = Case(id=f"s::c{i}", suite="s", name=f"c{i}", template=template, method="GET", path="/")
    diffs: tuple[Difference, ...] = ()
    if outcome in ("diff", "fail"):
        diffs = (
            Difference("header", "x-cache", "HIT", None),
            Difference("body", f"$.items[{i % 3}].id", i, str(i)),
        )
    new: Response | TransportError = resp(latency_new)
    if outcome == "error":
        new = TransportError("connect", "refused", latency_new)
    return CaseResult(case, outcome, resp(latency_old), new, diffs)


def results(n: int, seed: int) -> list[CaseResult]:
    rng = random.Random(seed)
    return [
        result(i, rng.choice(OUTCOMES), rng.lognormvariate(1, 1), rng.lognormvariate(1.2, 1))
        for i in range(n)
    ]


IDENTITY = RunIdentity("0.1.0", "cfg", "suites")
GATES = (
    (None, GateThresholds(min_match_rate=0.5, min_cases=1, max_latency_ratio_p99=2.0)),
    ("canary", GateThresholds(min_match_rate=0.1, min_cases=1)),
)


def part(
    tally: Tally,
    noise: NoiseModel | None = None,
    shard: tuple[int, int] | None = None,
    accepted: dict[str, Any] | None = None,
    **changes: Any,
) -> PartialRun:
    made = PartialRun(
        identity=dataclasses.replace(IDENTITY, shard=shard),
        tally=tally.state(),
        noise=(noise or NoiseModel()).state(),
        accepted=accepted,
        selected=tally.totals.cases,
        complete=True,
        reason="",
        started_at="2026-11-27T10:00:00.000Z",
        finished_at="2026-11-27T10:00:05.500Z",
        elapsed_s=5.5,
        gates=GATES,
        targets={"old": "http://old", "new": "http://new"},
        settings={"concurrency": 10},
        source=f"out/{shard[0]}" if shard else "out",
    )
    return dataclasses.replace(made, **changes)


def split(items: list[CaseResult], n: int) -> list[Tally]:
    tallies = [Tally() for _ in range(n)]
    for item in items:
        tallies[shard_index(item.case.id, n) - 1].add(item)
    return tallies


# --------------------------------------------------------------------------------------------
# The tally: shards added up equal one tally given every result
# --------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 400), st.integers(1, 6), st.integers(0, 2**16))
def test_merged_tally_equals_one_tally(n: int, shards: int, seed: int) -> None:
    items = results(n, seed)
    whole = Tally()
    for item in items:
        whole.add(item)
    parts = [part(t, shard=(k, shards)) for k, t in enumerate(split(items, shards), start=1)]
    merged = merge_parts(parts).tally
    assert merged.totals == whole.totals
    for target in ("old", "new"):
        assert merged.latency(target) == whole.latency(target)  # same buckets: same percentiles
    assert [(r.key, r.count) for r in merged.top(None)] == [
        (r.key, r.count) for r in whole.top(None)
    ]
    assert merged.state().latency == whole.state().latency


def test_merged_gate_is_the_gate_of_the_whole() -> None:
    items = results(300, 7)
    whole = Tally()
    for item in items:
        whole.add(item)
    merged = merge_parts([part(t, shard=(k, 3)) for k, t in enumerate(split(items, 3), 1)])
    for stage in (None, "canary"):
        thresholds = dict(GATES)[stage]
        assert merged.gate(stage) == judge.evaluate_gate(thresholds, stage, whole)
    with pytest.raises(InputError, match=r"unknown stage 'nope' \(stages: canary\)"):
        merged.gate("nope")


def test_clusters_beyond_the_limit_fold_into_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(judge, "MAX_CLUSTERS", 2)
    a, b = Tally(), Tally()
    a.add(result(0, "diff", 1, 1))  # two signatures
    b.add(
        dataclasses.replace(
            result(1, "diff", 1, 1),
            case=dataclasses.replace(result(1, "diff", 1, 1).case, template="s::other"),
        )
    )
    merged = merge_parts([part(a, shard=(1, 2)), part(b, shard=(2, 2))]).tally
    keys = [row.key for row in merged.top(None)]
    assert judge.OTHER in keys and len(keys) == 3
    assert sum(row.count for row in merged.top(None)) == 4


def test_examples_are_kept_in_shard_order_up_to_the_limit() -> None:
    tallies = [Tally() for _ in range(3)]
    for k, tally in enumerate(tallies):
        for i in range(2):
            tally.add(
                dataclasses.replace(
                    result(10 * k + i, "diff", 1, 1),
                    case=Case(
                        id=f"s::{k}-{i}",
                        suite="s",
                        name="x",
                        template="s::t",
                        method="GET",
                        path="/",
                    ),
                )
            )
    merged = merge_parts([part(t, shard=(k, 3)) for k, t in enumerate(tallies, 1)]).tally
    row = merged.top(1)[0]
    assert row.count == 6
    assert row.examples == ("s::0-0", "s::0-1", "s::1-0")


# --------------------------------------------------------------------------------------------
# Noise: observations add up
# --------------------------------------------------------------------------------------------

NOISY = CompareRules(noise=True)


def sample(i: int, vary: bool) -> tuple[Response, Response]:
    a = json.dumps({"id": i, "t": 1}).encode()
    b = json.dumps({"id": i, "t": 2 if vary else 1}).encode()
    return resp(1, body=a), resp(1, body=b)


def test_noise_observations_add_up_to_the_whole_model() -> None:
    whole, parts = NoiseModel(), [NoiseModel(), NoiseModel()]
    for i in range(40):
        old, replica = sample(i, vary=i % 5 == 0)
        template = f"s::t{i % 3}"
        whole.observe(template, old, replica, NOISY)
        parts[i % 2].observe(template, old, replica, NOISY)
    merged = merge_parts(
        [part(Tally(), noise=m, shard=(k, 2)) for k, m in enumerate(parts, start=1)]
    ).noise
    assert merged.samples == whole.samples
    strip = [dataclasses.replace(e, examples=()) for e in merged.entries()]
    assert strip == [dataclasses.replace(e, examples=()) for e in whole.entries()]
    assert sorted(e.examples for e in merged.entries()) == sorted(
        e.examples for e in whole.entries()
    )


def noisy_case(i: int, template: str) -> Case:
    return Case(
        id=f"s::{template}-{i}",
        suite="s",
        name=str(i),
        template=template,
        method="GET",
        path="/",
        compare=NOISY,
    )


def test_shards_keep_a_noise_learning_template_together() -> None:
    cases = [noisy_case(i, f"s::t{i % 5}") for i in range(200)]
    plain = [
        Case(id=f"s::p{i}", suite="s", name=str(i), template="s::p", method="GET", path="/")
        for i in range(200)
    ]
    for k in range(1, 5):
        chosen = list(select(cases + plain, shard=(k, 4)))
        templates = {c.template for c in chosen if c.compare.noise}
        for template in templates:  # every case of the template, or none
            assert sum(c.template == template for c in chosen) == 40
    # cases that learn no noise are spread by id, as before
    spread = [sum(1 for _ in select(plain, shard=(k, 4))) for k in range(1, 5)]
    assert all(20 < n < 80 for n in spread)


# --------------------------------------------------------------------------------------------
# Accepted differences
# --------------------------------------------------------------------------------------------


def entry(index: int, **more: Any) -> dict[str, Any]:
    return {
        "entry": index,
        "source": f"a.yaml:{index}",
        "template": "*",
        "location": "server",
        "reason": "r",
        **more,
    }


def test_accepted_use_adds_up_and_stale_means_unused_everywhere() -> None:
    one = {
        "used": [{**entry(0), "differences": 3}],
        "expired": [entry(2)],
        "stale": [entry(1), entry(3)],
    }
    two = {
        "used": [{**entry(0), "differences": 2}, {**entry(1), "differences": 1}],
        "expired": [entry(2)],
        "stale": [entry(3)],
    }
    assert merge_accepted([one, two]) == {
        "used": [{**entry(0), "differences": 5}, {**entry(1), "differences": 1}],
        "expired": [entry(2)],
        "stale": [entry(3)],
    }
    assert merge_accepted([None, None]) is None


# --------------------------------------------------------------------------------------------
# What cannot be one run is refused, naming the part at fault
# --------------------------------------------------------------------------------------------


def three() -> list[PartialRun]:
    return [part(Tally(), shard=(k, 3)) for k in (1, 2, 3)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"flamingo_version": "0.2.0"},
            r"shard 3/3 \(out/3\) and shard 1/3 \(out/1\) were made by different flamingo versions",
        ),
        ({"config_hash": "x"}, "ran with different config"),
        ({"suites_hash": "x"}, "ran different suites"),
        ({"keyword": "api"}, r"selected different cases \(-k, --tag\)"),
        ({"tags": ("smoke",)}, "selected different cases"),
        ({"shard": (3, 4)}, "were split into different numbers of shards"),
        ({"shard": (2, 3)}, r"shard 2/3 was given twice: out/2 and out/3"),
    ],
)
def test_parts_that_are_not_one_run_are_refused(change: dict[str, Any], message: str) -> None:
    parts = three()
    parts[2] = dataclasses.replace(
        parts[2], identity=dataclasses.replace(parts[2].identity, **change)
    )
    with pytest.raises(InputError, match=message):
        check_parts(parts)


def test_a_missing_shard_is_named() -> None:
    parts = three()
    with pytest.raises(
        InputError, match=r"^cannot merge: shard 2/3 is missing \(given: 1/3, 3/3\)$"
    ):
        check_parts([parts[0], parts[2]])
    with pytest.raises(InputError, match=r"shards 1/3, 2/3 are missing \(given: 3/3\)"):
        check_parts([parts[2]])
    with pytest.raises(InputError, match="no runs given"):
        check_parts([])


def test_an_unsharded_run_merges_alone_only() -> None:
    whole = part(Tally())
    check_parts([whole])
    with pytest.raises(InputError, match=r"unsharded run \(out\) ran every case"):
        check_parts([whole, three()[0]])


def test_an_incomplete_shard_makes_the_merge_an_error() -> None:
    parts = three()
    parts[1] = dataclasses.replace(parts[1], complete=False, reason="interrupted by SIGTERM")
    merged = merge_parts(parts)
    assert merged.gate(None).verdict == "error"
    assert merged.reason == "shard 2/3 (out/2): interrupted by SIGTERM"
    parts = three()
    parts[0] = dataclasses.replace(parts[0], selected=5)
    assert merge_parts(parts).reason == "shard 1/3 (out/1): judged 0 of 5 cases"


def test_time_span_covers_every_part() -> None:
    parts = three()
    parts[2] = dataclasses.replace(
        parts[2], started_at="2026-11-27T09:59:58.000Z", finished_at="2026-11-27T10:00:09.000Z"
    )
    merged = merge_parts(parts)
    assert (merged.started_at, merged.finished_at, merged.elapsed_s) == (
        "2026-11-27T09:59:58.000Z",
        "2026-11-27T10:00:09.000Z",
        11.0,
    )


# --------------------------------------------------------------------------------------------
# partial.json: a round trip, and malformed input is bad input, never a crash
# --------------------------------------------------------------------------------------------


def test_part_view_round_trips() -> None:
    tally = Tally()
    for item in results(50, 3):
        tally.add(item)
    noise = NoiseModel()
    old, replica = sample(1, vary=True)
    noise.observe("s::t", old, replica, NOISY)
    accepted = {"used": [{**entry(0), "differences": 1}], "expired": [], "stale": []}
    original = part(tally, noise, shard=(2, 3), accepted=accepted, peak_rss_mb=40.5)
    view = json.loads(json.dumps(part_view(original)))
    assert part_from_view(view, "out/2") == original


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda v: v.update(format=9), "format 9 is not the format this flamingo reads"),
        (lambda v: v.pop("run"), "run: missing"),
        (lambda v: v["run"].update(shard="4/3"), "run.shard: expected K/N, got '4/3'"),
        (lambda v: v["totals"].update(match=-1), "totals.match: expected a count >= 0"),
        (lambda v: v["totals"].update(diff=True), "totals.diff: expected an integer"),
        (
            lambda v: v["latency"]["old"].update(histogram=5),
            "latency.old.histogram: unexpected value",
        ),
        (lambda v: v["gates"].reverse(), "gates: the default gate must come first"),
        (lambda v: v["gates"][0]["thresholds"].update(max_bogus=1), "unknown keys"),
        (lambda v: v["noise"]["samples"].update(t="x"), "noise.samples: expected counts"),
        (lambda v: v.update(signatures=[{"template": "t"}]), "signatures\\[\\].kind: missing"),
    ],
)
def test_malformed_partials_are_input_errors(mutate: Any, message: str) -> None:
    view = json.loads(
        json.dumps(
            part_view(
                part(Tally(), shard=(1, 2), accepted={"used": [], "expired": [], "stale": []})
            )
        )
    )
    mutate(view)
    with pytest.raises(InputError, match=message) as info:
        part_from_view(view, "out/1")
    assert str(info.value).startswith("out/1: ")


# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:  # named like flamingo's own: where-fields are left out
    path: str
    secrets: tuple[str, ...]
    url: str
    names: frozenset[str]
    pattern: Regex


def test_fingerprint_ignores_where_and_secrets_but_not_what() -> None:
    base = Config(
        "/a/targets.yaml", ("tok",), "http://h/tok", frozenset({"a", "b", "c"}), Regex("x+")
    )
    same = Config(
        "/b/targets.yaml",
        ("other",),
        "http://h/other",
        frozenset({"c", "b", "a"}),
        Regex("x+"),
    )
    assert fingerprint(base, ["tok"]) == fingerprint(same, ["other"])
    assert "tok" not in json.dumps(fingerprint(base, ["tok"]))
    changed = dataclasses.replace(same, pattern=Regex("x*"))
    assert fingerprint(changed, ["other"]) != fingerprint(same, ["other"])
    assert fingerprint(dataclasses.replace(same, url="http://g/other"), ["other"]) != fingerprint(
        same, ["other"]
    )


def test_an_evidence_store_of_concatenated_stores_reads_whole(tmp_path: Any) -> None:
    """`flamingo merge` writes each shard's evidence store after the other: one gzip member
    each; reading goes on past the end of the first."""
    import gzip

    from flamingo.report.evidence import FILE_NAME, find_evidence, read_evidence

    with open(tmp_path / FILE_NAME, "wb") as out:
        for shard in range(3):
            lines = "".join(json.dumps({"id": f"s{shard}-{i}"}) + "\n" for i in range(200))
            out.write(gzip.compress(lines.encode()))
    ids = [record["id"] for record in read_evidence(tmp_path)]
    assert ids == [f"s{shard}-{i}" for shard in range(3) for i in range(200)]
    assert set(find_evidence(tmp_path, {"s2-199", "s0-0"})) == {"s2-199", "s0-0"}


def test_what_time_taught_the_noise_model_survives_the_round_trip_and_adds_up() -> None:
    """Noise learned from time (repeats over time, timestamps of now, value shapes) is merged
    like old-vs-old counts, so the merged noise rows say what a single run would."""
    from flamingo.noise import NoiseObservation, NoiseState

    observation = NoiseObservation(
        "s::t", "body", "$.now", 0, ("1",), "", shapes=("epoch-ms",), over_time=2, timely=3,
        time_shape="epoch-ms",
    )  # fmt: skip
    state = NoiseState((("s::t", 4),), (observation,), (("s::t", 5),))
    original = dataclasses.replace(part(Tally(), shard=(1, 2)), noise=state)
    again = part_from_view(json.loads(json.dumps(part_view(original))), "out/1")
    assert again.noise == state
    merged = merge_parts(
        [
            again,
            dataclasses.replace(again, identity=dataclasses.replace(again.identity, shard=(2, 2))),
        ]
    ).noise
    (row,) = merged.entries()
    assert (row.location, row.samples) == ("$.now", 8)
    assert (
        "over time: 4 of 10 repeats" in row.evidence and "time: 6 x both epoch-ms" in row.evidence
    )
