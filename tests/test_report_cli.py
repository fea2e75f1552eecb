"""Past runs and baselines, and the console: ``flamingo show``, ``flamingo compare``,
``flamingo run --baseline`` with ``max_new_signatures``, ``--json``, ``--quiet``, the GitHub step
summary, and the progress display in 80 columns - real runs against the hostile targets
(tests/hostile.py) and the demo targets."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile import NEW_TOKEN, hostile_pair, hostile_run
from rich.console import Console

from flamingo.model import Totals
from flamingo.report.console import SuiteProgress, print_summary


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A baseline run of the items only, then the whole suite against it, with --json and a
    GitHub step summary file."""
    folder = tmp_path_factory.mktemp("baseline")
    summary = folder / "step-summary.md"
    summary.write_text("# earlier step\n")
    with hostile_pair() as urls:
        base = hostile_run(folder, urls, "-k", "item", out="base")
        assert base.returncode == 1, base.stderr
        full = hostile_run(
            folder,
            urls,
            "--baseline",
            str(folder / "base"),
            "--json",
            gate="min_match_rate: 0, max_error_rate: 1, max_new_signatures: 0",
            env={"GITHUB_STEP_SUMMARY": str(summary)},
        )
        quiet = hostile_run(folder, urls, "--quiet", "-k", "evil", out="quiet")
    yield {"folder": folder, "full": full, "quiet": quiet, "summary": summary}


def flamingo(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flamingo", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "160"},
    )


def test_baseline_fails_only_on_new_signatures(runs: dict[str, object]) -> None:
    full = runs["full"]
    assert isinstance(full, subprocess.CompletedProcess)
    assert full.returncode == 1, full.stderr
    gate = json.loads(full.stdout)  # --json: stdout is the gate document and nothing else
    folder = runs["folder"]
    assert isinstance(folder, Path)
    assert gate == json.loads((folder / "out" / "gate.json").read_text())
    (check,) = [c for c in gate["checks"] if c["name"] == "max_new_signatures"]
    assert check == {"name": "max_new_signatures", "threshold": 0, "observed": 7, "passed": False}
    assert [c["name"] for c in gate["checks"] if not c["passed"]] == ["max_new_signatures"]
    base = gate["baseline"]
    assert base["counts"] == {"new": 7, "disappeared": 0, "changed": 0}
    assert {n["template"] for n in base["new"]} == {
        "hostile::evil page",
        "hostile::evil json",
        "hostile::big body",
        "hostile::echo auth",
    }
    assert "progress" not in full.stdout
    page = (folder / "out" / "report.html").read_text()
    assert "<h2 id='baseline'>Since the baseline</h2>" in page
    assert "<h3 class='new'>7 new signatures</h3>" in page


def test_compare_two_runs(runs: dict[str, object]) -> None:
    folder = runs["folder"]
    assert isinstance(folder, Path)
    proc = flamingo("compare", folder / "base", folder / "out", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"] == {"new": 7, "disappeared": 0, "changed": 0}
    back = flamingo("compare", folder / "out", folder / "base")
    assert back.returncode == 0
    assert "0 new, 7 disappeared, 0 changed in count" in back.stdout
    assert "hostile::evil page" in back.stdout
    bad = flamingo("compare", folder / "base", folder / "nope")
    assert bad.returncode == 2 and "signatures.json" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_baseline_that_is_not_a_run_is_an_input_error(tmp_path: Path) -> None:
    with hostile_pair() as urls:
        proc = hostile_run(tmp_path, urls, "-k", "evil", "--baseline", tmp_path / "nothing")
    assert proc.returncode == 2
    assert "nothing/signatures.json: not a flamingo run folder" in proc.stderr
    assert not (tmp_path / "out" / "gate.json").exists()  # nothing was sent


def test_show_summary_and_case(runs: dict[str, object]) -> None:
    folder = runs["folder"]
    assert isinstance(folder, Path)
    summary = flamingo("show", folder / "out")
    assert summary.returncode == 0, summary.stderr
    assert "verdict: FAIL" in summary.stdout
    assert "reason: max_new_signatures observed 7, threshold 0" in summary.stdout
    assert "since baseline" in summary.stdout and "7 new" in summary.stdout
    case = flamingo("show", folder / "out", "hostile::item 3")
    assert case.returncode == 0, case.stderr
    out = case.stdout
    assert "$.role: 'user' → 'admin'" in out
    assert '"user"' in out and '"admin"' in out  # the JSON path table, old | new
    assert "curl" in out and '"${NEW_TOKEN}"' in out and NEW_TOKEN not in out
    evil = flamingo("show", folder / "out", "hostile::evil page")
    assert "<script>window.__pwned = 3</script>" in evil.stdout  # shown, as text
    missing = flamingo("show", folder / "out", "hostile::no such case")
    assert missing.returncode == 2 and "no case" in missing.stderr


def test_show_escapes_terminal_control_characters(tmp_path: Path) -> None:
    """A response that carries an escape sequence cannot drive the reader's terminal."""
    from flamingo.report.show import _safe

    assert _safe("a\x1b[2Jb\x07") == "a\\x1b[2Jb\\x07"


def test_quiet_prints_one_line(runs: dict[str, object]) -> None:
    quiet = runs["quiet"]
    assert isinstance(quiet, subprocess.CompletedProcess)
    assert quiet.returncode == 1
    assert quiet.stdout.count("\n") == 1
    assert quiet.stdout.startswith("fail: min_match_rate observed ")


def test_github_step_summary_is_appended(runs: dict[str, object]) -> None:
    summary = runs["summary"]
    assert isinstance(summary, Path)
    text = summary.read_text()
    assert text.startswith("# earlier step\n## ❌ flamingo: FAIL")
    assert "| ❌ FAIL | max\\_new\\_signatures | 7 | 0 |" in text
    assert "**Since the baseline:** 7 new" in text
    # hostile content cannot open a tag or break a table row
    assert "<script>" not in text and "\\<script\\>" in text
    assert NEW_TOKEN not in text


# -- the console --------------------------------------------------------------------------


def test_progress_fits_80_columns_with_rate_and_eta() -> None:
    screen = io.StringIO()
    console = Console(file=screen, width=80, force_terminal=True, color_system=None)
    suites = {f"suite-with-a-long-name-{n}": 1000 for n in range(12)}
    done = {name: 500 for name in list(suites)[:3]}
    progress = SuiteProgress(console, 12_000, suites, done)
    progress.started -= 10  # ten seconds in, no redraw yet
    progress._last_render -= 10
    progress._totals = Totals(cases=1500, match=1400, diff=90, fail=5, error=5)
    console.print(progress.render())
    lines = screen.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert len(lines) == 8 + 1 + 1 + 1  # 8 suites, "4 more suites", all, outcomes
    assert lines[0].startswith("suite-with-a-long-n… ") and "500/1000" in lines[0]
    assert "50/s" in lines[0] and "ETA  0:10" in lines[0]
    assert "4 more suites" in lines[8]
    assert lines[9].startswith("all") and "1500/12000" in lines[9] and "150/s" in lines[9]
    assert "ETA  1:10" in lines[9]  # 10,500 left at 150/s
    assert "match 1400" in lines[10] and "error 5" in lines[10]


def test_plain_progress_off_a_terminal() -> None:
    screen = io.StringIO()
    console = Console(file=screen, width=80)  # not a terminal: no redraws, plain lines
    with SuiteProgress(console, 100, {"s": 100}, {"s": 10}) as progress:
        progress._last_plain -= 10
        progress.update(Totals(cases=10, match=10))
    text = screen.getvalue()
    assert text.startswith("progress 10/100 cases · ") and "ETA" in text
    assert "\x1b" not in text


def test_summary_shows_failing_checks_first_more_signatures_and_latency() -> None:
    gate = {
        "verdict": "fail",
        "stage": None,
        "totals": {"cases": 10, "match": 5, "diff": 4, "fail": 0, "error": 1},
        "checks": [
            {"name": "min_cases", "threshold": 1, "observed": 10, "passed": True},
            {"name": "min_match_rate", "threshold": 1.0, "observed": 0.555556, "passed": False},
        ],
        "signatures": [
            {
                "id": f"sig-{n}",
                "template": "t",
                "description": f"$.f{n}: string changed",
                "count": 1,
                "share": 0.1,
                "examples": ["t::1"],
                "example_change": '"a" → "b"',
            }
            for n in range(12)
        ],
        "signature_count": 15,
        "errors": [{"target": "new", "kind": "connect", "count": 1, "message": "refused"}],
        "latency": {
            "old": {"p50": 1.5, "p90": 2.0, "p99": 3.0, "max": 4.0, "mean": 1.6, "count": 9},
            "new": {"p50": 1.7, "p90": 2.1, "p99": 3.3, "max": 4.4, "mean": 1.8, "count": 9},
        },
    }
    screen = io.StringIO()
    print_summary(Console(file=screen, width=100, color_system=None), gate, "out")
    text = screen.getvalue()
    assert text.index("min_match_rate") < text.index("min_cases")  # failing first
    assert "… and 5 more signatures" in text
    assert "error signatures" in text and "refused" in text
    assert "latency (ms)" in text and "1.7" in text
    assert text.rstrip().endswith("report: out")
    assert "reason: min_match_rate observed 0.555556, threshold 1" in text


def test_demo_json_is_the_gate_document_alone(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flamingo", "demo", "--json", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr  # the demo exits 0 once it has shown a verdict
    gate = json.loads(proc.stdout)  # nothing but the document on stdout
    assert gate == json.loads((tmp_path / "out" / "gate.json").read_text())
    assert gate["verdict"] == "fail" and gate["evidence"]["cases"] > 0
    assert "demo: origin" in proc.stderr
