"""Faults on real sockets (tests/faultserver.py): every one becomes an ``error`` with its reason.

Each fault is served by a raw asyncio server on 127.0.0.1 - a closed port, a reset mid-body, a
stall, a slow drip, a garbage status line, a self-signed certificate, a 50 MB body - and the real
command runs against it. What must hold for every one: the case's ``old``/``new`` record the
error kind and a clear message, the run completes (a verdict, not a crash), and the verdict is
never ``pass`` when the errors exceed the gate. SIGINT mid-run flushes what was judged and ends
with ``error`` and exit 3.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultserver import (
    FaultServer,
    ServerFactory,
    closed_port_url,
    flamingo_command,
    read_gate,
    read_rows,
    running,
    server_tls_context,
    write_targets,
)

from flamingo.cli import main

TIMEOUT_S = 1.0  # run.timeout of the fault runs: a stall costs (retries + 1) of these


def one_case_suite(tmp_path: Path, path: str) -> Path:
    suite = tmp_path / "fault.yaml"
    suite.write_text(f'suite: fault\nrequests:\n  - name: fault\n    path: "{path}"\n')
    return suite


def run_in_process(*args: object) -> int:
    return main([str(a) for a in args])


def outcome_totals(gate: dict[str, Any]) -> dict[str, int]:
    """The CONTRACT's totals (gate.json may carry more counters beside them)."""
    return {k: gate["totals"][k] for k in ("cases", "match", "diff", "fail", "error")}


# --------------------------------------------------------------------------------------------
# One fault per run: the kind, the message, the retries, the verdict
# --------------------------------------------------------------------------------------------

# route, error kind, words its message must contain with each HTTP engine (aiohttp for HTTP/1.1,
# httpx for ``http2: true`` targets), attempts (retries: 1 -> a retryable fault is tried twice).
FAULTS = [
    (
        "/reset",
        "reset",
        {"http1": "connection reset mid-body", "http2": "Connection reset by peer"},
        2,
    ),
    (
        "/close",
        "reset",
        {
            "http1": "server closed the connection before the response was complete",
            "http2": "Server disconnected without sending a response",
        },
        2,
    ),
    ("/stall", "timeout", f"no complete response within {TIMEOUT_S:g}s", 2),
    # 20 chunks, each well within the timeout, 2 s in all: the timeout bounds the whole.
    ("/drip?n=20&gap=0.1", "timeout", f"no complete response within {TIMEOUT_S:g}s", 2),
    (
        "/garbage",
        "protocol",
        {"http1": "invalid response: Bad status line", "http2": "invalid response: illegal"},
        1,
    ),
]
ENGINES = {"http1": "", "http2": "http2: true"}


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize(
    ("route", "kind", "message", "attempts"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_fault_is_an_error_with_its_reason(
    servers: ServerFactory,
    tmp_path: Path,
    route: str,
    kind: str,
    message: str | dict[str, str],
    attempts: int,
    engine: str,
) -> None:
    server = servers(name="faulty")
    targets = write_targets(
        tmp_path / "t.yaml",
        server.url,
        server.url,
        run=f"timeout: {TIMEOUT_S:g}s\nretries: 1",
        old_extra=ENGINES[engine],
        new_extra=ENGINES[engine],
    )
    if isinstance(message, dict):
        message = message[engine]
    out = tmp_path / "out"
    code = run_in_process(
        "run", "--targets", targets, "--suites", one_case_suite(tmp_path, route), "--out", out,
        "--no-progress",
    )  # fmt: skip
    rows = read_rows(out)
    assert list(rows) == ["fault::fault"]
    row = rows["fault::fault"]
    assert row["outcome"] == "error"
    for side in ("old", "new"):
        assert row[side]["status"] is None
        assert row[side]["error"] == kind, row[side]
        assert message in row[side]["message"], row[side]
        assert "\n" not in row[side]["message"]
        assert row[side].get("attempts", 1) == attempts
    # Retries are real requests, and only flamingo's: the server saw every attempt, no more.
    assert server.count == 2 * attempts
    # The run completed and judged: a verdict, and never pass with errors above the gate.
    gate = read_gate(out)
    assert code == 1
    assert gate["verdict"] == "fail"
    assert gate["reason"].startswith("new: 1 of 1 cases ")  # one line, the top error signature
    assert [(e["target"], e["kind"], e["count"]) for e in gate["errors"]] == [
        ("new", kind, 1),  # ties: by target
        ("old", kind, 1),
    ]
    assert outcome_totals(gate) == {"cases": 1, "match": 0, "diff": 0, "fail": 0, "error": 1}
    checks = {c["name"]: c for c in gate["checks"]}
    assert checks["max_error_rate"]["observed"] == 1.0
    assert checks["max_error_rate"]["passed"] is False
    assert checks["min_match_rate"]["observed"] is None  # no judgeable case: not a pass
    junit = (out / "junit.xml").read_text()
    assert f"new: {kind}: " in junit and "<error " in junit


@pytest.mark.parametrize("engine", list(ENGINES))
def test_refused_connection_on_one_side(
    servers: ServerFactory, tmp_path: Path, engine: str
) -> None:
    old = servers(name="old")
    dead = closed_port_url()
    targets = write_targets(
        tmp_path / "t.yaml", old.url, dead, run="retries: 1", new_extra=ENGINES[engine]
    )
    out = tmp_path / "out"
    code = run_in_process(
        "run", "--targets", targets, "--suites", one_case_suite(tmp_path, "/ok"), "--out", out,
        "--no-progress",
    )  # fmt: skip
    row = read_rows(out)["fault::fault"]
    assert row["outcome"] == "error"
    assert row["old"]["status"] == 200 and "error" not in row["old"]
    port = dead.rsplit(":", 1)[1]
    assert row["new"]["error"] == "connect"
    assert row["new"]["message"] == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert row["new"]["attempts"] == 2
    assert old.count == 1
    assert code == 1 and read_gate(out)["verdict"] == "fail"


@pytest.mark.parametrize("engine", list(ENGINES))
def test_drip_that_completes_in_time_is_a_normal_response(
    servers: ServerFactory, tmp_path: Path, engine: str
) -> None:
    """Four 1 KiB chunks 0.1 s apart finish well inside the 1 s timeout."""
    server = servers(name="drip")
    http2 = ENGINES[engine]
    targets = write_targets(
        tmp_path / "t.yaml",
        server.url,
        server.url,
        run=f"timeout: {TIMEOUT_S:g}s",
        old_extra=http2,
        new_extra=http2,
    )
    out = tmp_path / "out"
    suite = one_case_suite(tmp_path, "/drip?n=4&gap=0.1")
    code = run_in_process("run", "--targets", targets, "--suites", suite, "--out", out)
    row = read_rows(out)["fault::fault"]
    assert row["outcome"] == "match"
    for side in ("old", "new"):
        assert row[side]["status"] == 200 and row[side]["body_bytes"] == 4096
    assert code == 0 and read_gate(out)["verdict"] == "pass"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    context = server_tls_context(tmp_path_factory.mktemp("tls"))
    with running() as start:
        yield start(name="tls", ssl_context=context)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_self_signed_certificate_is_a_tls_error(
    tls_server: FaultServer, tmp_path: Path, engine: str
) -> None:
    url = tls_server.url
    assert url.startswith("https://")
    http2 = ENGINES[engine]
    targets = write_targets(tmp_path / "t.yaml", url, url, old_extra=http2, new_extra=http2)
    out = tmp_path / "out"
    suite = one_case_suite(tmp_path, "/ok")
    code = run_in_process("run", "--targets", targets, "--suites", suite, "--out", out)
    row = read_rows(out)["fault::fault"]
    assert row["outcome"] == "error"
    port = url.rsplit(":", 1)[1]
    for side in ("old", "new"):
        assert row[side]["error"] == "tls"
        if engine == "http1":
            assert row[side]["message"] == (
                f"TLS error: certificate verify failed for 127.0.0.1:{port}: "
                "self-signed certificate"
            )
        else:
            assert "certificate verify failed: self-signed certificate" in row[side]["message"]
        assert row[side].get("attempts", 1) == 1  # a certificate does not get better by retrying
    assert code == 1 and read_gate(out)["verdict"] == "fail"


@pytest.mark.parametrize("engine", list(ENGINES))
def test_verify_tls_false_accepts_the_self_signed_certificate(
    tls_server: FaultServer, tmp_path: Path, engine: str
) -> None:
    url = tls_server.url
    off = f"verify_tls: false\n{ENGINES[engine]}"
    targets = write_targets(tmp_path / "t.yaml", url, url, old_extra=off, new_extra=off)
    out = tmp_path / "out"
    suite = one_case_suite(tmp_path, "/ok")
    code = run_in_process("run", "--targets", targets, "--suites", suite, "--out", out)
    row = read_rows(out)["fault::fault"]
    assert row["outcome"] == "match"
    assert row["old"]["status"] == row["new"]["status"] == 200
    assert code == 0


# --------------------------------------------------------------------------------------------
# Errors against the gate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_error_rate", "verdict", "code"), [(0.05, "fail", 1), (0.1, "pass", 0)]
)
def test_errors_above_the_gate_never_pass(
    servers: ServerFactory, tmp_path: Path, max_error_rate: float, verdict: str, code: int
) -> None:
    """1 error in 10 cases: an error rate of 0.1 fails a 0.05 gate and passes a 0.1 gate."""
    server = servers(name="mixed")
    suite = tmp_path / "mixed.yaml"
    suite.write_text(
        textwrap.dedent(
            """\
            suite: mixed
            requests:
              - name: "ok {{ i }}"
                path: "/ok?i={{ i }}"
                matrix: { i: [1, 2, 3, 4, 5, 6, 7, 8, 9] }
              - name: reset
                path: /reset
            """
        )
    )
    gates = f"default: {{ min_match_rate: 1.0, max_error_rate: {max_error_rate}, min_cases: 10 }}"
    targets = write_targets(tmp_path / "t.yaml", server.url, server.url, gates=gates)
    out = tmp_path / "out"
    assert run_in_process("run", "--targets", targets, "--suites", suite, "--out", out) == code
    gate = read_gate(out)
    assert gate["verdict"] == verdict
    assert outcome_totals(gate) == {"cases": 10, "match": 9, "diff": 0, "fail": 0, "error": 1}
    checks = {c["name"]: c for c in gate["checks"]}
    assert checks["max_error_rate"]["observed"] == 0.1
    assert checks["max_error_rate"]["passed"] is (verdict == "pass")


# --------------------------------------------------------------------------------------------
# A 50 MB body: compared by hash, memory bounded (measured on the real child process)
# --------------------------------------------------------------------------------------------

BIG_MB = 50
RSS_LIMIT_MB = 250


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"flamingo did not finish within {timeout:g}s")


def test_50mb_bodies_are_compared_by_hash_in_bounded_memory(
    servers: ServerFactory, tmp_path: Path
) -> None:
    old = servers(name="old", big_fill="x")
    new = servers(name="new", big_fill="y")  # differs in every byte, same size
    suite = tmp_path / "big.yaml"
    suite.write_text(
        textwrap.dedent(
            f"""\
            suite: big
            requests:
              - {{ name: same, path: "/big?mb={BIG_MB}&fill=z" }}
              - {{ name: different, path: "/big?mb={BIG_MB}" }}
            """
        )
    )
    targets = write_targets(tmp_path / "t.yaml", old.url, new.url, run="timeout: 60s")
    out = tmp_path / "out"
    with (tmp_path / "stdout").open("wb") as stdout, (tmp_path / "stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            flamingo_command(
                "run", "--targets", targets, "--suites", suite, "--out", out, "--no-progress"
            ),
            stdout=stdout,
            stderr=stderr,
        )
        code = _wait(proc, timeout=120)
    assert code == 1, (tmp_path / "stderr").read_text()
    size = BIG_MB * 1024 * 1024

    def sha256_of(fill: bytes) -> str:
        digest = hashlib.sha256()
        block = fill * (1024 * 1024)
        for _ in range(BIG_MB):
            digest.update(block)
        return digest.hexdigest()

    rows = read_rows(out)
    same, different = rows["big::same"], rows["big::different"]
    assert same["outcome"] == "match"
    assert same["old"]["body_bytes"] == same["new"]["body_bytes"] == size
    assert same["old"]["body_sha256"] == same["new"]["body_sha256"] == sha256_of(b"z")
    assert different["outcome"] == "diff"
    assert different["old"]["body_sha256"] == sha256_of(b"x")
    assert different["new"]["body_sha256"] == sha256_of(b"y")
    assert different["differences"] == [
        {
            "kind": "body",
            "location": "bytes",
            "old": f"{size} bytes sha256:{sha256_of(b'x')[:12]}",
            "new": f"{size} bytes sha256:{sha256_of(b'y')[:12]}",
            "note": "compared by hash: body larger than max_body_bytes",
        }
    ]
    # 4 x 50 MB went through the process; it never held them (its own VmHWM, in gate.json).
    peak_mb = json.loads((out / "gate.json").read_text())["peak_rss_mb"]
    print(f"peak RSS of flamingo: {peak_mb:.0f} MiB")
    assert 0 < peak_mb < RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MiB"


# --------------------------------------------------------------------------------------------
# SIGINT mid-run
# --------------------------------------------------------------------------------------------


def test_sigint_mid_run_flushes_results_and_reports_error(
    servers: ServerFactory, tmp_path: Path
) -> None:
    server = servers(name="slowly")
    cases = 3000
    suite = tmp_path / "many.yaml"
    suite.write_text(
        "suite: many\nrequests:\n  - name: 'ok {{ i }}'\n    path: '/ok?i={{ i }}'\n"
        f"    matrix: {{ i: [{', '.join(map(str, range(cases)))}] }}\n"
    )
    targets = write_targets(tmp_path / "t.yaml", server.url, server.url, run="rate_limit: 200")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        flamingo_command(
            "run", "--targets", targets, "--suites", suite, "--out", out, "--no-progress"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while server.count < 100 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert server.count >= 100, "the run did not get going"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert "interrupted by SIGINT" in stderr
    gate = read_gate(out)
    assert gate["verdict"] == "error"
    assert gate["reason"] == "interrupted by SIGINT"
    rows = read_rows(out)
    assert 0 < len(rows) < cases
    assert gate["totals"]["cases"] == len(rows)  # partial totals: exactly what was judged
    assert gate["totals"]["match"] == len(rows)
    junit = (out / "junit.xml").read_text()
    assert f'tests="{len(rows)}"' in junit
    assert "verdict: ERROR" in stdout
    assert (out / "report.html").exists()


# --------------------------------------------------------------------------------------------
# A signal outside the send loop: while cases are counted, while the report is written
# --------------------------------------------------------------------------------------------


def _in_process_run(tmp_path: Path, url: str, cases: int) -> tuple[int, Path]:
    from rich.console import Console

    from flamingo.engine import RunOptions, Session
    from flamingo.load import load_config, load_suites
    from flamingo.report.console import ConsoleObserver

    suite = tmp_path / "many.yaml"
    suite.write_text(
        "suite: many\nrequests:\n  - name: 'ok {{ i }}'\n    path: '/ok?i={{ i }}'\n"
        f"    matrix: {{ i: [{', '.join(map(str, range(cases)))}] }}\n"
    )
    config = load_config(write_targets(tmp_path / "t.yaml", url, url))
    session = Session(config, load_suites([suite]))
    out = tmp_path / "out"
    with open(tmp_path / "console.txt", "w") as sink:
        observer = ConsoleObserver(Console(file=sink), progress=False)
        summary = session.run(options=RunOptions(out_dir=out), observers=[observer]).wait()
    return summary.exit_code, out


def test_a_signal_while_cases_are_counted_sends_nothing_and_reports_error(
    servers: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flamingo.engine import Session

    server = servers(name="idle")
    count = Session.count_by_suite

    def count_and_signal(self: Session, *args: Any) -> dict[str, int]:
        os.kill(os.getpid(), signal.SIGTERM)  # as a rollout controller would, early
        return count(self, *args)

    monkeypatch.setattr(Session, "count_by_suite", count_and_signal)
    code, out = _in_process_run(tmp_path, server.url, 50)
    assert code == 3
    gate = read_gate(out)
    assert gate["verdict"] == "error"
    assert gate["reason"] == "interrupted by SIGTERM"
    assert gate["totals"]["cases"] == 0
    assert server.connections == 0  # told to stop before sending: nothing was sent


def test_a_signal_while_the_report_is_written_still_leaves_a_whole_report(
    servers: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flamingo.report.files import RunFiles

    server = servers(name="fine")
    finish = RunFiles.finish

    def finish_after_a_signal(self: RunFiles, *args: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C just as the run ends
        finish(self, *args)

    monkeypatch.setattr(RunFiles, "finish", finish_after_a_signal)
    code, out = _in_process_run(tmp_path, server.url, 20)
    assert code == 0  # the run was complete and judged before the signal: its verdict stands
    gate = read_gate(out)
    assert gate["verdict"] == "pass"
    assert gate["totals"]["cases"] == 20
    assert (out / "junit.xml").read_text().count("<testcase") == 20
    assert (out / "report.html").stat().st_size > 0
