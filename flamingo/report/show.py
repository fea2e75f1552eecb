"""``flamingo show RUN_DIR [CASE_ID]``: a past run again, in the terminal.

Without a case: the run's summary as `flamingo run` printed it (from gate.json), plus how many
cases have evidence. With a case id: that case's full evidence side by side - both requests (and
their ``curl``), statuses, headers with the differing ones marked, the body difference by JSON
path or as a unified diff - and its differences from results.jsonl. Everything shown was redacted
when the run wrote it; terminal control characters from a response are shown escaped, never sent
to the terminal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from flamingo.errors import InputError
from flamingo.report.console import print_summary
from flamingo.report.evidence import FILE_NAME, find_evidence
from flamingo.report.rows import describe_row
from flamingo.report.sidebyside import side_by_side

#: Body characters printed per side.
BODY_CHARS = 4000


def _safe(value: Any) -> str:
    """Text for a terminal: control characters (ESC sequences above all) escaped."""
    text = "" if value is None else str(value)
    return "".join(
        c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" if ord(c) < 256 else "\ufffd"
        for c in text
    )


def _gate(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "gate.json"
    try:
        gate: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("not a flamingo run folder (no gate.json)", str(path)) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the gate document: {exc}", str(path)) from None
    if not isinstance(gate, dict) or "verdict" not in gate:
        raise InputError("not a gate document (no verdict)", str(path))
    return gate


def show_run(console: Console, run_dir: Path) -> int:
    gate = _gate(run_dir)
    print_summary(console, _scrub(gate), str(run_dir))
    evidence = gate.get("evidence")
    if evidence:
        console.print(
            f"evidence: {evidence.get('cases', 0)} cases in {run_dir / FILE_NAME} "
            f"(flamingo show {run_dir} CASE_ID)",
            highlight=False,
            markup=False,
        )
    return 0


def _scrub(value: Any) -> Any:
    """The document with control characters escaped in every string."""
    if isinstance(value, str):
        return _safe(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _row(run_dir: Path, case_id: str) -> dict[str, Any] | None:
    path = run_dir / "results.jsonl"
    try:
        with open(path, encoding="utf-8") as rows:
            for line in rows:
                if case_id in line:  # cheap pre-filter before parsing
                    row = json.loads(line)
                    if row.get("id") == case_id:
                        return dict(row)
    except FileNotFoundError:
        raise InputError("not a flamingo run folder (no results.jsonl)", str(path)) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the results: {exc}", str(path)) from None
    return None


def show_case(console: Console, run_dir: Path, case_id: str) -> int:
    _gate(run_dir)
    row = _row(run_dir, case_id)
    if row is None:
        raise InputError(f"no case {case_id!r} in this run", str(run_dir / "results.jsonl"))
    console.print(Text(f"{row['id']}  ({row['outcome']})", style="bold"))
    described = describe_row(row)
    for line in (*described.errors, *described.findings):
        console.print(Text(_safe(line)))
    record = find_evidence(run_dir, {case_id}).get(case_id)
    if record is None:
        why = "it matched" if row["outcome"] == "match" else "the evidence store was full or off"
        console.print(f"no evidence kept for this case ({why}).", highlight=False)
        return 0
    try:
        view = side_by_side(record, row.get("differences", []))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        where = str(run_dir / FILE_NAME)
        raise InputError(f"the evidence of {case_id!r} is not readable: {exc!r}", where) from None
    table = Table(show_lines=True, expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("old", overflow="fold", ratio=1)
    table.add_column("new", overflow="fold", ratio=1)
    requests = view["requests"]
    table.add_row(
        "request",
        *(Text(_safe(f"{requests[s]['method']} {requests[s]['url']}")) for s in ("old", "new")),
    )
    status = view["status"]
    table.add_row(
        "status",
        *(
            Text(_safe(f"{status[s][0]} {status[s][1] or ''}"))
            if status[s][0] is not None
            else Text(_safe(f"error: {status[s][1]}: {status[s][2]}"), style="red")
            for s in ("old", "new")
        ),
    )
    for header in view["headers"]:
        style = "bold yellow" if header["differs"] else "dim" if not header["changed"] else ""
        table.add_row(
            Text(_safe(header["name"]), style=style),
            *(
                Text("absent", style="dim italic")
                if header[s] is None
                else Text(_safe(header[s]), style=style)
                for s in ("old", "new")
            ),
        )
    bodies = view["bodies"]
    table.add_row(
        "body",
        *(Text(_safe(_body(bodies.get(s) or {}))) for s in ("old", "new")),
    )
    exchange = view.get("exchange") or {}
    if any(exchange.values()):
        table.add_row("exchange", *(Text(_safe(exchange.get(s, ""))) for s in ("old", "new")))
    table.add_row("curl", *(Text(_safe(view["curl"][s])) for s in ("old", "new")))
    console.print(table)
    _print_body_diff(console, view["body"])
    return 0


def _body(body: dict[str, Any]) -> str:
    text = str(body.get("text", ""))
    head = text[:BODY_CHARS] + ("…" if len(text) > BODY_CHARS else "")
    info = f"[{body.get('bytes', 0)} bytes"
    if body.get("sha256"):
        info += f", sha256 {body['sha256']}"
    return f"{info}]\n{head}"


def _print_body_diff(console: Console, body: dict[str, Any]) -> None:
    if body["kind"] == "json":
        table = Table(title="body difference (JSON, by path)", title_justify="left", expand=True)
        table.add_column("path", overflow="fold")
        table.add_column("old", overflow="fold")
        table.add_column("new", overflow="fold")
        for r in body["rows"]:
            table.add_row(
                Text(_safe(r["path"])),
                *(
                    Text("absent", style="dim italic") if r[s] is None else Text(_safe(r[s]))
                    for s in ("old", "new")
                ),
            )
        console.print(table)
        if body["total"] > len(body["rows"]):
            console.print(f"… {body['total'] - len(body['rows'])} more paths", highlight=False)
    elif body["kind"] == "text":
        console.print(Text("body difference (unified diff)", style="bold"))
        for line in body["lines"]:
            style = (
                "cyan" if line.startswith("@@")
                else "green" if line.startswith("+")
                else "red" if line.startswith("-")
                else ""
            )  # fmt: skip
            console.print(Text(_safe(line), style=style))
        if body["total"] > len(body["lines"]):
            console.print(f"… {body['total'] - len(body['lines'])} more lines", highlight=False)
