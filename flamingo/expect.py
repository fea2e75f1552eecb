"""Expectations: the ``expect:`` assertions a suite makes about each target's response.

This module owns `check_expect`. It is pure: no sockets, no clocks, no printing, no files.

Theory of operation
-------------------
An `Expect` holds on a response when every one of its parts holds; each part that does not
yields one `ExpectFailure` (all are collected, not just the first, so one run shows them all).
Expectations look at the *raw* response (after content decoding), never at the normalized one:
masks and ignore rules are for comparing two targets, not for hiding what a target said.

    part            holds when                                            ``what``
    status          the status is one of ``status`` (empty: unchecked)    status
    header equals   the combined value, or any single field line, is      header NAME
                    exactly ``equals``
    header regex    ``regex.search`` matches the combined value           header NAME
    header present  (no equals/regex/absent) the header exists            header NAME
    header absent   the header does not exist                             header NAME
    json            the body parses as JSON and contains ``json`` as a    json $.PATH
                    subset (below)
    upstream        each ``upstream.headers`` entry holds (as above) on   upstream header NAME
    headers         the first request the proxy forwarded to the          (``upstream`` when
                    recording origin                                      nothing was recorded)

The combined value of a header is its field lines joined with ", " (RFC 9110 §5.3). Regexes use
``search``, not ``fullmatch``: the common need is "this header contains that" (``max-age=\\d+``
in a Cache-Control list, ``^W/`` on an ETag) and users who want the whole value anchor with
``^...$``, while a fullmatch default would silently turn every partial pattern into a failure.

JSON subset, recursively:
  * object: every expected key is present and its value matches (extra actual keys are fine);
  * array: the same length, and element i matches element i. Arrays are positional because
    "contains these items in some order" is ambiguous with nested subsets and costly to decide;
    users who need less pin the elements they care about by asking for the object around them;
  * scalar: equal as JSON data -- ``1`` matches ``1.0``, but ``true`` never matches ``1``.

In failures, ``expected``/``actual`` are JSON-able; an absent header is ``None``, a missing JSON
key is `MISSING`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flamingo.model import Expect, ExpectFailure, HeaderExpect, Headers, Response, header_values
from flamingo.normalize import format_json_path, json_equal, load_json

#: The ``actual`` of a JSON key that is not there (None would read as JSON null).
MISSING = "<missing>"
#: Characters of a non-JSON body quoted in the failure.
_BODY_EXCERPT = 80


def check_expect(expect: Expect, response: Response, target: str) -> tuple[ExpectFailure, ...]:
    """Every way ``response`` (from ``target``: "old" or "new") breaks ``expect``."""
    if expect.empty:
        return ()
    failures: list[ExpectFailure] = []
    if expect.status and response.status not in expect.status:
        expected: Any = expect.status[0] if len(expect.status) == 1 else list(expect.status)
        failures.append(ExpectFailure(target, "status", expected, response.status))
    for header in expect.headers:
        failures.extend(_check_header(header, response.headers, target))
    if expect.has_json:
        failures.extend(_check_json(expect.json, response, target))
    if expect.upstream_headers:
        failures.extend(_check_upstream(expect.upstream_headers, response, target))
    return tuple(failures)


def _check_upstream(
    expected: tuple[HeaderExpect, ...], response: Response, target: str
) -> list[ExpectFailure]:
    """``expect.upstream.headers`` hold on the first request the proxy forwarded."""
    view = response.upstream
    if view is None or not view.requests:
        if view is None:
            actual = "not recorded: targets.yaml has no upstream:"
        elif view.untokened:
            actual = "token lost: the proxy stripped or rewrote it"
        else:
            actual = "nothing forwarded"
        wanted = {h.name: h.equals or (h.regex.pattern if h.regex else "present") for h in expected}
        return [ExpectFailure(target, "upstream", {"headers": wanted}, actual)]
    failures: list[ExpectFailure] = []
    for header in expected:
        for failure in _check_header(header, view.requests[0].headers, target):
            failures.append(
                ExpectFailure(target, f"upstream {failure.what}", failure.expected, failure.actual)
            )
    return failures


def _check_header(header: HeaderExpect, headers: Headers, target: str) -> list[ExpectFailure]:
    name = header.name.lower()
    lines = header_values(headers, name)
    combined = ", ".join(lines) if lines else None
    what = f"header {name}"
    if header.absent:
        return [] if combined is None else [ExpectFailure(target, what, None, combined)]
    failures = []
    if header.equals is not None and header.equals != combined and header.equals not in lines:
        failures.append(ExpectFailure(target, what, header.equals, combined))
    if header.regex is not None and (combined is None or not header.regex.search(combined)):
        failures.append(ExpectFailure(target, what, {"regex": header.regex.pattern}, combined))
    if header.equals is None and header.regex is None and combined is None:
        failures.append(ExpectFailure(target, what, {"present": True}, None))
    return failures


def _check_json(expected: Any, response: Response, target: str) -> list[ExpectFailure]:
    if response.truncated:
        # Only a prefix was kept: it cannot be parsed, and guessing would not be failing closed.
        actual = f"not checked: body larger than max_body_bytes ({response.body_size} bytes)"
        return [ExpectFailure(target, "json $", expected, actual)]
    try:
        data = load_json(response.body.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is a ValueError too
        excerpt = response.body[: _BODY_EXCERPT * 4].decode("utf-8", "replace")[:_BODY_EXCERPT]
        return [ExpectFailure(target, "json $", expected, f"not JSON: {excerpt}")]
    return [
        ExpectFailure(target, f"json {format_json_path(path)}", want, got)
        for path, want, got in json_subset_mismatches(expected, data)
    ]


def json_subset_mismatches(
    expected: Any, actual: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any, Any]]:
    """Yield ``(path, expected, actual)`` wherever ``actual`` does not contain ``expected``."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            yield path, expected, actual
            return
        for raw_key, want in expected.items():
            # YAML may hand us `1: x`; JSON object keys are always strings.
            key = raw_key if isinstance(raw_key, str) else str(raw_key)
            if key not in actual:
                yield (*path, key), want, MISSING
            else:
                yield from json_subset_mismatches(want, actual[key], (*path, key))
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(expected) != len(actual):
            yield path, expected, actual
            return
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            yield from json_subset_mismatches(want, got, (*path, index))
    elif not json_equal(expected, actual):
        yield path, expected, actual
