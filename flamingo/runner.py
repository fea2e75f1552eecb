"""Orchestration of one run: selected cases -> send -> judge -> writers -> verdict.

The runner is glue. It owns the event loop, the worker tasks, signal handling and the fail-closed
rules about *completing* a run; every decision about a case or the gate is made by the pure core
(`flamingo.judge`), and every byte written goes through `flamingo.report`.

Fail closed: a run that was interrupted, crashed, or could not send what it selected produces the
verdict ``error`` (exit 3) with the partial totals, never ``pass``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from flamingo.accepted import AcceptedList
from flamingo.errors import FlamingoError, InputError
from flamingo.judge import Tally, evaluate_gate, judge_case
from flamingo.load import load_accepted
from flamingo.model import (
    Case,
    CaseResult,
    Config,
    Exchange,
    GateResult,
    GateThresholds,
    RunSettings,
)
from flamingo.noise import NoiseLearner, NoiseModel
from flamingo.process import new_event_loop, peak_rss_mb, quiet_gc
from flamingo.report.console import LiveProgress, print_summary
from flamingo.report.files import RunFiles
from flamingo.report.redact import Redactor
from flamingo.send import (
    UNSAFE_METHODS,
    Sender,
    TransportFactory,
    default_transport,
    pair_tasks,
)
from flamingo.signature import describe as describe_signature
from flamingo.workers import SendPool, plan

EXIT_PASS, EXIT_FAIL, EXIT_INPUT, EXIT_HARNESS = 0, 1, 2, 3
EXIT_CODES = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "error": EXIT_HARNESS}
TOP_DIFFERENCES = 20


@dataclass(frozen=True)
class RunOptions:
    stage: str | None = None
    concurrency: int | None = None
    rate: float | None = None
    max_requests: int | None = None
    workers: int | None = None
    out_dir: Path | None = None
    progress: bool = True


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_out_dir(base: Path = Path("reports")) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return base / stamp


def resolve_gate(config: Config, stage: str | None) -> GateThresholds:
    try:
        return config.gate(stage)
    except KeyError:
        known = ", ".join(name for name, _ in config.stages) or "none defined"
        raise InputError(f"--stage: unknown stage '{stage}' (stages: {known})") from None


#: Command-line overrides of targets.yaml ``run:``: option, setting, lowest value, message.
_OVERRIDES = (
    ("concurrency", "concurrency", 1, "--concurrency: expected an integer >= 1"),
    ("rate", "rate_limit", 0, "--rate: expected a number >= 0"),
    ("max_requests", "max_requests", 0, "--max-requests: expected an integer >= 0"),
    ("workers", "workers", 0, "--workers: expected 'auto' or an integer >= 1"),  # 0 = auto
)


def effective_settings(config: Config, options: RunOptions) -> RunSettings:
    changes = {}
    for option, setting, lowest, message in _OVERRIDES:
        value = getattr(options, option)
        if value is not None:
            if value < lowest:
                raise InputError(message)
            changes[setting] = value
    return replace(config.run, **changes)


def check_side_effects(config: Config, cases: Iterable[Case]) -> None:
    """Refuse, before anything is sent, non-idempotent requests to a production target."""
    production = [t.name for t in (config.old, config.new) if t.production]
    if not production:
        return
    for case in cases:
        if case.method in UNSAFE_METHODS and not case.allow_side_effects:
            where = case.source or case.id
            raise InputError(
                f"{where}: {case.method} request '{case.id}' would be sent to production "
                f"target(s) {', '.join(production)}; set 'allow_side_effects: true' in the "
                f"suite to allow it"
            )


class DeferredSignals:
    """SIGINT/SIGTERM outside the send loop: noted, not raised, so a run that is told to stop
    while it counts cases or writes its report still leaves a complete gate.json (``error``).

    The send loop installs its own handlers (which stop the run at once); `install` puts these
    back after it. Off the main thread (where Python cannot set handlers) this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received = ""
        self._saved: dict[int, Any] = {}

    def _note(self, signum: int, frame: object) -> None:
        self.received = self.received or signal.Signals(signum).name

    def install(self) -> None:
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread
                previous = signal.signal(sig, self._note)
                self._saved.setdefault(sig, previous)

    def __enter__(self) -> DeferredSignals:
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, previous in self._saved.items():
            signal.signal(sig, previous)


class CaseJudge:
    """The pure judgement of cases, composed: compare + expect, then noise, then accepted.

    Returns the results that are ready: with noise learning, a template's first results wait
    until enough old-vs-old samples were seen (`NoiseLearner`); `flush` releases the rest.
    """

    def __init__(self, noise: NoiseModel, accepted: AcceptedList | None) -> None:
        self.noise = noise
        self.learner = NoiseLearner(noise)
        self.accepted = accepted

    def __call__(
        self, case: Case, old: Exchange, new: Exchange, replica: Exchange | None
    ) -> list[CaseResult]:
        result = judge_case(case, old, new)
        ready = [result] if replica is None else self.learner.add(result, replica)
        return [self._accept(r) for r in ready]

    def flush(self) -> list[CaseResult]:
        return [self._accept(r) for r in self.learner.flush()]

    def _accept(self, result: CaseResult) -> CaseResult:
        return result if self.accepted is None else self.accepted.apply(result)


async def _run_cases(
    cases: Iterator[Case],
    sender: Sender | SendPool,
    sink: Callable[[CaseResult], None],
    settings: RunSettings,
    judge: CaseJudge,
    signals: DeferredSignals | None = None,
) -> str:
    """Send and judge every case; returns '' when complete, else why it stopped early."""
    stop_reason = ""
    loop = asyncio.get_running_loop()
    budget = settings.max_requests

    def judged(case: Case, old: Exchange, new: Exchange, replica: Exchange | None) -> None:
        for result in judge(case, old, new, replica):
            sink(result)

    async def worker(sender: Sender) -> None:
        nonlocal stop_reason
        for case in cases:  # a shared iterator: each case is taken by exactly one worker
            if stop_reason:
                return
            learn = bool(case.compare.noise)
            if not sender.reserve(3 if learn else 2):  # a hard cap: retries draw from it too
                stop_reason = stop_reason or f"--max-requests {budget} reached"
                return
            if learn:
                old, new, replica = await sender.send_triple(case)
                judged(case, old, new, replica)
            else:
                old, new = await sender.send_pair(case)
                judged(case, old, new, None)

    if isinstance(sender, SendPool):
        tasks = [asyncio.ensure_future(sender.run(cases, judged))]
    else:
        tasks = [
            asyncio.ensure_future(worker(sender)) for _ in range(pair_tasks(settings.concurrency))
        ]
    main = asyncio.gather(*tasks)

    def on_signal(name: str) -> None:
        nonlocal stop_reason
        stop_reason = f"interrupted by {name}"
        main.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
    if signals is not None and signals.received:  # arrived after the count, before these
        on_signal(signals.received)
    try:
        await main
        if isinstance(sender, Sender) and sender.budget_exhausted and not stop_reason:
            stop_reason = f"--max-requests {budget} reached"  # a retry was refused by the cap
    except asyncio.CancelledError:
        if not stop_reason:
            raise
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if isinstance(sender, Sender):
            await sender.aclose()
        for result in judge.flush():  # held for noise learning: judged with what was learned
            sink(result)
    return stop_reason


def gate_document(
    gate: GateResult,
    tally: Tally,
    config: Config,
    started_at: str,
    finished_at: str,
    elapsed: float,
    settings: RunSettings,
    judge: CaseJudge,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "verdict": gate.verdict,
        "stage": gate.stage,
        "totals": gate.totals.as_dict(),
        "checks": [
            {
                "name": c.name,
                "threshold": c.threshold,
                "observed": c.observed,
                "passed": c.passed,
            }
            for c in gate.checks
        ],
        "started_at": started_at,
        "finished_at": finished_at,
    }
    if gate.reason:
        doc["reason"] = gate.reason
    doc["elapsed_s"] = round(elapsed, 3)
    doc["targets"] = {"old": config.old.base_url, "new": config.new.base_url}
    doc["settings"] = {
        "concurrency": settings.concurrency,
        "rate_limit": settings.rate_limit,
        "timeout_s": settings.timeout,
        "retries": settings.retries,
        "workers": settings.workers,
    }
    doc["latency"] = {"old": tally.latency("old"), "new": tally.latency("new")}
    doc["peak_rss_mb"] = peak_rss_mb()
    cases = gate.totals.cases
    doc["signatures"] = [
        {
            "id": row.id,
            "template": row.key[0],
            "kind": row.key[1],
            "location": row.key[2],
            "change": row.key[3],
            "description": describe_signature(row.key),
            "example_change": row.example_change,
            "count": row.count,
            "share": round(row.count / cases, 6) if cases else 0.0,
            "examples": list(row.examples),
        }
        for row in tally.top(TOP_DIFFERENCES)
    ]
    doc["noise"] = [
        {
            "template": e.template,
            "kind": e.kind,
            "location": e.location,
            "differing": e.differing,
            "samples": e.samples,
            "rate": round(e.rate, 6),
            "examples": list(e.examples),
            "context": e.context,
        }
        for e in judge.noise.entries()
    ]
    if judge.accepted is not None:
        doc["accepted"] = judge.accepted.report()
    return doc


def execute(
    config: Config,
    cases: Callable[[], Iterator[Case]],
    options: RunOptions,
    console: Console,
    transport_factory: TransportFactory = default_transport,
    total: int | None = None,
) -> int:
    """Run the selected cases and write every output. Returns the exit code.

    ``total`` is the number of cases ``cases()`` yields, when the caller knows it (no selection:
    the load-time count); otherwise ``cases`` is called once more to count them. Expansion is
    deterministic and lazy, so no pass holds the cases in memory.
    """
    with DeferredSignals() as signals:
        return _execute(config, cases, options, console, transport_factory, total, signals)


def _execute(
    config: Config,
    cases: Callable[[], Iterator[Case]],
    options: RunOptions,
    console: Console,
    transport_factory: TransportFactory,
    total: int | None,
    signals: DeferredSignals,
) -> int:
    gate_thresholds = resolve_gate(config, options.stage)
    settings = effective_settings(config, options)
    check_side_effects(config, cases())
    if total is None:
        total = sum(1 for _ in cases())
    accepted = None
    if config.accepted_path is not None:
        rules = load_accepted(config.accepted_path)
        accepted = AcceptedList(rules, today=datetime.now(UTC).date())
    judge = CaseJudge(NoiseModel(), accepted)

    out_dir = options.out_dir or default_out_dir()
    redactor = Redactor.for_config(config)
    try:
        files = RunFiles(out_dir, redactor)
    except OSError as exc:
        raise InputError(f"--out: cannot write to {out_dir}: {exc.strerror}") from exc
    workers, fewer = plan(settings.workers, settings, total)
    settings = replace(settings, workers=workers)
    tally = Tally()
    started_at, started = timestamp(), time.monotonic()
    # Told to stop while validating or counting: nothing is sent, the report says so.
    reason = f"interrupted by {signals.received}" if signals.received else ""
    console.print(
        redactor.text(
            f"flamingo: {total} cases · old {config.old.base_url} · new {config.new.base_url} · "
            f"concurrency {settings.concurrency}"
            + (f" · {workers} send workers" if workers > 1 else "")
            + (f" (fewer: {fewer})" if fewer else "")
        ),
        highlight=False,
    )
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1 and not reason:  # forked before the event loop and the progress thread
            try:
                pool = stack.enter_context(
                    SendPool(
                        workers,
                        config.old,
                        config.new,
                        settings,
                        transport_factory,
                        replica=config.old_replica,
                    )
                )
            except OSError as exc:
                raise FlamingoError(f"cannot start {workers} send workers: {exc}") from exc
        with LiveProgress(console, total, enabled=options.progress) as progress:

            def sink(result: CaseResult) -> None:
                tally.add(result)
                files.write(result)
                if progress.due():  # rate-limited: a display needs ~10 updates/s, not per case
                    progress.update(tally.totals)

            loop = new_event_loop()
            try:
                if not reason:
                    sender = pool or Sender(
                        config.old,
                        config.new,
                        settings,
                        transport_factory,
                        replica=config.old_replica,
                    )
                    with quiet_gc():
                        reason = loop.run_until_complete(
                            _run_cases(cases(), sender, sink, settings, judge, signals)
                        )
            except Exception as exc:  # the harness itself failed: record it, fail closed
                reason = f"harness error: {type(exc).__name__}: {exc}"
                (out_dir / "crash.log").write_text(redactor.text(traceback.format_exc()))
            finally:
                loop.close()
                signals.install()  # the loop's own handlers are gone: defer again while writing
            progress.update(tally.totals)
    worker_peaks = pool.peak_rss_mb if pool is not None else []

    if not reason and tally.totals.cases != total:
        reason = f"only {tally.totals.cases} of {total} selected cases were judged"
    gate = evaluate_gate(gate_thresholds, options.stage, tally, complete=not reason, reason=reason)
    finished_at = timestamp()
    doc = gate_document(
        gate, tally, config, started_at, finished_at, time.monotonic() - started, settings, judge
    )
    if worker_peaks:  # every process of the run: the parent, then each send worker
        doc["peak_rss_mb_by_process"] = [doc["peak_rss_mb"], *worker_peaks]
        known = [mb for mb in doc["peak_rss_mb_by_process"] if mb is not None]
        doc["peak_rss_mb"] = round(sum(known), 1) if known else None
    files.finish(gate, doc, started_at)
    print_summary(console, doc, str(out_dir), redactor)
    if reason:
        print(f"flamingo: {redactor.text(reason)}", file=sys.stderr)
    return EXIT_CODES[gate.verdict]
