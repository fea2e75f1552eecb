"""The ``expand`` stage: validated suites in, an iterator of immutable ``Case``s out.

This module owns turning a ``RequestSpec`` into cases: the matrix product, repeats, ``{{ var }}``
substitution, the query string, the JSON/text body and the per-case ``Expect``. Everything it
needs was checked by ``flamingo.load``, so it raises nothing of its own.

Order is deterministic and never depends on set or hash order, so shards and pytest-xdist
workers agree: suites in the order given, requests in file order, the matrix product in YAML
axis order (``itertools.product``: the last axis varies fastest), repeats innermost.

Speed: each request is compiled once into a ``_Plan`` of small render functions (``str.format``
strings for templates, constants for everything that uses no variable); producing a case is
then a handful of C-level calls. Nothing is collected in a list: 100k cases stream through.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import product
from typing import Any
from urllib.parse import quote

from flamingo.model import Case, Expect, HeaderExpect, Headers, RawRequest
from flamingo.regex import Regex, escape
from flamingo.suite import (
    VAR_RE,
    HeaderExpectSpec,
    RequestSpec,
    Scalar,
    Suite,
    compile_format,
    scalar_text,
    template_vars,
    whole_var,
)

__all__ = ["expand", "expand_suite"]

Texts = tuple[str, ...]  # the axis values of one combination, as text
Raws = tuple[Scalar, ...]  # the same values with their YAML types
TextRender = Callable[[Texts], str]
ValueRender = Callable[[Texts, Raws], Any]


def expand(suites: Iterable[Suite]) -> Iterator[Case]:
    """Every case of every suite, lazily, in deterministic order."""
    for suite in suites:
        yield from expand_suite(suite)


def expand_suite(suite: Suite) -> Iterator[Case]:
    """Every case of one suite, lazily: requests in file order."""
    for request in suite.requests:
        yield from _Plan(suite, request).cases()


# --------------------------------------------------------------------------------------------
# Render functions: compiled once per request
# --------------------------------------------------------------------------------------------


def _text(template: str, index: Mapping[str, int]) -> TextRender:
    if not template_vars(template):
        return lambda _texts: template
    fmt = compile_format(template, index).format
    return lambda texts: fmt(*texts)


def _json(tree: Any, index: Mapping[str, int]) -> ValueRender | None:
    """A renderer for a JSON tree with template strings, or None when it uses no variable."""
    if isinstance(tree, str):
        var = whole_var(tree)
        if var is not None:  # exactly "{{ var }}": the value keeps its YAML type
            position = index[var]
            return lambda _texts, raws: raws[position]
        if not template_vars(tree):
            return None
        fmt = compile_format(tree, index).format
        return lambda texts, _raws: fmt(*texts)
    if isinstance(tree, dict):
        members = [(key, value, _json(value, index)) for key, value in tree.items()]
        if all(render is None for _, _, render in members):
            return None
        return lambda texts, raws: {
            key: value if render is None else render(texts, raws) for key, value, render in members
        }
    if isinstance(tree, list):
        items = [(value, _json(value, index)) for value in tree]
        if all(render is None for _, render in items):
            return None
        return lambda texts, raws: [
            value if render is None else render(texts, raws) for value, render in items
        ]
    return None


def _join_query(path: str, query: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{query}"


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _quoted_format(template: str, index: Mapping[str, int], offset: int) -> str:
    """A query key or value as a format string over the *percent-encoded* axis texts.

    Percent-encoding works character by character, so encoding the literal parts once here and
    each matrix value once per axis gives exactly ``urlencode(pairs, quote_via=quote)`` of the
    rendered text, without calling urlencode per case (it dominated the expansion time).
    ``quote`` (not ``quote_plus``): a space becomes %20, which every server reads as a space.
    """
    parts: list[str] = []
    end = 0
    for match in VAR_RE.finditer(template):
        parts.append(quote(template[end : match.start()], safe=""))
        parts.append(f"{{{offset + index[match.group(1)]}}}")
        end = match.end()
    parts.append(quote(template[end:], safe=""))
    return "".join(parts)  # quote() output has no braces to escape


# --------------------------------------------------------------------------------------------
# One request, compiled
# --------------------------------------------------------------------------------------------


class _Plan:
    """A request compiled into render functions; ``cases()`` walks its matrix product."""

    def __init__(self, suite: Suite, request: RequestSpec) -> None:
        self.suite = suite
        self.request = request
        self.index = {var: i for i, (var, _) in enumerate(request.matrix)}
        self.texts = [tuple(scalar_text(v) for v in values) for _, values in request.matrix]
        self.quoted = [tuple(quote(text, safe="") for text in axis) for axis in self.texts]
        self.raws = [values for _, values in request.matrix]
        index = self.index

        self.name = _text(request.name, index)
        method = _text(request.method, index)
        if template_vars(request.method):
            self.method: TextRender = lambda texts: method(texts).upper()
        else:
            self.method = method
        self.path = self._path(request, index)
        self.headers = self._headers(request, index)
        self.body = self._body(request, index)
        self.expect = self._expect(request, index)
        self.raw = self._raw(request, index)

    @staticmethod
    def _path(request: RequestSpec, index: Mapping[str, int]) -> Callable[[Texts, Texts], str]:
        """Path as written (never re-encoded) plus the query; renders from (texts, quoted)."""
        path = _text(request.path, index)
        offset = len(index)  # placeholders {offset + i} take the percent-encoded texts
        query = "&".join(
            f"{_quoted_format(key, index, offset)}={_quoted_format(value, index, offset)}"
            for key, values in request.query
            for value in values
        )
        if not query:
            return lambda texts, _quoted: path(texts)
        if not any(template_vars(k) or any(map(template_vars, v)) for k, v in request.query):
            constant = query
            return lambda texts, _quoted: _join_query(path(texts), constant)
        fmt = query.format
        return lambda texts, quoted: _join_query(path(texts), fmt(*texts, *quoted))

    @staticmethod
    def _headers(request: RequestSpec, index: Mapping[str, int]) -> Callable[[Texts], Headers]:
        extra: Headers = ()
        if request.has_json and not any(n.lower() == "content-type" for n, _ in request.headers):
            extra = (("Content-Type", "application/json"),)
        if not any(template_vars(value) for _, value in request.headers):
            constant = request.headers + extra
            return lambda _texts: constant
        rendered = [(name, _text(value, index)) for name, value in request.headers]
        return lambda texts: tuple((name, value(texts)) for name, value in rendered) + extra

    @staticmethod
    def _body(
        request: RequestSpec, index: Mapping[str, int]
    ) -> Callable[[Texts, Raws], bytes | None]:
        if request.has_json:
            tree = _json(request.json, index)
            if tree is None:
                constant = _dump(request.json)
                return lambda _texts, _raws: constant
            return lambda texts, raws: _dump(tree(texts, raws))
        if request.body is not None:
            text = _text(request.body, index)
            return lambda texts, _raws: text(texts).encode()
        return lambda _texts, _raws: None

    @staticmethod
    def _raw(
        request: RequestSpec, index: Mapping[str, int]
    ) -> Callable[[Texts], RawRequest | None]:
        """Raw parts rendered: text as its UTF-8 (nothing added), bytes and pauses as given."""
        if request.raw is None:
            return lambda _texts: None
        idle = request.raw_idle if request.raw_idle is not None else RawRequest.idle
        renders = [_text(part, index) if isinstance(part, str) else part for part in request.raw]

        def raw(texts: Texts) -> RawRequest:
            parts = tuple(
                part if isinstance(part, bytes | float) else part(texts).encode()
                for part in renders
            )
            return RawRequest(parts, idle=idle, timeout=request.raw_timeout)

        if not any(template_vars(part) for part in request.raw if isinstance(part, str)):
            constant = raw(())
            return lambda _texts: constant
        return raw

    @staticmethod
    def _expect(request: RequestSpec, index: Mapping[str, int]) -> Callable[[Texts, Raws], Expect]:
        spec = request.expect
        json_render = _json(spec.json, index) if spec.has_json else None
        status_vars = [whole_var(s) if isinstance(s, str) else None for s in spec.status]
        header_vars = any(
            template_vars(h.equals or "") or template_vars(h.regex or "")
            for h in (*spec.headers, *spec.upstream_headers)
        )
        if json_render is None and not header_vars and not any(status_vars):
            constant = Expect(
                status=tuple(s for s in spec.status if isinstance(s, int)),
                headers=tuple(map(_constant_header, spec.headers)),
                json=spec.json,
                has_json=spec.has_json,
                upstream_headers=tuple(map(_constant_header, spec.upstream_headers)),
            )
            return lambda _texts, _raws: constant

        # (axis position, None) for a "{{ var }}" status, (None, code) for a literal one
        status = [
            (index[var], 0) if var else (None, int(code))
            for var, code in zip(status_vars, spec.status, strict=True)
        ]
        headers = _headers_render(spec.headers, index)
        upstream = _headers_render(spec.upstream_headers, index)

        def expect(texts: Texts, raws: Raws) -> Expect:
            return Expect(
                status=tuple(
                    int(raws[position]) if position is not None else code
                    for position, code in status
                ),
                headers=headers(texts),
                json=json_render(texts, raws) if json_render is not None else spec.json,
                has_json=spec.has_json,
                upstream_headers=upstream(texts),
            )

        return expect

    def cases(self) -> Iterator[Case]:
        suite, request = self.suite, self.request
        prefix = f"{suite.name}::"
        template = prefix + request.name
        source = f"{suite.file}:{request.line}"
        name_of, method_of, path_of = self.name, self.method, self.path
        headers_of, body_of, expect_of, raw_of = self.headers, self.body, self.expect, self.raw
        suite_name, compare, tags, side_effects = (
            suite.name,
            suite.compare,
            suite.tags,
            suite.allow_side_effects,
        )
        # Three products in lockstep (all in C): the axis values as text, percent-encoded for
        # the query string, and with their YAML types for whole-value JSON substitution.
        rows = zip(product(*self.texts), product(*self.quoted), product(*self.raws), strict=True)
        suffixes = [""] if request.repeat == 1 else [f"#{k}" for k in range(1, request.repeat + 1)]
        for texts, quoted, raws in rows:
            name = name_of(texts)
            method = method_of(texts)
            path = path_of(texts, quoted)
            headers = headers_of(texts)
            body = body_of(texts, raws)
            expect = expect_of(texts, raws)
            raw = raw_of(texts)
            for suffix in suffixes:
                yield Case(
                    id=prefix + name + suffix,
                    suite=suite_name,
                    name=name,
                    template=template,
                    method=method,
                    path=path,
                    headers=headers,
                    body=body,
                    expect=expect,
                    compare=compare,
                    tags=tags,
                    source=source,
                    allow_side_effects=side_effects,
                    raw=raw,
                )


def _constant_header(spec: HeaderExpectSpec) -> HeaderExpect:
    """An ``expect`` header entry that uses no matrix variable."""
    regex = Regex(spec.regex) if spec.regex is not None else None
    return HeaderExpect(name=spec.name, equals=spec.equals, regex=regex, absent=spec.absent)


def _headers_render(
    specs: Iterable[HeaderExpectSpec], index: Mapping[str, int]
) -> Callable[[Texts], tuple[HeaderExpect, ...]]:
    """``expect`` header entries (of the response, or of what reached the origin) with matrix
    values in their ``equals`` and ``regex``."""
    renders = [
        (
            h,
            _text(h.equals, index) if h.equals is not None else None,
            _RegexRender(h.regex, index) if h.regex is not None else None,
        )
        for h in specs
    ]

    def render(texts: Texts) -> tuple[HeaderExpect, ...]:
        return tuple(
            HeaderExpect(
                name=h.name,
                equals=equals(texts) if equals is not None else None,
                regex=regex(texts) if regex is not None else None,
                absent=h.absent,
            )
            for h, equals, regex in renders
        )

    return render


class _RegexRender:
    """A regex template: matrix values go in escaped (they match literally); compiled once each."""

    def __init__(self, template: str, index: Mapping[str, int]) -> None:
        self.format = compile_format(template, index).format if template_vars(template) else None
        self.template = template
        self.compiled: dict[str, Regex] = {}

    def __call__(self, texts: Texts) -> Regex:
        source = self.template if self.format is None else self.format(*map(escape, texts))
        pattern = self.compiled.get(source)
        if pattern is None:
            pattern = self.compiled[source] = Regex(source)
        return pattern
