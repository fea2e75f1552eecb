"""The pytest plugin end to end: suites collected as items and sent to the real demo targets."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from faultserver import ServerFactory

REPO = Path(__file__).resolve().parent.parent


def test_plugin_collects_cases_and_reports_differences(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "targets.yaml").write_text(
        f"targets:\n  old: {{base_url: '{demo_targets['old']}'}}\n"
        f"  new: {{base_url: '{demo_targets['new']}'}}\n"
    )
    suite = tmp_path / "users.yaml"
    suite.write_text(
        "suite: users\ntags: [api]\nrequests:\n"
        "  - name: 'user {{ id }}'\n    path: '/api/user/{{ id }}'\n"
        "    matrix: { id: [7, 42] }\n"
        "compare:\n  ignore_headers: [date, server, via, x-request-id, x-proxy-request-id]\n"
        "  ignore_json_paths: ['$.now', '$.request_id']\n"
    )
    (tmp_path / "not_a_suite.yaml").write_text("just: data\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
         "--flamingo-targets", "targets.yaml", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "1 failed, 1 passed" in out
    assert "PASSED users.yaml::users::user 7" in out
    assert "FAILED users.yaml::users::user 42" in out
    assert "users::user 42: diff" in out
    assert "$.role: 'user' → 'admin'" in out


def test_plugin_is_inert_without_its_option(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("suite: s\nrequests:\n  - {name: a, path: /a}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 5, proc.stdout  # no tests collected: nothing was sent


# --------------------------------------------------------------------------------------------
# One engine, three doors: flamingo run, pytest, pytest -n 2
# --------------------------------------------------------------------------------------------


def _pytest(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _outcomes(out: Path) -> dict[str, str]:
    with open(out / "results.jsonl", encoding="utf-8") as rows:
        return {row["id"]: row["outcome"] for row in map(json.loads, rows)}


def _gate(out: Path) -> dict[str, Any]:
    gate: dict[str, Any] = json.loads((out / "gate.json").read_text())
    return gate


def _item_outcomes(stdout: str) -> dict[str, str]:
    """``PASSED suites/x.yaml::ID`` lines of ``-rA``: the case id -> PASSED/FAILED."""
    found = re.findall(r"^(PASSED|FAILED) \S+?\.yaml::(.+?)(?: - .*)?$", stdout, re.MULTILINE)
    return {case_id.strip(): outcome for outcome, case_id in found}


def test_the_bundled_suites_give_one_answer_through_every_door(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    """flamingo run, pytest and pytest -n 2 on the bundled suites, targets.yaml and accepted.yaml
    (noise: auto and accepted differences included): the same outcome for every case id, the
    same gate totals and verdict, the same files."""
    (tmp_path / "suites").mkdir()
    for suite in (REPO / "suites").glob("*.yaml"):  # as `flamingo demo`: not suites/edge/,
        shutil.copy(suite, tmp_path / "suites")  # which is for real proxies (README)
    shutil.copy(REPO / "accepted.yaml", tmp_path / "accepted.yaml")
    text = (REPO / "targets.yaml").read_text()
    text = text.replace("http://127.0.0.1:18081", demo_targets["old"])
    text = text.replace("http://127.0.0.1:18082", demo_targets["new"])
    # The demo's Date header changes once a second: between two simultaneous requests it
    # differs only when they straddle a second, too rarely to be learned (README). Leave it out
    # for all suites, as targets.yaml compare: defaults (a policy every door must apply too).
    text += "compare:\n  ignore_headers: [date]\n"
    (tmp_path / "targets.yaml").write_text(text)

    run = subprocess.run(
        [sys.executable, "-m", "flamingo", "run", "--no-progress", "--out", "run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr  # the demo's planted differences fail the gate
    expected = _outcomes(tmp_path / "run")
    gate = _gate(tmp_path / "run")
    assert gate["totals"]["accepted"] > 0 and gate["noise"]  # both policies are at work
    assert set(expected.values()) == {"match", "diff"}

    for label, extra in (("pytest", []), ("pytest-n2", ["-n", "2"])):
        proc = _pytest(
            tmp_path, "--strict-markers", "--flamingo-targets", "targets.yaml",
            "--flamingo-out", label, *extra, "suites",
        )  # fmt: skip
        assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr
        out = tmp_path / label
        assert _outcomes(out) == expected, label
        items = _item_outcomes(proc.stdout)
        assert items == {
            case_id: "PASSED" if outcome == "match" else "FAILED"
            for case_id, outcome in expected.items()
        }, label
        other = _gate(out)
        assert (other["verdict"], other["totals"]) == (gate["verdict"], gate["totals"]), label
        assert {(n["template"], n["location"]) for n in other["noise"]} == {
            (n["template"], n["location"]) for n in gate["noise"]
        }, label
        assert other["accepted"] == gate["accepted"], label
        assert [s["id"] for s in other["signatures"]] == [s["id"] for s in gate["signatures"]]
        assert other["complete"] is True if "complete" in gate else True
        junit = (out / "junit.xml").read_text()
        assert junit.count("<testcase") == len(expected), label
        assert (out / "report.html").stat().st_size > 0
        assert "flamingo gate" in proc.stdout and "verdict: FAIL" in proc.stdout


def _side_effect_project(tmp_path: Path, url: str) -> None:
    (tmp_path / "targets.yaml").write_text(
        f"targets:\n  old: {{base_url: '{url}', production: true}}\n"
        f"  new: {{base_url: '{url}', production: true}}\n"
    )
    (tmp_path / "writes.yaml").write_text(
        "suite: writes\nrequests:\n  - {name: read, path: /a}\n"
        "  - {name: remove, method: DELETE, path: /a}\n"
    )


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_the_production_guard_holds_under_pytest(
    servers: ServerFactory, tmp_path: Path, workers: list[str]
) -> None:
    listener = servers(name="production")
    _side_effect_project(tmp_path, listener.url)
    proc = _pytest(tmp_path, "--flamingo-targets", "targets.yaml", *workers, ".")
    assert proc.returncode not in (0, 1), proc.stdout + proc.stderr  # refused, not judged
    assert "would be sent to production" in proc.stdout + proc.stderr
    assert listener.connections == 0  # nothing was sent, not even the harmless GET
    # -k that leaves out the DELETE: the rest may go, as with flamingo run -k.
    proc = _pytest(tmp_path, "--flamingo-targets", "targets.yaml", *workers, "-k", "read", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert listener.connections > 0


def test_the_session_fails_when_the_gate_fails(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    """Every item passes, but the gate asks for more cases than ran: the session fails."""
    (tmp_path / "targets.yaml").write_text(
        f"targets:\n  old: {{base_url: '{demo_targets['old']}'}}\n"
        f"  new: {{base_url: '{demo_targets['old']}'}}\n"
        "gates:\n  default: {min_cases: 1000}\n  stages:\n    tiny: {min_cases: 1}\n"
    )
    (tmp_path / "s.yaml").write_text(
        "suite: s\ntags: [smoke]\nrequests:\n  - {name: hello, path: /static/hello.txt}\n"
        "compare: {ignore_headers: [date, x-request-id, x-proxy-request-id]}\n"
    )
    proc = _pytest(tmp_path, "--flamingo-targets", "targets.yaml", "--flamingo-out", "o", ".")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout and "min_cases" in proc.stdout
    assert _gate(tmp_path / "o")["verdict"] == "fail"
    proc = _pytest(
        tmp_path, "--flamingo-targets", "targets.yaml", "--flamingo-stage", "tiny",
        "--strict-markers", "-m", "smoke", ".",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _pytest(tmp_path, "--flamingo-targets", "targets.yaml", "--flamingo-stage", "nope", ".")
    assert proc.returncode == 4 and "unknown stage 'nope'" in proc.stderr
    (tmp_path / "blocker").write_text("a file, not a folder")
    proc = _pytest(
        tmp_path, "--flamingo-targets", "targets.yaml", "--flamingo-out", "blocker/o", "."
    )
    assert proc.returncode == 4 and "--flamingo-out: cannot write" in proc.stderr
    assert "1 passed" not in proc.stdout and "1 failed" not in proc.stdout  # nothing ran


@pytest.mark.parametrize(
    ("gates", "stage", "said"),
    [
        (
            "stages: {soak: {min_duration: 1s}}",
            "soak",
            "gate soak: min_duration (1s of rounds) needs",
        ),
        (
            "stages:\n    res: {resources: {process_open_fds: {max_new: 100}}}",
            "res",
            "gate res: resources (metrics scraped before and after the run) needs",
        ),
        ("default: {min_duration: 2s, min_match_rate: 0}", None, "gate default: min_duration"),
    ],
)
def test_gates_that_need_one_continuous_run_are_refused_before_sending(
    servers: ServerFactory, tmp_path: Path, gates: str, stage: str | None, said: str
) -> None:
    """``min_duration`` rounds and ``resources`` scrapes span the whole run, which a door that
    runs suite by suite cannot give: usage error (exit 4), nothing sent - it used to send every
    suite in its own rounds and end ``error: only 6243 of 178 selected cases were judged``."""
    listener = servers(name="listener")
    metrics = "metrics_url: " + listener.url + "/metrics"
    (tmp_path / "targets.yaml").write_text(
        f"targets:\n  old: {{base_url: '{listener.url}', {metrics}}}\n"
        f"  new: {{base_url: '{listener.url}', {metrics}}}\ngates:\n  {gates}\n"
    )
    (tmp_path / "s.yaml").write_text("suite: s\nrequests:\n  - {name: hello, path: /ok}\n")
    args = ["--flamingo-targets", "targets.yaml", *(["--flamingo-stage", stage] if stage else [])]
    for extra in ([], ["-n", "2"]):
        proc = _pytest(tmp_path, *args, *extra, ".")
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert said in proc.stderr and "flamingo run --stage" in proc.stderr
    assert listener.count == 0


def test_upstream_under_several_xdist_workers_is_refused(
    servers: ServerFactory, tmp_path: Path
) -> None:
    """The recording origin holds one port: two workers would race for it (one would fail
    every case it sends). Refused before anything is sent; -n 0 runs."""
    listener = servers(name="listener")
    with socket.socket() as probe:  # a port free now; the test never binds it under -n
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "targets.yaml").write_text(
        f"targets:\n  old: {{base_url: '{listener.url}'}}\n  new: {{base_url: '{listener.url}'}}\n"
        f"upstream: {{listen: '127.0.0.1:{port}'}}\n"
    )
    (tmp_path / "s.yaml").write_text("suite: s\nrequests:\n  - {name: hello, path: /ok}\n")
    proc = _pytest(tmp_path, "--flamingo-targets", "targets.yaml", "-n", "2", ".")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert f"recording origin listens on 127.0.0.1:{port}" in proc.stderr and "-n 0" in proc.stderr
    assert listener.count == 0
    proc = _pytest(tmp_path, "--flamingo-targets", "targets.yaml", "-n", "0", ".")
    assert "1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert listener.count == 2
