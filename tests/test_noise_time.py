"""Noise that sees time: value shapes, repeats over time, recordings, stopped clocks.

Pure tests from literal exchanges with a fixed time window (no clock), then the clock origin
(`flamingo.demo.clock`) end to end: noisy but honest answers match with no ignore rule, planted
regressions of shape are caught.
"""

from __future__ import annotations

import itertools
import json
import uuid
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from flamingo.demo.clock import clock_run, running_clock
from flamingo.judge import judge_case
from flamingo.model import Case, CaseResult, CompareRules, Response
from flamingo.noise import NoiseLearner, NoiseModel, filter_noise
from flamingo.shape import TimeWindows, shape

NOW = 1_795_880_000.0
WINDOW = TimeWindows(((NOW, NOW + 3600),))
NOISY = CompareRules(noise=True)


def _resp(body: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> Response:
    headers = (("Content-Type", "application/json"), *headers)
    return Response(200, "OK", headers, json.dumps(body).encode(), 1.0)


def _case(k: int) -> Case:
    return Case(f"s::clock#{k}", "s", "clock", "s::clock", "GET", "/clock", compare=NOISY)


def _clock(ms: float) -> dict[str, Any]:
    return {"msec": int(ms), "request_id": uuid.uuid4().hex}


def _judge(
    pairs: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]],
    windows: TimeWindows = WINDOW,
) -> tuple[list[CaseResult], NoiseModel]:
    """(old, old again, new) bodies of one repeated case, judged in order with noise learning."""
    model = NoiseModel(windows=windows)
    learner = NoiseLearner(model)
    results: list[CaseResult] = []
    for k, (old, replica, new) in enumerate(pairs, start=1):
        result = judge_case(_case(k), _resp(old), _resp(new))
        results.extend(learner.add(result, _resp(replica)))
    results.extend(learner.flush())
    return results, model


def _ticks(
    n: int, new: Any = "same"
) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """A millisecond clock read 100 ms apart per case; old and its twin agree (no straddle),
    new is read a few ms later (or as ``new`` says)."""
    rows = []
    for k in range(n):
        t = NOW * 1000 + k * 100
        value = t + 3 if new == "same" else new(k, t)
        rows.append((_clock(t), _clock(t), {**_clock(t), "msec": value}))
    return rows


def test_a_timestamp_of_now_is_noise_with_no_count_and_says_so() -> None:
    results, model = _judge(_ticks(30))
    assert {r.outcome for r in results} == {"match"}
    (entry,) = [e for e in model.entries() if e.location == "$.msec"]
    assert entry.differing == 0  # never differed between two old answers ...
    assert "time: 30 x both epoch-ms of now" in entry.evidence  # ... learned from time
    assert "over time: 29 of 29 repeats" in entry.evidence
    rid = next(e for e in model.entries() if e.location == "$.request_id")
    assert rid.evidence.startswith("old vs old: 30 of 30") and "old shapes: hex" in rid.evidence


@pytest.mark.parametrize(
    ("new", "caught", "why"),
    [
        (lambda k, t: None, 30, "timestamp -> null"),
        (lambda k, t: 0, 30, "timestamp -> 0 (1970: outside the run's time)"),
        (lambda k, t: "soon", 30, "timestamp -> text"),
        (lambda k, t: NOW * 1000 - 60_000, 30, "a clock that stopped a minute ago"),
        # Caught once old has moved on by STOPPED_S (2 s: cases 21-30 here), not before: a
        # clock read 50 ms late and one that stopped 50 ms ago look alike until then.
        (lambda k, t: NOW * 1000 + 50, 10, "a clock that stopped during the run"),
    ],
)
def test_a_timestamp_that_changes_shape_or_stops_is_caught(new: Any, caught: int, why: str) -> None:
    # The location is noisy on old too (old and its twin straddle a tick now and then).
    rows = _ticks(30, new)
    for k in range(0, 30, 3):
        rows[k][1]["msec"] += 1
    results, _ = _judge(rows)
    found = [r for r in results if r.outcome == "diff"]
    assert len(found) >= caught, why
    assert all(d.location == "$.msec" for r in found for d in r.differences)
    assert "s::clock#30" in {r.case.id for r in found}


def test_concurrent_cases_sharing_a_millisecond_are_not_a_stopped_clock() -> None:
    # Twenty cases in flight at once: new's clock reads the same millisecond for several while
    # old's moves a little - a tick, not a stop.
    rows = []
    for k in range(30):
        t = NOW * 1000 + k // 5
        rows.append((_clock(t + k % 5), _clock(t + k % 5), {**_clock(t), "msec": int(t)}))
    results, _ = _judge(rows)
    assert {r.outcome for r in results} == {"match"}


def test_ids_change_shape_is_caught_even_where_old_varies() -> None:
    rows = [
        (_clock(NOW * 1000), _clock(NOW * 1000), {**_clock(NOW * 1000), "request_id": ""})
        for _ in range(12)
    ]
    results, _ = _judge(rows)
    assert {r.outcome for r in results} == {"diff"}
    assert {d.location for r in results for d in r.differences} == {"$.request_id"}


def test_a_stable_field_with_an_id_shape_stays_compared() -> None:
    # An entity's uuid that never changes on old: another uuid on new is a regression.
    fixed = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    other = "9a8b7c6d-4f89-11d3-9a0c-0305e82c3301"
    rows = [({"owner": fixed}, {"owner": fixed}, {"owner": other}) for _ in range(12)]
    results, _ = _judge(rows)
    assert {r.outcome for r in results} == {"diff"}


def test_a_date_outside_every_window_is_a_constant() -> None:
    rows = [
        ({"modified": "Wed, 01 Jan 2025 00:00:00 GMT"},) * 2
        + ({"modified": "Thu, 02 Jan 2025 00:00:00 GMT"},)
        for _ in range(12)
    ]
    results, _ = _judge(rows)  # type: ignore[arg-type]
    assert {r.outcome for r in results} == {"diff"}


def test_a_recording_from_yesterday_against_now() -> None:
    yesterday = NOW - 86_400
    rows = []
    for k in range(12):
        then, now = yesterday * 1000 + k * 100, NOW * 1000 + k * 100
        date_then = "Fri, 27 Nov 2026 15:33:20 GMT"
        rows.append(
            (
                {**_clock(then), "d": date_then},
                {**_clock(then + 1), "d": date_then},
                {**_clock(now), "d": "Sat, 28 Nov 2026 15:33:21 GMT"},
            )
        )
    results, _ = _judge(rows, WINDOW)  # the recording's time unknown: yesterday is not now
    assert {r.outcome for r in results} == {"diff"}
    results, _ = _judge(rows, WINDOW.plus(yesterday, yesterday + 60))
    assert {r.outcome for r in results} == {"match"}


# --------------------------------------------------------------------------------------------
# End to end: the clock origin
# --------------------------------------------------------------------------------------------


def test_clock_endpoint_matches_with_no_ignore_rule_and_planted_changes_are_caught(
    tmp_path: Path,
) -> None:
    with running_clock("ok") as old, running_clock("ok") as new:
        for _ in range(5):  # bench/clock_noise.py runs it 20 times and counts
            assert clock_run(old, new, tmp_path).gate.totals.match == 30
    for mode in ("null", "constant", "empty-id", "lifetime"):
        with running_clock("ok") as old, running_clock(mode) as new:
            totals = clock_run(old, new, tmp_path).gate.totals
            assert totals.diff >= 20, (mode, totals)


# --------------------------------------------------------------------------------------------
# Lifetimes: how far ahead of its own Date a timestamp stands
# --------------------------------------------------------------------------------------------


def _http_date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


def _dated(date: float | None, expires: float, body_ahead: float) -> Response:
    headers = [("Expires", _http_date(expires))]
    if date is not None:
        headers.append(("Date", _http_date(date)))
    return _resp({"expires_at": int(body_ahead * 1000)}, tuple(headers))


@pytest.mark.parametrize(
    ("old", "new", "noise"),
    [
        # (Date, Expires, expires_at) of each side, seconds after NOW
        ((0, 3600, 3600), (1, 3601, 3601), True),  # one lifetime, a tick straddled
        ((0, 3600, 3600), (0, 3630, 3630), True),  # within the tolerance (clock skew)
        ((0, 3600, 3600), (0, 300, 300), False),  # an hour cut to five minutes
        ((0, 300, 300), (0, 3600, 3600), False),  # ... or raised
        ((-300, 3300, 3300), (0, 3600, 3600), True),  # a cached copy: its own Date, same lifetime
        ((0, 10, 10), (0, 40, 40), True),  # both within a minute of now: timestamps of now
        ((None, 3600, 3600), (None, 300, 300), True),  # no Date: nothing says how far ahead
    ],
)
def test_a_lifetime_change_is_a_difference_a_straddled_tick_is_not(
    old: tuple[float | None, float, float], new: tuple[float | None, float, float], noise: bool
) -> None:
    def side(date: float | None, expires: float, ahead: float) -> Response:
        return _dated(None if date is None else NOW + date, NOW + expires, NOW + ahead)

    result = judge_case(_case(1), side(*old), side(*new))
    located = {d.location for d in result.differences} - {"date"}
    assert located == {"expires", "$.expires_at"}
    kept = filter_noise(result, NoiseModel(windows=WINDOW.plus(NOW, NOW + 86_400)))
    left = {d.location for d in kept.differences} - {"date"}
    assert left == (set() if noise else located)


def test_lifetimes_that_vary_on_old_are_noise_on_new() -> None:
    """A token whose expiry is jittered (an hour, plus up to another): old's own answers, read
    together, stand at different distances ahead of their Date - the location's lifetime is
    itself volatile, so new's differing one is noise, not a change."""
    jitter = itertools.cycle([17, 2900, 1410, 333, 2222, 61, 3100, 980, 1800, 45, 2600, 700, 5])

    def answer(k: int) -> Response:
        return _dated(NOW + k, NOW + k + 3600 + next(jitter), NOW + k + 3600 + next(jitter))

    model = NoiseModel(windows=WINDOW.plus(NOW, NOW + 86_400))
    learner = NoiseLearner(model)
    results: list[CaseResult] = []
    for k in range(1, 13):
        results.extend(learner.add(judge_case(_case(k), answer(k), answer(k)), answer(k)))
    results.extend(learner.flush())
    assert {r.outcome for r in results} == {"match"}, [r.differences for r in results]
    rows = {e.location: e.evidence for e in model.entries()}
    assert "lifetimes differ on old" in rows["expires"]


@pytest.mark.parametrize(
    "value",
    ["Mon, 01 Jan 99999999999999999999 00:00:00 GMT", "99999-01-01T00:00:00Z", 10**400],
)
def test_a_time_beyond_any_clock_is_no_shape_and_no_crash(value: Any) -> None:
    """A target may answer a date no datetime holds, or an integer no float holds: not a time
    (it used to raise OverflowError out of noise learning and end the run as a harness error)."""
    assert shape(value, WINDOW.plus(0, 2e10)) is None
    results, _ = _judge([({"t": value}, {"t": value}, {"t": "other"})])
    assert [r.outcome for r in results] == ["diff"]
