"""Plain-dict views of judged records: the one shape results.jsonl, junit.xml and the HTML page
render from, so the three never disagree about what a case looked like; and `result_line`, the
one serializer of a results.jsonl row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flamingo.model import (
    CaseResult,
    Difference,
    Exchange,
    ExpectFailure,
    ForwardedRequest,
    Response,
    UpstreamView,
)
from flamingo.signature import signature_id, signature_key


def exchange_view(exchange: Exchange) -> dict[str, Any]:
    if isinstance(exchange, Response):
        view: dict[str, Any] = {
            "status": exchange.status,
            "reason": exchange.reason,
            "latency_ms": round(exchange.latency_ms, 3),
            "body_bytes": exchange.body_size if exchange.body_size >= 0 else len(exchange.body),
        }
        if exchange.body_sha256:
            view["body_sha256"] = exchange.body_sha256
        if exchange.ending:  # a raw exchange: how it ended, and the responses after the first
            view["ending"] = exchange.ending
            if exchange.more:
                view["more"] = [
                    {"status": r.status or None, "reason": r.reason, "ending": r.ending or None}
                    for r in exchange.more
                ]
        if exchange.upstream is not None:
            view["upstream"] = upstream_view(exchange.upstream)
    else:
        view = {
            "status": None,
            "error": exchange.kind,
            "message": exchange.message,
            "latency_ms": round(exchange.latency_ms, 3),
        }
    if exchange.attempts > 1:
        view["attempts"] = exchange.attempts
    return view


#: Characters of a forwarded body shown in a result row (the full body is compared, not kept).
FORWARDED_BODY_CHARS = 2000


def forwarded_view(request: ForwardedRequest) -> dict[str, Any]:
    """What the recording origin received, as plain data: the report shows old's and new's
    side by side."""
    size = request.body_size if request.body_size >= 0 else len(request.body)
    view: dict[str, Any] = {
        "request_line": request.request_line,
        "headers": [[name, value] for name, value in request.headers],
        "framing": request.framing,
        "body": request.body[: FORWARDED_BODY_CHARS * 4].decode("utf-8", "replace")[
            :FORWARDED_BODY_CHARS
        ],
        "body_bytes": size,
        "connection_seq": request.connection_seq,
    }
    if not request.complete:
        view["complete"] = False
    if request.notes:
        view["notes"] = list(request.notes)
    return view


def upstream_view(upstream: UpstreamView) -> dict[str, Any]:
    view: dict[str, Any] = {"requests": [forwarded_view(r) for r in upstream.requests]}
    if upstream.untokened:
        view["untokened"] = upstream.untokened
    return view


def difference_view(diff: Difference) -> dict[str, Any]:
    view: dict[str, Any] = {
        "kind": diff.kind,
        "location": diff.location,
        "old": diff.old,
        "new": diff.new,
    }
    if diff.note:
        view["note"] = diff.note
    return view


def failure_view(failure: ExpectFailure) -> dict[str, Any]:
    return {
        "target": failure.target,
        "what": failure.what,
        "expected": failure.expected,
        "actual": failure.actual,
    }


def result_view(result: CaseResult) -> dict[str, Any]:
    case = result.case
    view: dict[str, Any] = {
        "id": case.id,
        "suite": case.suite,
        "name": case.name,
        "outcome": result.outcome,
        "method": case.method,
        "path": case.path,
        "differences": [difference_view(d) for d in result.differences],
        "failures": [failure_view(f) for f in result.failures],
        "old": exchange_view(result.old),
        "new": exchange_view(result.new),
    }
    if result.differences:
        ids = (signature_id(signature_key(case.template, d)) for d in result.differences)
        view["signatures"] = list(dict.fromkeys(ids))
    if result.noise:
        view["noise"] = [difference_view(d) for d in result.noise]
    if result.accepted:
        view["accepted"] = [
            {**difference_view(a.difference), "entry": a.rule, "reason": a.reason}
            for a in result.accepted
        ]
    if result.old_replica is not None:
        view["old_replica"] = exchange_view(result.old_replica)
    return view


def describe_difference(diff: Difference | dict[str, Any]) -> str:
    """One human line: ``header x-cache: 'HIT' → absent``."""
    if isinstance(diff, Difference):
        diff = difference_view(diff)
    old = "absent" if diff["old"] is None else repr(diff["old"])
    new = "absent" if diff["new"] is None else repr(diff["new"])
    where = diff["location"] if diff["kind"] != "header" else f"header {diff['location']}"
    if diff["kind"] == "status":
        where = "status"
    text = f"{where}: {old} → {new}"
    if diff.get("note"):
        text += f" ({diff['note']})"
    return text


def describe_failure(failure: ExpectFailure | dict[str, Any]) -> str:
    if isinstance(failure, ExpectFailure):
        failure = failure_view(failure)
    return (
        f"expect {failure['what']} on {failure['target']}: "
        f"expected {failure['expected']!r}, got {failure['actual']!r}"
    )


@dataclass(frozen=True)
class RowLines:
    """A results row as lines of text: its transport errors, then its expect failures and
    differences (junit, report.html and `flamingo show` each print these)."""

    errors: tuple[str, ...]
    findings: tuple[str, ...]


def describe_row(row: dict[str, Any]) -> RowLines:
    return RowLines(
        tuple(describe_error(row[t], t) for t in ("old", "new") if row[t].get("error")),
        (
            *map(describe_failure, row.get("failures", ())),
            *map(describe_difference, row.get("differences", ())),
        ),
    )


def describe_error(view: dict[str, Any], target: str) -> str:
    return f"{target}: {view['error']}: {view['message']}"


# --------------------------------------------------------------------------------------------
# results.jsonl rows
# --------------------------------------------------------------------------------------------

_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
# `JSONEncoder.encode` builds a new C encoder on every call; a results.jsonl line is written per
# case, so build it once (same arguments as `JSONEncoder.iterencode` passes; the pure-Python
# encoder where the C one is missing).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_row = (
    _c_make_encoder(
        None,  # no circular check (a row is a tree; a shared marker dict could go stale)
        _JSON.default,
        json.encoder.encode_basestring,  # ensure_ascii=False
        None,
        ":",
        ",",
        False,
        False,
        True,
    )
    if _c_make_encoder is not None
    else None
)


def dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)``, faster."""
    if _encode_row is None:  # pragma: no cover - CPython always has the C encoder
        return _JSON.encode(value)
    return "".join(_encode_row(value, 0))


_json_str = json.encoder.encode_basestring  # what dumps uses for str (ensure_ascii=False)


def _json_float(value: float) -> str | None:
    """A float as json.dumps writes it; None for what it would spell NaN/Infinity."""
    return float.__repr__(value) if value - value == 0.0 else None


def _exchange_json(response: Exchange) -> str | None:
    """`exchange_view` of a plain response as JSON text; None for any other exchange."""
    if (
        not isinstance(response, Response)
        or response.attempts != 1
        or response.body_sha256
        or response.ending  # raw exchanges and the upstream view take the general path
        or response.upstream is not None
        or type(response.status) is not int
        or type(response.latency_ms) is not float
    ):
        return None
    latency = round(response.latency_ms, 3)
    latency_text = _json_float(latency)
    if latency_text is None:
        return None
    size = response.body_size if response.body_size >= 0 else len(response.body)
    text = (
        f'{{"status":{response.status},"reason":{_json_str(response.reason)},'
        f'"latency_ms":{latency_text},"body_bytes":{size}}}'
    )
    return text


def _plain_match_line(result: CaseResult) -> str | None:
    """`result_line` of a plain match, spelled straight from the records; None for any other
    result.

    A plain match: outcome match, nothing differed, failed, was noise or accepted, no replica,
    both sides a `Response` answered at the first attempt and kept whole. Byte for byte
    ``dumps(result_view(result))`` (tests/test_fast_paths.py generates results to hold the two
    together): a field added to `result_view` or `exchange_view` must be added here too, or the
    result excluded above.
    """
    if (
        result.outcome != "match"
        or result.differences
        or result.failures
        or result.noise
        or result.accepted
        or result.old_replica is not None
    ):
        return None
    old = _exchange_json(result.old)
    new = _exchange_json(result.new)
    if old is None or new is None:
        return None
    case = result.case
    return (
        f'{{"id":{_json_str(case.id)},"suite":{_json_str(case.suite)},'
        f'"name":{_json_str(case.name)},"outcome":"match","method":{_json_str(case.method)},'
        f'"path":{_json_str(case.path)},"differences":[],"failures":[],'
        f'"old":{old},"new":{new}}}'
    )


def result_line(result: CaseResult) -> tuple[str, dict[str, Any] | None]:
    """The results.jsonl line of ``result`` (no newline): the one function that serializes a
    row, and the `result_view` it encoded - None for a plain match.

    Most rows of a healthy run are plain matches; their line is spelled straight from the
    records (`_plain_match_line`, the same bytes at about half the cost: no view dict is
    built), everything else is ``dumps(result_view(result))``.
    """
    line = _plain_match_line(result)
    if line is not None:
        return line, None
    row = result_view(result)
    return dumps(row), row
