"""The command line as a user types it: real ``python -m flamingo`` processes.

Options are never matched by a prefix (``--stag canary`` must not quietly become ``--stage``),
mistyped options and commands get a "did you mean", and a reader that closes stdout early
(``flamingo list | head``) ends the command quietly.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from faultserver import ServerFactory, flamingo_command, read_gate, write_targets

MANY = 5_000  # cases: their `list` lines are far more than a pipe buffer holds


def _many_cases(path: Path) -> Path:
    path.write_text(
        "suite: many\nrequests:\n  - name: 'ok {{ i }}'\n    path: '/ok?i={{ i }}'\n"
        f"    matrix: {{ i: [{', '.join(map(str, range(MANY)))}] }}\n"
    )
    return path


def _flamingo(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(flamingo_command(*args), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("typed", "hint"),
    [
        (["--stag", "canary"], "unrecognized arguments: --stag canary (did you mean --stage?)"),
        (["--stag=canary"], "unrecognized arguments: --stag=canary (did you mean --stage?)"),
        (["--concurency", "5"], "(did you mean --concurrency?)"),
    ],
)
def test_an_abbreviated_or_mistyped_option_is_an_input_error_with_a_hint(
    servers: ServerFactory, tmp_path: Path, typed: list[str], hint: str
) -> None:
    server = servers(name="untouched")
    targets = write_targets(tmp_path / "t.yaml", server.url, server.url)
    suite = _many_cases(tmp_path / "s.yaml")
    out = tmp_path / "out"
    proc = _flamingo("run", "--targets", targets, "--suites", suite, "--out", out, *typed)
    assert proc.returncode == 2, proc.stderr
    assert hint in proc.stderr
    assert proc.stderr.startswith("flamingo run: error: ")
    assert "Traceback" not in proc.stderr
    assert server.count == 0 and not out.exists()  # refused before anything was sent


def test_a_mistyped_command_gets_a_hint() -> None:
    proc = _flamingo("rnu")
    assert proc.returncode == 2
    assert "invalid choice: 'rnu'" in proc.stderr and "(did you mean run?)" in proc.stderr
    proc = _flamingo("lsit", "--targets", "x")
    assert proc.returncode == 2 and "(did you mean list?)" in proc.stderr


def test_an_unknown_option_with_nothing_close_has_no_hint() -> None:
    proc = _flamingo("check", "--zzzzzz")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("unrecognized arguments: --zzzzzz")


def test_list_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`flamingo list | head -1`: the reader goes away while flamingo still has lines to write."""
    suite = _many_cases(tmp_path / "s.yaml")
    proc = subprocess.Popen(
        flamingo_command("list", "--targets", tmp_path / "absent.yaml", "--suites", suite),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does once it has its line
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0, err
    assert first.startswith(b"many::ok 0\tGET\t/ok?i=0")
    assert err == ""  # no "internal error: BrokenPipeError", no "Exception ignored"


def test_a_run_into_a_closed_pipe_still_judges_and_writes_its_files(
    servers: ServerFactory, tmp_path: Path
) -> None:
    """`flamingo run | head -1`: the console's reader is gone, the run and its verdict are not."""
    server = servers(name="fine")
    targets = write_targets(tmp_path / "t.yaml", server.url, server.url)
    suite = tmp_path / "s.yaml"
    suite.write_text("suite: few\nrequests:\n  - name: ok\n    path: /ok\n    repeat: 30\n")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        flamingo_command(
            "run", "--targets", targets, "--suites", suite, "--out", out, "--no-progress"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before flamingo printed anything
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0, err
    assert err == ""
    gate = read_gate(out)
    assert gate["verdict"] == "pass" and gate["totals"]["cases"] == 30
