"""report.html: one self-contained page (no scripts, no external assets) for people.

It shows the verdict, every check, the totals, latency, the top differences and up to
`files.HTML_CASE_LIMIT` non-matching cases with what differed. Everything is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any

from flamingo.report.rows import describe_difference, describe_error, describe_failure

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}
h1{margin-bottom:.2em} table{border-collapse:collapse;margin:1em 0;width:100%}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f6f6f6} code,pre{font:12px/1.4 ui-monospace,monospace}
pre{white-space:pre-wrap;margin:0} .pass{color:#176f2c} .fail,.error{color:#b00020}
.diff{color:#9a5b00} .verdict{font-size:1.6em;font-weight:700}
"""


def _cell(value: Any) -> str:
    return f"<td>{escape('—' if value is None else str(value))}</td>"


def _cells(*values: Any) -> str:
    return "".join(_cell(v) for v in values)


def _row(*values: Any) -> str:
    return f"<tr>{_cells(*values)}</tr>"


def _table(title: str, headers: Iterable[str], rows: Iterable[str]) -> str:
    """A titled table: escaped header names, then ``rows`` (each a whole ``<tr>``)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<h2>{title}</h2><table><tr>{head}</tr>{''.join(rows)}</table>"


def _forwarded_text(view: dict[str, Any] | None) -> str:
    """One side's forwarded request(s) as the origin received them (`rows.upstream_view`)."""
    if view is None:
        return "not recorded"
    requests = view.get("requests", [])
    if not requests:
        lost = view.get("untokened")
        return f"token lost ({lost} untokened at the origin)" if lost else "nothing forwarded"
    blocks = []
    for request in requests:
        lines = [request["request_line"], *(f"{n}: {v}" for n, v in request["headers"])]
        lines.append(f"[{request['framing']}, {request['body_bytes']} bytes]")
        if request["body"]:
            lines.append(request["body"])
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _exchange_evidence(row: dict[str, Any]) -> str:
    """Old and new side by side for raw exchanges and the upstream view: how each ended and
    what each proxy forwarded."""
    old, new = row["old"], row["new"]
    if "upstream" not in old and "upstream" not in new and "ending" not in old:
        return ""
    cells = []
    for side in (old, new):
        text = ""
        if "ending" in side:
            statuses = [side.get("status"), *(m["status"] for m in side.get("more", []))]
            text = f"responses {statuses}, ended: {side['ending']}\n\n"
        if "upstream" in side:
            text += "forwarded:\n" + _forwarded_text(side["upstream"])
        cells.append(f"<td><pre>{escape(text)}</pre></td>")
    return f"<table><tr><th>old</th><th>new</th></tr><tr>{''.join(cells)}</tr></table>"


def render(gate: dict[str, Any], cases: list[dict[str, Any]], dropped: int) -> str:
    verdict = str(gate.get("verdict", "error"))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>flamingo: {escape(verdict)}</title><style>{_STYLE}</style></head><body>",
        "<h1>flamingo run</h1>",
        f"<p class='verdict {escape(verdict)}'>verdict: {escape(verdict)}</p>",
        f"<p>stage: {escape(str(gate.get('stage') or 'default'))} · "
        f"started {escape(str(gate.get('started_at')))} · "
        f"finished {escape(str(gate.get('finished_at')))}</p>",
    ]
    if gate.get("reason"):
        parts.append(f"<p class='error'>{escape(str(gate['reason']))}</p>")
    totals = gate.get("totals", {})
    parts.append(_table("Totals", totals, [_row(*totals.values())]))
    checks = []
    for check in gate.get("checks", []):
        ok = "pass" if check["passed"] else "fail"
        cells = _cells(check["name"], check["threshold"], check["observed"])
        checks.append(f"<tr>{cells}<td class='{ok}'>{ok}</td></tr>")
    parts.append(_table("Checks", ["check", "threshold", "observed", "result"], checks))
    latency = gate.get("latency", {})
    if latency:
        keys = ["count", "p50", "p90", "p99", "max"]
        rows = [_row(target, *(stats.get(k) for k in keys)) for target, stats in latency.items()]
        parts.append(_table("Latency (ms)", ["target", *keys], rows))
    top = gate.get("signatures", [])
    if top:
        headers = ["cases", "share", "template", "difference", "example", "cases"]
        rows = [
            _row(
                r["count"],
                f"{r['share']:.1%}",
                r["template"],
                r["description"],
                r["example_change"],
                ", ".join(r["examples"]),
            )
            for r in top
        ]
        parts.append(_table("Difference signatures", headers, rows))
    noise = gate.get("noise", [])
    if noise:
        headers = ["template", "kind", "location", "differed", "samples"]
        rows = [
            _row(r["template"], r["kind"], r["location"], r["differing"], r["samples"])
            for r in noise
        ]
        parts.append(_table("Noise learned from old-vs-old", headers, rows))
    parts.append(f"<h2>Cases that did not match ({len(cases) + dropped})</h2>")
    if dropped:
        parts.append(
            f"<p>The first {len(cases)} are shown; {dropped} more are in results.jsonl.</p>"
        )
    parts.append("<table><tr><th>case</th><th>outcome</th><th>what</th></tr>")
    for row in cases:
        lines = [describe_error(row[t], t) for t in ("old", "new") if row[t].get("error")]
        lines += [describe_failure(f) for f in row["failures"]]
        lines += [describe_difference(d) for d in row["differences"]]
        outcome = escape(row["outcome"])
        parts.append(
            f"<tr><td><code>{escape(row['id'])}</code><br><small>{escape(row['method'])} "
            f"{escape(row['path'])}</small></td><td class='{outcome}'>{outcome}</td>"
            f"<td><pre>{escape(chr(10).join(lines))}</pre>{_exchange_evidence(row)}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    return "".join(parts)
