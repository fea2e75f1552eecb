"""The pytest front door (CONTRACT §5): flamingo suites as pytest items, over the one engine.

Inert unless ``--flamingo-targets FILE`` is given, so installing flamingo never changes other
projects' test runs. With it, every ``*.yaml``/``*.yml`` file whose top level has a ``suite:`` key
is collected; each expanded case is one item named by its id; suite tags are registered markers
(``-m smoke``, ``--strict-markers``). ``--flamingo-out DIR`` writes the files ``flamingo run``
writes, ``--flamingo-stage NAME`` picks the gate, and the session fails when the gate fails.

Theory of operation
-------------------
An item does not send its case alone: the engine's policies need more than one case (noise is
learned from every old-vs-old sample of a request template; the gate is over the whole run). So
the first item of a suite to run runs the whole suite's selected items through `flamingo.Session`
- concurrently, with compare defaults, noise, accepted differences, redaction and the
production guard exactly as ``flamingo run`` applies them - and every item of the suite then
reports its own judged result. Each such suite run leaves a `Part` (its judged results, its noise
observations, its accepted-difference use); `Parts` adds them up into one run - re-tallied from
the results (exact: the same counters and histogram buckets), noise observations and accepted use
added with the merge code of `flamingo.merge` - and `flamingo.engine.conclude` gives the one gate
and writes the files.

Under pytest-xdist (``-n N``) a suite's items must stay in one process (noise learning), so with
the default ``--dist load`` the plugin gives xdist a scheduler whose unit of work is a suite
(`suite_scope`; xdist's own ``loadgroup`` marks cannot: pytest 9 ignores the node ids it
rewrites). Each worker ships its `Part`\\s to the controller (``workeroutput``), which adds
them up as above: one gate and one set of files, equal to a run without ``-n``.
"""

from __future__ import annotations

import base64
import io
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from flamingo.errors import InputError

if TYPE_CHECKING:
    from flamingo.engine import RunSummary, Session
    from flamingo.model import Case, CaseResult, Config, FallbackRule, GateThresholds
    from flamingo.noise import NoiseState
    from flamingo.report.files import RunFiles
    from flamingo.suite import Suite

#: workeroutput key of a worker's parts (a base64 pickle: the workers run this same install).
_WORKER_KEY = "flamingo_parts"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flamingo", "flamingo differential suites")
    group.addoption(
        "--flamingo-targets",
        metavar="FILE",
        default=None,
        help="collect flamingo suites (*.yaml with a 'suite:' key) and run them against the "
        "targets in FILE",
    )
    group.addoption(
        "--flamingo-out",
        metavar="DIR",
        default=None,
        help="write the files `flamingo run --out DIR` writes (gate.json, results.jsonl, ...)",
    )
    group.addoption(
        "--flamingo-stage",
        metavar="NAME",
        default=None,
        help="judge the gate of stage NAME from the targets file (default: gates.default)",
    )


# --------------------------------------------------------------------------------------------
# Parts: suite runs, added up into one run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """What one suite run leaves to be merged: its results and what it learned and used."""

    results: tuple[CaseResult, ...]
    noise: NoiseState
    accepted: dict[str, Any] | None
    reason: str  # why it did not complete ('' when it did)
    started_at: str
    started: float  # time.time() at its start (a wall clock every process shares)


@dataclass
class Parts:
    """Suite runs added up into one run: results re-tallied (and written, with ``files``),
    noise observations absorbed, accepted-difference use merged (`flamingo.merge`)."""

    files: RunFiles | None = None
    fallback: FallbackRule | None = None  # targets.new.fallback: counted by the tally
    parts: list[Part] = field(default_factory=list)

    def __post_init__(self) -> None:
        from flamingo.judge import Tally
        from flamingo.noise import NoiseModel

        self.tally = Tally(fallback=self.fallback)
        self.noise = NoiseModel()

    def add(self, part: Part) -> None:
        from flamingo.noise import NoiseState

        for result in part.results:
            self.tally.add(result)
            if self.files is not None:
                self.files.write(result)
        self.noise.absorb(part.noise)
        # Only what the summary needs is kept: the results are in the tally and the files, the
        # noise in the model.
        self.parts.append(replace(part, results=(), noise=NoiseState()))

    def conclude(self, session: Session, stage: str | None, selected: int) -> RunSummary:
        from flamingo.engine import RunOptions, conclude, timestamp
        from flamingo.merge import merge_accepted

        parts = self.parts
        reasons = [p.reason for p in parts if p.reason]
        started = min((p.started for p in parts), default=time.time())
        started_at = min((p.started_at for p in parts), default=timestamp())
        return conclude(
            session.config,
            session.gate_thresholds(stage),
            stage,
            session.settings(RunOptions()),
            self.tally,
            self.noise,
            merge_accepted([p.accepted for p in parts]),
            selected=selected,
            reason="; ".join(dict.fromkeys(reasons)),
            started_at=started_at,
            elapsed_s=time.time() - started,
            files=self.files,
            redactor=session.redactor,
        )


# --------------------------------------------------------------------------------------------
# The plugin's state in one pytest process
# --------------------------------------------------------------------------------------------


class FlamingoPlugin:
    """Registered by `pytest_configure` when ``--flamingo-targets`` is given."""

    def __init__(self, pytest_config: pytest.Config, config: Config) -> None:
        from flamingo.engine import Session

        self.pytest_config = pytest_config
        self.config = config
        self.stage: str | None = pytest_config.getoption("flamingo_stage")
        out = pytest_config.getoption("flamingo_out")
        self.out = Path(out) if out else None
        self.session = Session(config, [])  # the gate, settings and redaction of the whole
        self.suites: dict[str, Suite] = {}
        self.results: dict[str, CaseResult] = {}
        self.reasons: dict[str, str] = {}  # suite -> why its run did not complete
        self.done: set[str] = set()
        self.groups: dict[str, list[CaseItem]] = {}
        self.my_parts: list[Part] = []
        self.selected = 0
        self.summary: RunSummary | None = None
        self.worker = hasattr(pytest_config, "workerinput")
        self.controller = not self.worker and _xdist_workers(pytest_config) > 0
        self.merged: Parts | None = None
        self.refused = ""  # the production guard's message, when it refused the session

    # -- collection ----------------------------------------------------------------------

    def add_suites(self, suites: list[Suite], where: str) -> Iterator[Case]:
        """The cases of one collected file's suites, as the session expands them (compare
        defaults applied); a suite name seen in another file is an input error, as in
        ``flamingo run``."""
        from flamingo.engine import Session

        for suite in suites:
            if suite.name in self.suites:
                raise InputError(f"duplicate suite name '{suite.name}'", where)
            self.suites[suite.name] = suite
        return Session(self.config, suites).cases()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """After -k/-m: the production guard over exactly the cases that will run."""
        cases = [item.case for item in items if isinstance(item, CaseItem)]
        self.selected = len(cases)
        self.groups.clear()  # each suite's items, sent together by its first (`result_for`)
        for item in items:
            if isinstance(item, CaseItem):
                self.groups.setdefault(item.case.suite, []).append(item)
        try:
            self.session.check_side_effects(cases)
        except InputError as exc:
            if not self.worker:
                raise pytest.UsageError(str(exc)) from None
            # An xdist worker cannot end the session cleanly from here (the controller takes
            # it for a crash and loses the message): its items refuse instead, nothing is sent,
            # and the controller ends the session as a usage error.
            self.refused = str(exc)

    # -- running -------------------------------------------------------------------------

    def result_for(self, item: CaseItem) -> CaseResult | None:
        if self.refused:
            raise Refused(self.refused)
        suite = item.case.suite
        if suite not in self.done:
            self.done.add(suite)
            self._run_suite(self.suites[suite], self.groups[suite])
        return self.results.get(item.case.id)

    def _run_suite(self, suite: Suite, items: list[CaseItem]) -> None:
        from flamingo.engine import RunOptions, Selection, Session, timestamp

        ids = frozenset(item.case.id for item in items)
        session = Session(self.config, [suite])
        started, started_at = time.time(), timestamp()
        run = session.run(Selection(ids=ids), RunOptions(stage=self.stage))
        results = []
        for result in run:
            self.results[result.case.id] = result
            results.append(result)
        gate = run.summary.gate
        reason = gate.reason if gate.verdict == "error" else ""
        if reason:
            self.reasons[suite.name] = reason
        assert run.judge is not None
        accepted = run.judge.accepted.report() if run.judge.accepted is not None else None
        part = Part(tuple(results), run.judge.noise.state(), accepted, reason, started_at, started)
        if self.worker:
            self.my_parts.append(part)
        else:
            self._merged().add(part)

    def _merged(self) -> Parts:
        if self.merged is None:
            files = None
            if self.out is not None:
                from flamingo.report.files import RunFiles

                try:
                    files = RunFiles(self.out, self.session.redactor)
                except OSError as exc:
                    raise pytest.UsageError(
                        f"--flamingo-out: cannot write to {self.out}: {exc.strerror}"
                    ) from None
            self.merged = Parts(files, self.config.new.fallback)
        return self.merged

    # -- the end ---------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.worker:
            payload = (self.my_parts, self.selected, self.refused)
            data = base64.b64encode(pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)).decode()
            self.pytest_config.workeroutput[_WORKER_KEY] = data  # type: ignore[attr-defined]
            return
        if self.refused:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR  # as a refusal in one process
            return
        if self.merged is None and (not self.selected or exitstatus == pytest.ExitCode.USAGE_ERROR):
            return  # no flamingo case in this session, or refused before any was sent
        self.summary = self._merged().conclude(self.session, self.stage, self.selected)
        if self.summary.gate.verdict != "pass" and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.refused:
            terminalreporter.section("flamingo: refused, nothing was sent")
            terminalreporter.write_line(self.session.redactor.text(self.refused))
        if self.summary is None:
            return
        from rich.console import Console

        from flamingo.report.console import print_summary

        text = io.StringIO()
        console = Console(file=text, width=max(terminalreporter._tw.fullwidth, 100))
        out = str(self.out) if self.out is not None else "(no --flamingo-out)"
        terminalreporter.section("flamingo gate")
        print_summary(console, self.summary.document, out)
        terminalreporter.write(text.getvalue())


class XdistHooks:
    """pytest-xdist's controller hook, registered only where xdist is (an unknown hook is an
    error to pytest): the parts each worker ran come back and are added up."""

    def __init__(self, plugin: FlamingoPlugin) -> None:
        self.plugin = plugin

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getoption("dist") != "load":
            return None  # the user chose a distribution: theirs (loadscope/loadfile are sound)
        from xdist.scheduler import LoadScopeScheduling

        class SuiteScheduling(LoadScopeScheduling):  # type: ignore[misc]
            """``load``, but a flamingo suite's items are one unit of work: one process."""

            def _split_scope(self, nodeid: str) -> str:
                return suite_scope(nodeid)

        return SuiteScheduling(config, log)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", None) or {}
        payload = output.get(_WORKER_KEY)
        if payload is None:
            return  # a worker that died: its cases are missing, the gate says so (not complete)
        parts, selected, refused = pickle.loads(base64.b64decode(payload))
        plugin = self.plugin
        plugin.selected = max(plugin.selected, selected)
        plugin.refused = plugin.refused or refused
        merged = plugin._merged()
        for part in parts:
            merged.add(part)


def suite_scope(nodeid: str) -> str:
    """The unit of work of a node id under ``-n``: ``FILE::SUITE`` for a flamingo case (its id
    is ``SUITE::NAME``), the node id itself for any other test (as ``--dist load``)."""
    file, sep, rest = nodeid.partition("::")
    if sep and file.endswith((".yaml", ".yml")):
        return f"{file}::{rest.partition('::')[0]}"
    return nodeid


def _xdist_workers(config: pytest.Config) -> int:
    if not config.pluginmanager.hasplugin("xdist"):
        return 0
    workers = getattr(config.option, "numprocesses", None) or 0
    return int(workers) if config.getoption("dist", "no") != "no" else 0


def _plugin(config: pytest.Config) -> FlamingoPlugin | None:
    found = config.pluginmanager.get_plugin("flamingo-engine")
    return found if isinstance(found, FlamingoPlugin) else None


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("flamingo_targets")
    if not path:
        return
    from flamingo.load import load_config

    out = config.getoption("flamingo_out")
    if out and not hasattr(config, "workerinput"):
        try:  # refused before anything is sent, as `flamingo run --out` is
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise pytest.UsageError(
                f"--flamingo-out: cannot write to {out}: {exc.strerror}"
            ) from None
    try:
        loaded = load_config(path)
        stage = config.getoption("flamingo_stage")
        from flamingo.engine import Session

        thresholds = Session(loaded, []).gate_thresholds(stage)
    except InputError as exc:
        raise pytest.UsageError(str(exc)) from None
    _refuse_whole_run_rules(thresholds, stage)
    upstream = loaded.upstream  # port 0 (any free one) gives each process its own
    if upstream is not None and upstream.port and _xdist_workers(config) > 1:
        origin = f"{upstream.host}:{upstream.port}"
        raise pytest.UsageError(
            f"upstream: the recording origin listens on {origin}, which one process can "
            "hold, and -n starts several; run these suites with -n 0 (or flamingo run)"
        )
    plugin = FlamingoPlugin(config, loaded)
    config.pluginmanager.register(plugin, "flamingo-engine")
    if plugin.controller:
        config.pluginmanager.register(XdistHooks(plugin), "flamingo-xdist")


def _refuse_whole_run_rules(thresholds: GateThresholds, stage: str | None) -> None:
    """A gate whose rules need one continuous run over the whole selection - ``min_duration``
    rounds, ``resources`` scraped before and after - cannot be judged by a door that runs suite
    by suite (and under ``-n`` in several processes): refused before anything is sent, never a
    verdict that means something else than `flamingo run`'s."""
    rules = []
    if thresholds.min_duration is not None:
        rules.append(f"min_duration ({thresholds.min_duration:g}s of rounds)")
    if thresholds.resources:
        rules.append("resources (metrics scraped before and after the run)")
    if rules:
        name = "default" if stage is None else stage
        raise pytest.UsageError(
            f"gate {name}: {' and '.join(rules)} {'need' if len(rules) > 1 else 'needs'} one "
            "continuous run over the whole "
            f"selection, which the pytest plugin (suite by suite) cannot give; judge this gate "
            f"with `flamingo run --stage {name}`"
        )


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix not in (".yaml", ".yml") or _plugin(parent.config) is None:
        return None
    try:
        head = file_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not any(line.startswith("suite:") for line in head.splitlines()):
        return None
    return SuiteFile.from_parent(parent, path=file_path)


class CaseMismatch(Exception):
    def __init__(self, result: CaseResult) -> None:
        super().__init__(result.outcome)
        self.result = result


class Refused(Exception):
    """The production guard refused the session's cases: nothing is sent."""


class NotJudged(Exception):
    """The suite's run ended before this case was judged (interrupted, or the harness failed)."""


class SuiteFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from flamingo.load import load_suites

        plugin = _plugin(self.config)
        assert plugin is not None
        try:
            suites = load_suites([self.path], max_cases=plugin.config.run.max_cases)
            cases = plugin.add_suites(suites, str(self.path))
        except InputError as exc:
            raise self.CollectError(str(exc)) from None
        for suite in suites:
            for tag in suite.tags:  # registered before use: --strict-markers accepts them
                self.config.addinivalue_line("markers", f"{tag}: flamingo suite tag")
        for case in cases:
            item = CaseItem.from_parent(self, name=case.id, case=case)
            for tag in case.tags:
                item.add_marker(tag)
            yield item


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        plugin = _plugin(self.config)
        assert plugin is not None
        result = plugin.result_for(self)
        if result is None:
            why = plugin.reasons.get(self.case.suite, "the run ended before it")
            raise NotJudged(f"{self.case.id}: not judged: {why}")
        if result.outcome != "match":
            raise CaseMismatch(result)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | Any:
        plugin = _plugin(self.config)
        if isinstance(excinfo.value, CaseMismatch | NotJudged | Refused) and plugin is not None:
            if isinstance(excinfo.value, NotJudged | Refused):
                return plugin.session.redactor.text(str(excinfo.value))
            return describe_result(excinfo.value.result)  # redacted by the engine
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"flamingo case {self.case.id}"


def describe_result(result: CaseResult) -> str:
    """A non-matching case in a few lines: outcome, transport errors, expect failures, diffs."""
    from flamingo.report.rows import describe_difference, describe_failure

    lines = [f"{result.case.id}: {result.outcome}"]
    for name, exchange in (("old", result.old), ("new", result.new)):
        message = getattr(exchange, "message", None)
        if message is not None:
            lines.append(f"  {name}: {exchange.kind}: {message}")  # type: ignore[union-attr]
    lines += [f"  {describe_failure(f)}" for f in result.failures]
    lines += [f"  {describe_difference(d)}" for d in result.differences]
    return "\n".join(lines)
