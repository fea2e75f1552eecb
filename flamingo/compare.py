"""Comparison: the differences between two responses after normalization.

This module owns `compare` and the shape of every `Difference` it emits. It is pure: no
sockets, no clocks, no printing, no files.

Theory of operation
-------------------
Differences come out in a fixed order -- status, then headers sorted by name, then body -- and
every ``old``/``new`` value is JSON-serializable (records go straight into results.jsonl).

    part     location            old / new                               note
    status   ``status``          the two status codes (reason phrase never compared)
    header   lower-case name     values joined with ", "; None = absent
    body     JSON path           the two JSON values; None = absent      added / removed /
             (``$.a[0]``, ``$``)                                          type a -> b
    body     ``$``               excerpts of both bodies                 json vs non-json
    body     ``text``            ~120 chars around the first change      first difference at ...
    body     ``bytes``           ``<n> bytes sha256:<hex12>``            (compared by hash: ...)
    exchange ``responses``,      raw exchanges (`flamingo.raw`): how many responses, how the
             ``ending``          connection ended; later responses compare as above under
                                 ``response[k].`` (``response[2].status``)
    upstream ``upstream.…``      what each proxy forwarded to the recording origin
                                 (`compare_upstream`); a status of `NO_RESPONSE` reads None

Most cases match, so the match path is kept cheap and each step runs only when the one before
could not decide: identical raw header tuples skip header normalization; byte-equal bodies skip
body work altogether; bodies equal after detection (key order, whitespace) or after any body
rule skip the rules left (see `normalize_body_pair`); normalized-equal bodies skip deepdiff.
Only a real JSON mismatch pays for DeepDiff, and even then equal subtrees are skipped.

A body larger than ``max_body_bytes`` (``Response.truncated``) is compared by size and SHA-256
only, since only a prefix of it was kept. Text line/column and excerpts refer to the text after
masks; at most `MAX_BODY_DIFFERENCES` JSON records are listed, then one "N more" record.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flamingo.model import (
    NO_RESPONSE,
    CompareRules,
    Difference,
    ForwardedRequest,
    Headers,
    Response,
    UpstreamView,
)
from flamingo.normalize import (
    BODY_RULES,
    JsonNumber,
    NormalizedBody,
    detect_body,
    format_json_path,
    header_value,
    json_equal,
    mask_text_value,
    normalize_headers,
)

#: Cap on body differences listed per case: a reordered 10k-element array would otherwise make
#: one results.jsonl line megabytes long. The last record says how many were left out.
MAX_BODY_DIFFERENCES = 100
#: Characters of context in text excerpts: this many before the first difference...
EXCERPT_BEFORE = 40
#: ...and this many in total.
EXCERPT_LENGTH = 120
_TRUNCATED_NOTE = "compared by hash: body larger than max_body_bytes"


def compare(old: Response, new: Response, rules: CompareRules) -> tuple[Difference, ...]:
    """Every difference between ``old`` and ``new`` under ``rules``; ``()`` when they match."""
    differences: list[Difference] = []
    if old.status != new.status:
        differences.append(Difference("status", "status", _status(old), _status(new)))
    if old.headers != new.headers:
        differences.extend(compare_headers(old.headers, new.headers, rules))
    differences.extend(compare_bodies(old, new, rules))
    if old.ending or new.ending or old.more or new.more:
        differences.extend(compare_connection(old, new, rules))
    if old.upstream is not None and new.upstream is not None:
        differences.extend(compare_upstream(old.upstream, new.upstream, rules))
    return tuple(differences)


def _status(response: Response) -> int | None:
    return None if response.status == NO_RESPONSE else response.status


# --------------------------------------------------------------------------------------------
# Raw exchanges: the responses after the first, and how the connection ended
# --------------------------------------------------------------------------------------------


def _prefixed(prefix: str, difference: Difference) -> Difference:
    return Difference(
        difference.kind,
        f"{prefix}{difference.location}",
        difference.old,
        difference.new,
        difference.note,
    )


def compare_connection(old: Response, new: Response, rules: CompareRules) -> list[Difference]:
    """Raw exchanges: every later response compared like the first (``response[2].status``,
    ``response[2].header-name``...), then their number and the ending (kind ``exchange``)."""
    differences: list[Difference] = []
    for index, (a, b) in enumerate(zip(old.more, new.more, strict=False), start=2):
        differences.extend(_prefixed(f"response[{index}].", d) for d in compare(a, b, rules))
    count_old, count_new = _count(old), _count(new)
    if count_old != count_new:
        differences.append(Difference("exchange", "responses", count_old, count_new))
    if old.ending != new.ending:
        differences.append(Difference("exchange", "ending", old.ending, new.ending))
    return differences


def _count(response: Response) -> int:
    return (response.status != NO_RESPONSE) + sum(r.status != NO_RESPONSE for r in response.more)


# --------------------------------------------------------------------------------------------
# The upstream view: what each proxy forwarded to the recording origin
# --------------------------------------------------------------------------------------------

_TOKEN_LOST_NOTE = (
    "nothing reached the recording origin with this exchange's token, but requests without "
    "a token did: a proxy stripped or rewrote it, so what it forwarded cannot be matched"
)


def _view_summary(view: UpstreamView) -> str:
    if view.requests:
        return f"{len(view.requests)} forwarded"
    if view.untokened:
        return f"token lost ({view.untokened} untokened request(s) at the origin)"
    return "nothing forwarded"


def compare_upstream(old: UpstreamView, new: UpstreamView, rules: CompareRules) -> list[Difference]:
    """What old forwarded against what new forwarded (kind ``upstream``).

    Locations: ``upstream.token`` (a side's token was lost: never a silent match),
    ``upstream.requests`` (how many), then per forwarded request ``upstream.request-line``,
    ``upstream.framing``, ``upstream.header.NAME``, ``upstream.body`` (``upstream.body.a[0]``
    for JSON), ``upstream.complete``; the k-th request (k >= 2) is ``upstream[k].…``. Headers and
    bodies go through the same rules as responses (ignore_headers, masks, framing headers).
    """
    if any(not view.requests and view.untokened for view in (old, new)):
        return [
            Difference(
                "upstream",
                "upstream.token",
                _view_summary(old),
                _view_summary(new),
                _TOKEN_LOST_NOTE,
            )
        ]
    differences: list[Difference] = []
    if len(old.requests) != len(new.requests):
        differences.append(
            Difference(
                "upstream",
                "upstream.requests",
                len(old.requests),
                len(new.requests),
                f"{_view_summary(old)} vs {_view_summary(new)}",
            )
        )
    for index, (a, b) in enumerate(zip(old.requests, new.requests, strict=False), start=1):
        prefix = "upstream" if index == 1 else f"upstream[{index}]"
        differences.extend(_compare_forwarded(prefix, a, b, rules))
    return differences


def _compare_forwarded(
    prefix: str, a: ForwardedRequest, b: ForwardedRequest, rules: CompareRules
) -> list[Difference]:
    differences: list[Difference] = []
    line_a, line_b = a.request_line, b.request_line
    if rules.mask:
        line_a, line_b = mask_text_value(line_a, rules.mask), mask_text_value(line_b, rules.mask)
    if line_a != line_b:
        differences.append(Difference("upstream", f"{prefix}.request-line", line_a, line_b))
    if a.framing != b.framing:
        differences.append(Difference("upstream", f"{prefix}.framing", a.framing, b.framing))
    if a.headers != b.headers:
        for d in compare_headers(a.headers, b.headers, rules):
            differences.append(
                Difference("upstream", f"{prefix}.header.{d.location}", d.old, d.new, d.note)
            )
    for d in compare_bodies(_as_body(a), _as_body(b), rules):
        where = "" if d.location in ("text", "bytes", "$") else d.location[1:]
        differences.append(Difference("upstream", f"{prefix}.body{where}", d.old, d.new, d.note))
    if a.complete != b.complete:
        differences.append(Difference("upstream", f"{prefix}.complete", a.complete, b.complete))
    return differences


def _as_body(forwarded: ForwardedRequest) -> Response:
    """A forwarded request's body in the shape `compare_bodies` reads."""
    return Response(
        status=NO_RESPONSE,
        reason="",
        headers=forwarded.headers,
        body=forwarded.body,
        latency_ms=0.0,
        body_size=forwarded.body_size,
        body_sha256=forwarded.body_sha256,
    )


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------


def compare_headers(old: Headers, new: Headers, rules: CompareRules) -> list[Difference]:
    """Header differences, sorted by (lower-case) name."""
    a = normalize_headers(old, rules)
    b = normalize_headers(new, rules)
    if a == b:
        return []
    differences = []
    for name in sorted(a.keys() | b.keys()):
        va, vb = a.get(name), b.get(name)
        if va == vb:
            continue
        joined_a = None if va is None else ", ".join(va)
        joined_b = None if vb is None else ", ".join(vb)
        note = ""
        if joined_a == joined_b and va is not None and vb is not None:
            # Same text, split into a different number of field lines: worth a word, since
            # the two values printed side by side look identical.
            note = f"{len(va)} vs {len(vb)} field lines"
        differences.append(Difference("header", name, joined_a, joined_b, note))
    return differences


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------


def compare_bodies(old: Response, new: Response, rules: CompareRules) -> list[Difference]:
    """Body differences (at most `MAX_BODY_DIFFERENCES` + 1 records)."""
    if old.truncated or new.truncated:
        return _compare_by_hash(old, new)
    if old.body == new.body:
        return []
    pair = normalize_body_pair(old, new, rules)
    if pair is None:
        return []
    a, b = pair
    if a.kind == "json" and b.kind == "json":
        return _cap(diff_json(a.value, b.value))
    if a.kind == "json" or b.kind == "json":
        return [
            Difference(
                "body", "$", _excerpt_of(a, old.body), _excerpt_of(b, new.body), "json vs non-json"
            )
        ]
    if a.kind == "text" and b.kind == "text":
        return [_text_difference(a.value, b.value)]
    return [Difference("body", "bytes", _digest_label(old.body), _digest_label(new.body))]


def normalize_body_pair(
    old: Response, new: Response, rules: CompareRules
) -> tuple[NormalizedBody, NormalizedBody] | None:
    """Both bodies normalized, or None as soon as they are found equal.

    Every body rule is a function of one side, so bodies equal after a rule stay equal after
    the rest: equality is checked after detection and after each rule that changed something,
    and the remaining rules are skipped. Key order or whitespace alone then costs no rule at
    all, and a difference only in ignored paths never pays for masking the whole document.
    """
    a = detect_body(old.body, header_value(old.headers, "content-type"))
    b = detect_body(new.body, header_value(new.headers, "content-type"))
    if a == b:
        return None
    if not rules.ignore_json_paths and not rules.mask:
        return a, b
    for rule in BODY_RULES:
        next_a, next_b = rule(a, rules), rule(b, rules)
        if next_a is a and next_b is b:
            continue  # the rule did not apply
        a, b = next_a, next_b
        if a == b:
            return None
    return a, b


def _size_and_hash(response: Response) -> tuple[int, str]:
    size = response.body_size if response.body_size >= 0 else len(response.body)
    digest = response.body_sha256 or hashlib.sha256(response.body).hexdigest()
    return size, digest


def _compare_by_hash(old: Response, new: Response) -> list[Difference]:
    a, b = _size_and_hash(old), _size_and_hash(new)
    if a == b:
        return []
    return [
        Difference(
            "body",
            "bytes",
            f"{a[0]} bytes sha256:{a[1][:12]}",
            f"{b[0]} bytes sha256:{b[1][:12]}",
            _TRUNCATED_NOTE,
        )
    ]


def _digest_label(body: bytes) -> str:
    return f"{len(body)} bytes sha256:{hashlib.sha256(body).hexdigest()[:12]}"


def _excerpt_of(body: NormalizedBody, raw: bytes) -> str:
    if body.kind == "bytes":
        return _digest_label(raw)
    # Both json and text bodies are valid UTF-8; slice the raw bytes first so a huge body is
    # never decoded whole just for an excerpt (4 bytes per character at most).
    return raw[: EXCERPT_LENGTH * 4].decode("utf-8", "ignore")[:EXCERPT_LENGTH]


def first_difference(a: str, b: str) -> int:
    """Offset of the first differing character (``min(len)`` when one is a prefix)."""
    limit = min(len(a), len(b))
    # Skip equal 4 KiB blocks with C-speed slice comparison, then walk the first unequal block.
    block = 4096
    start = 0
    while start < limit and a[start : start + block] == b[start : start + block]:
        start += block
    end = min(start + block, limit)
    for i in range(start, end):
        if a[i] != b[i]:
            return i
    return end


def _text_difference(a: str, b: str) -> Difference:
    offset = first_difference(a, b)
    line = a.count("\n", 0, offset) + 1
    column = offset - (a.rfind("\n", 0, offset) + 1) + 1
    start = max(0, offset - EXCERPT_BEFORE)
    return Difference(
        "body",
        "text",
        a[start : start + EXCERPT_LENGTH],
        b[start : start + EXCERPT_LENGTH],
        f"first difference at line {line}, column {column}",
    )


_UNLISTED = " more differences not listed"


def is_unlisted(diff: Difference) -> bool:
    """The record that stands for the differences past `MAX_BODY_DIFFERENCES`. What it hides
    is unknown, so neither learned noise nor an accepted entry may ever set it aside."""
    return (
        diff.kind == "body"
        and diff.location == "$"
        and diff.old is None
        and diff.new is None
        and diff.note.endswith(_UNLISTED)
    )


def _cap(differences: list[Difference]) -> list[Difference]:
    if len(differences) <= MAX_BODY_DIFFERENCES:
        return differences
    left_out = len(differences) - MAX_BODY_DIFFERENCES
    kept = differences[:MAX_BODY_DIFFERENCES]
    kept.append(Difference("body", "$", None, None, f"{left_out}{_UNLISTED}"))
    return kept


# --------------------------------------------------------------------------------------------
# JSON: deepdiff, only on a real mismatch
# --------------------------------------------------------------------------------------------

#: deepdiff report type -> note; absent sides are reported as None.
_REPORT_NOTES: dict[str, str] = {
    "values_changed": "",
    "type_changes": "",  # replaced by "type a -> b" below
    "dictionary_item_added": "added",
    "iterable_item_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_removed": "removed",
}


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value: object, array, string, number, boolean, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | JsonNumber):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _sort_key(parts: list[str | int]) -> tuple[tuple[int, int | str], ...]:
    # Indices sort numerically ([2] before [10]); an index sorts before a key at the same depth.
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in parts)


class _SkipEqualSubtrees:
    """A deepdiff custom operator: stop descending where two containers are equal as JSON.

    DeepDiff walks every element of a 10k-element list even when only one differs; asking
    `json_equal` (C-speed ``==`` plus a boolean check) first cuts such diffs ~10x.
    """

    def match(self, level: Any) -> bool:
        kind = type(level.t1)
        return (kind is dict or kind is list) and type(level.t2) is kind

    def give_up_diffing(self, level: Any, diff_instance: Any) -> bool:
        return json_equal(level.t1, level.t2)

    def normalize_value_for_hashing(self, parent: Any, obj: Any) -> Any:
        return obj  # required by deepdiff whenever it hashes with custom operators present


_SKIP_EQUAL = [_SkipEqualSubtrees()]


def diff_json(old: Any, new: Any) -> list[Difference]:
    """Differences between two unequal JSON documents, one per changed location, sorted."""
    from deepdiff import DeepDiff  # imported lazily: only mismatches pay for it

    tree = DeepDiff(
        old,
        new,
        verbose_level=2,
        view="tree",
        # deepdiff >= 8 reports a whole dict as changed when few keys are shared; we want every
        # key's own location.
        threshold_to_diff_deeper=0,
        custom_operators=_SKIP_EQUAL,
    )
    found: list[tuple[list[str | int], Difference]] = []
    for report_type, levels in tree.items():
        base_note = _REPORT_NOTES.get(report_type, report_type)
        for level in levels:
            parts: list[str | int] = level.path(output_format="list")
            a = None if base_note == "added" else level.t1
            b = None if base_note == "removed" else level.t2
            note = base_note
            if report_type == "type_changes":
                ta, tb = json_type(a), json_type(b)
                if ta == tb == "number" and a == b:
                    continue  # 1 vs 1.0: the same JSON number
                note = "" if ta == tb else f"type {ta} -> {tb}"
            found.append((parts, Difference("body", format_json_path(parts), a, b, note)))
    found.sort(key=lambda item: _sort_key(item[0]))
    differences = [difference for _, difference in found]
    if not differences:
        # The documents are unequal (json_equal said so) but deepdiff found nothing it reports:
        # fail closed with one record rather than letting a mismatch pass as a match.
        differences.append(Difference("body", "$", _summary(old), _summary(new), "differs"))
    return differences


def _summary(value: Any) -> Any:
    return value if not isinstance(value, dict | list) else f"<{json_type(value)}>"
