"""Signals at every phase of a real ``python -m flamingo run``: while it imports, while it loads a
large suite, and many in a row while it sends. Every interrupted run exits 3, never prints a
traceback, never dies by the signal, and leaves gate.json (``error``, with the reason) in --out.

The send loop's own interruption (one SIGINT mid-run, partial results kept) is in test_faults.py;
a signal while cases are counted or while the report is written, in process, too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from faultserver import ServerFactory, flamingo_command, read_gate, read_rows, write_targets


def _start(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        flamingo_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _wait_until(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.002)
    pytest.fail(f"timed out waiting until {what}")


def _mapped(pid: int, needle: str) -> bool:
    """True once the process has loaded a shared object whose path contains ``needle``."""
    try:
        return needle in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _assert_interrupted(code: int, err: str, out: Path, name: str) -> dict[str, object]:
    assert code == 3, err  # not -2 / -15 (death by the signal), not 130 / 143
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert f"interrupted by {name}" in err
    gate = read_gate(out)
    assert gate["verdict"] == "error"
    assert f"interrupted by {name}" in str(gate["reason"])
    return gate


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_sigint_while_flamingo_imports_its_libraries(
    servers: ServerFactory, tmp_path: Path
) -> None:
    """The first few hundred milliseconds: Python imports rich, aiohttp, yaml ... A Ctrl-C there
    used to print a KeyboardInterrupt traceback from deep inside an import."""
    server = servers(name="untouched")
    targets = write_targets(tmp_path / "t.yaml", server.url, server.url)
    suite = tmp_path / "s.yaml"
    suite.write_text("suite: s\nrequests:\n  - name: ok\n    path: /ok\n")
    out = tmp_path / "out"
    proc = _start("run", "--targets", targets, "--suites", suite, "--out", out, "--no-progress")
    # A third-party C extension being mapped: flamingo's own imports are under way.
    _wait_until(lambda: _mapped(proc.pid, "site-packages"), "flamingo imports its libraries")
    proc.send_signal(signal.SIGINT)
    code, err = _finish(proc)
    gate = _assert_interrupted(code, err, out, "SIGINT")
    assert gate["totals"]["cases"] == 0  # type: ignore[index]
    assert server.count == 0


def test_sigterm_while_a_large_suite_loads(servers: ServerFactory, tmp_path: Path) -> None:
    """A rollout controller gives up while flamingo is still reading a suite of 40,000 requests:
    it used to die by the SIGTERM (exit 143) and leave no files at all."""
    server = servers(name="untouched")
    targets = write_targets(tmp_path / "t.yaml", server.url, server.url)
    suite = tmp_path / "large.yaml"
    requests = "".join(
        f"  - name: r{i}\n    path: /ok/{i}\n    headers: {{ X-N: '{i}' }}\n" for i in range(40_000)
    )
    suite.write_text("suite: large\nrequests:\n" + requests)
    out = tmp_path / "out"
    proc = _start("run", "--targets", targets, "--suites", suite, "--out", out, "--no-progress")
    # The YAML C extension is mapped when loading begins; loading 40k requests takes seconds.
    _wait_until(lambda: _mapped(proc.pid, "_yaml"), "flamingo starts loading")
    time.sleep(0.3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    code, err = _finish(proc)
    gate = _assert_interrupted(code, err, out, "SIGTERM")
    assert gate["totals"]["cases"] == 0  # type: ignore[index]
    assert read_rows(out) == {}
    assert server.count == 0


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_ten_signals_in_a_row_mid_run(servers: ServerFactory, tmp_path: Path, name: str) -> None:
    """An impatient user holds Ctrl-C: the first signal stops the run, the nine after it land
    while flamingo writes its report and exits - and must change nothing (it used to end as a
    death by SIGINT once the interpreter's shutdown had put the default handler back)."""
    server = servers(name="stalls")
    targets = write_targets(tmp_path / "t.yaml", server.url, server.url, run="timeout: 30s")
    suite = tmp_path / "s.yaml"
    suite.write_text("suite: s\nrequests:\n  - name: stall\n    path: /stall\n    repeat: 40\n")
    out = tmp_path / "out"
    proc = _start("run", "--targets", targets, "--suites", suite, "--out", out, "--no-progress")
    _wait_until(lambda: server.count >= 10, "the run is sending")
    sig = signal.Signals[name]
    for _ in range(10):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:  # it already finished: what counts is how
            break
        time.sleep(0.003)
    code, err = _finish(proc)
    gate = _assert_interrupted(code, err, out, name)
    assert gate["reason"] == f"interrupted by {name}"
    assert (out / "junit.xml").exists() and (out / "report.html").exists()


@pytest.mark.parametrize("during_the_run", [False, True])
def test_a_signal_after_the_run_cannot_undo_its_verdict(
    servers: ServerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    during_the_run: bool,
) -> None:
    """A SIGTERM that lands while a judged run's verdict is printed (a pod stopped just then) is
    noted and changes nothing - it used to raise there, rewrite gate.json as "interrupted by
    SIGTERM before any case was sent" and exit 3. With a first signal during the run, the run
    ends as interrupted by it, and the second changes nothing either."""
    from flamingo import cli
    from flamingo.report import markdown

    server = servers(name="target")
    route = "/stall" if during_the_run else "/ok"
    targets = write_targets(tmp_path / "t.yaml", server.url, server.url, run="timeout: 30s")
    suite = tmp_path / "s.yaml"
    suite.write_text(f"suite: s\nrequests:\n  - {{name: r, path: {route}, repeat: 4}}\n")
    out = tmp_path / "out"
    real = markdown.append_step_summary

    def late(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the run is judged; its verdict is being printed
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(markdown, "append_step_summary", late)
    if during_the_run:

        def first() -> None:
            _wait_until(lambda: server.count >= 2, "the run is sending")
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=first, daemon=True).start()
    args = ["run", "--targets", str(targets), "--suites", str(suite), "--out", str(out)]
    code = cli.main([*args, "--no-progress"])
    gate = read_gate(out)
    if during_the_run:
        assert code == 3
        assert gate["reason"] == "interrupted by SIGTERM"
    else:
        assert code == 0, gate.get("reason")
        assert gate["verdict"] == "pass" and gate["totals"]["match"] == 4
    assert len(read_rows(out)) == gate["totals"]["cases"]
