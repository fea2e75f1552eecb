"""The console view: live progress while a run is going, a summary once it is judged.

Rendering only; the numbers come from the engine (`RunStart`, totals, the gate document).

* On a terminal: one line per suite (name, bar, done/total, rate, ETA) and one for the whole run
  with the outcomes so far, redrawn a few times a second in at most 80 columns (suites beyond
  `MAX_SUITE_ROWS` are folded into one "N more suites" line).
* Elsewhere (CI logs, pipes): one plain progress line every `PLAIN_EVERY` seconds, with ETA.
  ``NO_COLOR`` is honoured by rich; off a terminal nothing is styled or redrawn.
* The summary: counts, the checks (failing first), the top signatures (and how many more),
  error signatures, absolute latency, what changed since a baseline, then the verdict with its
  one-line reason.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from flamingo.engine import Observer
from flamingo.judge import value_text
from flamingo.model import Totals

if TYPE_CHECKING:
    from flamingo.engine import RunStart, RunSummary

_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold red"}
MAX_SUITE_ROWS = 8
PLAIN_EVERY = 5.0
NAME_WIDTH = 20
BAR_WIDTH = 20


def _eta(remaining: int, rate: float) -> str:
    if remaining <= 0:
        return "done"
    if rate <= 0:
        return "ETA  --:--"
    seconds = int(remaining / rate)
    if seconds >= 3600:
        return f"ETA {seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"ETA {seconds // 60:2d}:{seconds % 60:02d}"


def _name(text: str) -> str:
    return text if len(text) <= NAME_WIDTH else text[: NAME_WIDTH - 1] + "…"


class SuiteProgress:
    """Progress per suite and for the whole run, with rate and ETA."""

    def __init__(
        self,
        console: Console,
        total: int,
        suite_totals: Mapping[str, int] | None = None,
        suite_done: Mapping[str, int] | None = None,
        enabled: bool = True,
    ) -> None:
        self.console = console
        self.total = total
        self.suite_totals = {k: v for k, v in (suite_totals or {}).items() if v}
        self.suite_done = suite_done if suite_done is not None else {}
        self.enabled = enabled
        self.started = time.monotonic()
        self._first_seen: dict[str, float] = {}
        self._last_render = self.started
        self._totals = Totals()
        self._last_plain = self.started
        self._live: Live | None = None

    def __enter__(self) -> SuiteProgress:
        if self.enabled and self.console.is_terminal:
            self._live = Live(
                self.render(), console=self.console, refresh_per_second=4, transient=True
            )
            self._live.start()
        return self

    def _row(self, name: str, done: int, total: int, since: float, now: float) -> list[Any]:
        done = min(done, total) if total else done
        rate = done / max(now - since, 1e-9) if done else 0.0
        return [
            Text(_name(name)),
            ProgressBar(total=max(total, 1), completed=done, width=BAR_WIDTH),
            Text(f"{done}/{total}", justify="right"),
            Text(f"{rate:,.0f}/s", justify="right"),
            Text(_eta(total - done, rate), justify="right"),
        ]

    def render(self) -> RenderableType:
        now = time.monotonic()
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=NAME_WIDTH, no_wrap=True)
        grid.add_column(width=BAR_WIDTH)
        grid.add_column(width=13, no_wrap=True)
        grid.add_column(width=7, no_wrap=True)
        grid.add_column(width=10, no_wrap=True)
        shown = list(self.suite_totals.items())
        # Suites that are running or waiting come first when there are too many to show.
        if len(shown) > MAX_SUITE_ROWS:
            shown.sort(key=lambda kv: self.suite_done.get(kv[0], 0) >= kv[1])
        for name, total in shown[:MAX_SUITE_ROWS]:
            done = self.suite_done.get(name, 0)
            if done and name not in self._first_seen:
                # it started between the last redraw and this one
                self._first_seen[name] = self._last_render
            grid.add_row(*self._row(name, done, total, self._first_seen.get(name, now), now))
        rest = shown[MAX_SUITE_ROWS:]
        if rest:
            done = sum(min(self.suite_done.get(n, 0), t) for n, t in rest)
            total = sum(t for _, t in rest)
            grid.add_row(*self._row(f"{len(rest)} more suites", done, total, self.started, now))
        self._last_render = now
        t = self._totals
        grid.add_row(*self._row("all", t.cases, self.total, self.started, now))
        outcomes = Text.assemble(
            ("match ", "green"),
            str(t.match),
            ("  diff ", "yellow"),
            str(t.diff),
            ("  fail ", "magenta"),
            str(t.fail),
            ("  error ", "red"),
            str(t.error),
            f"  · {now - self.started:.0f}s",
        )
        return Group(grid, outcomes)

    def update(self, totals: Totals) -> None:
        if not self.enabled:
            return
        self._totals = totals
        if self._live is not None:
            self._live.update(self.render())
            return
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_EVERY:
            self._last_plain = now
            rate = totals.cases / max(now - self.started, 1e-9)
            self.console.print(
                f"progress {totals.cases}/{self.total} cases · {rate:.0f} cases/s · "
                f"{_eta(self.total - totals.cases, rate)} · match {totals.match} diff "
                f"{totals.diff} fail {totals.fail} error {totals.error}",
                highlight=False,
                soft_wrap=True,
            )

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def print_summary(console: Console, gate: dict[str, Any], out_dir: str, top: int = 10) -> None:
    """The end of a run, from its gate document (already redacted: nothing here searches it for
    secrets). What a target or a suite wrote is printed as text, never read as rich markup."""
    totals = gate["totals"]
    elapsed = gate.get("elapsed_s")
    rate = f" in {elapsed:.1f}s" if isinstance(elapsed, int | float) else ""
    console.print(
        f"\n[bold]{totals['cases']}[/] cases{rate}: [green]{totals['match']} match[/], "
        f"[yellow]{totals['diff']} diff[/], [magenta]{totals['fail']} fail[/], "
        f"[red]{totals['error']} error[/]"
        + (f" ({totals['accepted']} match through accepted)" if totals.get("accepted") else "")
    )
    checks = sorted(gate.get("checks", []), key=lambda c: bool(c.get("passed")))
    table = Table(title=f"gate: {gate.get('stage') or 'default'}", title_justify="left")
    for column in ("result", "check", "observed", "threshold"):
        table.add_column(column, overflow="fold")
    for check in checks:
        ok = check.get("passed")
        op = "≥" if str(check.get("name", "")).startswith("min_") else "≤"
        table.add_row(
            "[green]pass[/]" if ok else "[red]FAIL[/]",
            str(check.get("name")),
            value_text(check.get("observed")),
            f"{op} {value_text(check.get('threshold'))}",
        )
    console.print(table)
    _signatures(console, gate, top)
    _errors(console, gate)
    _latency(console, gate)
    _baseline(console, gate)
    noise = gate.get("noise", [])
    if noise:
        console.print(
            f"noise learned (left out of the comparison): {len(noise)} location(s), e.g. "
            + escape(", ".join(f"{n['template']} {n['location']}" for n in noise[:3])),
            highlight=False,
        )
    accepted = gate.get("accepted")
    if accepted:
        for label in ("expired", "stale"):
            for entry in accepted.get(label, []):
                console.print(
                    f"[yellow]accepted entry {label}[/]: "
                    + escape(
                        f"{entry['source']} "
                        f"({entry['template']} {entry['location']}: {entry['reason']})"
                    ),
                    highlight=False,
                )
    verdict = gate["verdict"]
    console.print(f"verdict: [{_STYLE[verdict]}]{verdict.upper()}[/]", highlight=False)
    reason = gate.get("reason") or one_line_reason(gate)
    if reason:
        console.print(f"reason: {reason}", highlight=False, markup=False)
    console.print(f"report: {out_dir}", highlight=False, markup=False)


def one_line_reason(gate: dict[str, Any]) -> str:
    """Why the verdict is what it is, in one line (gate.json ``reason`` when it has one)."""
    if gate.get("reason"):
        return str(gate["reason"])
    checks = gate.get("checks", [])
    failing = [c for c in checks if not c.get("passed")]
    if not failing:
        return f"all {len(checks)} checks passed" if checks else ""
    first = failing[0]
    more = f" (and {len(failing) - 1} more failing checks)" if len(failing) > 1 else ""
    return (
        f"{first['name']} observed {value_text(first.get('observed'))}, threshold "
        f"{value_text(first.get('threshold'))}{more}"
    )


def _signatures(console: Console, gate: dict[str, Any], top: int) -> None:
    rows = gate.get("signatures", [])
    if not rows:
        return
    table = Table(title="top difference signatures", title_justify="left")
    for column in ("cases", "share", "template", "difference", "example"):
        table.add_column(column, overflow="fold")
    for row in rows[:top]:
        example = f"{row['examples'][0]}: {row['example_change']}" if row.get("examples") else ""
        table.add_row(
            str(row["count"]),
            f"{row['share']:.1%}",
            escape(row["template"]),
            escape(row["description"]),
            escape(example),
        )
    console.print(table)
    total = int(gate.get("signature_count") or len(rows))
    if total > top:
        console.print(f"… and {total - top} more signatures (report.html)", highlight=False)


def _errors(console: Console, gate: dict[str, Any]) -> None:
    errors = gate.get("errors") or []
    if not errors:
        return
    table = Table(title="error signatures", title_justify="left")
    wanted = ("target", "kind", "reason", "count", "example")  # reason: the grouped message
    if "reason" not in errors[0]:
        wanted = ("target", "kind", "count", "message", "example")
    keys = [k for k in wanted if k in errors[0]]
    for key in keys:
        table.add_column(key, overflow="fold")
    for error in errors[:10]:
        table.add_row(*(escape(value_text(error.get(k))) for k in keys))
    console.print(table)


def _latency(console: Console, gate: dict[str, Any]) -> None:
    latency = gate.get("latency") or {}
    if not any((stats or {}).get("count") for stats in latency.values()):
        return
    table = Table(title="latency (ms)", title_justify="left")
    for column in ("target", "p50", "p90", "p99", "max", "mean"):
        table.add_column(column, justify="right" if column != "target" else "left")
    for target, stats in latency.items():
        table.add_row(
            target, *(value_text(stats.get(k)) for k in ("p50", "p90", "p99", "max", "mean"))
        )
    console.print(table)


def _baseline(console: Console, gate: dict[str, Any]) -> None:
    base = gate.get("baseline")
    if not base:
        return
    new, gone, changed = base.get("new", []), base.get("disappeared", []), base.get("changed", [])
    console.print(
        f"since baseline {base.get('run')}: [red]{len(new)} new[/], "
        f"[green]{len(gone)} disappeared[/], {len(changed)} changed in count",
        highlight=False,
    )
    for item in new[:5]:
        console.print(
            f"  [red]new[/] {item['count']}× "
            + escape(f"{item['template']}: {item['description']}"),
            highlight=False,
        )


class ConsoleObserver(Observer):
    """The console front of a run: a header line, the live progress, the summary.

    ``quiet``: only the verdict line; ``summary=False``: nothing at the end (``--json``)."""

    def __init__(
        self, console: Console, progress: bool = True, quiet: bool = False, summary: bool = True
    ) -> None:
        self.console = console
        self.show_progress = progress and not quiet
        self.quiet = quiet
        self.summary = summary
        self._live: SuiteProgress | None = None

    def started(self, run: RunStart) -> None:
        config, settings = run.config, run.settings
        workers = settings.workers
        if not self.quiet:
            self.console.print(
                escape(
                    f"flamingo: {run.total} cases"
                    f" · old {run.redactor.config_text(config.old.base_url)}"
                    f" · new {run.redactor.config_text(config.new.base_url)}"
                    f" · concurrency {settings.concurrency}"
                    + (f" · {workers} send workers" if workers > 1 else "")
                    + (f" (fewer: {run.fewer_workers})" if run.fewer_workers else "")
                ),
                highlight=False,
            )
        self._live = SuiteProgress(
            self.console,
            run.total,
            run.suite_totals,
            run.suite_done,
            enabled=self.show_progress,
        )
        self._live.__enter__()

    def progress(self, totals: Totals) -> None:
        if self._live is not None:
            self._live.update(totals)

    def finished(self, summary: RunSummary) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None
        out = str(summary.out_dir) if summary.out_dir is not None else "(no files written)"
        if self.quiet:
            doc = summary.document
            reason = one_line_reason(doc)
            self.console.print(
                f"{doc['verdict']}: {reason} · {out}" if reason else f"{doc['verdict']} · {out}",
                highlight=False,
                markup=False,
            )
        elif self.summary:
            print_summary(self.console, summary.document, out)
        if summary.gate.reason and summary.gate.verdict == "error":
            print(f"flamingo: {summary.document.get('reason', '')}", file=sys.stderr)
