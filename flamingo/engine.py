"""The run engine: config + selection -> judged results + the gate, behind every front door.

``flamingo run``/``demo``, the pytest plugin, the gate server and library users all run cases
through `Session`; a front door only translates its own inputs and outputs (argv, pytest items,
HTTP requests). Every run policy therefore lives here, once:

    policy                       where
    compare defaults             `Session.__init__` (targets.yaml ``compare:`` under each suite)
    side-effect guard            `Session.check_side_effects` (``production: true`` targets)
    settings overrides, workers  `Session.settings` (options over ``run:``), `workers.plan`
    noise learning, accepted     `CaseJudge` (compare + expect, then noise, then accepted)
    redaction                    `Session.redactor` (one `Redactor.for_config` per session): every
                                 judged result is redacted before it is counted, written or
                                 handed out; the gate document before it is written
    the gate, signatures         `Run` (a `Tally`, `evaluate_gate`) -> `RunSummary`
    the gate document, files     `flamingo.report.gate.gate_document`, `RunFiles` (``out_dir``)
    fail closed                  `Run`: interrupted, crashed or cut short -> ``error``, exit 3

The engine never prints: progress and the end of a run go to `Observer`\\s (the console's live
view is one, `flamingo.report.console.ConsoleObserver`).

Usage (README, "As a library")::

    session = Session.from_files("targets.yaml", ["suites"])
    run = session.run(Selection(tags=("smoke",)), RunOptions(out_dir=Path("out")))
    for result in run:          # judged results, as cases finish
        ...
    run.summary.gate.verdict    # "pass" | "fail" | "error"
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flamingo import __version__
from flamingo.accepted import AcceptedList
from flamingo.errors import HarnessError, InputError
from flamingo.judge import ErrorRow, Tally, TopRow, evaluate_gate, judge_case
from flamingo.merge import (
    PartialRun,
    RunIdentity,
    config_gates,
    config_hash,
    part_view,
    suites_hash,
)
from flamingo.model import (
    MIN_RATE,
    RUN_LIMITS,
    Case,
    CaseResult,
    CompareRules,
    Config,
    Exchange,
    GateResult,
    GateThresholds,
    RunSettings,
    Totals,
    worker_count,
)
from flamingo.noise import NoiseEntry, NoiseLearner, NoiseModel
from flamingo.process import (
    SIGNALS,
    Interrupted,
    SignalGuard,
    new_event_loop,
    peak_rss_mb,
    quiet_gc,
)
from flamingo.report.redact import Redactor
from flamingo.send import (
    UNSAFE_METHODS,
    Handle,
    LocalEngine,
    SendEngine,
    Sender,
    TransportFactory,
    default_transport,
)
from flamingo.shape import TimeWindows
from flamingo.stagerun import StageRun
from flamingo.suite import Suite
from flamingo.upstream import RecordingOrigin
from flamingo.workers import SendPool, plan

if TYPE_CHECKING:
    from flamingo.report.files import RunFiles
    from flamingo.stage import ResourceScrapes

__all__ = [
    "EXIT_CODES",
    "EXIT_FAIL",
    "EXIT_HARNESS",
    "EXIT_INPUT",
    "EXIT_PASS",
    "CaseJudge",
    "Observer",
    "Run",
    "RunOptions",
    "RunStart",
    "RunSummary",
    "Selection",
    "Session",
    "conclude",
]

EXIT_PASS, EXIT_FAIL, EXIT_INPUT, EXIT_HARNESS = 0, 1, 2, 3
EXIT_CODES = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "error": EXIT_HARNESS}
#: Difference signatures kept in the gate document.
TOP_DIFFERENCES = 20
#: How far past its start a run's "now" reaches, for timestamps in answers (a long stage run).
RUN_HORIZON_S = 24 * 3600.0
#: Seconds between two progress notifications (a display needs ~10 updates/s, not one per case).
PROGRESS_INTERVAL = 0.1


# --------------------------------------------------------------------------------------------
# Inputs: what to run, and how
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which cases of the session's suites a run sends (all of them by default).

    ``keyword`` is a ``-k`` expression, ``tags`` keep cases of suites carrying any of them,
    ``shard`` is ``"K/N"``, ``ids`` keeps exactly these case ids (the pytest plugin's items).
    """

    keyword: str | None = None
    tags: tuple[str, ...] = ()
    shard: str | None = None
    ids: frozenset[str] | None = None

    @property
    def filtered(self) -> bool:
        return bool(self.keyword or self.tags or self.shard or self.ids is not None)

    def shown(self) -> dict[str, str]:
        """The filters given, as the command line spells them (gate.json ``selection``)."""
        given = {
            "-k": self.keyword or "",
            "--tag": " ".join(self.tags),
            "--shard": self.shard or "",
            "ids": f"{len(self.ids)} case ids" if self.ids is not None else "",
        }
        return {option: value for option, value in given.items() if value}

    def cases(self, suites: Iterable[Suite]) -> Iterator[Case]:
        """The selected cases, lazily, in expansion order. A bad filter raises `InputError`
        now, not when the first case is pulled."""
        from flamingo.expand import expand
        from flamingo.select import compile_keyword, parse_shard, select

        if self.keyword:
            compile_keyword(self.keyword)
        shard = parse_shard(self.shard) if self.shard else None
        cases = select(expand(suites), keyword=self.keyword, tags=self.tags, shard=shard)
        if self.ids is None:
            return cases
        ids = self.ids
        return (case for case in cases if case.id in ids)


@dataclass(frozen=True)
class RunOptions:
    """How to run: overrides of targets.yaml ``run:`` (None: as configured), the gate stage,
    and the output folder (None: write no files - the results and summary are still returned)."""

    stage: str | None = None
    concurrency: int | None = None
    rate: float | None = None
    max_requests: int | None = None
    workers: int | None = None  # 0 = auto
    out_dir: Path | None = None
    baseline: Path | None = None  # an earlier run's folder: signatures new since it are counted


#: Command-line overrides of targets.yaml ``run:``: option, setting, lowest value, message.
_OVERRIDES = (
    ("concurrency", "concurrency", 1, "--concurrency: expected an integer >= 1"),
    ("rate", "rate_limit", 0, "--rate: expected a number >= 0"),
    ("max_requests", "max_requests", 0, "--max-requests: expected an integer >= 0"),
    ("workers", "workers", None, "--workers"),  # `worker_count` checks it (0 = auto here)
)


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_out_dir(base: Path = Path("reports")) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return base / stamp


# --------------------------------------------------------------------------------------------
# Outputs: what observers see
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStart:
    """A run about to send: what it will do."""

    total: int  # cases selected
    config: Config
    settings: RunSettings  # effective: options applied, ``workers`` as planned
    fewer_workers: str  # why fewer send workers than asked ('' when not)
    out_dir: Path | None
    redactor: Redactor
    suite_totals: dict[str, int] = field(default_factory=dict)  # cases selected per suite
    #: Cases judged per suite so far: updated by the engine as the run goes (read it on progress).
    suite_done: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    """A finished run, as records: the gate and everything gate.json is built from
    (`flamingo.report.gate.gate_document` is the one function that turns it into the document).
    """

    gate: GateResult
    config: Config
    settings: RunSettings
    started_at: str
    finished_at: str
    elapsed_s: float
    latency: dict[str, dict[str, float | int | None]]
    signatures: tuple[TopRow, ...]
    noise: tuple[NoiseEntry, ...]
    accepted: dict[str, Any] | None
    peak_rss_mb: float | None
    peak_rss_mb_by_process: tuple[float | None, ...] = ()
    out_dir: Path | None = None
    document: dict[str, Any] = field(default_factory=dict)  # gate.json as written (redacted)
    stage_rules: dict[str, Any] = field(default_factory=dict)  # `StageRun.document`
    selection: dict[str, str] = field(default_factory=dict)  # `Selection.shown`
    partial: PartialRun | None = None  # the run as a mergeable record (`flamingo.merge`)
    errors: tuple[ErrorRow, ...] = ()  # transport errors grouped by target, kind and reason

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.gate.verdict]


class Observer:
    """Hooks into a run; the engine itself never prints. Override what you need.

    Called in the judging process, on the thread that runs the session: `started` once before
    the first case is sent, `progress` at most every `PROGRESS_INTERVAL` seconds and once at the
    end, `finished` once with the summary (also when the run ended in ``error``).
    """

    def started(self, run: RunStart) -> None:
        """The run is about to send."""

    def progress(self, totals: Totals) -> None:
        """Cases judged so far."""

    def finished(self, summary: RunSummary) -> None:
        """The run is judged and its files (if any) are written."""


# --------------------------------------------------------------------------------------------
# Judgement: the pure core, composed
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------------------------


def with_compare_defaults(defaults: CompareRules, suites: Sequence[Suite]) -> list[Suite]:
    """targets.yaml ``compare:`` under every suite's own rules."""
    if defaults == CompareRules():
        return list(suites)
    return [replace(s, compare=s.compare.over(defaults)) for s in suites]


class Session:
    """A loaded configuration and its suites: the entry point of every run.

    ``transport_factory`` is the send seam (tests plug a fake transport into it).
    """

    def __init__(
        self,
        config: Config,
        suites: Sequence[Suite],
        *,
        transport_factory: TransportFactory = default_transport,
    ) -> None:
        self.config = config
        self.suites = with_compare_defaults(config.compare, suites)
        self.transport_factory = transport_factory
        self.redactor = Redactor.for_config(config)
        #: When recorded answers were made (epoch seconds; `flamingo.baseline` adds them).
        self.time_spans: list[tuple[float, float]] = []

    @classmethod
    def from_files(
        cls,
        targets: str | Path,
        suites: Sequence[str | Path] = ("suites",),
        *,
        transport_factory: TransportFactory = default_transport,
    ) -> Session:
        """Load and validate targets.yaml and the suites (`InputError`: ``FILE:LINE: ...``)."""
        from flamingo.load import load_config, load_suites

        config = load_config(targets)
        return cls(
            config,
            load_suites(list(suites), max_cases=config.run.max_cases),
            transport_factory=transport_factory,
        )

    # -- what a run would do (nothing sent) ----------------------------------------------

    def cases(self, selection: Selection = Selection()) -> Iterator[Case]:
        return selection.cases(self.suites)

    def count(self, selection: Selection = Selection()) -> int:
        """The number of cases ``selection`` keeps (exact without expanding when unfiltered)."""
        return sum(self.count_by_suite(selection).values())

    def count_by_suite(self, selection: Selection = Selection()) -> dict[str, int]:
        """The cases ``selection`` keeps, per suite, in suite order."""
        counts = {suite.name: 0 for suite in self.suites}
        if not selection.filtered:
            counts.update((suite.name, suite.case_count) for suite in self.suites)
            return counts
        for case in self.cases(selection):
            counts[case.suite] = counts.get(case.suite, 0) + 1
        return counts

    def gate_thresholds(self, stage: str | None) -> GateThresholds:
        try:
            return self.config.gate(stage)
        except KeyError:
            known = ", ".join(name for name, _ in self.config.stages) or "none defined"
            raise InputError(f"--stage: unknown stage '{stage}' (stages: {known})") from None

    def settings(self, options: RunOptions) -> RunSettings:
        """targets.yaml ``run:`` with the options' overrides (checked once, here)."""
        changes = {}
        for option, setting, lowest, message in _OVERRIDES:
            value = getattr(options, option)
            if value is not None:
                if lowest is None:
                    try:
                        worker_count("auto" if value == 0 else value)
                    except ValueError as exc:
                        raise InputError(f"{message}: {exc}") from None
                elif value < lowest:
                    raise InputError(message)
                if setting == "rate_limit" and 0 < value < MIN_RATE:
                    raise InputError(f"--rate: expected 0 or at least {MIN_RATE:g}, got {value}")
                limit = RUN_LIMITS.get(setting)
                if limit is not None and value > limit:
                    raise InputError(f"{message.split(':')[0]}: at most {limit:g}, got {value}")
                changes[setting] = value
        return replace(self.config.run, **changes)

    def check_side_effects(self, cases: Iterable[Case]) -> None:
        """Refuse, before anything is sent, non-idempotent requests to a production target."""
        production = [t.name for t in (self.config.old, self.config.new) if t.production]
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

    def identity(self, selection: Selection, accepted: AcceptedList | None) -> RunIdentity:
        """What a run of ``selection`` is, for a merge to check (`flamingo.merge`)."""
        from flamingo.select import parse_shard

        rules = accepted.rules if accepted is not None else ()
        return RunIdentity(
            flamingo_version=__version__,
            config_hash=config_hash(self.config, rules),
            suites_hash=suites_hash(self.suites, self.config.secrets),
            keyword=selection.keyword,
            tags=tuple(selection.tags),
            shard=parse_shard(selection.shard) if selection.shard else None,
        )

    def judge(self) -> CaseJudge:
        """A fresh judge for one run: its own noise model and accepted-differences use."""
        accepted = None
        if self.config.accepted_path is not None:
            from flamingo.load import load_accepted

            rules = load_accepted(self.config.accepted_path)
            accepted = AcceptedList(rules, today=datetime.now(UTC).date())
        # Timestamps of *now* are noise (flamingo.shape): now is this run, plus any recording.
        now = time.time()
        windows = TimeWindows(((now, now + RUN_HORIZON_S), *self.time_spans))
        return CaseJudge(NoiseModel(windows=windows), accepted)

    # -- running -------------------------------------------------------------------------

    def run(
        self,
        selection: Selection = Selection(),
        options: RunOptions = RunOptions(),
        observers: Sequence[Observer] = (),
    ) -> Run:
        """Validate the run (stage, options, side-effect guard: `InputError`, nothing sent)
        and return it, ready to go: iterate it for the judged results, or call `Run.wait`."""
        thresholds = self.gate_thresholds(options.stage)
        settings = self.settings(options)
        self.check_side_effects(self.cases(selection))
        return Run(self, selection, options, thresholds, settings, list(observers))


class Run:
    """One run of a session: iterate it (judged results, as they finish) or `wait` for it.

    Either way it runs once, writes its files (with ``out_dir``), tells its observers, and
    leaves the `summary`. SIGINT/SIGTERM stop it cleanly (the verdict is then ``error``).
    """

    def __init__(
        self,
        session: Session,
        selection: Selection,
        options: RunOptions,
        thresholds: GateThresholds,
        settings: RunSettings,
        observers: list[Observer],
    ) -> None:
        self.session = session
        self.selection = selection
        self.options = options
        self.thresholds = thresholds
        self.settings = settings
        self.observers = observers
        self._summary: RunSummary | None = None
        self._started = False
        self.judge: CaseJudge | None = None  # once finished: what it learned and used

    @property
    def summary(self) -> RunSummary:
        if self._summary is None:
            raise HarnessError("the run has not finished (iterate it or call wait())")
        return self._summary

    def wait(self) -> RunSummary:
        """Run to the end without handing out results one by one; the summary."""
        for _ in self._execute(stepping=False):
            pass
        return self.summary

    def __iter__(self) -> Iterator[CaseResult]:
        for batch in self._execute(stepping=True):
            yield from batch

    # -- the run itself ------------------------------------------------------------------

    def _execute(self, stepping: bool) -> Iterator[list[CaseResult]]:
        if self._started:
            raise HarnessError("a run can be run only once; ask the session for another")
        self._started = True
        with SIGNALS.session() as signals, signals.deferring():
            yield from self._run(stepping, signals)

    def _run(self, stepping: bool, signals: SignalGuard) -> Iterator[list[CaseResult]]:
        from flamingo.report.clusters import report_context
        from flamingo.report.files import RunFiles

        session, config = self.session, self.session.config
        try:
            with signals.raising():  # told to stop while counting: stop counting at once
                suite_totals = session.count_by_suite(self.selection)
        except Interrupted:
            suite_totals = {}  # nothing is sent (`reason` below)
        suite_done: dict[str, int] = {}
        total = sum(suite_totals.values())
        judge = session.judge()
        redactor = session.redactor
        out_dir = self.options.out_dir
        baseline = None
        if self.options.baseline is not None:  # an input error before anything is sent
            from flamingo.report.baseline import read_signatures

            baseline = read_signatures(self.options.baseline)
        files = None
        if out_dir is not None:
            try:
                context = report_context(config, self.options.baseline, baseline)
                files = RunFiles(out_dir, redactor, context)
            except OSError as exc:
                raise InputError(f"--out: cannot write to {out_dir}: {exc.strerror}") from exc
        # Forwarded requests are matched to exchanges by token in the process that sends.
        one_process = "upstream: the recording origin runs in the one sending process"
        workers, fewer = plan(
            self.settings.workers, self.settings, total, one_process if config.upstream else ""
        )
        # More requests in flight than the cases can use buys nothing (3 per case: old, new
        # and old's replica); so sending tasks are bounded by the selection too.
        concurrency = min(self.settings.concurrency, max(3, 3 * total))
        settings = replace(self.settings, workers=workers, concurrency=concurrency)
        stage = StageRun(config, self.thresholds, lambda: session.cases(self.selection), total)
        tally = stage.tally()
        origin = RecordingOrigin.of(config, settings)
        started_at, started = timestamp(), time.monotonic()
        # Told to stop while validating or counting: nothing is sent, the report says so.
        reason = f"interrupted by {signals.received}" if signals.received else ""
        buffer: deque[CaseResult] = deque()
        next_progress = started

        def sink(result: CaseResult) -> None:
            nonlocal next_progress
            result = redactor.result(result)  # before it is counted, written or handed out
            tally.add(result)
            suite = result.case.suite
            suite_done[suite] = suite_done.get(suite, 0) + 1
            if files is not None:
                files.write(result)
            if stepping:
                buffer.append(result)
            if self.observers:
                now = time.monotonic()
                if now >= next_progress:
                    next_progress = now + PROGRESS_INTERVAL
                    totals = tally.totals
                    for observer in self.observers:
                        observer.progress(totals)

        with contextlib.ExitStack() as stack:
            engine: SendEngine | None = None
            if not reason:
                engine = self._open_engine(stack, workers, settings, origin)
            start = RunStart(
                total, config, settings, fewer, out_dir, redactor, suite_totals, suite_done
            )
            for observer in self.observers:  # after the fork: a display may start a thread
                observer.started(start)
            loop = new_event_loop()
            if engine is not None:
                stage.start()
            steps = _Steps(loop, engine, stage.cases(), judge, sink, signals, origin)
            stepper = steps.run(stepping)
            try:
                if engine is not None:
                    with quiet_gc():
                        for _ in stepper:
                            if buffer:
                                batch = list(buffer)
                                buffer.clear()
                                yield batch
                        reason = steps.reason
            except Exception as exc:  # the harness itself failed: record it, fail closed
                reason = f"harness error: {type(exc).__name__}: {exc}"
                if out_dir is not None:
                    (out_dir / "crash.log").write_text(redactor.text(traceback.format_exc()))
            finally:
                stepper.close()  # a consumer that stopped iterating: stop sending first
                loop.close()
            if buffer:
                yield list(buffer)
                buffer.clear()
        worker_peaks = tuple(engine.peak_rss_mb) if engine is not None else ()

        resources = stage.finish()
        self.judge = judge  # for a front door that merges runs (pytest -n)
        summary = conclude(
            config,
            self.thresholds,
            self.options.stage,
            settings,
            tally,
            judge.noise,
            judge.accepted.report() if judge.accepted is not None else None,
            selected=stage.expected,
            reason=reason,
            baseline=frozenset(str(r["id"]) for r in baseline) if baseline is not None else None,
            started_at=started_at,
            elapsed_s=time.monotonic() - started,
            worker_peaks=worker_peaks,
            files=files,
            redactor=redactor,
            resources=resources,
            stage_rules=stage.document(tally),
            upstream=origin.counts() if origin is not None else None,
            selection=self.selection.shown(),
            identity=session.identity(self.selection, judge.accepted),
        )
        for observer in self.observers:
            observer.progress(tally.totals)
        self._summary = summary
        for observer in self.observers:
            observer.finished(summary)

    def _open_engine(
        self,
        stack: contextlib.ExitStack,
        workers: int,
        settings: RunSettings,
        origin: RecordingOrigin | None,
    ) -> SendEngine:
        """The send engine: forked workers (before the event loop and any thread) or local."""
        config, factory = self.session.config, self.session.transport_factory
        if workers > 1:
            try:
                return stack.enter_context(
                    SendPool(workers, config.old, config.new, settings, factory, config.old_replica)
                )
            except OSError as exc:
                raise HarnessError(f"cannot start {workers} send workers: {exc}") from exc
        return LocalEngine(
            Sender(
                config.old, config.new, settings, factory, replica=config.old_replica, origin=origin
            )
        )


def conclude(
    config: Config,
    thresholds: GateThresholds,
    stage: str | None,
    settings: RunSettings,
    tally: Tally,
    noise: NoiseModel,
    accepted: dict[str, Any] | None,
    *,
    selected: int,
    reason: str,
    started_at: str,
    elapsed_s: float,
    worker_peaks: tuple[float | None, ...] = (),
    files: RunFiles | None = None,
    redactor: Redactor,
    resources: ResourceScrapes | None = None,
    stage_rules: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    selection: dict[str, str] | None = None,
    baseline: frozenset[str] | None = None,
    identity: RunIdentity | None = None,
) -> RunSummary:
    """The end of a run - one, or several merged (`flamingo.pytest_plugin` under ``-n``): the
    gate over the tally (fail closed: ``reason`` or fewer cases judged than ``selected`` is
    ``error``), the summary, the gate document, and the files closed (``files``)."""
    from flamingo.report.clusters import latency_cdf
    from flamingo.report.gate import gate_document

    if not reason and tally.totals.cases != selected:
        reason = f"only {tally.totals.cases} of {selected} selected cases were judged"
    gate = evaluate_gate(
        thresholds,
        stage,
        tally,
        complete=not reason,
        reason=reason,
        resources=resources,
        elapsed_s=elapsed_s,
        baseline=baseline,
    )
    own_peak = peak_rss_mb()
    peaks: tuple[float | None, ...] = ()
    total_peak = own_peak
    if worker_peaks:  # every process of the run: this one, then each send worker
        peaks = (own_peak, *worker_peaks)
        known = [mb for mb in peaks if mb is not None]
        total_peak = round(sum(known), 1) if known else None
    finished_at, elapsed_s = timestamp(), round(elapsed_s, 3)
    partial = None
    if identity is not None:  # the run as a mergeable record: partial.json (`flamingo.merge`)
        from flamingo.report.gate import settings_view

        partial = PartialRun(
            identity=identity,
            tally=tally.state(),
            noise=noise.state(),
            accepted=accepted,
            selected=selected,
            complete=gate.verdict != "error",
            reason=gate.reason if gate.verdict == "error" else "",
            started_at=started_at,
            finished_at=finished_at,
            elapsed_s=elapsed_s,
            gates=config_gates(config),
            targets={"old": config.old.base_url, "new": config.new.base_url},
            settings=settings_view(settings),
            peak_rss_mb=total_peak,
            counts_fallbacks=config.new.fallback is not None,
        )
    summary = RunSummary(
        gate=gate,
        config=config,
        settings=settings,
        started_at=started_at,
        finished_at=finished_at,
        elapsed_s=elapsed_s,
        latency={"old": tally.latency("old"), "new": tally.latency("new")},
        signatures=tuple(tally.top(TOP_DIFFERENCES)),
        noise=tuple(noise.entries()),
        accepted=accepted,
        peak_rss_mb=total_peak,
        peak_rss_mb_by_process=peaks,
        out_dir=files.out_dir if files is not None else None,
        stage_rules=stage_rules or {},
        selection=selection or {},
        partial=partial,
        errors=tuple(tally.top_errors()),
    )
    document = redactor.gate(gate_document(summary))  # before it is written or shown
    if upstream is not None:  # what the recording origin saw (`flamingo.upstream`)
        document["upstream"] = upstream
    if files is not None:
        # partial.json beside it, for `flamingo merge`
        part = part_view(partial) if partial is not None else None
        files.finish(gate, document, started_at, latency_cdf(tally), part)
    summary.document.update(document)
    return summary


class _Steps:
    """Drives the send loop. `run` runs it to the end (``buffer`` None) or until judged results
    are in ``buffer``, yielding each time; ``reason`` is '' when complete, else why it stopped
    early."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        engine: SendEngine | None,
        cases: Iterator[Case],
        judge: CaseJudge,
        sink: Callable[[CaseResult], None],
        signals: SignalGuard,
        origin: RecordingOrigin | None = None,
    ) -> None:
        self.origin = origin  # started before the first case, stopped after the last
        self.loop = loop
        self.engine = engine
        self.cases = cases
        self.judge = judge
        self.sink = sink
        self.signals = signals
        self.reason = ""

    def run(self, stepping: bool) -> Generator[None]:
        loop = self.loop
        ready = asyncio.Event() if stepping else None

        def handle(case: Case, old: Exchange, new: Exchange, replica: Exchange | None) -> None:
            for result in self.judge(case, old, new, replica):
                self.sink(result)
            if ready is not None:
                ready.set()

        main = loop.create_task(self._main(handle))
        try:
            if ready is None:
                loop.run_until_complete(main)
                return
            while not main.done():
                loop.run_until_complete(_until(main, ready))
                ready.clear()
                yield
            main.result()
        finally:
            if not main.done():  # the consumer stopped iterating: stop sending
                main.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(main)

    async def _main(self, handle: Handle) -> None:
        assert self.engine is not None
        loop = asyncio.get_running_loop()
        if self.origin is not None:
            await self.origin.start()  # HarnessError when its port is taken: fail closed
        task = asyncio.ensure_future(self.engine.run(self.cases, handle))

        def on_signal(name: str) -> None:
            self.reason = f"interrupted by {name}"
            task.cancel()

        def from_handler(name: str) -> None:  # in the signal handler: only schedule the stop
            with contextlib.suppress(RuntimeError):  # the loop is closing: the stop is under way
                loop.call_soon_threadsafe(on_signal, name)

        stack = contextlib.ExitStack()
        stack.enter_context(self.signals.calling(from_handler))
        if self.signals.received:  # arrived after the count, before the loop
            on_signal(self.signals.received)
        try:
            stopped = await task
            self.reason = self.reason or stopped
        except asyncio.CancelledError:
            if not self.reason:
                self.reason = "interrupted"
                raise
        finally:
            stack.close()  # back to deferring: closing and flushing below is not interrupted
            await self.engine.aclose()
            if self.origin is not None:
                await self.origin.stop()
            for (
                result
            ) in self.judge.flush():  # held for noise learning: judged with what was learned
                self.sink(result)


async def _until(main: asyncio.Task[None], ready: asyncio.Event) -> None:
    """Return when results are ready or the run is over."""
    waiter = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({main, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
