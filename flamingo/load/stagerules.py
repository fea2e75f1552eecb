"""The stage-rule keys of targets.yaml (CONTRACT §3): a target's ``fallback`` and
``metrics_url``; a gate's ``max_fallback_rate``, ``max_latency_regression``, ``resources`` and
``min_duration``; and the checks between them (a rule that could never be computed is an input
error here, not a gate that can never pass)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from flamingo.load.validate import (
    _TOKEN_RE,
    Rule,
    _apply,
    _At,
    _check_keys,
    _duration,
    _header_value_text,
    _int_at_least,
    _mapping,
    _non_empty_string,
    _number,
    _optional,
    _show,
    _string,
)
from flamingo.model import (
    CompareRules,
    FallbackRule,
    GateThresholds,
    LatencyRegression,
    ResourceBound,
    Target,
)
from flamingo.stage import parse_selector
from flamingo.yamlload import YMap

__all__ = ["STAGE_GATE_RULES", "TARGET_STAGE_RULES", "check_stage_rules", "with_fallback_ignored"]


def _fallback(value: Any, at: _At) -> FallbackRule:
    """``{header: X-Fallback}``, ``{header: X-Fallback, value: "1"}`` or ``{status: 299}``."""
    mapping = _mapping(value, at)
    _check_keys(mapping, at, ("header", "value", "status"))
    if ("header" in mapping) == ("status" in mapping):
        raise at.error("expected exactly one of 'header' (with an optional 'value') or 'status'")
    if "status" in mapping:
        if "value" in mapping:
            raise at.error("'value' goes with 'header', not with 'status'")
        status = _int_at_least(100)(mapping["status"], at.key(mapping, "status"))
        if status > 599:
            raise at.key(mapping, "status").error(f"expected a status code 100-599, got {status}")
        return FallbackRule(status=status)
    header_at = at.key(mapping, "header")
    header = _string(mapping["header"], header_at)
    if not _TOKEN_RE.fullmatch(header):
        raise header_at.error(f"invalid header name {_show(header)}")
    expected = None
    if "value" in mapping:
        expected = _header_value_text(mapping["value"], at.key(mapping, "value")).strip()
    return FallbackRule(header=header.lower(), value=expected)


def _metrics_url(value: Any, at: _At) -> str:
    text = _non_empty_string(value, at)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError as exc:
        raise at.error(f"invalid URL {_show(text)}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise at.error(f"expected an http:// or https:// URL with a host, got {_show(text)}")
    return text


def _regression(value: Any, at: _At) -> LatencyRegression:
    mapping = _mapping(value, at)
    _check_keys(mapping, at, ("p", "effect"), required=("p", "effect"))
    p = _number(0, 1, above=True)(mapping["p"], at.key(mapping, "p"))
    if p >= 1:
        raise at.key(mapping, "p").error(f"expected a significance level below 1, got {p:g}")
    effect = _number(0, above=True)(mapping["effect"], at.key(mapping, "effect"))
    return LatencyRegression(p=p, effect=effect)


_BOUND_RULES: dict[str, Rule] = {
    "max_ratio_new_to_old": _number(0),
    "max_new": _number(0),
}


def _resources(value: Any, at: _At) -> tuple[ResourceBound, ...]:
    mapping = _mapping(value, at)
    bounds = []
    for metric, spec in mapping.items():
        metric_at = at.key(mapping, metric)
        name = _string(metric, metric_at)
        try:
            parse_selector(name)
        except ValueError as exc:
            raise metric_at.error(str(exc), mapping.key_line(metric)) from None
        spec_map = _mapping(spec, metric_at)
        if not spec_map:
            raise metric_at.error(f"expected at least one of {', '.join(_BOUND_RULES)}")
        bounds.append(ResourceBound(name, **_apply(spec_map, metric_at, _BOUND_RULES)))
    return tuple(bounds)


TARGET_STAGE_RULES: dict[str, Rule] = {
    "fallback": _fallback,
    "metrics_url": _metrics_url,
}

STAGE_GATE_RULES: dict[str, Rule] = {
    "max_latency_regression": _optional(_regression),
    "resources": _resources,
    "min_duration": _optional(_duration),
}


def check_stage_rules(
    default: GateThresholds,
    stages: Sequence[tuple[str, GateThresholds]],
    old: Target,
    new: Target,
    gates_at: _At,
    gates: Any,
) -> None:
    """Refuse gates that ask for what the targets cannot give (such a rule could never pass),
    at the line of the gate that asks."""

    def where(name: str | None) -> _At:
        if not isinstance(gates, YMap):
            return gates_at
        key = "default" if name is None else "stages"
        if key not in gates:
            return gates_at
        at = gates_at.key(gates, key)
        inner = gates[key]
        if name is not None and isinstance(inner, YMap) and name in inner:
            at = at.key(inner, name)
        return at

    for name, gate in ((None, default), *stages):
        shown = name or "default"
        if gate.max_fallback_rate is not None and new.fallback is None:
            raise where(name).error(
                f"max_fallback_rate in gate '{shown}' needs targets.new.fallback "
                '(how a fallback shows: {header: X-Fallback, value: "1"} or {status: N})'
            )
        for bound in gate.resources:
            if new.metrics_url is None:
                raise where(name).error(f"resources in gate '{shown}' need targets.new.metrics_url")
            if bound.max_ratio_new_to_old is not None and old.metrics_url is None:
                raise where(name).error(
                    f"resources.{bound.metric}.max_ratio_new_to_old in gate '{shown}' needs "
                    "targets.old.metrics_url too"
                )


def with_fallback_ignored(compare: CompareRules, new: Target) -> CompareRules:
    """The fallback marker header is how new labels a hand-off, not behaviour to compare: it is
    counted (max_fallback_rate), and the response behind it is still compared in full."""
    if new.fallback is None or new.fallback.header is None:
        return compare
    return replace(compare, ignore_headers=compare.ignore_headers | {new.fallback.header})
