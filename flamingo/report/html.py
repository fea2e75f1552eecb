"""report.html: one self-contained page (no scripts, no external assets) for people.

It shows the verdict, every check, the totals, latency, the top differences and up to
`files.HTML_CASE_LIMIT` non-matching cases with what differed. Everything is escaped.
"""

from __future__ import annotations

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
    parts.append("<h2>Totals</h2><table><tr>")
    parts += [f"<th>{escape(k)}</th>" for k in totals]
    parts.append("</tr><tr>")
    parts += [_cell(v) for v in totals.values()]
    parts.append("</tr></table>")
    parts.append("<h2>Checks</h2><table><tr><th>check</th><th>threshold</th>")
    parts.append("<th>observed</th><th>result</th></tr>")
    for check in gate.get("checks", []):
        ok = "pass" if check["passed"] else "fail"
        parts.append(
            f"<tr>{_cell(check['name'])}{_cell(check['threshold'])}{_cell(check['observed'])}"
            f"<td class='{ok}'>{ok}</td></tr>"
        )
    parts.append("</table>")
    latency = gate.get("latency", {})
    if latency:
        parts.append("<h2>Latency (ms)</h2><table><tr><th>target</th>")
        keys = ["count", "p50", "p90", "p99", "max"]
        parts += [f"<th>{k}</th>" for k in keys]
        parts.append("</tr>")
        for target, stats in latency.items():
            parts.append(f"<tr>{_cell(target)}" + "".join(_cell(stats.get(k)) for k in keys))
            parts.append("</tr>")
        parts.append("</table>")
    top = gate.get("signatures", [])
    if top:
        parts.append("<h2>Difference signatures</h2><table><tr><th>cases</th><th>share</th>")
        parts.append("<th>template</th><th>difference</th><th>example</th><th>cases</th></tr>")
        for row in top:
            share = f"{row['share']:.1%}"
            parts.append(
                f"<tr>{_cell(row['count'])}{_cell(share)}"
                f"{_cell(row['template'])}{_cell(row['description'])}"
                f"{_cell(row['example_change'])}{_cell(', '.join(row['examples']))}</tr>"
            )
        parts.append("</table>")
    noise = gate.get("noise", [])
    if noise:
        parts.append("<h2>Noise learned from old-vs-old</h2><table><tr><th>template</th>")
        parts.append("<th>kind</th><th>location</th><th>differed</th><th>samples</th></tr>")
        for row in noise:
            parts.append(
                f"<tr>{_cell(row['template'])}{_cell(row['kind'])}{_cell(row['location'])}"
                f"{_cell(row['differing'])}{_cell(row['samples'])}</tr>"
            )
        parts.append("</table>")
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
            f"<td><pre>{escape(chr(10).join(lines))}</pre></td></tr>"
        )
    parts.append("</table></body></html>\n")
    return "".join(parts)
