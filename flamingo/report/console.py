"""The console view: live progress while a run is going, a summary table once it is judged.

Rendering only; the numbers come from the `Tally` and the gate document. On a terminal a rich
progress bar is shown; elsewhere (CI logs) one plain progress line every few seconds.
"""

from __future__ import annotations

import time
from typing import Any

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

from flamingo.model import Totals
from flamingo.report.redact import Redactor

_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold red"}


class LiveProgress:
    """Progress of the cases being judged: done/total, cases per second and outcomes so far."""

    #: Seconds between two updates worth making (see `due`).
    INTERVAL = 0.1

    def __init__(self, console: Console, total: int, enabled: bool = True) -> None:
        self.console = console
        self.total = total
        self.enabled = enabled
        self.started = time.monotonic()
        self._last_plain = self.started
        self._next_update = self.started
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

    def due(self) -> bool:
        """True when an `update` is worth making now: at most every `INTERVAL` seconds.

        The bar redraws 8 times a second whatever it is told, so updating it per case (thousands
        per second, each formatting the outcomes and taking rich's lock) only burns the CPU the
        run needs. One clock read per case instead.
        """
        if not self.enabled:
            return False
        now = time.monotonic()
        if now < self._next_update:
            return False
        self._next_update = now + self.INTERVAL
        return True

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
