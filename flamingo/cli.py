"""The ``flamingo`` command line (CONTRACT §5).

Exit codes of ``run``: 0 gate passed · 1 gate failed · 2 bad input · 3 harness could not complete.
Bad input is printed as ``FILE:LINE: message`` on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from flamingo import __version__
from flamingo.engine import (
    EXIT_HARNESS,
    EXIT_INPUT,
    RunOptions,
    Selection,
    Session,
    default_out_dir,
)
from flamingo.errors import FlamingoError, HarnessError, InputError
from flamingo.model import Target, worker_count
from flamingo.process import SIGNALS, Interrupted
from flamingo.report.redact import Redactor

DEFAULT_TARGETS = "targets.yaml"
DEFAULT_SUITES = "suites"


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line (argparse's own code is 2 as well), an
    option is never matched by a prefix (``--stag`` is not ``--stage``: a typo must not pick an
    option), and an unknown command gets a "did you mean"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        choice = _INVALID_CHOICE.search(message)
        if choice is not None:
            choices = re.findall(r"'([^']*)'", choice.group(2))
            message += _did_you_mean(choice.group(1), choices)
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message}\n")


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    """`` (did you mean X?)``: an option ``word`` begins (an abbreviation, which is refused), else
    the closest spelling; "" when nothing is close."""
    close = [k for k in known if k.startswith(word)] if len(word) > 2 else []
    close = close or difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {' or '.join(close[:3])}?)" if close else ""


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, with a "did you mean" for each unknown option: the command's own
    options are only known here (argparse reports them from the top-level parser)."""
    args, extras = parser.parse_known_args(argv)
    if not extras:
        return args
    command = _subparser(parser, getattr(args, "command", None)) or parser
    known = [*parser._option_string_actions, *command._option_string_actions]
    hints = "".join(
        _did_you_mean(token.split("=", 1)[0], known) for token in extras if token.startswith("--")
    )
    command.error(f"unrecognized arguments: {' '.join(extras)}{hints}")
    raise AssertionError("unreachable")  # pragma: no cover - error() exits


def _subparser(parser: argparse.ArgumentParser, name: str | None) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            found: argparse.ArgumentParser = action.choices[name]
            return found
    return None


def _number_arg(parse: Callable[[str], float], minimum: float) -> Callable[[str], Any]:
    """An argparse type: ``parse`` the text, refuse values below ``minimum`` (and NaN)."""
    kind = "an integer" if parse is int else "a number"

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"expected {kind} >= {minimum:g}, got {text}")
        return value

    return convert


_positive_int = _number_arg(int, 1)
_non_negative_int = _number_arg(int, 0)
_non_negative_float = _number_arg(float, 0)


def _workers(text: str) -> int:
    """``auto`` (0) or a count >= 1: `flamingo.model.worker_count` of the argument."""
    try:
        return worker_count(int(text))
    except ValueError:
        try:
            return worker_count(text)  # auto
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None


def _add_files(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--targets",
        default=DEFAULT_TARGETS,
        metavar="FILE",
        help=f"targets and gates file (default: {DEFAULT_TARGETS})",
    )
    p.add_argument(
        "--suites",
        nargs="+",
        default=None,
        metavar="DIR|FILE",
        help=f"suite files or folders of *.yaml (default: {DEFAULT_SUITES}/)",
    )


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-k",
        dest="keyword",
        metavar="EXPR",
        help="select cases whose id matches EXPR (substrings with and/or/not, as in pytest)",
    )
    p.add_argument(
        "--tag",
        dest="tags",
        action="extend",
        nargs="+",
        default=[],
        metavar="TAG",
        help="select cases of suites carrying any of the TAGs (--tag a b, or --tag a --tag b)",
    )
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="run the K-th of N deterministic slices (1-based; or FLAMINGO_SHARD=K/N)",
    )
    p.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="N slices, this one from JOB_COMPLETION_INDEX (0-based, a Kubernetes Indexed Job)",
    )


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet", "-q", action="store_true", help="no progress; one verdict line at the end"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print only the gate document (gate.json) on stdout, nothing else",
    )


_FORCE_HELP = "use a non-empty --out folder: flamingo's own files in it are removed first"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="flamingo",
        description="Differential test harness for HTTP proxies: one suite, two targets, "
        "one verdict.",
    )
    parser.add_argument("--version", action="version", version=f"flamingo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="send the suites to both targets and judge the gate")
    _add_files(run)
    run.add_argument("--out", metavar="DIR", help="output folder (default: reports/<timestamp>/)")
    run.add_argument("--force", action="store_true", help=_FORCE_HELP)
    run.add_argument("--stage", metavar="NAME", help="gate stage from targets.yaml")
    _add_selection(run)
    run.add_argument(
        "--concurrency", type=_positive_int, metavar="N", help="override run.concurrency"
    )
    run.add_argument(
        "--rate", type=_non_negative_float, metavar="RPS", help="override run.rate_limit"
    )
    run.add_argument(
        "--max-requests",
        type=_non_negative_int,
        metavar="N",
        help="send at most N requests; a run cut short by it is 'error' (exit 3)",
    )
    run.add_argument(
        "--workers",
        type=_workers,
        metavar="N|auto",
        help="send from N processes, judge in one (override run.workers; default auto)",
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress display")
    run.add_argument(
        "--old",
        action="append",
        metavar="DIR",
        help="judge new against a baseline (flamingo record) as old; repeat for several",
    )
    run.add_argument(
        "--record-old", metavar="DIR", help="also record what old answers as a baseline in DIR"
    )

    record = sub.add_parser("record", help="store one target's responses as a baseline")
    _add_files(record)
    record.add_argument("--target", required=True, metavar="NAME", help="old, new, old_replica")
    record.add_argument("--out", required=True, metavar="DIR", help="the baseline directory")
    _add_selection(record)
    record.add_argument(
        "--concurrency", type=_positive_int, metavar="N", help="override run.concurrency"
    )
    record.add_argument(
        "--rate", type=_non_negative_float, metavar="RPS", help="override run.rate_limit"
    )
    record.add_argument("--no-progress", action="store_true", help="no live progress display")
    _add_output(run)
    run.add_argument(
        "--baseline",
        metavar="RUN_DIR",
        help="compare the difference signatures with an earlier run's: new, disappeared, "
        "changed in count (gate.json, console, report.html; gate key max_new_signatures)",
    )

    show = sub.add_parser("show", help="a past run's summary, or one case's evidence")
    show.add_argument("run_dir", metavar="RUN_DIR", help="the run's output folder")
    show.add_argument("case_id", metavar="CASE_ID", nargs="?", help="show this case side by side")

    compare = sub.add_parser("compare", help="difference signatures of run B against run A")
    compare.add_argument("run_a", metavar="RUN_A", help="the earlier (baseline) run's folder")
    compare.add_argument("run_b", metavar="RUN_B", help="the later run's folder")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")

    lst = sub.add_parser("list", help="print the expanded cases; sends nothing")
    _add_files(lst)
    _add_selection(lst)

    check = sub.add_parser("check", help="validate targets and suites; sends nothing")
    _add_files(check)

    demo = sub.add_parser("demo", help="start the bundled demo targets and run the bundled suites")
    demo.add_argument("--out", metavar="DIR", help="output folder (default: reports/<timestamp>/)")
    demo.add_argument("--force", action="store_true", help=_FORCE_HELP)
    demo.add_argument("--stage", metavar="NAME", help="gate stage")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="only start the demo targets on the ports of the bundled targets.yaml and wait",
    )
    demo.add_argument(
        "--strict",
        action="store_true",
        help="exit with the gate's code (1 when it fails) instead of 0 once a verdict is shown",
    )
    demo.add_argument(
        "--rollout",
        action="store_true",
        help="walk the rollout stages canary -> quarter -> global, stop at the first that fails",
    )
    demo.add_argument("--no-progress", action="store_true", help="no live progress display")
    _add_output(demo)

    serve = sub.add_parser("serve", help="the gate server for rollout controllers (HTTP)")
    _add_files(serve)
    serve.add_argument(
        "--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="default 127.0.0.1:8080"
    )
    serve.add_argument(
        "--data",
        default="flamingo-data",
        metavar="DIR",
        help="runs and gate documents, kept across restarts (default: flamingo-data)",
    )

    merge = sub.add_parser(
        "merge", help="combine the output folders of shards into one run, as if unsharded"
    )
    merge.add_argument(
        "dirs",
        nargs="+",
        metavar="DIR",
        help="run output folders (--out of each shard), or a folder holding them",
    )
    merge.add_argument("--out", metavar="DIR", required=True, help="output folder of the merge")
    merge.add_argument("--stage", metavar="NAME", help="gate stage (default: the default gate)")
    merge.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)

    noise = sub.add_parser("noise", help="what a run learned as noise (compare: {noise: auto})")
    noise.add_argument(
        "--suggest",
        metavar="RUN_DIR",
        required=True,
        help="print the compare: rules (YAML) that make the noise learned in RUN_DIR explicit",
    )
    from flamingo.traffic.cli import add_import_parser

    add_import_parser(sub, _Parser, _positive_int)
    return parser


# ----------------------------------------------------------------------------------------------


def _session(args: argparse.Namespace) -> Session:
    from flamingo.load import load_config, load_suites

    config = load_config(args.targets)
    args.redactor = Redactor.for_config(config)  # for `main`'s last-resort messages too
    suites = load_suites(args.suites or [DEFAULT_SUITES], max_cases=config.run.max_cases)
    return Session(config, suites)


def _selection(args: argparse.Namespace) -> Selection:
    return Selection(keyword=args.keyword, tags=tuple(args.tags), shard=args.shard)


def _run(
    session: Session,
    selection: Selection,
    options: RunOptions,
    console: Console,
    args: argparse.Namespace,
) -> int:
    from flamingo.report.console import ConsoleObserver
    from flamingo.report.markdown import append_step_summary

    quiet, as_json = bool(getattr(args, "quiet", False)), bool(getattr(args, "json", False))
    if as_json:  # stdout carries the gate document alone
        console = Console(file=sys.stderr, highlight=False)
    observer = ConsoleObserver(
        console, progress=not args.no_progress and not as_json, quiet=quiet, summary=not as_json
    )
    # From here the engine has the signals (it stops a run it is sending, and says so in
    # gate.json); after it, a signal must not turn a judged run into "interrupted before any case
    # was sent" while its verdict is printed.
    with SIGNALS.deferring():
        if getattr(args, "old", None) is None and getattr(args, "record_old", None) is None:
            summary = session.run(selection, options, [observer]).wait()
            code = summary.exit_code
        else:  # the same run, with a recording on the old side (`flamingo.baseline`)
            from flamingo.baseline import baseline_run

            code, summary = baseline_run(session, selection, options, console, args, observer)
        if as_json:
            print(json.dumps(summary.document, indent=2))
        append_step_summary(summary.document, summary.out_dir)
    return code


def _fresh_out(args: argparse.Namespace) -> None:
    """An explicit --out must be new or empty (or --force): checked before anything is read."""
    if args.out:
        from flamingo.report.files import prepare_out_dir

        prepare_out_dir(Path(args.out), force=args.force)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    _fresh_out(args)
    options = RunOptions(
        stage=args.stage,
        concurrency=args.concurrency,
        rate=args.rate,
        max_requests=args.max_requests,
        workers=args.workers,
        out_dir=Path(args.out) if args.out else default_out_dir(),
        baseline=Path(args.baseline) if args.baseline else None,
    )
    return _run(_session(args), _selection(args), options, console, args)


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from flamingo.load import load_config, load_suites

    # The targets file is optional here (it gives the URLs); its compare: rules do not matter.
    config = load_config(args.targets) if Path(args.targets).exists() else None
    max_cases = config.run.max_cases if config is not None else 1_000_000
    suites = load_suites(args.suites or [DEFAULT_SUITES], max_cases=max_cases)
    # A ${VAR} may sit in the base URL (a token in the path): never print it.
    base = Redactor.for_config(config).config_text(config.old.base_url) if config else ""
    count = 0
    out = sys.stdout
    for case in _selection(args).cases(suites):
        out.write(f"{case.id}\t{case.method}\t{base}{case.path}\n")
        count += 1
    out.flush()
    print(f"{count} cases", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    session = _session(args)
    count = session.count()
    also = ""
    judge = session.judge()  # reads and validates accepted.yaml
    if judge.accepted is not None:
        also = (
            f", {session.config.accepted_path} ({len(judge.accepted.rules)} accepted differences)"
        )
    print(f"ok: {args.targets}{also} and {len(session.suites)} suites ({count} cases) are valid")
    return 0


def bundled_path(name: str) -> Path:
    """The demo's suites/targets: inside an installed wheel, else the source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_bundled" / name, here.parent / name):
        if candidate.exists():
            return candidate
    raise HarnessError(f"bundled demo file {name} is missing from this installation")


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from flamingo.demo import DEMO_FALLBACK_PATHS, start_demo_process
    from flamingo.load import load_config, load_suites

    if not args.serve:
        _fresh_out(args)
    config = load_config(bundled_path("targets.yaml"))
    if args.serve:
        ports = {
            name: int(target.base_url.rsplit(":", 1)[1])
            for name, target in (("old", config.old), ("new", config.new))
        }
        with start_demo_process(old_port=ports["old"], new_port=ports["new"]) as demo:
            console.print(f"demo targets: {demo.urls} — Ctrl-C to stop", highlight=False)
            with contextlib.suppress(Interrupted, KeyboardInterrupt):
                demo.process.wait()
        return 0
    suites = load_suites([bundled_path("suites")], max_cases=config.run.max_cases)
    # The edge suite (suites/edge) probes real proxies through the recording origin; the demo's
    # two small Python proxies have no `upstream:` (README, "Testing proxy edge cases").
    suites = [suite for suite in suites if "edge" not in suite.tags]
    if args.json:  # stdout carries the gate document alone
        console = Console(file=sys.stderr, highlight=False)
    # Signals are the engine's (as in `_run`): one while the demo starts stops the run before it
    # sends; one after it, while the demo stops, cannot undo the verdict.
    with SIGNALS.deferring(), start_demo_process(fallback_paths=DEMO_FALLBACK_PATHS) as demo:
        config = replace(
            config, old=_at_demo(config.old, demo.urls), new=_at_demo(config.new, demo.urls)
        )
        if not args.quiet:
            console.print(
                f"demo: origin {demo.urls['origin']} · old proxy {demo.urls['old']} · "
                f"new proxy {demo.urls['new']}",
                highlight=False,
            )
        out_dir = Path(args.out) if args.out else default_out_dir()
        session = Session(config, suites)
        if args.rollout:
            from flamingo.demo.rollout import rollout

            code, _ = rollout(session, console, out_dir, progress=not args.no_progress)
        else:
            options = RunOptions(stage=args.stage, out_dir=out_dir)
            code = _run(session, Selection(), options, console, args)
    if code == EXIT_HARNESS or args.strict:
        return code
    if not (args.quiet or args.json):
        console.print(
            "demo: the verdict above is the gate's (exit code of `flamingo run` would be "
            f"{code}); `flamingo demo --strict` exits with it."
        )
    return 0


def _at_demo(target: Target, urls: dict[str, str]) -> Target:
    """A bundled target moved to the demo's ephemeral ports (its metrics endpoint too)."""
    from flamingo.demo import METRICS_PATH

    base = urls[target.name]
    metrics = base + METRICS_PATH if target.metrics_url is not None else None
    return replace(target, base_url=base, metrics_url=metrics)


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from flamingo.server import serve

    return serve(args.targets, args.suites or [DEFAULT_SUITES], args.listen, args.data)


def cmd_noise(args: argparse.Namespace, console: Console) -> int:
    import yaml

    from flamingo.noise import suggest_rules
    from flamingo.report.gate import read_noise

    entries = read_noise(Path(args.suggest))
    if not entries:
        print("# no noise was learned in this run (is compare: {noise: auto} set?)")
        return 0
    path = Path(args.suggest) / "gate.json"
    for suite, rules in suggest_rules(entries).items():
        left = rules.pop("unsuggestable", None)
        print(f"# suite {suite}: add under its compare: (learned from {path})")
        if rules:
            print(yaml.safe_dump({"compare": rules}, sort_keys=False, allow_unicode=True), end="")
        for item in left or []:  # type: ignore[attr-defined]
            print(f"# noise no rule can express: {item}")
        print()
    return 0


def cmd_record(args: argparse.Namespace, console: Console) -> int:
    from flamingo.baseline import baseline_run
    from flamingo.report.console import ConsoleObserver

    options = RunOptions(concurrency=args.concurrency, rate=args.rate)
    observer = ConsoleObserver(console, progress=not args.no_progress)
    session = _session(args)
    with SIGNALS.deferring():  # the engine has them from here (as in `_run`)
        return baseline_run(session, _selection(args), options, console, args, observer)[0]


def cmd_import(args: argparse.Namespace, console: Console) -> int:
    from flamingo.traffic.cli import import_traffic

    return import_traffic(args)


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    from flamingo.report.show import show_case, show_run

    run_dir = Path(args.run_dir)
    if args.case_id:
        return show_case(console, run_dir, args.case_id)
    return show_run(console, run_dir)


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from flamingo.report.baseline import compare_runs, print_comparison

    comparison = compare_runs(Path(args.run_a), Path(args.run_b))
    if args.json:
        print(json.dumps(comparison, indent=2, ensure_ascii=False))
    else:
        print_comparison(console, comparison)
    return 0


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    from flamingo.merge import merge_dirs

    return merge_dirs([Path(d) for d in args.dirs], Path(args.out), args.stage, console)


COMMANDS = {
    "run": cmd_run,
    "show": cmd_show,
    "compare": cmd_compare,
    "list": cmd_list,
    "check": cmd_check,
    "demo": cmd_demo,
    "noise": cmd_noise,
    "import": cmd_import,
    "record": cmd_record,
    "serve": cmd_serve,
    "merge": cmd_merge,
}


class _Stdout:
    """stdout for the console of a run: when its reader goes away (``flamingo run | head``) the
    run goes on - its verdict and files do not depend on who reads the screen - and what is
    printed after that is dropped."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            _drop_stdout()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _drop_stdout()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding ... as the stream's
        return getattr(self._stream, name)


def _drop_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and the interpreter's last flush of what is
    still buffered must not print ``BrokenPipeError`` (as the Python docs on SIGPIPE advise)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


#: Commands that only print: a closed stdout ends them quietly. (A run's console never raises it:
#: see `_Stdout`; a BrokenPipeError there is some other pipe's, a real fault.)
_PRINTING = frozenset({"list", "check", "noise", "show", "compare"})


def main(argv: Sequence[str] | None = None) -> int:
    # `python -m flamingo` took the signals before its imports; a caller in-process gets them
    # for this call only.
    with SIGNALS.session():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parse(build_parser(), argv)
    # Off a terminal (CI logs) rich would wrap tables at 80 columns; logs have room.
    console = Console(
        file=_Stdout(sys.stdout),  # type: ignore[arg-type]
        highlight=False,
        width=None if sys.stdout.isatty() else 160,
    )
    try:
        if hasattr(args, "shards"):  # --shard, --shards + JOB_COMPLETION_INDEX, FLAMINGO_SHARD
            from flamingo.select import resolve_shard

            args.shard = resolve_shard(args.shard, args.shards, os.environ)
        with SIGNALS.raising():  # the engine defers them where stopping at once is not safe
            return COMMANDS[args.command](args, console)
    except Interrupted as exc:  # while loading, counting or listing: nothing was sent
        return _interrupted(args, exc)
    except FlamingoError as exc:
        return _failed(args, exc)
    except KeyboardInterrupt:
        print("flamingo: interrupted", file=sys.stderr)
        return EXIT_HARNESS
    except Exception as exc:  # a bug in flamingo: fail closed, say where, no pass
        if isinstance(exc, BrokenPipeError) and args.command in _PRINTING:
            _drop_stdout()  # `flamingo list | head`: the reader has what it wanted
            return 0
        message = _redacted(args, f"{type(exc).__name__}: {exc}")
        print(f"flamingo: internal error: {message}", file=sys.stderr)
        if os.environ.get("FLAMINGO_DEBUG"):
            print(_redacted(args, traceback.format_exc()), file=sys.stderr, end="")
        return EXIT_HARNESS


def _failed(args: argparse.Namespace, exc: FlamingoError) -> int:
    """The one place the exception tree (`flamingo.errors`) becomes an exit code: bad input is
    2 and printed as it is (``FILE:LINE: message``); any other flamingo error - a
    `HarnessError` - is 3, its message redacted (it may quote a target's answer)."""
    if isinstance(exc, InputError):
        print(str(exc), file=sys.stderr)
        return EXIT_INPUT
    print(f"flamingo: {_redacted(args, str(exc))}", file=sys.stderr)
    return EXIT_HARNESS


def _interrupted(args: argparse.Namespace, exc: Interrupted) -> int:
    """Told to stop before a run began: say so, and when the run's --out is known leave a
    gate.json (``error``) there, as every interrupted run does."""
    runs = args.command in ("run", "demo")
    reason = f"{exc} before any case was sent" if runs else str(exc)
    print(f"flamingo: {reason}", file=sys.stderr)
    out = getattr(args, "out", None)
    if out and runs:
        with SIGNALS.deferring():
            from flamingo.report.files import write_unrun

            try:
                write_unrun(Path(out), args.stage, reason)
            except OSError as error:
                print(f"flamingo: cannot write to {out}: {error.strerror}", file=sys.stderr)
    return EXIT_HARNESS


def _redacted(args: argparse.Namespace, text: str) -> str:
    """Secrets out of a message printed outside a run (once targets.yaml has been read)."""
    redactor: Redactor | None = getattr(args, "redactor", None)
    return redactor.text(text) if redactor is not None else text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
