"""Side-by-side views of one case's evidence: what report.html and ``flamingo show`` render.

Pure functions over an evidence record (`flamingo.report.evidence`): the status of each side, the
union of both sides' headers with the differing ones marked, and the body difference - by JSON
path (old | new) when both bodies are JSON, else a unified diff of the text. Everything here is
bounded (rows, lines, characters) so one hostile response cannot blow up a page.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

#: JSON leaves compared per body; paths differing shown per body.
MAX_LEAVES = 20_000
MAX_PATH_ROWS = 300
#: Unified diff lines shown, and characters per line.
MAX_DIFF_LINES = 400
MAX_LINE_CHARS = 2_000
#: Lines of each text fed to the diff: difflib's matching is superlinear in lines, and a hostile
#: body of 64k one-character lines must not stall the report.
MAX_DIFF_INPUT_LINES = 2_000
#: Characters of a JSON value shown in a path row.
MAX_VALUE_CHARS = 500

_MISSING = object()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if len(out) >= MAX_LEAVES:
        return
    if isinstance(value, dict) and value:
        for key, item in value.items():
            name = key if key.isidentifier() else json.dumps(key, ensure_ascii=False)
            _flatten(item, f"{path}.{name}" if key.isidentifier() else f"{path}[{name}]", out)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            _flatten(item, f"{path}[{index}]", out)
    else:
        out[path] = value


def _show(value: Any) -> str | None:
    if value is _MISSING:
        return None
    return _cut(json.dumps(value, ensure_ascii=False), MAX_VALUE_CHARS)


def json_paths_diff(old: Any, new: Any) -> tuple[list[dict[str, Any]], int]:
    """Rows ``{"path", "old", "new"}`` (``None`` = absent) where the two JSON values differ, in
    path order, at most `MAX_PATH_ROWS`; and how many rows there were in all."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(old, "$", a)
    _flatten(new, "$", b)
    rows: list[dict[str, Any]] = []
    total = 0
    for path in sorted(a.keys() | b.keys()):
        va, vb = a.get(path, _MISSING), b.get(path, _MISSING)
        if va is not _MISSING and vb is not _MISSING and va == vb and type(va) is type(vb):
            continue
        total += 1
        if len(rows) < MAX_PATH_ROWS:
            rows.append({"path": path, "old": _show(va), "new": _show(vb)})
    return rows, total


def text_diff(old: str, new: str) -> tuple[list[str], int]:
    """A unified diff of two texts (at most `MAX_DIFF_LINES` lines), and its full length."""
    a, b = old.splitlines(), new.splitlines()
    cut = len(a) > MAX_DIFF_INPUT_LINES or len(b) > MAX_DIFF_INPUT_LINES
    a, b = a[:MAX_DIFF_INPUT_LINES], b[:MAX_DIFF_INPUT_LINES]
    lines = list(difflib.unified_diff(a, b, "old", "new", lineterm="", n=3))
    shown = [_cut(line, MAX_LINE_CHARS) for line in lines[:MAX_DIFF_LINES]]
    if cut:
        shown.append(f"… only the first {MAX_DIFF_INPUT_LINES:,} lines of each side were compared")
    return shown, len(lines)


def _json_body(side: dict[str, Any]) -> tuple[bool, Any]:
    body = side.get("body") or {}
    if body.get("truncated"):
        return False, None
    try:
        return True, json.loads(body.get("text", ""))
    except ValueError:
        return False, None


def header_rows(
    old: list[list[str]], new: list[list[str]], differing: set[str]
) -> list[dict[str, Any]]:
    """The union of both sides' headers by lower-case name, in old's order then new's;
    ``differs`` is true for the names the comparison found different (``differing``) and, as a
    hint, ``changed`` for any other header whose raw values differ (ignored or normalized)."""

    def collect(headers: list[list[str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in headers:
            out.setdefault(name.lower(), []).append(value)
        return out

    a, b = collect(old), collect(new)
    rows = []
    for name in dict.fromkeys([*a, *b]):
        va, vb = a.get(name), b.get(name)
        rows.append(
            {
                "name": name,
                "old": None if va is None else "\n".join(va),
                "new": None if vb is None else "\n".join(vb),
                "differs": name in differing,
                "changed": va != vb,
            }
        )
    return rows


def forwarded_text(side: dict[str, Any]) -> str:
    """How a raw exchange ended and what the proxy forwarded to the recording origin (one side
    of an evidence record's response), as lines of text; '' when there is neither."""
    lines: list[str] = []
    if "ending" in side:
        statuses = [side.get("status"), *(m.get("status") for m in side.get("more", []))]
        lines.append(f"responses {statuses}, connection ended: {side['ending']}")
    upstream = side.get("upstream")
    if upstream is not None:
        requests = upstream.get("requests", [])
        if not requests:
            lost = upstream.get("untokened")
            lines.append(
                f"forwarded: token lost ({lost} untokened at the origin)"
                if lost
                else "forwarded: nothing"
            )
        for request in requests:
            lines.append(f"forwarded: {request.get('request_line', '')}")
            lines += [f"  {name}: {value}" for name, value in request.get("headers", [])]
            body = request.get("body") or {}
            lines.append(f"  [{request.get('framing', '')}, {body.get('bytes', 0)} bytes]")
            if body.get("text"):
                lines.append(_cut(str(body["text"]), MAX_VALUE_CHARS * 4))
    return "\n".join(lines)


def side_by_side(record: dict[str, Any], differences: list[dict[str, Any]]) -> dict[str, Any]:
    """The view of one evidence record: both requests, statuses, header rows, and the body
    difference (``json`` rows, ``text`` diff lines, or ``none`` when the bodies are equal)."""
    old = record["old"]["response"]
    new = record["new"]["response"]
    differing = {d["location"].lower() for d in differences if d.get("kind") == "header"}
    view: dict[str, Any] = {
        "id": record["id"],
        "outcome": record.get("outcome"),
        "requests": {s: record[s]["request"] for s in ("old", "new")},
        "curl": {s: record[s]["curl"] for s in ("old", "new")},
        "status": {
            s: (r.get("status"), r.get("reason") or r.get("error"), r.get("message"))
            for s, r in (("old", old), ("new", new))
        },
        "headers": header_rows(old.get("headers", []), new.get("headers", []), differing),
        "body": {"kind": "none"},
        "bodies": {s: (r.get("body") or {}) for s, r in (("old", old), ("new", new))},
        # byte-exact exchanges and the upstream view: how each ended, what each forwarded
        "exchange": {s: forwarded_text(r) for s, r in (("old", old), ("new", new))},
    }
    if "error" in old or "error" in new:
        view["body"] = {"kind": "error"}
        return view
    a_json, a = _json_body(old)
    b_json, b = _json_body(new)
    if a_json and b_json:
        rows, total = json_paths_diff(a, b)
        if total:
            view["body"] = {"kind": "json", "rows": rows, "total": total}
        return view
    a_text = (old.get("body") or {}).get("text", "")
    b_text = (new.get("body") or {}).get("text", "")
    if a_text != b_text:
        lines, total = text_diff(a_text, b_text)
        view["body"] = {"kind": "text", "lines": lines, "total": total}
    return view
