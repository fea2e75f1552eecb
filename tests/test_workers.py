"""Send workers (flamingo/workers.py): forked processes send, the parent judges every case.

What must hold whichever process sent a case: each case is sent once to each target and judged
once; faults are the same errors; and a worker that dies or crashes fails the run closed
(``error``, exit 3, never ``pass``). The planted-difference, noise and SIGTERM end-to-end tests
(tests/test_e2e.py, ``WORKERS``), the rate-limit test and the request-cap test (which keeps a
run in one process; tests/test_safety.py) run with two workers too.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from faultserver import (
    FaultServer,
    ServerFactory,
    flamingo_command,
    read_gate,
    read_rows,
    write_targets,
)
from test_signals import _assert_interrupted, _finish, _start, _wait_until

from flamingo.engine import RunOptions, Session
from flamingo.load import load_config, load_suites
from flamingo.model import (
    WORKERS_EXPECTED,
    Case,
    Exchange,
    Response,
    RunSettings,
    Target,
    worker_count,
)
from flamingo.workers import (
    AUTO_MAX_WORKERS,
    AUTO_MIN_CASES,
    _Link,
    cpu_count,
    plan,
    worker_settings,
)


@pytest.mark.parametrize(("value", "count"), [("auto", 0), (" auto ", 0), (1, 1), (64, 64)])
def test_worker_count(value: object, count: int) -> None:
    assert worker_count(value) == count


@pytest.mark.parametrize("value", [0, -1, True, 2.5, "3", "many", None])
def test_worker_count_refuses(value: object) -> None:
    """The one check every door (targets.yaml, --workers, RunOptions) goes through."""
    with pytest.raises(ValueError, match=f"^{WORKERS_EXPECTED}$"):
        worker_count(value)


def run_flamingo(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(flamingo_command(*args), capture_output=True, text=True, timeout=120)


def many_suite(path: Path, route: str, count: int) -> Path:
    path.write_text(
        "suite: many\nrequests:\n  - name: 'r {{ i }}'\n"
        f"    path: '{route}?i={{{{ i }}}}'\n"
        f"    matrix: {{ i: [{', '.join(map(str, range(count)))}] }}\n"
    )
    return path


@pytest.fixture
def pair(servers: ServerFactory) -> tuple[FaultServer, FaultServer]:
    return servers(name="old"), servers(name="new")


# --------------------------------------------------------------------------------------------
# How many workers a run uses
# --------------------------------------------------------------------------------------------

UNPACED = RunSettings(concurrency=100)
CPUS = cpu_count()
AUTO = min(CPUS, AUTO_MAX_WORKERS) if CPUS >= 2 else 1


@pytest.mark.parametrize(
    ("requested", "settings", "total", "expected"),
    [
        (1, UNPACED, 10_000, (1, "")),
        (3, UNPACED, 10_000, (3, "")),
        (0, UNPACED, 10_000, (AUTO, "")),
        (0, UNPACED, AUTO_MIN_CASES - 1, (1, "")),  # small: not worth a fork
        (0, RunSettings(concurrency=100, rate_limit=50), 10_000, (1, "")),  # paced
        (0, RunSettings(concurrency=100, max_requests=500), 10_000, (1, "")),
        (
            2,
            RunSettings(concurrency=100, max_requests=500),
            10_000,
            (1, "--max-requests keeps a run in one process (one hard counter)"),
        ),
        (4, RunSettings(concurrency=2), 10_000, (2, "4 workers for concurrency 2, 10000 cases")),
        (4, UNPACED, 3, (3, "4 workers for concurrency 100, 3 cases")),
        (4, UNPACED, 0, (1, "4 workers for concurrency 100, 0 cases")),
    ],
)
def test_plan(requested: int, settings: RunSettings, total: int, expected: Any) -> None:
    assert plan(requested, settings, total) == expected


def test_worker_settings_split_the_run_not_multiply_it() -> None:
    settings = RunSettings(concurrency=101, rate_limit=30.0, max_requests=0, timeout=3.0)
    shares = worker_settings(settings, 3)
    assert [s.concurrency for s in shares] == [34, 34, 33]  # still 101 in flight at most
    assert sum(s.rate_limit for s in shares) == pytest.approx(30.0)  # per target, all workers
    assert {s.timeout for s in shares} == {3.0}


# --------------------------------------------------------------------------------------------
# End to end with real servers
# --------------------------------------------------------------------------------------------


def test_auto_workers_send_each_case_once_and_judge_it_once(
    pair: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    old, new = pair
    cases = AUTO_MIN_CASES
    targets = write_targets(tmp_path / "t.yaml", old.url, new.url, run="concurrency: 50")
    suite = many_suite(tmp_path / "many.yaml", "/ok", cases)
    out = tmp_path / "out"
    proc = run_flamingo("run", "--targets", targets, "--suites", suite, "--out", out)
    assert proc.returncode == 0, proc.stderr
    gate = read_gate(out)
    assert gate["settings"]["workers"] == AUTO
    assert gate["totals"]["cases"] == gate["totals"]["match"] == cases
    rows = read_rows(out)
    assert set(rows) == {f"many::r {i}" for i in range(cases)}
    for server in (old, new):
        paths = sorted(r.path for r in server.requests)
        assert paths == sorted(f"/ok?i={i}" for i in range(cases)), server.name
    junit = (out / "junit.xml").read_text()
    assert f'tests="{cases}"' in junit


@pytest.mark.parametrize("engine", ["http1", "http2"])
def test_faults_through_workers_are_the_same_errors(
    servers: ServerFactory, tmp_path: Path, engine: str
) -> None:
    """As tests/test_faults.py, one run with every fault, sent by two workers (the aiohttp
    engine, and httpx for ``http2: true`` targets, each built inside its worker)."""
    server = servers(name="faulty")
    routes = {"/ok": None, "/reset": "reset", "/close": "reset", "/garbage": "protocol"}
    suite = tmp_path / "faults.yaml"
    suite.write_text(
        "suite: faults\nrequests:\n"
        + "".join(f"  - {{ name: '{r} {k}', path: '{r}?k={k}' }}\n" for r in routes for k in "ab")
    )
    extra = "http2: true" if engine == "http2" else ""
    targets = write_targets(
        tmp_path / "t.yaml", server.url, server.url, run="timeout: 2s",
        old_extra=extra, new_extra=extra,
    )  # fmt: skip
    out = tmp_path / "out"
    proc = run_flamingo(
        "run", "--targets", targets, "--suites", suite, "--out", out, "--workers", 2
    )
    assert proc.returncode == 1, proc.stderr  # errors above the gate: never pass
    assert "Traceback" not in proc.stderr
    rows = read_rows(out)
    assert len(rows) == 2 * len(routes)
    for case_id, row in rows.items():
        kind = routes[case_id.split("::", 1)[1].split()[0]]
        if kind is None:
            assert row["outcome"] == "match"
        else:
            assert row["outcome"] == "error"
            assert row["old"]["error"] == row["new"]["error"] == kind
    gate = read_gate(out)
    assert gate["settings"]["workers"] == 2
    assert gate["totals"]["error"] == 6


# --------------------------------------------------------------------------------------------
# A worker that fails: the run fails closed
# --------------------------------------------------------------------------------------------


def _failing_factory(how: str) -> Any:
    def factory(target: Target, settings: RunSettings) -> Any:
        class _Transport:
            sent = 0

            async def send(self, case: Case) -> Exchange:
                self.sent += 1
                if self.sent == 5:
                    if how == "dies":
                        os._exit(7)  # the whole worker process, as a segfault or OOM kill would
                    raise RuntimeError("planted bug in a transport")
                return Response(200, "OK", (), b"{}", 1.0)

            async def aclose(self) -> None:
                pass

        return _Transport()

    return factory


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        (
            "dies",
            r"harness error: WorkerFailed: send worker \d exited before it finished \(exit code 7",
        ),
        ("raises", r"harness error: WorkerFailed: send worker \d crashed$"),
    ],
)
def test_a_failing_worker_fails_the_run_closed(how: str, reason: str, tmp_path: Path) -> None:
    targets = write_targets(tmp_path / "t.yaml", "http://127.0.0.1:9", "http://127.0.0.1:9")
    suite = many_suite(tmp_path / "many.yaml", "/ok", 200)
    session = Session(
        load_config(targets), load_suites([suite]), transport_factory=_failing_factory(how)
    )
    out = tmp_path / "out"
    summary = session.run(options=RunOptions(out_dir=out, workers=2, concurrency=4)).wait()
    assert summary.exit_code == 3
    gate = read_gate(out)
    assert gate["verdict"] == "error"
    assert re.match(reason, gate["reason"]), gate["reason"]
    rows = read_rows(out)
    assert len(rows) == gate["totals"]["cases"] < 200  # what was judged is kept, and counted
    crash = (out / "crash.log").read_text()
    assert "WorkerFailed" in crash
    if how == "raises":  # the worker's own traceback travels to the parent's crash.log
        assert "RuntimeError: planted bug in a transport" in crash


# --------------------------------------------------------------------------------------------
# The connection: large messages both ways, a worker that stops reading
# --------------------------------------------------------------------------------------------


def _echo_factory(target: Target, settings: RunSettings) -> Any:
    class _Echo:
        async def send(self, case: Any) -> Exchange:
            await asyncio.sleep(0)
            return Response(200, "OK", (), case.body, 1.0)

        async def aclose(self) -> None:
            pass

    return _Echo()


def test_megabyte_messages_both_ways_do_not_deadlock(tmp_path: Path) -> None:
    """Each batch to a worker and each batch of results back is megabytes (256 KiB bodies, both
    targets echo them): far more than a socket buffer holds, in both directions at once - the
    case where two sides that each block in a send while the other does too would hang."""
    cases, size = 120, 256 * 1024
    targets = write_targets(tmp_path / "t.yaml", "http://127.0.0.1:9", "http://127.0.0.1:9")
    suite = tmp_path / "big.yaml"
    suite.write_text(
        "suite: big\nrequests:\n  - name: 'r {{ i }}'\n    method: POST\n    path: /echo\n"
        f"    body: '{{{{ i }}}}{'x' * size}'\n"
        f"    matrix: {{ i: [{', '.join(map(str, range(cases)))}] }}\n"
    )
    session = Session(load_config(targets), load_suites([suite]), transport_factory=_echo_factory)
    out = tmp_path / "out"
    run = session.run(options=RunOptions(out_dir=out, workers=2, concurrency=64))
    summary = run.wait()
    assert summary.exit_code == 0, read_gate(out).get("reason")
    gate = read_gate(out)
    assert gate["totals"]["cases"] == gate["totals"]["match"] == cases
    assert gate["settings"]["workers"] == 2


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_ctrl_c_ends_a_run_whose_workers_stopped_reading(
    servers: ServerFactory, tmp_path: Path
) -> None:
    """Both send workers are frozen (SIGSTOP) mid-run, with 256 KiB requests in flight to them:
    Ctrl-C must still end the run (exit 3, gate.json ``error``) and the frozen workers, which
    never see their connection close, are killed - nothing left running."""
    server = servers(name="slow")
    targets = write_targets(tmp_path / "t.yaml", server.url, server.url, run="timeout: 30s")
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "suite: s\nrequests:\n  - name: 'r {{ i }}'\n    method: POST\n    path: /ok\n"
        f"    body: '{'y' * 256 * 1024}'\n"
        f"    matrix: {{ i: [{', '.join(map(str, range(400)))}] }}\n"
    )
    out = tmp_path / "out"
    proc = _start(
        "run", "--targets", targets, "--suites", suite, "--out", out, "--no-progress",
        "--workers", 2,
    )  # fmt: skip
    _wait_until(lambda: server.count >= 5, "the run is sending")
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(0.2)  # frozen with requests in flight: no answer will come back
    proc.send_signal(signal.SIGINT)
    code, err = _finish(proc)
    _assert_interrupted(code, err, out, "SIGINT")
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid), pid


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_send_to_a_worker_that_stopped_reading_never_blocks_the_loop() -> None:
    """The parent's end of a worker's connection, the worker frozen (its end never read):
    20 MiB put on the link - far over any socket buffer - must leave the event loop turning
    (the parent must still answer a signal), and hanging up must end the link's threads."""
    parent, frozen = multiprocessing.Pipe(duplex=True)
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        link = _Link(parent, asyncio.get_running_loop(), "test")
        for _ in range(20):
            link.put(b"z" * (1 << 20))
        await asyncio.sleep(0.05)  # the loop still turns
        seen["turned"] = True
        link.hang_up()
        seen["threads alive"] = [t.name for t in link._threads if t.is_alive()]

    thread = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    thread.start()
    thread.join(30)
    stuck = thread.is_alive()
    frozen.close()  # whatever happened: a send still blocked fails now
    parent.close()
    assert not stuck, "the event loop blocked in a send to a worker that does not read"
    assert seen == {"turned": True, "threads alive": []}


def test_plan_keeps_a_one_process_run_in_one_process() -> None:
    """``upstream:`` (the recording origin matches requests to exchanges in the sending process)
    keeps any run in one process and says so; a run that would not fork anyway says nothing."""
    why = "upstream: the recording origin runs in the one sending process"
    assert plan(3, UNPACED, 10_000, why) == (1, why)
    assert plan(0, UNPACED, 10_000, why) == (1, why if AUTO > 1 else "")
    assert plan(0, UNPACED, AUTO_MIN_CASES - 1, why) == (1, "")
    assert plan(1, UNPACED, 10_000, why) == (1, "")
