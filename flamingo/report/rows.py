"""Plain-dict views of judged records: the one shape results.jsonl, junit.xml and the HTML page
render from, so the three never disagree about what a case looked like."""

from __future__ import annotations

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


def describe_error(view: dict[str, Any], target: str) -> str:
    return f"{target}: {view['error']}: {view['message']}"
