"""The library entry point (`flamingo.Session`) against the real demo targets."""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import replace
from pathlib import Path

import pytest

import flamingo
from flamingo import InputError, Observer, RunOptions, RunStart, RunSummary, Selection, Session
from flamingo.load import load_config, load_suites
from flamingo.model import Totals

REPO = Path(__file__).resolve().parent.parent


def demo_session(demo_targets: dict[str, str], **changes: object) -> Session:
    config = load_config(REPO / "targets.yaml")
    config = replace(
        config,
        old=replace(config.old, base_url=demo_targets["old"]),
        new=replace(config.new, base_url=demo_targets["new"], **changes),
    )
    return Session(config, load_suites([REPO / "suites"]))


class Recorder(Observer):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.last: Totals | None = None

    def started(self, run: RunStart) -> None:
        self.calls.append(f"started {run.total}")

    def progress(self, totals: Totals) -> None:
        self.last = totals

    def finished(self, summary: RunSummary) -> None:
        self.calls.append(f"finished {summary.gate.verdict}")


def test_iterating_a_run_yields_every_judged_case_and_the_same_files(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    session = demo_session(demo_targets)
    recorder = Recorder()
    run = session.run(Selection(), RunOptions(out_dir=tmp_path / "out"), [recorder])
    results = list(run)
    summary = run.summary
    ids = [r.case.id for r in results]
    assert len(ids) == len(set(ids)) == session.count() == summary.gate.totals.cases
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    assert {row["id"]: row["outcome"] for row in rows} == {r.case.id: r.outcome for r in results}
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert gate == summary.document
    assert gate["totals"]["accepted"] > 0 and gate["noise"]  # accepted.yaml and noise: auto
    assert recorder.calls == [f"started {session.count()}", f"finished {gate['verdict']}"]
    assert recorder.last == summary.gate.totals
    assert summary.exit_code == {"pass": 0, "fail": 1, "error": 3}[gate["verdict"]]


def test_without_an_out_dir_nothing_is_written_and_a_selection_applies(
    demo_targets: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    session = demo_session(demo_targets)
    summary = session.run(Selection(tags=("static",))).wait()
    assert list(tmp_path.iterdir()) == []
    assert summary.out_dir is None
    static = sum(s.case_count for s in session.suites if "static" in s.tags)
    assert summary.gate.totals.cases == static == session.count(Selection(tags=("static",)))
    assert summary.document["totals"]["cases"] == static


def test_a_consumer_that_stops_early_stops_the_run(demo_targets: dict[str, str]) -> None:
    run = demo_session(demo_targets).run()
    first = next(iter(run))
    assert first.case.id
    # The generator was abandoned: closing it stops sending; nothing is left running.
    del first


def test_validation_happens_before_anything_is_sent(demo_targets: dict[str, str]) -> None:
    session = demo_session(demo_targets)
    with pytest.raises(InputError, match="unknown stage 'nope'"):
        session.run(options=RunOptions(stage="nope"))
    with pytest.raises(InputError, match="--concurrency"):
        session.run(options=RunOptions(concurrency=0))
    with pytest.raises(InputError, match="-k"):
        session.run(Selection(keyword="a and (b"))


def test_the_production_guard_is_the_sessions(demo_targets: dict[str, str]) -> None:
    session = demo_session(demo_targets, production=True)
    with pytest.raises(InputError, match="would be sent to production"):
        session.run()
    # A selection without non-idempotent requests may go.
    assert session.run(Selection(tags=("static",))).wait().gate.totals.cases > 0


def test_a_run_runs_once(demo_targets: dict[str, str]) -> None:
    run = demo_session(demo_targets).run(Selection(tags=("static",)))
    run.wait()
    with pytest.raises(flamingo.HarnessError):
        run.wait()


def test_all_is_true_in_every_module() -> None:
    """Every name a module lists in ``__all__`` exists (and the package's are importable)."""
    for info in pkgutil.walk_packages(flamingo.__path__, "flamingo."):
        if info.name.endswith("__main__"):
            continue  # runs the command when imported
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{info.name}.__all__ lists {name}, which is missing"
    assert sorted(flamingo.__all__) == sorted([*flamingo._EXPORTS, "__version__"])


def test_transport_errors_are_grouped_into_error_signatures(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    """new down: one error signature with every case, a one-line reason, not 30 copies."""
    from faultserver import closed_port_url

    config = load_config(REPO / "targets.yaml")
    config = replace(
        config,
        old=replace(config.old, base_url=demo_targets["old"]),
        new=replace(config.new, base_url=closed_port_url()),
    )
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "suite: s\nrequests:\n  - name: 'user {{ i }}'\n    path: '/api/user/{{ i }}'\n"
        f"    matrix: {{ i: [{', '.join(map(str, range(30)))}] }}\n"
    )
    session = Session(config, load_suites([suite]))
    summary = session.run(options=RunOptions(out_dir=tmp_path / "out", concurrency=8)).wait()
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert gate["verdict"] == "fail" and gate["complete"] is True
    assert gate["reason"].startswith(
        "new: 30 of 30 cases could not connect (connection refused)"
    ), gate["reason"]
    assert [(e["target"], e["kind"], e["reason"], e["count"]) for e in gate["errors"]] == [
        ("new", "connect", "connection refused", 30)
    ]
    assert gate["errors"][0]["example"].startswith("s::user ")
    assert gate["judgeResult"]["score"]["score"] < 100
    assert summary.errors[0].count == 30
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Error signatures" in page
