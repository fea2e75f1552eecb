"""Loading the stage-rule keys of targets.yaml (CONTRACT §3): values, and FILE:LINE errors."""

from __future__ import annotations

import pytest

from flamingo.errors import InputError
from flamingo.load import parse_config
from flamingo.model import FallbackRule, LatencyRegression, ResourceBound

FULL = """\
targets:
  old:
    base_url: http://127.0.0.1:1
    metrics_url: http://127.0.0.1:9100/metrics
  new:
    base_url: http://127.0.0.1:2
    fallback: { header: X-Fallback, value: "1" }
    metrics_url: http://127.0.0.1:9101/metrics?format=text
gates:
  default:
    min_match_rate: 0.99
  stages:
    canary:
      min_duration: 5m
      max_fallback_rate: 0.01
      max_latency_regression: { p: 0.01, effect: 1.1 }
      resources:
        process_resident_memory_bytes: { max_ratio_new_to_old: 1.1 }
        'http_requests_total{code="500"}': { max_new: 0.5 }
"""


def test_stage_rules_load() -> None:
    config = parse_config(FULL, "t.yaml", env={})
    assert config.new.fallback == FallbackRule(header="x-fallback", value="1")
    assert config.old.metrics_url == "http://127.0.0.1:9100/metrics"
    canary = config.gate("canary")
    assert canary.min_duration == 300.0
    assert canary.max_fallback_rate == 0.01
    assert canary.max_latency_regression == LatencyRegression(p=0.01, effect=1.1)
    assert canary.resources == (
        ResourceBound("process_resident_memory_bytes", max_ratio_new_to_old=1.1),
        ResourceBound('http_requests_total{code="500"}', max_new=0.5),
    )
    assert canary.min_match_rate == 0.99  # inherited from the default gate
    assert config.gate(None).resources == ()
    # The fallback marker is counted, not compared.
    assert "x-fallback" in config.compare.ignore_headers


def test_fallback_by_status() -> None:
    text = FULL.replace('{ header: X-Fallback, value: "1" }', "{ status: 299 }")
    assert parse_config(text, "t.yaml", env={}).new.fallback == FallbackRule(status=299)


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ('{ header: X-Fallback, value: "1" }', "{ status: 200, header: X }", 7, "exactly one of"),
        ('{ header: X-Fallback, value: "1" }', "{ status: 700 }", 7, "100-599"),
        ('{ header: X-Fallback, value: "1" }', '{ header: "bad name" }', 7, "invalid header"),
        ('{ header: X-Fallback, value: "1" }', "{ colour: red }", 7, "colour"),
        ("metrics_url: http://127.0.0.1:9100/metrics", "metrics_url: ftp://x/m", 4, "http://"),
        ("{ p: 0.01, effect: 1.1 }", "{ p: 1, effect: 1.1 }", 16, "below 1"),
        ("{ p: 0.01, effect: 1.1 }", "{ p: 0.01 }", 16, "effect"),
        ("{ p: 0.01, effect: 1.1 }", "{ p: 0.01, effect: 0 }", 16, "> 0"),
        ("min_duration: 5m", "min_duration: soon", 14, "duration"),
        ("max_fallback_rate: 0.01", "max_fallback_rate: 2", 15, "between 0 and 1"),
        ("{ max_ratio_new_to_old: 1.1 }", "{ max_ration: 1.1 }", 18, "max_ration"),
        ("{ max_ratio_new_to_old: 1.1 }", "{}", 18, "at least one"),
        ("process_resident_memory_bytes:", "'bad name{':", 18, "metric name"),
    ],
)
def test_stage_rule_errors(old: str, new: str, line: int, message: str) -> None:
    assert old in FULL
    with pytest.raises(InputError) as info:
        parse_config(FULL.replace(old, new), "t.yaml", env={})
    assert info.value.line == line, str(info.value)
    assert message in str(info.value)
    assert str(info.value).startswith(f"t.yaml:{line}: ")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('    fallback: { header: X-Fallback, value: "1" }\n', "", "needs targets.new.fallback"),
        (
            "    metrics_url: http://127.0.0.1:9100/metrics\n",
            "",
            "needs targets.old.metrics_url",
        ),
        (
            "    metrics_url: http://127.0.0.1:9101/metrics?format=text\n",
            "",
            "need targets.new.metrics_url",
        ),
    ],
)
def test_rules_the_targets_cannot_serve_are_input_errors(old: str, new: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_config(FULL.replace(old, new), "t.yaml", env={})
    assert message in str(info.value)
    assert info.value.line == 13  # the stage that asks (canary:)
