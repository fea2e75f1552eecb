"""Run-to-run comparison of difference signatures (``flamingo run --baseline``, ``flamingo
compare``): which signatures are new since the baseline run, which disappeared, which changed in
count. Reads a run folder's ``signatures.json`` (every signature of the run; gate.json keeps only
the top ones), so it works on any finished run, sharded or merged, without its evidence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flamingo.errors import InputError
from flamingo.report.clusters import SIGNATURES_FILE

#: Signatures listed per group in gate.json (the counts are always complete).
MAX_LISTED = 50


def read_signatures(run_dir: Path) -> list[dict[str, Any]]:
    """Every signature of a finished run (`InputError` when the folder has none to read)."""
    path = run_dir / SIGNATURES_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        rows = doc["signatures"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "id" in r for r in rows):
            raise ValueError("'signatures' is not a list of signatures")
        return rows
    except FileNotFoundError:
        raise InputError(
            f"not a flamingo run folder with {SIGNATURES_FILE} (written by flamingo run)",
            str(path),
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the run's signatures: {exc}", str(path)) from None


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "template": row.get("template", ""),
        "description": row.get("description", ""),
        "count": row.get("count", 0),
    }


def compare_signatures(
    baseline: list[dict[str, Any]], current: list[dict[str, Any]], run: str
) -> dict[str, Any]:
    """gate.json ``baseline``: ``new`` (in current only), ``disappeared`` (in baseline only),
    ``changed`` (in both, another count), each largest first, at most `MAX_LISTED` listed
    (``counts`` has the full numbers)."""
    before = {str(r["id"]): r for r in baseline}
    now = {str(r["id"]): r for r in current}
    new = [_brief(now[i]) for i in now.keys() - before.keys()]
    gone = [{**_brief(before[i]), "count": 0, "baseline_count": before[i].get("count", 0)}
            for i in before.keys() - now.keys()]  # fmt: skip
    changed = [
        {**_brief(now[i]), "baseline_count": before[i].get("count", 0)}
        for i in now.keys() & before.keys()
        if now[i].get("count") != before[i].get("count")
    ]
    new.sort(key=lambda r: (-r["count"], r["id"]))
    gone.sort(key=lambda r: (-r["baseline_count"], r["id"]))
    changed.sort(key=lambda r: (-abs(r["count"] - r["baseline_count"]), r["id"]))
    return {
        "run": run,
        "counts": {"new": len(new), "disappeared": len(gone), "changed": len(changed)},
        "new": new[:MAX_LISTED],
        "disappeared": gone[:MAX_LISTED],
        "changed": changed[:MAX_LISTED],
    }


def compare_runs(run_a: Path, run_b: Path) -> dict[str, Any]:
    """``flamingo compare RUN_A RUN_B``: run B's signatures against run A's."""
    return compare_signatures(read_signatures(run_a), read_signatures(run_b), str(run_a))


def print_comparison(console: Console, comparison: dict[str, Any]) -> None:
    counts = comparison["counts"]
    console.print(
        f"since {comparison['run']}: [red]{counts['new']} new[/], [green]{counts['disappeared']} "
        f"disappeared[/], {counts['changed']} changed in count",
        highlight=False,
    )
    for key, title in (("new", "new"), ("disappeared", "disappeared"), ("changed", "changed")):
        rows = comparison[key]
        if not rows:
            continue
        table = Table(title=f"{title} signatures", title_justify="left")
        for column in ("baseline", "now", "template", "difference", "id"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(
                str(row.get("baseline_count", 0)),
                str(row["count"]),
                row["template"],
                row["description"],
                row["id"],
            )
        console.print(table)
        more = counts[key] - len(rows)
        if more > 0:
            console.print(f"… and {more} more", highlight=False)
