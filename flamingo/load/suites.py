"""The suite schema (CONTRACT section 4): requests, templates, matrix, ids, suite files.

A suite request is first read into a ``_Section`` whose strings are ``_Tpl`` (template text plus
where it was written). Suite ``defaults`` are merged under it, then ``_finalize`` checks every
``{{ var }}`` against the request's matrix - at the line of the string that uses it - and
produces a plain ``RequestSpec``. Case ids are checked for uniqueness by walking the rendered
*names* only and keeping a set of hashes, never the cases; the case count is computed by
multiplication before that walk.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any

from flamingo.errors import InputError
from flamingo.load.validate import (
    _BAD_HEADER_VALUE_RE,
    _BAD_PATH_RE,
    _TOKEN_RE,
    T,
    _At,
    _boolean,
    _check_keys,
    _compare_rules,
    _duration,
    _header_name,
    _header_value_text,
    _int_at_least,
    _invalid_regex,
    _list,
    _mapping,
    _non_empty_string,
    _optional_mapping,
    _string,
    _unique_header,
)
from flamingo.model import TOKEN_SENTINEL
from flamingo.regex import Regex, RegexError
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
    parse_documents,
    quote,
    read_text,
)

__all__ = ["SUITE_SUFFIXES", "find_suite_files", "load_suites", "parse_suites"]

SUITE_SUFFIXES = (".yaml", ".yml")


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
    expect_upstream: dict[str, _HeaderExpectDraft] = field(default_factory=dict)
    raw: list[_Tpl | bytes | float] | None = None  # raw/raw_b64/raw_chunks: text, bytes, pauses

    def templates(self) -> Iterator[_Tpl]:
        for part in self.raw or ():
            if isinstance(part, _Tpl):
                yield part
        for expect in self.expect_upstream.values():
            if expect.equals is not None:
                yield expect.equals
            if expect.regex is not None:
                yield expect.regex
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
    # Matrix values go in escaped, so any literal text stands in for them here.
    try:
        Regex(VAR_RE.sub("x", tpl.text))
    except RegexError as exc:
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
    _check_keys(mapping, at, ("status", "headers", "json", "upstream"))
    if "status" in mapping:
        section.status = _status(mapping["status"], at.key(mapping, "status"))
    if "headers" in mapping:
        section.expect_headers = _header_expects(mapping["headers"], at.key(mapping, "headers"))
    if "json" in mapping:
        section.expect_json = _json_tree(mapping["json"], at.key(mapping, "json"))
    if "upstream" in mapping:
        upstream_at = at.key(mapping, "upstream")
        upstream = _mapping(mapping["upstream"], upstream_at)
        _check_keys(upstream, upstream_at, ("headers",), required=("headers",))
        section.expect_upstream = _header_expects(
            upstream["headers"], upstream_at.key(upstream, "headers")
        )


def _header_expects(value: Any, at: _At) -> dict[str, _HeaderExpectDraft]:
    headers = _optional_mapping(value, at)
    seen: dict[str, int] = {}
    drafts: dict[str, _HeaderExpectDraft] = {}
    for key, item in headers.items():
        name = _header_name(key, headers, at)
        _unique_header(name.lower(), seen, headers, name, at)
        drafts[name.lower()] = _header_expect(name.lower(), item, at.key(headers, key))
    return drafts


# --------------------------------------------------------------------------------------------
# Raw requests: raw, raw_b64, raw_chunks
# --------------------------------------------------------------------------------------------

_RAW_KEYS = ("raw", "raw_b64", "raw_chunks")
#: Keys that describe a request flamingo builds; a raw request is sent as written instead.
_BUILT_KEYS = ("method", "path", "query", "headers", "json", "body")
_TOKEN_VAR_RE = re.compile(r"\{\{\s*token\s*\}\}")
_BARE_LF_RE = re.compile(r"(?<!\r)\n")


def _raw_text(value: Any, at: _At, crlf: bool) -> _Tpl:
    """A raw template: ``{{ token }}`` becomes the token stand-in (filled in at send time),
    and with ``raw_crlf`` every bare LF of the text as written becomes CRLF."""
    text = _string(value, at)
    if crlf:
        text = _BARE_LF_RE.sub("\r\n", text)
    return _tpl(_TOKEN_VAR_RE.sub(TOKEN_SENTINEL.decode(), text), at)


def _b64(value: Any, at: _At) -> bytes:
    text = _non_empty_string(value, at)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise at.error(f"expected base64 (RFC 4648), got {quote(text[:40])}: {exc}") from exc


def _raw_chunk(value: Any, at: _At, crlf: bool) -> _Tpl | bytes | float:
    if not isinstance(value, YMap):
        return _raw_text(value, at, crlf)
    _check_keys(value, at, ("b64", "pause"))
    if len(value) != 1:
        raise at.error("expected one of {b64: ...} or {pause: DURATION} per chunk")
    if "b64" in value:
        return _b64(value["b64"], at.key(value, "b64"))
    return _duration(value["pause"], at.key(value, "pause"))


def _raw(mapping: YMap, at: _At) -> list[_Tpl | bytes | float]:
    given = [key for key in _RAW_KEYS if key in mapping]
    if len(given) > 1:
        line = max(mapping.key_line(key) for key in given)
        raise at.error(f"use one of {', '.join(given)}, not several", line)
    built = [key for key in _BUILT_KEYS if key in mapping]
    if built:
        raise at.plain(
            f"{at.path}.{built[0]}: a raw request is sent exactly as written; "
            f"write the {built[0]} into the {given[0]} bytes instead",
            mapping.key_line(built[0]),
        )
    crlf = False
    if "raw_crlf" in mapping:
        crlf_at = at.key(mapping, "raw_crlf")
        crlf = _boolean(mapping["raw_crlf"], crlf_at)
        if given[0] == "raw_b64":
            raise crlf_at.error("raw_crlf applies to raw and raw_chunks text, not to raw_b64")
    key = given[0]
    key_at = at.key(mapping, key)
    if key == "raw":
        return [_raw_text(mapping[key], key_at, crlf)]
    if key == "raw_b64":
        return [_b64(mapping[key], key_at)]
    chunks = _list(mapping[key], key_at, non_empty=True)
    parts = [_raw_chunk(item, key_at.item(chunks, i), crlf) for i, item in enumerate(chunks)]
    if not any(not isinstance(part, float) for part in parts):
        raise key_at.error("raw_chunks has only pauses: nothing to send")
    return parts


_WORD_RE = re.compile(r"(?:\{\{.*?\}\}|[^ ])+")


def _raw_first_line(parts: Sequence[_Tpl | bytes | float]) -> tuple[str, str]:
    """(method, target) of the first request line, for ids, reports and the side-effect guard:
    ``RAW`` and ``""`` when the bytes do not start with one."""
    first = next((p for p in parts if not isinstance(p, float)), b"")
    text = first.text if isinstance(first, _Tpl) else first.decode("latin-1")
    words = _WORD_RE.findall(text.split("\n", 1)[0]) or [""]  # a {{ var }} is one word
    method = words[0] if _TOKEN_RE.fullmatch(words[0]) else "RAW"
    target = words[1] if len(words) > 1 else ""
    return method.upper(), target.replace(TOKEN_SENTINEL.decode(), "<token>")


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
    *_RAW_KEYS,
    "raw_crlf",
    "idle",
    "timeout",
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
        expect_upstream=_merged(defaults.expect_upstream, request.expect_upstream),
        raw=request.raw,
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
    for tpl in (name, *section.templates(), path):  # raw text before the path taken from it
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

    if section.raw is None:
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
        headers=tuple(_header_spec(draft) for draft in section.expect_headers.values()),
        json=None if section.expect_json is _UNSET else _unwrap(section.expect_json),
        has_json=section.expect_json is not _UNSET,
        upstream_headers=tuple(_header_spec(d) for d in section.expect_upstream.values()),
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
        raw=None
        if section.raw is None
        else tuple(part.text if isinstance(part, _Tpl) else part for part in section.raw),
    )


def _header_spec(draft: _HeaderExpectDraft) -> HeaderExpectSpec:
    return HeaderExpectSpec(
        name=draft.name,
        equals=draft.equals.text if draft.equals else None,
        regex=draft.regex.text if draft.regex else None,
        absent=draft.absent,
    )


def _request(value: Any, at: _At, defaults: _Section, suite_matrix: list[_Axis]) -> RequestSpec:
    mapping = _mapping(value, at)
    is_raw = any(key in mapping for key in _RAW_KEYS)
    _check_keys(mapping, at, _REQUEST_KEYS, required=("name",) if is_raw else ("name", "path"))
    name_at = at.key(mapping, "name")
    name = _tpl(_non_empty_string(mapping["name"], name_at), name_at)
    own_matrix = (
        _matrix(mapping["matrix"], at.key(mapping, "matrix")) if "matrix" in mapping else None
    )
    repeat = (
        _int_at_least(1)(mapping["repeat"], at.key(mapping, "repeat")) if "repeat" in mapping else 1
    )
    raw_only = [key for key in ("raw_crlf", "idle", "timeout") if key in mapping]
    if not is_raw:
        if raw_only:
            raise at.plain(
                f"{at.path}.{raw_only[0]}: only for raw requests (raw, raw_b64, raw_chunks)",
                mapping.key_line(raw_only[0]),
            )
        path = _string_tpl(mapping["path"], at.key(mapping, "path"))
        section = _merge(defaults, _section(mapping, at))
        return _finalize(name, path, section, own_matrix, suite_matrix, repeat, at)
    section = _Section()
    if "expect" in mapping:
        _expect(mapping["expect"], at.key(mapping, "expect"), section)
    # Suite defaults describe built requests; of them, only the expectations apply to raw ones.
    expectations = _Section(
        status=defaults.status,
        expect_headers=defaults.expect_headers,
        expect_json=defaults.expect_json,
        expect_upstream=defaults.expect_upstream,
    )
    section = _merge(expectations, section)
    section.raw = _raw(mapping, at)
    has_token = any(
        isinstance(part, _Tpl) and TOKEN_SENTINEL.decode() in part.text for part in section.raw
    )
    if section.expect_upstream and not has_token:
        raise at.key(mapping, "expect").error(
            "expect.upstream needs '{{ token }}' in the raw request: the recording origin "
            "matches what a proxy forwarded by it (e.g. a line 'X-Flamingo-Token: {{ token }}')"
        )
    timing = {
        key: _duration(mapping[key], at.key(mapping, key))
        for key in ("idle", "timeout")
        if key in mapping
    }
    method, target = _raw_first_line(section.raw)
    section.method = _tpl(method, at)
    spec = _finalize(name, _tpl(target, at), section, own_matrix, suite_matrix, repeat, at)
    return replace(spec, raw_idle=timing.get("idle"), raw_timeout=timing.get("timeout"))


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
