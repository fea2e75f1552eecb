"""A Markdown summary of a run for GitHub Actions' job summary page.

When ``GITHUB_STEP_SUMMARY`` names a file (GitHub sets it in every step), `append_step_summary`
appends the verdict with its reason, the checks (failing first), the top signatures, error
signatures and what changed since a baseline. Values come from the (redacted) gate document; every
table cell is escaped so a response cannot break out of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flamingo.report.console import one_line_reason

TOP = 10


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    for char in "`*_<>[]":
        text = text.replace(char, "\\" + char)
    return text[:300]


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def step_summary(gate: dict[str, Any], out_dir: Path | None) -> str:
    verdict = str(gate.get("verdict", "error"))
    icon = {"pass": "✅", "fail": "❌"}.get(verdict, "⚠️")
    totals = gate.get("totals", {})
    lines = [
        f"## {icon} flamingo: {verdict.upper()} (stage {_cell(gate.get('stage') or 'default')})",
        "",
        _cell(one_line_reason(gate)),
        "",
        " · ".join(f"{k} {v}" for k, v in totals.items()),
        "",
    ]
    checks = sorted(gate.get("checks", []), key=lambda c: bool(c.get("passed")))
    lines += _table(
        ["result", "check", "observed", "threshold"],
        [
            ["pass" if c.get("passed") else "❌ FAIL", c.get("name"), c.get("observed"),
             c.get("threshold")]
            for c in checks
        ],
    )  # fmt: skip
    signatures = gate.get("signatures", [])
    if signatures:
        lines += ["### Top difference signatures", ""]
        lines += _table(
            ["cases", "share", "template", "difference", "example"],
            [
                [s["count"], f"{s['share']:.1%}", s["template"], s["description"],
                 s.get("example_change", "")]
                for s in signatures[:TOP]
            ],
        )  # fmt: skip
        more = int(gate.get("signature_count") or len(signatures)) - TOP
        if more > 0:
            lines += [f"… and {more} more signatures in report.html", ""]
    errors = gate.get("errors") or []
    if errors:
        lines += ["### Error signatures", ""]
        keys = [k for k in ("target", "kind", "count", "message") if k in errors[0]]
        lines += _table(keys, [[e.get(k) for k in keys] for e in errors[:TOP]])
    base = gate.get("baseline")
    if base:
        counts = base.get("counts", {})
        lines += [
            f"**Since the baseline:** {counts.get('new', 0)} new, "
            f"{counts.get('disappeared', 0)} disappeared, {counts.get('changed', 0)} changed "
            "signatures",
            "",
        ]
    if out_dir is not None:
        lines += [f"Report: `{_cell(out_dir / 'report.html')}`", ""]
    return "\n".join(lines) + "\n"


def append_step_summary(gate: dict[str, Any], out_dir: Path | None) -> None:
    """Append the summary to ``$GITHUB_STEP_SUMMARY`` when it is set (else do nothing)."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target or not gate:
        return
    try:
        with open(target, "a", encoding="utf-8") as out:
            out.write(step_summary(gate, out_dir))
    except OSError as exc:  # a job summary is a courtesy: never fail a judged run over it
        import sys

        print(f"flamingo: cannot write GITHUB_STEP_SUMMARY: {exc}", file=sys.stderr)
