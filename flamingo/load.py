"""The ``load`` stage: targets.yaml and suite files in, validated ``Config`` and ``Suite``s out.

This module owns the schemas of both file kinds (CONTRACT sections 3 and 4 plus the documented
extensions) and every message about them. It does no network IO and sends nothing; each problem
is one ``InputError`` printed as ``FILE:LINE: message``.

Theory of operation:

- ``flamingo.yamlload`` parses the bytes into ``YMap``/``YList`` values that know their lines.
- ``_At`` is the cursor of validation: the file, the dotted key path (``requests[2].expect``)
  and the line of the value under inspection. Every error is raised through it, so every error
  says where it is. Messages start lower-case and read ``where: expected X, got Y``.
- Schemas are tables of ``key -> rule`` where a rule is ``(value, at) -> checked value``; small
  rule factories (``_int_at_least(1)``) keep the tables readable.
- In targets.yaml, ``${VAR}`` is substituted in every string before validation; the values
  become ``Config.secrets`` and are never echoed back in an error message.
- A suite request is first read into a ``_Section`` whose strings are ``_Tpl`` (template text plus
  where it was written). Suite ``defaults`` are merged under it, then ``_finalize`` checks every
  ``{{ var }}`` against the request's matrix - at the line of the string that uses it - and
  produces a plain ``RequestSpec``.
- Case ids are checked for uniqueness by walking the rendered *names* only and keeping a set of
  hashes, never the cases; the case count is computed by multiplication before that walk.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from itertools import product
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flamingo.accepted import AcceptedRule
from flamingo.errors import InputError
from flamingo.model import (
    GATE_KEYS,
    CompareRules,
    Config,
    GateThresholds,
    Headers,
    Mask,
    RunSettings,
    Target,
)
from flamingo.suite import (
    IDENT_RE,
    VAR_RE,
    ExpectSpec,
    HeaderExpectSpec,
    RequestSpec,
    Scalar,
    Suite,
    render,
    scalar_text,
    template_vars,
    whole_var,
)
from flamingo.yamlload import (
    YList,
    YMap,
    describe,
    parse_document,
    parse_documents,
    quote,
    read_text,
)

__all__ = [
    "Suite",
    "find_suite_files",
    "load_config",
    "load_suites",
    "parse_config",
    "parse_suites",
]

T = TypeVar("T")
Rule = Callable[[Any, "_At"], Any]

SUITE_SUFFIXES = (".yaml", ".yml")


# --------------------------------------------------------------------------------------------
# Where we are: file, dotted key path, line
# --------------------------------------------------------------------------------------------


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


@dataclass(frozen=True)
class _At:
    file: str
    path: str  # dotted key path of the value, "" for the document itself
    line: int  # line of the value
    key_line: int  # line of the key that holds the value (for "missing key" errors)

    def key(self, mapping: YMap, key: Any) -> _At:
        return _At(self.file, _join(self.path, key), mapping.value_line(key), mapping.key_line(key))

    def item(self, seq: YList, index: int) -> _At:
        line = seq.item_line(index)
        return _At(self.file, f"{self.path}[{index}]", line, line)

    def error(self, what: str, line: int | None = None) -> InputError:
        """``path: what`` at this value's line (or ``line``)."""
        prefix = f"{self.path}: " if self.path else ""
        return self.plain(prefix + what, line)

    def plain(self, message: str, line: int | None = None) -> InputError:
        return InputError(message, self.file, self.line if line is None else line)


# --------------------------------------------------------------------------------------------
# Environment substitution (targets.yaml only)
# --------------------------------------------------------------------------------------------


class _EnvText(str):
    """A string that had ``${VAR}`` substituted; messages show ``raw``, never the value."""

    raw: str
    whole: bool  # the string was exactly one ${VAR} reference: may be read as a number/boolean


_ENV_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")


def _substitute(text: str, env: Mapping[str, str], at: _At, secrets: list[str]) -> str:
    if "${" not in text:
        return text
    pieces: list[str] = []
    end = 0
    substituted = False
    for match in _ENV_RE.finditer(text):
        pieces.append(text[end : match.start()])
        end = match.end()
        if match.group(0) == "$${":  # escaped: a literal "${"
            pieces.append("${")
            continue
        inner = match.group(1)
        if inner is None:
            raise at.error(f"unterminated '${{' in {quote(text)} (write '$${{' for a literal)")
        name, sep, default = inner.partition(":-")
        if not IDENT_RE.fullmatch(name):
            raise at.error(
                f"invalid environment reference {quote(match.group(0))} "
                "(expected ${NAME} or ${NAME:-default})"
            )
        value = env.get(name)
        if value is None or (sep and value == ""):
            if not sep:
                raise at.plain(f"environment variable {name} is not set (used in {at.path})")
            value = default  # written in the file: not a secret
        elif value:
            secrets.append(value)
        pieces.append(value)
        substituted = True
    pieces.append(text[end:])
    result = "".join(pieces)
    if not substituted:
        return result
    marked = _EnvText(result)
    marked.raw = text
    marked.whole = bool(_ENV_RE.fullmatch(text)) and text.startswith("${")
    return marked


def _substitute_tree(node: Any, at: _At, env: Mapping[str, str], secrets: list[str]) -> None:
    if isinstance(node, YMap):
        for key, value in node.items():
            child = at.key(node, key)
            if isinstance(value, str):
                node[key] = _substitute(value, env, child, secrets)
            else:
                _substitute_tree(value, child, env, secrets)
    elif isinstance(node, YList):
        for index, value in enumerate(node):
            child = at.item(node, index)
            if isinstance(value, str):
                node[index] = _substitute(value, env, child, secrets)
            else:
                _substitute_tree(value, child, env, secrets)


def _describe(value: Any) -> str:
    if isinstance(value, _EnvText):
        return f"{quote(value.raw)} (from the environment)"
    return describe(value)


def _show(text: str) -> str:
    return (
        f"{quote(text.raw)} (from the environment)" if isinstance(text, _EnvText) else quote(text)
    )


def _from_env(value: Any, parse: Callable[[str], Any]) -> Any:
    """A whole ``${VAR}`` value read as a number or boolean; unchanged when it does not parse."""
    if isinstance(value, _EnvText) and value.whole:
        try:
            return parse(value.strip())
        except ValueError:
            return value
    return value


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ValueError(text)


def _parse_number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


# --------------------------------------------------------------------------------------------
# Generic rules
# --------------------------------------------------------------------------------------------


def _mapping(value: Any, at: _At) -> YMap:
    if not isinstance(value, YMap):
        raise at.error(f"expected a mapping, got {_describe(value)}")
    return value


def _optional_mapping(value: Any, at: _At) -> YMap:
    """An optional section; ``key:`` with everything below commented out counts as empty."""
    return YMap(at.line) if value is None else _mapping(value, at)


def _list(value: Any, at: _At, *, non_empty: bool = False) -> YList:
    if not isinstance(value, YList):
        raise at.error(f"expected a list, got {_describe(value)}")
    if non_empty and not value:
        raise at.error("expected a non-empty list, got an empty list")
    return value


def _check_keys(
    mapping: YMap, at: _At, allowed: Sequence[str], required: Sequence[str] = ()
) -> None:
    where = f"in {at.path}" if at.path else "at the top level"
    for key in mapping:
        if not isinstance(key, str):
            raise at.plain(
                f"unknown key {_describe(key)} {where} (allowed: {', '.join(allowed)})",
                mapping.key_line(key),
            )
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {quote(close[0])}?" if close else f"allowed: {', '.join(allowed)}"
            raise at.plain(f"unknown key {quote(key)} {where} ({hint})", mapping.key_line(key))
    for key in required:
        if key not in mapping:
            raise at.error(f"missing required key {quote(key)}", at.key_line)


def _apply(mapping: YMap, at: _At, rules: Mapping[str, Rule]) -> dict[str, Any]:
    """Check the keys of ``mapping`` against a rule table and run each rule on its value."""
    _check_keys(mapping, at, tuple(rules))
    return {key: rules[key](value, at.key(mapping, key)) for key, value in mapping.items()}


def _string(value: Any, at: _At) -> str:
    if not isinstance(value, str):
        raise at.error(f"expected a string, got {_describe(value)}")
    return value


def _non_empty_string(value: Any, at: _At) -> str:
    text = _string(value, at)
    if not text.strip():
        raise at.error("expected a non-empty string, got an empty string")
    return text


def _boolean(value: Any, at: _At) -> bool:
    checked = _from_env(value, _parse_bool)
    if not isinstance(checked, bool):
        raise at.error(f"expected a boolean, got {_describe(value)}")
    return checked


def _int_at_least(minimum: int) -> Rule:
    def rule(value: Any, at: _At) -> int:
        checked = _from_env(value, int)
        if isinstance(checked, bool) or not isinstance(checked, int):
            raise at.error(f"expected an integer >= {minimum}, got {_describe(value)}")
        if checked < minimum:
            raise at.error(f"expected an integer >= {minimum}, got {checked}")
        return checked

    return rule


def _workers(value: Any, at: _At) -> int:
    """``auto`` (stored as 0: `flamingo.workers.plan` decides) or a process count >= 1."""
    if isinstance(value, str) and value.strip() == "auto":
        return 0
    checked = _from_env(value, int)
    if isinstance(checked, bool) or not isinstance(checked, int) or checked < 1:
        raise at.error(f"expected 'auto' or an integer >= 1, got {_describe(value)}")
    return checked


def _number(low: float, high: float = math.inf, *, above: bool = False) -> Rule:
    """A finite number in ``[low, high]`` (``(low, high]`` when ``above``)."""
    if high < math.inf:
        expected = f"a number between {low:g} and {high:g}"
    else:
        expected = f"a number {'>' if above else '>='} {low:g}"

    def rule(value: Any, at: _At) -> float:
        checked = _from_env(value, _parse_number)
        if isinstance(checked, bool) or not isinstance(checked, int | float):
            raise at.error(f"expected {expected}, got {_describe(value)}")
        if not math.isfinite(checked) or checked < low or checked > high:
            raise at.error(f"expected {expected}, got {checked}")
        if above and checked == low:
            raise at.error(f"expected {expected}, got {checked}")
        return float(checked)

    return rule


def _optional(rule: Rule) -> Rule:
    """``null`` switches a check off (gates: "not evaluated")."""

    def optional(value: Any, at: _At) -> Any:
        return None if value is None else rule(value, at)

    return optional


_DURATION_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h)?\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_DURATION_EXPECTED = "expected a duration such as '250ms', '10s', '2m' or a number of seconds"


def _duration(value: Any, at: _At) -> float:
    """Seconds from ``250ms``, ``10s``, ``1.5s``, ``2m``, ``1h`` or a bare number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise at.error(f"{_DURATION_EXPECTED}, got {_describe(value)}")
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value)
        if match is None:
            raise at.error(f"{_DURATION_EXPECTED}, got {_describe(value)}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        shown = _show(value) if isinstance(value, str) else f"{value:g}"
        raise at.error(f"expected a duration > 0, got {shown}")
    return seconds


_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*")
# SI units are powers of 1000, IEC units (KiB) powers of 1024: what the names promise.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_EXPECTED = "expected a size such as 1048576, '512KiB' or '10MB'"


def _size(value: Any, at: _At) -> int:
    checked = _from_env(value, int)
    if isinstance(checked, bool) or not isinstance(checked, int | str):
        raise at.error(f"{_SIZE_EXPECTED}, got {_describe(value)}")
    if isinstance(checked, int):
        if checked < 0:
            raise at.error(f"{_SIZE_EXPECTED}, got {checked}")
        return checked
    match = _SIZE_RE.fullmatch(checked)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise at.error(f"{_SIZE_EXPECTED}, got {_describe(value)}")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


# --------------------------------------------------------------------------------------------
# HTTP-shaped values
# --------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: methods, header names
_BAD_HEADER_VALUE_RE = re.compile(r"[\r\n\x00]")
_BAD_PATH_RE = re.compile(r"[\s\x00-\x1f\x7f]")


def _header_name(key: Any, mapping: YMap, at: _At) -> str:
    if not isinstance(key, str) or not _TOKEN_RE.fullmatch(key):
        shown = quote(key) if isinstance(key, str) else describe(key)
        raise at.plain(f"{at.path}: invalid header name {shown}", mapping.key_line(key))
    return key


def _header_value_text(value: Any, at: _At) -> str:
    """Header values are strings; numbers are accepted as written (``X-Retries: 3``)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise at.error(f"expected a string, got {_describe(value)}")
    text = value if isinstance(value, str) else str(value)
    if _BAD_HEADER_VALUE_RE.search(text):
        raise at.error("header value must not contain line breaks or NUL characters")
    return text


def _unique_header(lower: str, seen: dict[str, int], mapping: YMap, key: str, at: _At) -> None:
    line = mapping.key_line(key)
    if lower in seen:
        raise at.plain(
            f"{at.path}: duplicate header {quote(key)} (also at line {seen[lower]}; "
            "header names are case-insensitive)",
            line,
        )
    seen[lower] = line


def _target_headers(value: Any, at: _At) -> Headers:
    mapping = _optional_mapping(value, at)
    seen: dict[str, int] = {}
    headers: list[tuple[str, str]] = []
    for key, item in mapping.items():
        name = _header_name(key, mapping, at)
        _unique_header(name.lower(), seen, mapping, name, at)
        headers.append((name, _header_value_text(item, at.key(mapping, key))))
    return tuple(headers)


def _base_url(value: Any, at: _At) -> str:
    text = _string(value, at)
    shown = _show(text)
    expected = f"expected an http:// or https:// URL with a host, got {shown}"
    if not text or _BAD_PATH_RE.search(text):
        raise at.error(expected)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise at.error(f"invalid URL {shown}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise at.error(expected)
    if port == 0:
        raise at.error(f"invalid URL {shown}: port 0")
    if parts.query or parts.fragment:
        raise at.error(f"a base URL must not have a query or fragment, got {shown}")
    return text.rstrip("/")


def _invalid_regex(value: str, at: _At, exc: re.error) -> InputError:
    return at.error(f"invalid regular expression {quote(value)}: {exc}")


# --------------------------------------------------------------------------------------------
# compare: (suites, and reserved in targets.yaml)
# --------------------------------------------------------------------------------------------


def _json_path(value: Any, at: _At) -> str:
    text = _non_empty_string(value, at)
    import jsonpath_ng  # deferred: its parser tables are only needed when a suite uses paths

    try:
        jsonpath_ng.parse(text)
    except Exception as exc:  # jsonpath_ng raises several unrelated types; all mean "invalid"
        raise at.plain(f"invalid JSON path {quote(text)}: {exc}") from exc
    return text


def _mask(value: Any, at: _At) -> Mask:
    mapping = _mapping(value, at)
    _check_keys(mapping, at, ("pattern", "replace"), required=("pattern", "replace"))
    pattern_at, replace_at = at.key(mapping, "pattern"), at.key(mapping, "replace")
    text = _non_empty_string(mapping["pattern"], pattern_at)
    replacement = _string(mapping["replace"], replace_at)
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise _invalid_regex(text, pattern_at, exc) from exc
    try:
        pattern.sub(replacement, "")  # parses the template: catches "\1" without a group
    except (re.error, IndexError) as exc:
        raise replace_at.error(f"invalid replacement {quote(replacement)}: {exc}") from exc
    return Mask(pattern=pattern, replace=replacement)


def _ignore_headers(value: Any, at: _At) -> frozenset[str]:
    seq = _list(value, at)
    names: set[str] = set()
    for index, item in enumerate(seq):
        item_at = at.item(seq, index)
        name = _string(item, item_at)
        if not _TOKEN_RE.fullmatch(name):
            raise item_at.error(f"invalid header name {quote(name)}")
        names.add(name.lower())
    return frozenset(names)


def _list_of(rule: Rule) -> Rule:
    def rule_for_list(value: Any, at: _At) -> tuple[Any, ...]:
        seq = _list(value, at)
        return tuple(rule(item, at.item(seq, index)) for index, item in enumerate(seq))

    return rule_for_list


def _noise(value: Any, at: _At) -> bool:
    """``auto`` (learn noise from a second old response) or ``off``; booleans work too."""
    if isinstance(value, bool):
        return value
    if value in ("auto", "off"):
        return bool(value == "auto")
    raise at.error(f"expected 'auto' or 'off', got {_describe(value)}")


_COMPARE_RULES: dict[str, Rule] = {
    "ignore_headers": _ignore_headers,
    "ignore_json_paths": _list_of(_json_path),
    "mask": _list_of(_mask),
    "noise": _noise,
    "noise_threshold": _number(0, 1, above=True),
}


def _compare_rules(value: Any, at: _At) -> CompareRules:
    """A ``compare:`` section; absent or empty: the defaults."""
    return CompareRules(**_apply(_optional_mapping(value, at), at, _COMPARE_RULES))


# --------------------------------------------------------------------------------------------
# targets.yaml
# --------------------------------------------------------------------------------------------

_TARGET_RULES: dict[str, Rule] = {
    "base_url": _base_url,
    "headers": _target_headers,
    "verify_tls": _boolean,
    "production": _boolean,
    "http2": _boolean,
}

_RUN_RULES: dict[str, Rule] = {
    "concurrency": _int_at_least(1),
    "rate_limit": _number(0),
    "timeout": _duration,
    "retries": _int_at_least(0),
    "max_body_bytes": _size,
    "max_cases": _int_at_least(1),
    "max_requests": _int_at_least(0),
    "workers": _workers,
}

_RATE, _RATIO = _optional(_number(0, 1)), _optional(_number(0, above=True))
_GATE_RULES: dict[str, Rule] = {
    "min_match_rate": _RATE,
    "max_error_rate": _RATE,
    "min_cases": _optional(_int_at_least(0)),
    "max_latency_ratio_p50": _RATIO,
    "max_latency_ratio_p99": _RATIO,
}
assert tuple(_GATE_RULES) == GATE_KEYS

_CONFIG_KEYS = ("targets", "run", "gates", "compare", "accepted")


def _target(name: str, value: Any, at: _At) -> Target:
    mapping = _mapping(value, at)
    _check_keys(mapping, at, tuple(_TARGET_RULES), required=("base_url",))
    return Target(name=name, **_apply(mapping, at, _TARGET_RULES))


def _gates(value: Any, at: _At) -> tuple[GateThresholds, tuple[tuple[str, GateThresholds], ...]]:
    mapping = _optional_mapping(value, at)
    _check_keys(mapping, at, ("default", "stages"))
    default = GateThresholds(min_cases=1)
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
            checked = _apply(_optional_mapping(overrides, stage_at), stage_at, _GATE_RULES)
            stages.append((name, replace(default, **checked)))
    return default, tuple(stages)


def parse_config(text: str, file: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate the text of a targets.yaml; ``file`` is only used in messages."""
    document = parse_document(text, file)
    root = _At(file, "", document.line, document.line)
    secrets: list[str] = []
    _substitute_tree(document, root, os.environ if env is None else env, secrets)
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

    run = RunSettings()
    if "run" in document:
        run_at = root.key(document, "run")
        run = RunSettings(**_apply(_optional_mapping(document["run"], run_at), run_at, _RUN_RULES))
    default_gate, stages = _gates(document.get("gates"), root.key(document, "gates"))
    compare = _compare_rules(document.get("compare"), root.key(document, "compare"))
    accepted_path = None
    if "accepted" in document:
        accepted = _non_empty_string(document["accepted"], root.key(document, "accepted"))
        # Relative to the targets file, so a repo's targets.yaml works from any directory.
        accepted_path = os.path.join(os.path.dirname(file), accepted)
    return Config(
        path=file,
        old=old,
        new=new,
        run=run,
        default_gate=default_gate,
        stages=stages,
        secrets=tuple(dict.fromkeys(secrets)),
        old_replica=old_replica,
        compare=compare,
        accepted_path=accepted_path,
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Load and validate a targets.yaml. ``env`` defaults to ``os.environ`` (for ``${VAR}``)."""
    file = os.fspath(path)
    return parse_config(read_text(file), file, env)


# --------------------------------------------------------------------------------------------
# Suites: reading a request into a _Section of templates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tpl:
    """A string as written in a suite, with where it was written and the variables it uses."""

    text: str
    at: _At
    vars: tuple[str, ...]


def _tpl(text: str, at: _At) -> _Tpl:
    return _Tpl(text, at, template_vars(text))


class _Unset:
    """Marks "key not given" where ``None`` (JSON null) is a legitimate value."""


_UNSET: Any = _Unset()


@dataclass(frozen=True)
class _HeaderExpectDraft:
    name: str  # lower-case
    equals: _Tpl | None = None
    regex: _Tpl | None = None
    absent: bool = False


@dataclass
class _Section:
    """What ``defaults:`` or one request says about the HTTP request and its expectations."""

    method: _Tpl | None = None
    headers: dict[str, tuple[str, _Tpl]] = field(default_factory=dict)  # lower -> (name, value)
    query: dict[str, tuple[_Tpl, list[_Tpl]]] = field(default_factory=dict)
    json: Any = _UNSET  # JSON tree whose strings are _Tpl
    body: _Tpl | None = None
    status: list[int | _Tpl] | None = None
    expect_headers: dict[str, _HeaderExpectDraft] = field(default_factory=dict)
    expect_json: Any = _UNSET

    def templates(self) -> Iterator[_Tpl]:
        if self.method is not None:
            yield self.method
        for _, value in self.headers.values():
            yield value
        for key, values in self.query.values():
            yield key
            yield from values
        yield from _json_templates(self.json)
        if self.body is not None:
            yield self.body
        for status in self.status or ():
            if isinstance(status, _Tpl):
                yield status
        for expect in self.expect_headers.values():
            if expect.equals is not None:
                yield expect.equals
            if expect.regex is not None:
                yield expect.regex
        yield from _json_templates(self.expect_json)


def _json_templates(tree: Any) -> Iterator[_Tpl]:
    if isinstance(tree, _Tpl):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _json_templates(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _json_templates(value)


def _json_tree(value: Any, at: _At) -> Any:
    """A JSON value from YAML, strings wrapped as templates, lines dropped."""
    if isinstance(value, str):
        return _tpl(value, at)
    if isinstance(value, YMap):
        tree: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise at.plain(
                    f"{at.path}: JSON object keys must be strings, got {describe(key)}",
                    value.key_line(key),
                )
            tree[key] = _json_tree(item, at.key(value, key))
        return tree
    if isinstance(value, YList):
        return [_json_tree(item, at.item(value, index)) for index, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise at.error(f"expected a JSON value, got {describe(value)} (not valid in JSON)")
    if value is None or isinstance(value, bool | int | float):
        return value
    raise at.error(f"expected a JSON value, got {describe(value)}")


def _unwrap(tree: Any) -> Any:
    if isinstance(tree, _Tpl):
        return tree.text
    if isinstance(tree, dict):
        return {key: _unwrap(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_unwrap(value) for value in tree]
    return tree


def _string_tpl(value: Any, at: _At) -> _Tpl:
    return _tpl(_string(value, at), at)


def _scalar_tpl(value: Any, at: _At) -> _Tpl:
    """A query key or value: strings are templates, numbers and booleans are taken as text."""
    if isinstance(value, float) and not math.isfinite(value):
        raise at.error(f"expected a string, number or boolean, got {describe(value)}")
    if isinstance(value, str | int | float | bool):
        text = value if isinstance(value, str) else scalar_text(value)
        return _tpl(text, at)
    raise at.error(f"expected a string, number or boolean, got {describe(value)}")


def _method(value: Any, at: _At) -> _Tpl:
    written = _non_empty_string(value, at)
    # Upper-case the literal text only: variable names inside {{ }} are case-sensitive.
    parts: list[str] = []
    end = 0
    for match in VAR_RE.finditer(written):
        parts += [written[end : match.start()].upper(), match.group(0)]
        end = match.end()
    text = "".join([*parts, written[end:].upper()])
    if not template_vars(text) and not _TOKEN_RE.fullmatch(text):
        raise at.error(f"expected an HTTP method such as GET or POST, got {quote(value)}")
    return _tpl(text, at)


def _request_headers(value: Any, at: _At) -> dict[str, tuple[str, _Tpl]]:
    mapping = _optional_mapping(value, at)
    seen: dict[str, int] = {}
    headers: dict[str, tuple[str, _Tpl]] = {}
    for key, item in mapping.items():
        name = _header_name(key, mapping, at)
        _unique_header(name.lower(), seen, mapping, name, at)
        item_at = at.key(mapping, key)
        headers[name.lower()] = (name, _tpl(_header_value_text(item, item_at), item_at))
    return headers


def _query(value: Any, at: _At) -> dict[str, tuple[_Tpl, list[_Tpl]]]:
    mapping = _optional_mapping(value, at)
    query: dict[str, tuple[_Tpl, list[_Tpl]]] = {}
    for key, item in mapping.items():
        key_at = at.key(mapping, key)
        key_tpl = _scalar_tpl(key, replace(key_at, line=key_at.key_line))
        if isinstance(item, YList):
            values = [_scalar_tpl(v, key_at.item(item, i)) for i, v in enumerate(item)]
        else:
            values = [_scalar_tpl(item, key_at)]
        query[key_tpl.text] = (key_tpl, values)
    return query


_STATUS_EXPECTED = "expected a status code between 100 and 599 or a '{{ var }}' placeholder"


def _status_item(value: Any, at: _At) -> int | _Tpl:
    if isinstance(value, str) and whole_var(value):
        return _tpl(value, at)
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise at.error(f"{_STATUS_EXPECTED}, got {describe(value)}")
    return value


def _status(value: Any, at: _At) -> list[int | _Tpl]:
    if isinstance(value, YList):
        seq = _list(value, at, non_empty=True)
        return [_status_item(item, at.item(seq, index)) for index, item in enumerate(seq)]
    return [_status_item(value, at)]


def _regex_tpl(value: Any, at: _At) -> _Tpl:
    tpl = _tpl(_non_empty_string(value, at), at)
    # Matrix values go in re.escape()d, so any literal text stands in for them here.
    try:
        re.compile(VAR_RE.sub("x", tpl.text))
    except re.error as exc:
        raise _invalid_regex(tpl.text, at, exc) from exc
    return tpl


def _header_expect(name: str, value: Any, at: _At) -> _HeaderExpectDraft:
    if not isinstance(value, YMap):
        return _HeaderExpectDraft(name, equals=_tpl(_header_value_text(value, at), at))
    _check_keys(value, at, ("regex", "absent"))
    if "regex" in value and "absent" in value:
        raise at.error("use either 'regex' or 'absent', not both")
    if "regex" in value:
        return _HeaderExpectDraft(name, regex=_regex_tpl(value["regex"], at.key(value, "regex")))
    if "absent" in value:
        absent_at = at.key(value, "absent")
        if _boolean(value["absent"], absent_at) is not True:
            raise absent_at.error("expected true (leave the header out to not check it), got false")
        return _HeaderExpectDraft(name, absent=True)
    raise at.error("expected a string, {regex: ...} or {absent: true}, got an empty mapping")


def _expect(value: Any, at: _At, section: _Section) -> None:
    mapping = _optional_mapping(value, at)
    _check_keys(mapping, at, ("status", "headers", "json"))
    if "status" in mapping:
        section.status = _status(mapping["status"], at.key(mapping, "status"))
    if "headers" in mapping:
        headers_at = at.key(mapping, "headers")
        headers = _optional_mapping(mapping["headers"], headers_at)
        seen: dict[str, int] = {}
        for key, item in headers.items():
            name = _header_name(key, headers, headers_at)
            _unique_header(name.lower(), seen, headers, name, headers_at)
            draft = _header_expect(name.lower(), item, headers_at.key(headers, key))
            section.expect_headers[name.lower()] = draft
    if "json" in mapping:
        section.expect_json = _json_tree(mapping["json"], at.key(mapping, "json"))


_DEFAULTS_KEYS = ("method", "headers", "query", "json", "body", "expect")
_REQUEST_KEYS = (
    "name",
    "method",
    "path",
    "query",
    "headers",
    "json",
    "body",
    "matrix",
    "repeat",
    "expect",
)
_SUITE_KEYS = ("suite", "tags", "defaults", "matrix", "requests", "compare", "allow_side_effects")


def _section(mapping: YMap, at: _At) -> _Section:
    """The HTTP part of ``defaults:`` or of a request (keys already checked by the caller)."""
    section = _Section()
    if "json" in mapping and "body" in mapping:
        line = max(mapping.key_line("json"), mapping.key_line("body"))
        raise at.error("use either 'json' or 'body', not both", line)
    if "method" in mapping:
        section.method = _method(mapping["method"], at.key(mapping, "method"))
    if "headers" in mapping:
        section.headers = _request_headers(mapping["headers"], at.key(mapping, "headers"))
    if "query" in mapping:
        section.query = _query(mapping["query"], at.key(mapping, "query"))
    if "json" in mapping:
        section.json = _json_tree(mapping["json"], at.key(mapping, "json"))
    if "body" in mapping:
        section.body = _string_tpl(mapping["body"], at.key(mapping, "body"))
    if "expect" in mapping:
        _expect(mapping["expect"], at.key(mapping, "expect"), section)
    return section


def _merged(under: dict[str, T], over: dict[str, T]) -> dict[str, T]:
    """Key-wise merge; keys ``over`` sets move to its position (its order is what it wrote)."""
    result = {key: value for key, value in under.items() if key not in over}
    result.update(over)
    return result


def _merge(defaults: _Section, request: _Section) -> _Section:
    """Defaults under a request: the request wins key by key, the payload as a whole."""
    own_payload = request.json is not _UNSET or request.body is not None
    payload = request if own_payload else defaults
    return _Section(
        method=request.method or defaults.method,
        headers=_merged(defaults.headers, request.headers),
        query=_merged(defaults.query, request.query),
        json=payload.json,
        body=payload.body,
        status=request.status if request.status is not None else defaults.status,
        expect_headers=_merged(defaults.expect_headers, request.expect_headers),
        expect_json=request.expect_json
        if request.expect_json is not _UNSET
        else defaults.expect_json,
    )


# --------------------------------------------------------------------------------------------
# Suites: matrix, finalize (variables checked at the line that uses them), ids
# --------------------------------------------------------------------------------------------

_Axis = tuple[str, tuple[Scalar, ...], int]  # variable, values, line of the variable


def _matrix(value: Any, at: _At) -> list[_Axis]:
    mapping = _optional_mapping(value, at)
    axes: list[_Axis] = []
    for var, values in mapping.items():
        if not isinstance(var, str) or not IDENT_RE.fullmatch(var):
            shown = quote(var) if isinstance(var, str) else describe(var)
            raise at.plain(
                f"{at.path}: a matrix variable name must be an identifier "
                f"(letters, digits, _), got {shown}",
                mapping.key_line(var),
            )
        var_at = at.key(mapping, var)
        seq = _list(values, var_at, non_empty=True)
        checked: list[Scalar] = []
        for index, item in enumerate(seq):
            bad_float = isinstance(item, float) and not math.isfinite(item)
            if bad_float or not isinstance(item, str | int | float | bool):
                raise var_at.item(seq, index).error(
                    f"expected a string, number or boolean, got {describe(item)}"
                )
            checked.append(item)
        axes.append((var, tuple(checked), mapping.key_line(var)))
    return axes


def _renderings(tpl: _Tpl, values: Mapping[str, tuple[Scalar, ...]]) -> Iterator[str]:
    """Every text ``tpl`` can render to (product over the variables it uses only)."""
    if not tpl.vars:
        yield tpl.text
        return
    axes = [tuple(scalar_text(value) for value in values[var]) for var in tpl.vars]
    for combo in product(*axes):
        yield render(tpl.text, dict(zip(tpl.vars, combo, strict=True)))


def _check_var_values(
    tpl: _Tpl, values: Mapping[str, tuple[Scalar, ...]], bad: re.Pattern[str], what: str
) -> None:
    for var in tpl.vars:
        for value in values[var]:
            if bad.search(scalar_text(value)):
                raise tpl.at.error(
                    f"matrix value {quote(scalar_text(value))} of {quote(var)} {what}"
                )


def _check_path(tpl: _Tpl, values: Mapping[str, tuple[Scalar, ...]]) -> None:
    literal = VAR_RE.sub("", tpl.text)
    if _BAD_PATH_RE.search(literal):
        raise tpl.at.error(
            f"a path must not contain spaces or control characters, got {quote(tpl.text)}"
        )
    _check_var_values(tpl, values, _BAD_PATH_RE, "contains a space or control character")
    first = VAR_RE.match(tpl.text)
    if first is None:
        if not tpl.text.startswith("/"):
            raise tpl.at.error(f"expected a path starting with '/', got {quote(tpl.text)}")
        return
    var = first.group(1)
    for value in values[var]:
        if not scalar_text(value).startswith("/"):
            raise tpl.at.error(
                f"{quote(tpl.text)} must start with '/', but matrix value "
                f"{quote(scalar_text(value))} of {quote(var)} does not"
            )


def _check_status_values(tpl: _Tpl, values: Mapping[str, tuple[Scalar, ...]]) -> None:
    var = tpl.vars[0]
    for value in values[var]:
        number = int(value) if isinstance(value, str) and value.isdigit() else value
        if isinstance(number, bool) or not isinstance(number, int) or not 100 <= number <= 599:
            raise tpl.at.error(
                f"matrix value {describe(value)} of {quote(var)} is not a status code (100-599)"
            )


def _unknown_variable(tpl: _Tpl, var: str, available: Sequence[str], request_at: _At) -> InputError:
    names = ", ".join(available)
    if tpl.at.path.startswith("defaults"):  # the same default may be fine for other requests
        known = (
            f"matrix variables of {request_at.path}: {names}"
            if names
            else (f"{request_at.path} has no matrix variables")
        )
    else:
        known = f"matrix variables: {names}" if names else "this request has no matrix variables"
    return tpl.at.plain(f"unknown variable {quote(var)} in {quote(tpl.text)} ({known})")


def _finalize(
    name: _Tpl,
    path: _Tpl,
    section: _Section,
    own_matrix: list[_Axis] | None,
    suite_matrix: list[_Axis],
    repeat: int,
    at: _At,
) -> RequestSpec:
    base = own_matrix if own_matrix is not None else suite_matrix
    values = {var: axis for var, axis, _ in base}
    used: set[str] = set()
    for tpl in (name, path, *section.templates()):
        for var in tpl.vars:
            if var not in values:
                raise _unknown_variable(tpl, var, list(values), at)
            used.add(var)
    for var, _, line in own_matrix or ():
        if var not in used:
            raise at.plain(
                f"{at.path}.matrix: variable {quote(var)} is not used by this request "
                f"(use it as '{{{{ {var} }}}}', e.g. in the name)",
                line,
            )

    _check_path(path, values)
    if section.method is not None and section.method.vars:
        for text in _renderings(section.method, values):
            if not _TOKEN_RE.fullmatch(text):
                raise section.method.at.error(
                    f"expected an HTTP method such as GET or POST, got {quote(text)}"
                )
    for _, header in section.headers.values():
        _check_var_values(header, values, _BAD_HEADER_VALUE_RE, "contains a line break")
    for status in section.status or ():
        if isinstance(status, _Tpl):
            _check_status_values(status, values)

    expect = ExpectSpec(
        status=tuple(s.text if isinstance(s, _Tpl) else s for s in section.status or ()),
        headers=tuple(
            HeaderExpectSpec(
                name=draft.name,
                equals=draft.equals.text if draft.equals else None,
                regex=draft.regex.text if draft.regex else None,
                absent=draft.absent,
            )
            for draft in section.expect_headers.values()
        ),
        json=None if section.expect_json is _UNSET else _unwrap(section.expect_json),
        has_json=section.expect_json is not _UNSET,
    )
    return RequestSpec(
        name=name.text,
        path=path.text,
        line=at.line,
        method=section.method.text if section.method else "GET",
        query=tuple(
            (key.text, tuple(value.text for value in items))
            for key, items in section.query.values()
        ),
        headers=tuple((header_name, value.text) for header_name, value in section.headers.values()),
        json=None if section.json is _UNSET else _unwrap(section.json),
        has_json=section.json is not _UNSET,
        body=section.body.text if section.body is not None else None,
        expect=expect,
        matrix=tuple((var, axis) for var, axis, _ in base if var in used),
        repeat=repeat,
    )


def _request(value: Any, at: _At, defaults: _Section, suite_matrix: list[_Axis]) -> RequestSpec:
    mapping = _mapping(value, at)
    _check_keys(mapping, at, _REQUEST_KEYS, required=("name", "path"))
    name_at = at.key(mapping, "name")
    name = _tpl(_non_empty_string(mapping["name"], name_at), name_at)
    path = _string_tpl(mapping["path"], at.key(mapping, "path"))
    own_matrix = (
        _matrix(mapping["matrix"], at.key(mapping, "matrix")) if "matrix" in mapping else None
    )
    repeat = (
        _int_at_least(1)(mapping["repeat"], at.key(mapping, "repeat")) if "repeat" in mapping else 1
    )
    section = _merge(defaults, _section(mapping, at))
    return _finalize(name, path, section, own_matrix, suite_matrix, repeat, at)


def _suite_name(value: Any, at: _At) -> str:
    name = _non_empty_string(value, at)
    # "::" separates suite and request name in case ids; forbidding it (and a trailing ":")
    # keeps ids of different suites from ever colliding.
    if "::" in name or name.endswith(":") or _BAD_HEADER_VALUE_RE.search(name):
        raise at.error(
            f"a suite name must not contain '::', end with ':' or contain line breaks, "
            f"got {quote(name)}"
        )
    return name


def _tags(value: Any, at: _At) -> tuple[str, ...]:
    seq = _list(value, at)
    tags = (_non_empty_string(item, at.item(seq, index)) for index, item in enumerate(seq))
    return tuple(dict.fromkeys(tags))


def _suite(document: YMap, file: str) -> Suite:
    root = _At(file, "", document.line, document.line)
    _check_keys(document, root, _SUITE_KEYS, required=("suite", "requests"))
    name_at = root.key(document, "suite")
    name = _suite_name(document["suite"], name_at)
    tags = _tags(document["tags"], root.key(document, "tags")) if "tags" in document else ()
    suite_matrix = _matrix(document.get("matrix"), root.key(document, "matrix"))

    defaults = _Section()
    if "defaults" in document:
        defaults_at = root.key(document, "defaults")
        defaults_map = _optional_mapping(document["defaults"], defaults_at)
        _check_keys(defaults_map, defaults_at, _DEFAULTS_KEYS)
        defaults = _section(defaults_map, defaults_at)

    requests_at = root.key(document, "requests")
    requests = _list(document["requests"], requests_at, non_empty=True)
    specs = tuple(
        _request(item, requests_at.item(requests, index), defaults, suite_matrix)
        for index, item in enumerate(requests)
    )
    compare = _compare_rules(document.get("compare"), root.key(document, "compare"))
    allow = False
    if "allow_side_effects" in document:
        allow = _boolean(document["allow_side_effects"], root.key(document, "allow_side_effects"))
    return Suite(
        name=name,
        file=file,
        line=name_at.line,
        requests=specs,
        tags=tags,
        compare=compare,
        allow_side_effects=allow,
    )


def _duplicate_source(suite: Suite, index: int, case_id: str) -> int | None:
    """Which request produced ``case_id`` before request ``index`` did (None: hash collision)."""
    for earlier in range(index):
        if case_id in suite.requests[earlier].case_ids(suite.name):
            return earlier
    occurrences = sum(1 for other in suite.requests[index].case_ids(suite.name) if other == case_id)
    return index if occurrences > 1 else None


def _check_unique_ids(suite: Suite) -> None:
    """Ids are unique within a suite (suite names keep suites apart); names only, no cases."""
    seen: set[int] = set()
    for index, request in enumerate(suite.requests):
        for case_id in request.case_ids(suite.name):
            digest = hash(case_id)
            if digest not in seen:
                seen.add(digest)
                continue
            source = _duplicate_source(suite, index, case_id)
            if source is None:
                continue
            where = f"requests[{index}]"
            if source != index:
                other = suite.requests[source]
                detail = f"also produced by requests[{source}] at line {other.line}"
            else:
                used = template_vars(request.name)
                unused = [quote(v) for v, axis in request.matrix if v not in used and len(axis) > 1]
                if unused:
                    plural = "s" if len(unused) > 1 else ""
                    detail = f"the name does not use matrix variable{plural} {', '.join(unused)}"
                else:
                    detail = "two matrix combinations give the same name"
            raise InputError(
                f"{where}: duplicate case id {quote(case_id, limit=120)} ({detail})",
                suite.file,
                request.line,
            )


# --------------------------------------------------------------------------------------------
# Suites: files and the public entry points
# --------------------------------------------------------------------------------------------


def find_suite_files(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Suite files named by ``paths``: files as given, directories searched recursively.

    Order: the order of ``paths``; inside a directory, sorted by path. Hidden files and
    directories are skipped; a file reached twice is loaded once.
    """
    if not paths:
        raise InputError("no suite files or directories given")
    files: list[str] = []
    seen: set[str] = set()
    for path in paths:
        text = os.fspath(path)
        if os.path.isdir(text):
            found = sorted(_walk(text))
            if not found:
                raise InputError("no suite files (*.yaml, *.yml) in this directory", text)
        elif os.path.exists(text):
            found = [text]
        else:
            raise InputError("no such file or directory", text)
        for file in found:
            real = os.path.realpath(file)
            if real not in seen:
                seen.add(real)
                files.append(file)
    return files


def _walk(directory: str) -> Iterator[str]:
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.endswith(SUITE_SUFFIXES) and not name.startswith("."):
                yield os.path.join(root, name)


class _SuiteCollector:
    """Suite-level checks across documents and files: unique names and the case budget."""

    def __init__(self, max_cases: int) -> None:
        self.max_cases = max_cases
        self.total = 0
        self.names: dict[str, Suite] = {}
        self.suites: list[Suite] = []

    def add(self, suite: Suite) -> None:
        first = self.names.get(suite.name)
        if first is not None:
            raise InputError(
                f"suite {quote(suite.name)} is already defined at {first.file}:{first.line}",
                suite.file,
                suite.line,
            )
        count = suite.case_count
        if count > self.max_cases:
            raise InputError(
                f"suite {quote(suite.name)} expands to {count} cases, "
                f"more than max_cases={self.max_cases}",
                suite.file,
                suite.line,
            )
        self.total += count
        if self.total > self.max_cases:
            raise InputError(
                f"the suites expand to {self.total} cases in total, "
                f"more than max_cases={self.max_cases}",
                suite.file,
                suite.line,
            )
        _check_unique_ids(suite)
        self.names[suite.name] = suite
        self.suites.append(suite)


def parse_suites(text: str, file: str, max_cases: int = 1_000_000) -> list[Suite]:
    """Validate the text of one suite file (one suite per YAML document)."""
    collector = _SuiteCollector(max_cases)
    for document in parse_documents(text, file):
        collector.add(_suite(document, file))
    return collector.suites


def load_suites(paths: Sequence[str | os.PathLike[str]], max_cases: int = 1_000_000) -> list[Suite]:
    """Load every suite under ``paths`` (files or directories), in file then document order."""
    collector = _SuiteCollector(max_cases)
    for file in find_suite_files(paths):
        for document in parse_documents(read_text(file), file):
            collector.add(_suite(document, file))
    return collector.suites


# --------------------------------------------------------------------------------------------
# accepted.yaml
# --------------------------------------------------------------------------------------------


def _glob(value: Any, at: _At) -> str:
    return _non_empty_string(value, at)


def _kind(value: Any, at: _At) -> str:
    if value not in ("status", "header", "body"):
        raise at.error(f"expected one of status, header, body, got {_describe(value)}")
    return str(value)


def _regex(value: Any, at: _At) -> re.Pattern[str]:
    text = _string(value, at)
    try:
        return re.compile(text)
    except re.error as exc:
        raise _invalid_regex(text, at, exc) from exc


def _date(value: Any, at: _At) -> date:
    text = str(value) if isinstance(value, str | date) else None
    try:
        if text is None:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise at.error(f"expected a date such as 2027-01-31, got {_describe(value)}") from None


_ACCEPTED_RULES: dict[str, Rule] = {
    "template": _glob,
    "kind": _kind,
    "location": _non_empty_string,
    "old": _regex,
    "new": _regex,
    "reason": _non_empty_string,
    "expires": _date,
}


def parse_accepted(text: str, file: str) -> tuple[AcceptedRule, ...]:
    """Validate the text of an accepted.yaml; ``file`` is only used in messages."""
    document = parse_document(text, file)
    root = _At(file, "", document.line, document.line)
    _check_keys(document, root, ("accepted",), required=("accepted",))
    entries_at = root.key(document, "accepted")
    entries = _list(document["accepted"], entries_at)
    rules: list[AcceptedRule] = []
    for index, entry in enumerate(entries):
        entry_at = entries_at.item(entries, index)
        mapping = _mapping(entry, entry_at)
        _check_keys(mapping, entry_at, tuple(_ACCEPTED_RULES), required=("location", "reason"))
        fields = _apply(mapping, entry_at, _ACCEPTED_RULES)
        fields.setdefault("template", "*")
        rules.append(AcceptedRule(index=index, source=f"{file}:{entry_at.line}", **fields))
    return tuple(rules)


def load_accepted(path: str | os.PathLike[str]) -> tuple[AcceptedRule, ...]:
    file = os.fspath(path)
    return parse_accepted(read_text(file), file)
