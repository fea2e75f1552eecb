"""The console view: live progress while a run is going, a summary table once it is judged.

Rendering only; the numbers come from the `Tally` and the gate document. On a terminal a rich
progress bar is shown; elsewhere (CI logs) one plain progress line every few seconds.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from flamingo.engine import Observer
from flamingo.model import Totals
from flamingo.report.redact import Redactor

if TYPE_CHECKING:
    from flamingo.engine import RunStart, RunSummary

_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold red"}


class LiveProgress:
    """Progress of the cases being judged: done/total, cases per second and outcomes so far."""

    def __init__(self, console: Console, total: int, enabled: bool = True) -> None:
        self.console = console
        self.total = total
        self.enabled = enabled
        self.started = time.monotonic()
        self._last_plain = self.started
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> LiveProgress:
        if self.enabled and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]flamingo[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>7.0f} cases/s"),
                TextColumn("{task.fields[outcomes]}"),
                TimeElapsedColumn(),
                console=self.console,
                refresh_per_second=8,
            )
            self._progress.start()
            self._task = self._progress.add_task("run", total=self.total, rate=0.0, outcomes="")
        return self

    def update(self, totals: Totals) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        rate = totals.cases / max(now - self.started, 1e-9)
        outcomes = (
            f"[green]match {totals.match}[/] [yellow]diff {totals.diff}[/] "
            f"[magenta]fail {totals.fail}[/] [red]error {totals.error}[/]"
        )
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=totals.cases, rate=rate, outcomes=outcomes)
        elif now - self._last_plain >= 5.0:
            self._last_plain = now
            self.console.print(
                f"progress {totals.cases}/{self.total} cases · {rate:.0f} cases/s · "
                f"match {totals.match} diff {totals.diff} fail {totals.fail} error {totals.error}",
                highlight=False,
            )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def print_summary(
    console: Console, gate: dict[str, Any], out_dir: str, redactor: Redactor, top: int = 10
) -> None:
    gate = redactor.gate(gate)  # every field shown below (templates, locations, examples ...)
    totals = gate["totals"]
    elapsed = gate.get("elapsed_s")
    rate = f" in {elapsed:.1f}s" if isinstance(elapsed, int | float) else ""
    console.print(
        f"\n[bold]{totals['cases']}[/] cases{rate}: [green]{totals['match']} match[/], "
        f"[yellow]{totals['diff']} diff[/], [magenta]{totals['fail']} fail[/], "
        f"[red]{totals['error']} error[/]"
    )
    checks = Table(title=f"gate: {gate.get('stage') or 'default'}", title_justify="left")
    for column in ("check", "threshold", "observed", "result"):
        checks.add_column(column)
    for check in gate["checks"]:
        ok = check["passed"]
        observed = "n/a" if check["observed"] is None else f"{check['observed']:g}"
        checks.add_row(
            check["name"],
            f"{check['threshold']:g}",
            observed,
            "[green]pass[/]" if ok else "[red]FAIL[/]",
        )
    console.print(checks)
    rows = gate.get("signatures", [])[:top]
    if rows:
        table = Table(title="top difference signatures", title_justify="left")
        for column in ("cases", "share", "template", "difference", "example"):
            table.add_column(column, overflow="fold")
        for row in rows:
            example = f"{row['examples'][0]}: {row['example_change']}" if row["examples"] else ""
            table.add_row(
                str(row["count"]),
                f"{row['share']:.1%}",
                row["template"],
                row["description"],
                redactor.text(example),
            )
        console.print(table)
    noise = gate.get("noise", [])
    if noise:
        console.print(
            f"noise learned (left out of the comparison): {len(noise)} location(s), e.g. "
            + ", ".join(f"{n['template']} {n['location']}" for n in noise[:3]),
            highlight=False,
        )
    accepted = gate.get("accepted")
    if accepted:
        for label, style in (("expired", "yellow"), ("stale", "yellow")):
            for entry in accepted.get(label, []):
                console.print(
                    f"[{style}]accepted entry {label}[/]: {entry['source']} "
                    f"({entry['template']} {entry['location']}: {entry['reason']})",
                    highlight=False,
                )
    verdict = gate["verdict"]
    reason = f" ({redactor.text(gate['reason'])})" if gate.get("reason") else ""
    console.print(f"verdict: [{_STYLE[verdict]}]{verdict.upper()}[/]{reason}")
    console.print(f"report: {out_dir}", highlight=False)


class ConsoleObserver(Observer):
    """The console front of a run: a header line, the live progress, the summary."""

    def __init__(self, console: Console, progress: bool = True) -> None:
        self.console = console
        self.show_progress = progress
        self._live: LiveProgress | None = None
        self._redactor = Redactor()

    def started(self, run: RunStart) -> None:
        config, settings = run.config, run.settings
        self._redactor = run.redactor
        workers = settings.workers
        self.console.print(
            run.redactor.text(
                f"flamingo: {run.total} cases · old {config.old.base_url} · "
                f"new {config.new.base_url} · concurrency {settings.concurrency}"
                + (f" · {workers} send workers" if workers > 1 else "")
                + (f" (fewer: {run.fewer_workers})" if run.fewer_workers else "")
            ),
            highlight=False,
        )
        self._live = LiveProgress(self.console, run.total, enabled=self.show_progress)
        self._live.__enter__()

    def progress(self, totals: Totals) -> None:
        if self._live is not None:
            self._live.update(totals)

    def finished(self, summary: RunSummary) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None
        out = str(summary.out_dir) if summary.out_dir is not None else "(no files written)"
        print_summary(self.console, summary.document, out, self._redactor)
        if summary.gate.reason and summary.gate.verdict == "error":
            print(f"flamingo: {self._redactor.text(summary.gate.reason)}", file=sys.stderr)
