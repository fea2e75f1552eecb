"""The targets.yaml schema (CONTRACT section 3 and the documented extensions)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from flamingo.load.env import (
    Substituted,
    _substitute_tree,
)
from flamingo.load.stagerules import (
    STAGE_GATE_RULES,
    TARGET_STAGE_RULES,
    check_stage_rules,
    with_fallback_ignored,
)
from flamingo.load.validate import (
    Rule,
    _apply,
    _At,
    _base_url,
    _boolean,
    _check_keys,
    _compare_rules,
    _duration,
    _int_at_least,
    _mapping,
    _non_empty_string,
    _number,
    _optional,
    _optional_mapping,
    _size,
    _string,
    _target_headers,
    _workers,
)
from flamingo.model import (
    DEFAULT_STAGE,
    GATE_KEYS,
    MIN_RATE,
    RUN_LIMITS,
    Config,
    GateThresholds,
    RunSettings,
    Target,
    UpstreamSettings,
    header_values,
)
from flamingo.yamlload import (
    describe,
    parse_document,
    read_text,
)

__all__ = ["load_config", "parse_config"]

# --------------------------------------------------------------------------------------------
# targets.yaml
# --------------------------------------------------------------------------------------------

_TARGET_RULES: dict[str, Rule] = {
    "base_url": _base_url,
    "headers": _target_headers,
    "verify_tls": _boolean,
    "production": _boolean,
    "http2": _boolean,
    **TARGET_STAGE_RULES,
}


def _at_most(rule: Rule, key: str) -> Rule:
    """``rule``, and at most `RUN_LIMITS` [key] (``auto``, stored as 0, always passes)."""
    limit = RUN_LIMITS[key]

    def checked(value: Any, at: _At) -> Any:
        result = rule(value, at)
        if result > limit:
            raise at.error(f"at most {limit:g} is supported, got {result:g}")
        return result

    return checked


def _rate(value: Any, at: _At) -> float:
    rate: float = _number(0)(value, at)
    if 0 < rate < MIN_RATE:
        expected = f"expected 0 (unpaced) or at least {MIN_RATE:g} requests/second"
        raise at.error(f"{expected}, got {rate:g}")
    return rate


_RUN_RULES: dict[str, Rule] = {
    "concurrency": _at_most(_int_at_least(1), "concurrency"),
    "rate_limit": _rate,
    "timeout": _at_most(_duration, "timeout"),
    "retries": _at_most(_int_at_least(0), "retries"),
    "max_body_bytes": _size,
    "evidence_bytes": _size,
    "evidence_max_bytes": _size,
    "max_cases": _int_at_least(1),
    "max_requests": _int_at_least(0),
    "workers": _at_most(_workers, "workers"),
}


def _fail_closed(rule: Rule, loosest: str) -> Rule:
    """A gate key that always has a value (`GateThresholds` defaults): ``null`` cannot switch it
    off, since that would let every diff or error through without a threshold that says so."""

    def checked(value: Any, at: _At) -> Any:
        if value is None:
            raise at.error(
                f"null cannot switch this check off (gates fail closed); write {loosest} to "
                "accept any value"
            )
        return rule(value, at)

    return checked


_RATE, _RATIO = _optional(_number(0, 1)), _optional(_number(0, above=True))
_GATE_RULES: dict[str, Rule] = {
    "min_match_rate": _fail_closed(_number(0, 1), "0"),
    "max_error_rate": _fail_closed(_number(0, 1), "1"),
    "min_cases": _fail_closed(_int_at_least(0), "0"),
    "max_latency_ratio_p50": _RATIO,
    "max_latency_ratio_p99": _RATIO,
    "max_fallback_rate": _RATE,
    "max_new_signatures": _optional(_int_at_least(0)),
}
assert tuple(_GATE_RULES) == GATE_KEYS
_GATE_RULES.update(STAGE_GATE_RULES)

_CONFIG_KEYS = ("targets", "run", "gates", "compare", "accepted", "upstream")
_LISTEN_EXPECTED = "expected HOST:PORT such as 127.0.0.1:9099"


def _listen(value: Any, at: _At) -> tuple[str, int]:
    text = _non_empty_string(value, at)
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise at.error(f"{_LISTEN_EXPECTED}, got {describe(text)}")
    return host.strip("[]"), int(port)


def _status_code(value: Any, at: _At) -> int:
    code = _int_at_least(200)(value, at)
    if code > 599:
        raise at.error(f"expected a status code between 200 and 599, got {code}")
    return int(code)


def _upstream(value: Any, at: _At) -> UpstreamSettings:
    """``upstream: {listen: HOST:PORT, response: {status, headers, body}}``."""
    mapping = _mapping(value, at)
    _check_keys(mapping, at, ("listen", "response"), required=("listen",))
    host, port = _listen(mapping["listen"], at.key(mapping, "listen"))
    settings = UpstreamSettings(host, port)
    if "response" in mapping:
        response_at = at.key(mapping, "response")
        response = _optional_mapping(mapping["response"], response_at)
        _check_keys(response, response_at, ("status", "headers", "body"))
        changes: dict[str, Any] = {}
        if "status" in response:
            changes["status"] = _status_code(
                response["status"], response_at.key(response, "status")
            )
        if "headers" in response:
            changes["headers"] = _target_headers(
                response["headers"], response_at.key(response, "headers")
            )
        if "body" in response:
            body = _string(response["body"], response_at.key(response, "body"))
            changes["body"] = body.encode()
        settings = replace(settings, **changes)
    return settings


def _target(name: str, value: Any, at: _At) -> Target:
    mapping = _mapping(value, at)
    _check_keys(mapping, at, tuple(_TARGET_RULES), required=("base_url",))
    target = Target(name=name, **_apply(mapping, at, _TARGET_RULES))
    if "@" in urlsplit(target.base_url).netloc and header_values(target.headers, "authorization"):
        # The client turns the userinfo into its own Authorization header: two credentials,
        # one header - every request would fail, so say it before anything is sent.
        raise at.key(mapping, "base_url").error(
            "credentials in the URL (user:password@) and an Authorization header: use one of them"
        )
    return target


def _gates(value: Any, at: _At) -> tuple[GateThresholds, tuple[tuple[str, GateThresholds], ...]]:
    mapping = _optional_mapping(value, at)
    _check_keys(mapping, at, ("default", "stages"))
    default = GateThresholds()  # the fail-closed defaults live in the model, once
    if "default" in mapping:
        default_at = at.key(mapping, "default")
        default = replace(
            default,
            **_apply(_optional_mapping(mapping["default"], default_at), default_at, _GATE_RULES),
        )
    stages: list[tuple[str, GateThresholds]] = []
    if "stages" in mapping:
        stages_at = at.key(mapping, "stages")
        stages_map = _optional_mapping(mapping["stages"], stages_at)
        for name, overrides in stages_map.items():
            if not isinstance(name, str) or not name.strip():
                raise stages_at.plain(
                    f"{stages_at.path}: expected a stage name, got {describe(name)}",
                    stages_map.key_line(name),
                )
            stage_at = stages_at.key(stages_map, name)
            if name == DEFAULT_STAGE:
                raise stage_at.error(
                    f"a stage cannot be called '{DEFAULT_STAGE}': --stage {DEFAULT_STAGE} names "
                    "gates.default"
                )
            checked = _apply(_optional_mapping(overrides, stage_at), stage_at, _GATE_RULES)
            stages.append((name, replace(default, **checked)))
    return default, tuple(stages)


def parse_config(text: str, file: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate the text of a targets.yaml; ``file`` is only used in messages."""
    document = parse_document(text, file)
    root = _At(file, "", document.line, document.line)
    found = Substituted()
    _substitute_tree(document, root, os.environ if env is None else env, found)
    _check_keys(document, root, _CONFIG_KEYS, required=("targets",))

    targets_at = root.key(document, "targets")
    targets = _mapping(document["targets"], targets_at)
    _check_keys(targets, targets_at, ("old", "new", "old_replica"), required=("old", "new"))
    old = _target("old", targets["old"], targets_at.key(targets, "old"))
    new = _target("new", targets["new"], targets_at.key(targets, "new"))
    old_replica = None
    if "old_replica" in targets:
        replica_at = targets_at.key(targets, "old_replica")
        old_replica = _target("old_replica", targets["old_replica"], replica_at)
        if old_replica.base_url == new.base_url:
            # Noise learned against new itself would excuse every old-vs-new difference.
            raise replica_at.error(
                "old_replica is the new target's base_url: noise must be learned from old"
            )

    run = RunSettings()
    if "run" in document:
        run_at = root.key(document, "run")
        run = RunSettings(**_apply(_optional_mapping(document["run"], run_at), run_at, _RUN_RULES))
    gates_at = root.key(document, "gates")
    default_gate, stages = _gates(document.get("gates"), gates_at)
    check_stage_rules(default_gate, stages, old, new, gates_at, document.get("gates"))
    compare = _compare_rules(document.get("compare"), root.key(document, "compare"))
    compare = with_fallback_ignored(compare, new)
    accepted_path = None
    if "accepted" in document:
        accepted = _non_empty_string(document["accepted"], root.key(document, "accepted"))
        # Relative to the targets file, so a repo's targets.yaml works from any directory.
        accepted_path = os.path.join(os.path.dirname(file), accepted)
    upstream = None
    if "upstream" in document:
        upstream = _upstream(document["upstream"], root.key(document, "upstream"))
    return Config(
        path=file,
        upstream=upstream,
        old=old,
        new=new,
        run=run,
        default_gate=default_gate,
        stages=stages,
        secrets=tuple(dict.fromkeys(found.secrets)),
        secret_fields=tuple(found.fields.items()),
        old_replica=old_replica,
        compare=compare,
        accepted_path=accepted_path,
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Load and validate a targets.yaml. ``env`` defaults to ``os.environ`` (for ``${VAR}``)."""
    file = os.fspath(path)
    return parse_config(read_text(file), file, env)
