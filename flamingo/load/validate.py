"""The validation layer shared by every file format flamingo reads.

``_At`` is the cursor of validation: the file, the dotted key path (``requests[2].expect``)
and the line of the value under inspection. Every error is raised through it, so every error
says where it is. Messages start lower-case and read ``where: expected X, got Y``.

Schemas are tables of ``key -> rule`` where a rule is ``(value, at) -> checked value``; small
rule factories (``_int_at_least(1)``) keep the tables readable. The underscore names are the
load package's own vocabulary: shared by its modules, not part of flamingo's API.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flamingo.errors import InputError
from flamingo.model import (
    REDACTED,
    CompareRules,
    Headers,
    Mask,
    worker_count,
)
from flamingo.normalize import compile_json_path
from flamingo.regex import Regex, RegexError
from flamingo.yamlload import (
    YList,
    YMap,
    describe,
    quote,
)

T = TypeVar("T")
Rule = Callable[[Any, "_At"], Any]


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
# Values that came from the environment (their messages never show the value)
# --------------------------------------------------------------------------------------------


class _EnvText(str):
    """A string that had ``${VAR}`` substituted; messages show ``raw``, never the value."""

    raw: str
    whole: bool  # the string was exactly one ${VAR} reference: may be read as a number/boolean


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
    """`flamingo.model.worker_count` of the value (a whole ``${VAR}`` read as an integer)."""
    try:
        return worker_count(_from_env(value, int))
    except ValueError as exc:
        raise at.error(f"{exc}, got {_describe(value)}") from None


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


#: The secret part of a URL's userinfo: the password, or a user alone (a token).
_USERINFO = re.compile(r"(?<=://)(?:([^/@:]*):)?[^/@]*@")


def _base_url(value: Any, at: _At) -> str:
    text = _string(value, at)
    # A password written in the URL is a credential: messages never repeat it.
    shown = _USERINFO.sub(
        lambda m: f"{m.group(1)}:{REDACTED}@" if m.group(1) is not None else f"{REDACTED}@",
        _show(text),
    )
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


def _invalid_regex(value: str, at: _At, exc: RegexError) -> InputError:
    return at.error(f"invalid regular expression {quote(value)}: {exc}")


def _regex(value: Any, at: _At, *, empty: bool = True) -> Regex:
    """A user regex, compiled once for the linear-time engine (`flamingo.regex`)."""
    text = _string(value, at) if empty else _non_empty_string(value, at)
    try:
        return Regex(text)
    except RegexError as exc:
        raise _invalid_regex(text, at, exc) from exc


# --------------------------------------------------------------------------------------------
# compare: (suites, and reserved in targets.yaml)
# --------------------------------------------------------------------------------------------


def _json_path(value: Any, at: _At) -> str:
    text = _non_empty_string(value, at)
    try:  # the very parser (and dialect: filters included) that normalize applies
        compile_json_path(text)
    except ValueError as exc:
        raise at.plain(f"invalid JSON path {quote(text)}: {exc.__cause__ or exc}") from exc
    return text


def _mask(value: Any, at: _At) -> Mask:
    mapping = _mapping(value, at)
    _check_keys(mapping, at, ("pattern", "replace"), required=("pattern", "replace"))
    pattern_at, replace_at = at.key(mapping, "pattern"), at.key(mapping, "replace")
    pattern = _regex(mapping["pattern"], pattern_at, empty=False)
    replacement = _string(mapping["replace"], replace_at)
    try:
        template = pattern.template(replacement)  # catches "\1" without a group
    except RegexError as exc:
        raise replace_at.error(f"invalid replacement {quote(replacement)}: {exc}") from exc
    return Mask(pattern=pattern, replace=replacement, template=template)


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
