"""``flamingo demo --rollout``: a staged rollout gated by flamingo, on one screen.

Walks the stages of the bundled targets.yaml in rollout order (`ROLLOUT`: canary -> quarter ->
global) against the demo targets, each run through the engine with its stage's gate (each
stage sends the bundled suites in rounds for its ``min_duration``), prints each stage's checks,
and stops at the first stage that does not pass, with the reason - what a rollout controller
does with flamingo's verdict: advance, or pause/roll back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from flamingo.engine import RunOptions, RunSummary, Selection, Session
from flamingo.model import Check
from flamingo.report.console import ConsoleObserver

__all__ = ["ROLLOUT", "rollout", "why_not"]

ROLLOUT = ("canary", "quarter", "global")
_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold red"}


class _StageProgress(ConsoleObserver):
    """The live progress of a stage's run, without the full summary (the rollout prints its
    own table)."""

    def finished(self, summary: RunSummary) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None


def _shown(value: object) -> str:
    return (
        "n/a" if value is None else f"{value:g}" if isinstance(value, int | float) else str(value)
    )


def why_not(summary: RunSummary) -> str:
    """One line: why a stage did not pass (the gate's reason, else its failed checks)."""
    gate = summary.gate
    if gate.reason:
        return gate.reason
    failed: Sequence[Check] = [c for c in gate.checks if not c.passed]
    return "; ".join(
        f"{c.name} observed {_shown(c.observed)} against {_shown(c.threshold)}" for c in failed
    )


def rollout(
    session: Session, console: Console, out_base: Path, *, progress: bool = True
) -> tuple[int, list[RunSummary]]:
    """Run the stages in order until one does not pass: (its exit code or 0, the summaries)."""
    summaries: list[RunSummary] = []
    for number, stage in enumerate(ROLLOUT, start=1):
        gate = session.gate_thresholds(stage)
        wait = f", at least {gate.min_duration:g}s" if gate.min_duration else ""
        console.rule(f"stage {number}/{len(ROLLOUT)}: {stage}{wait}")
        options = RunOptions(stage=stage, out_dir=out_base / stage)
        run = session.run(Selection(), options, [_StageProgress(console, progress=progress)])
        summary = run.wait()
        summaries.append(summary)
        table = Table(title_justify="left", title=f"gate: {stage}")
        for column in ("check", "threshold", "observed", "result"):
            table.add_column(column)
        for check in summary.gate.checks:
            result = "[green]pass[/]" if check.passed else "[red]FAIL[/]"
            table.add_row(check.name, _shown(check.threshold), _shown(check.observed), result)
        console.print(table)
        totals = summary.gate.totals
        rounds = summary.stage_rules.get("rounds")
        verdict = summary.gate.verdict
        console.print(
            f"[{_STYLE[verdict]}]{verdict.upper()}[/] {stage}: {totals.cases} cases"
            + (f" in {rounds} rounds" if rounds else "")
            + f" over {summary.elapsed_s:.1f}s · report: {out_base / stage}"
        )
        if verdict != "pass":
            console.print(
                f"[bold red]rollout stopped at stage {stage}[/] (the controller pauses or rolls "
                f"back): {session.redactor.text(why_not(summary))}"
            )
            return summary.exit_code, summaries
    console.print(f"[bold green]rollout complete[/]: {' -> '.join(ROLLOUT)} all passed")
    return 0, summaries
