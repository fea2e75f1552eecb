"""A verdict that cannot pass by accident (issue 9): every scenario is a real run of the
`flamingo` command against real servers on 127.0.0.1 (the bundled demo targets, the fault
server of tests/faultserver.py) or real files, and asserts the exit code and gate.json.

Gates fail closed (CONTRACT §3): a gate that does not set ``min_match_rate``, ``max_error_rate``
or ``min_cases`` gets 1.0, 0 and 1, so a ``diff``, ``fail`` or ``error`` passes only where a
threshold written in the file allows its rate.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from faultserver import ServerFactory

from flamingo.cli import main


def run(*args: object) -> int:
    return main(["run", "--no-progress", *(str(a) for a in args)])


def gate_of(out: Path) -> dict[str, Any]:
    gate: dict[str, Any] = json.loads((out / "gate.json").read_text())
    return gate


def targets(path: Path, old: str, new: str, gates: str | None) -> Path:
    """A targets.yaml with ``gates`` as written (None: no ``gates:`` section at all)."""
    text = f"targets:\n  old: {{base_url: '{old}'}}\n  new: {{base_url: '{new}'}}\n"
    text += "run: {concurrency: 10, timeout: 5s, retries: 0}\n"
    if gates is not None:
        text += textwrap.dedent(gates)
    path.write_text(text)
    return path


def suite(path: Path, body: str) -> Path:
    path.write_text("suite: gated\n" + textwrap.dedent(body))
    return path


#: 10 cases that all differ between the demo proxies (the planted role change on user 42, and
#: the proxies' own Server/Via headers).
TEN_DIFFS = """\
requests:
  - name: user 42
    path: /api/user/42
    repeat: 10
"""

#: 5 cases whose expect fails on both targets.
FIVE_FAILS = """\
requests:
  - name: hello
    path: /static/hello.txt
    expect: {status: 299}
    repeat: 5
"""


@pytest.mark.parametrize(
    "gates",
    [
        None,  # no gates: section at all
        "gates: {}\n",
        "gates: {default: {}}\n",
        "gates: {default: {max_error_rate: 0}}\n",  # only max_error_rate, all cases diff
        "gates: {default: {min_cases: 1, max_latency_ratio_p99: 1000}}\n",
    ],
    ids=["no-gates", "empty-gates", "empty-default", "only-max-error-rate", "only-others"],
)
def test_ten_of_ten_diffs_never_pass(
    gates: str | None, tmp_path: Path, demo_targets: dict[str, str]
) -> None:
    config = targets(tmp_path / "t.yaml", demo_targets["old"], demo_targets["new"], gates)
    out = tmp_path / "out"
    cases = suite(tmp_path / "s.yaml", TEN_DIFFS)
    code = run("--targets", config, "--suites", cases, "--out", out)
    gate = gate_of(out)
    assert gate["totals"]["diff"] == 10, gate["totals"]
    assert (code, gate["verdict"]) == (1, "fail")
    checks = {c["name"]: c for c in gate["checks"]}
    assert checks["min_match_rate"]["threshold"] == 1.0
    assert not checks["min_match_rate"]["passed"]


@pytest.mark.parametrize("gates", [None, "gates: {}\n", "gates: {default: {max_error_rate: 0}}\n"])
def test_five_of_five_expect_failures_never_pass(
    gates: str | None, tmp_path: Path, demo_targets: dict[str, str]
) -> None:
    config = targets(tmp_path / "t.yaml", demo_targets["old"], demo_targets["new"], gates)
    out = tmp_path / "out"
    cases = suite(tmp_path / "s.yaml", FIVE_FAILS)
    code = run("--targets", config, "--suites", cases, "--out", out)
    gate = gate_of(out)
    assert gate["totals"]["fail"] == 5, gate["totals"]
    assert (code, gate["verdict"]) == (1, "fail")


def test_only_min_match_rate_with_nine_of_ten_errors_fails(
    tmp_path: Path, servers: ServerFactory
) -> None:
    """The one judged case matches (match rate 1.0 of 1), but 9 of 10 are errors: the default
    ``max_error_rate: 0`` still holds because the file did not set it."""
    old, new = servers(name="old"), servers(name="new")
    config = targets(
        tmp_path / "t.yaml", old.url, new.url, "gates: {default: {min_match_rate: 0.99}}\n"
    )
    body = """\
requests:
  - {name: fine, path: /ok}
  - {name: dropped, path: /close, repeat: 9}
"""
    out = tmp_path / "out"
    code = run("--targets", config, "--suites", suite(tmp_path / "s.yaml", body), "--out", out)
    gate = gate_of(out)
    assert gate["totals"] == {**gate["totals"], "cases": 10, "match": 1, "error": 9}
    checks = {c["name"]: c for c in gate["checks"]}
    assert checks["min_match_rate"]["observed"] == 1.0 and checks["min_match_rate"]["passed"]
    assert checks["max_error_rate"] == {
        **checks["max_error_rate"],
        "threshold": 0.0,
        "observed": 0.9,
        "passed": False,
    }
    assert (code, gate["verdict"]) == (1, "fail")


def test_a_stage_inherits_the_fail_closed_defaults(tmp_path: Path, servers: ServerFactory) -> None:
    """A stage that sets only a latency bound keeps 1.0 / 0 / 1 from the defaults; a threshold
    written in the file is what lets a rate through."""
    old, new = servers(name="old"), servers(name="new")
    gates = """\
gates:
  stages:
    canary: {max_latency_ratio_p99: 1000}
    lenient: {max_error_rate: 0.5}
"""
    config = targets(tmp_path / "t.yaml", old.url, new.url, gates)
    body = """\
requests:
  - {name: fine, path: /ok, repeat: 3}
  - {name: dropped, path: /close}
"""
    cases = suite(tmp_path / "s.yaml", body)
    out = tmp_path / "canary"
    assert run("--targets", config, "--suites", cases, "--stage", "canary", "--out", out) == 1
    assert gate_of(out)["verdict"] == "fail"
    out = tmp_path / "lenient"
    assert run("--targets", config, "--suites", cases, "--stage", "lenient", "--out", out) == 0
    gate = gate_of(out)
    assert gate["verdict"] == "pass" and gate["totals"]["error"] == 1


def test_all_matching_run_passes_without_gates(tmp_path: Path, servers: ServerFactory) -> None:
    """The control: with no gates: section, a run passes when every case matches."""
    old, new = servers(name="old"), servers(name="new")
    config = targets(tmp_path / "t.yaml", old.url, new.url, None)
    body = "requests:\n  - {name: fine, path: /ok, repeat: 4}\n"
    out = tmp_path / "out"
    assert run("--targets", config, "--suites", suite(tmp_path / "s.yaml", body), "--out", out) == 0
    gate = gate_of(out)
    assert gate["verdict"] == "pass" and gate["totals"]["match"] == 4
    assert [c["name"] for c in gate["checks"]] == ["min_match_rate", "max_error_rate", "min_cases"]
