"""Send workers (flamingo/workers.py): forked processes send, the parent judges every case.

What must hold whichever process sent a case: each case is sent once to each target and judged
once; faults are the same errors; and a worker that dies or crashes fails the run closed
(``error``, exit 3, never ``pass``). The planted-difference, noise and SIGTERM end-to-end tests
(tests/test_e2e.py, ``WORKERS``), the rate-limit test and the request-cap test (which keeps a
run in one process; tests/test_safety.py) run with two workers too.
"""

from __future__ import annotations

import os
import re
import subprocess
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
from flamingo.workers import AUTO_MAX_WORKERS, AUTO_MIN_CASES, cpu_count, plan, worker_settings


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
