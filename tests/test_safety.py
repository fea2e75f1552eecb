"""Safe by default: bad input sends nothing, production refuses side effects, caps are hard.

Every test runs the real command (``python -m flamingo`` in a child process where the console
and exit code matter) against counting servers on 127.0.0.1 (tests/faultserver.py), so "nothing
was sent" is observed at the socket, not inferred from the code.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from faultserver import (
    FaultServer,
    ServerFactory,
    flamingo_command,
    read_gate,
    read_rows,
    write_targets,
)

BAD_INPUT = Path(__file__).parent / "bad_input"


@pytest.fixture
def pair(servers: ServerFactory) -> tuple[FaultServer, FaultServer]:
    return servers(name="old"), servers(name="new")


def run_flamingo(
    *args: object, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        flamingo_command(*args),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


def nothing_sent(*servers: FaultServer) -> None:
    for server in servers:
        assert server.connections == 0, f"{server.name} saw {server.connections} connection(s)"
        assert server.count == 0


GET_SUITE = "suite: ok\nrequests:\n  - { name: ok, path: /ok }\n"


# --------------------------------------------------------------------------------------------
# Bad input through the real command: exit 2, FILE:LINE: message, no traceback, nothing sent
# --------------------------------------------------------------------------------------------

CORPUS = [
    "suite_unknown_var.yaml",
    "suite_bad_method.yaml",
    "suite_json_nan.yaml",
    "suite_tab.yaml",
    "suite_dup_names_dir",
    "targets_python_tag.yaml",
    "targets_unset_env.yaml",
    "targets_bad_duration.yaml",
    "targets_duplicate_key.yaml",
    "targets_negative_concurrency.yaml",
]


def _expected(path: Path) -> str:
    """The message the corpus entry announces on its first line (as tests/test_load.py)."""
    first = path / "a.yaml" if path.is_dir() else path
    line = first.read_text().split("\n", 1)[0].removeprefix("# expect: ")
    if path.is_dir():
        return f"{path}/{line}".replace("{dir}", str(path))
    return f"{path}:{line}".replace("{file}", str(path))


@pytest.mark.parametrize("name", CORPUS)
def test_bad_input_exits_2_and_sends_nothing(
    pair: tuple[FaultServer, FaultServer], tmp_path: Path, name: str
) -> None:
    old, new = pair
    source = BAD_INPUT / name
    if name.startswith("targets_"):
        # The corpus points at the demo ports; a copy (same lines) points at the counters.
        targets = tmp_path / name
        text = source.read_text()
        text = text.replace("http://127.0.0.1:18081", old.url)
        text = text.replace("http://127.0.0.1:18082", new.url)
        targets.write_text(text)
        suites = tmp_path / "ok.yaml"
        suites.write_text(GET_SUITE)
        expected = _expected(targets)
    else:
        targets = write_targets(tmp_path / "targets.yaml", old.url, new.url)
        suites = source
        expected = _expected(source)
    env = {k: v for k, v in os.environ.items() if k != "NEW_TOKEN"}
    out = tmp_path / "out"
    proc = run_flamingo(
        "run", "--targets", targets, "--suites", suites, "--out", out, "--no-progress", env=env
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == expected
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists()
    nothing_sent(old, new)


# --------------------------------------------------------------------------------------------
# YAML is loaded safely: a python tag is an input error and never runs
# --------------------------------------------------------------------------------------------

PAYLOADS = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    "!!python/object/apply:subprocess.check_call [[touch, {marker}]]",
    '!!python/object/new:os.system ["touch {marker}"]',
    "!!python/name:os.system",
]


@pytest.mark.parametrize("where", ["targets", "suite"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.split(" ")[0])
def test_python_yaml_tags_are_refused_and_never_run(
    pair: tuple[FaultServer, FaultServer], tmp_path: Path, where: str, payload: str
) -> None:
    old, new = pair
    marker = tmp_path / "pwned"
    tag = payload.split(" ")[0].removeprefix("!!")
    value = payload.format(marker=marker)
    if where == "targets":
        targets = tmp_path / "targets.yaml"
        targets.write_text(
            f"targets:\n  old:\n    base_url: {old.url}\n    verify_tls: {value}\n"
            f"  new:\n    base_url: {new.url}\n"
        )
        suite = tmp_path / "ok.yaml"
        suite.write_text(GET_SUITE)
        path, line = targets, 4
    else:
        targets = write_targets(tmp_path / "targets.yaml", old.url, new.url)
        suite = tmp_path / "evil.yaml"
        suite.write_text(f"suite: evil\nrequests:\n  - name: ok\n    path: {value}\n")
        path, line = suite, 4
    for command in ("check", "run"):
        extra = ("--out", tmp_path / "out") if command == "run" else ()
        proc = run_flamingo(command, "--targets", targets, "--suites", suite, *extra)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == (
            f"{path}:{line}: invalid YAML: unsupported YAML tag '!!{tag}'"
        )
        assert "Traceback" not in proc.stderr
    assert not marker.exists(), "a YAML payload was executed"
    nothing_sent(old, new)


# --------------------------------------------------------------------------------------------
# production: true refuses non-idempotent methods unless the suite allows side effects
# --------------------------------------------------------------------------------------------


def _unsafe_suite(path: Path, method: str, allow: bool) -> Path:
    allow_line = "allow_side_effects: true\n" if allow else ""
    path.write_text(
        f"suite: writes\n{allow_line}requests:\n"
        "  - { name: read, path: /ok }\n"
        f"  - name: write\n    method: {method}\n    path: /ok\n    body: hello\n"
    )
    return path


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_production_target_refuses_side_effects(
    pair: tuple[FaultServer, FaultServer], tmp_path: Path, method: str
) -> None:
    old, new = pair
    targets = write_targets(
        tmp_path / "targets.yaml", old.url, new.url, old_extra="production: true"
    )
    suite = _unsafe_suite(tmp_path / "writes.yaml", method, allow=False)
    out = tmp_path / "out"
    proc = run_flamingo("run", "--targets", targets, "--suites", suite, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"{suite}:4: {method} request 'writes::write' would be sent to production target(s) "
        "old; set 'allow_side_effects: true' in the suite to allow it"
    )
    assert not out.exists()
    nothing_sent(old, new)  # not even the GET before it


def test_production_target_with_allow_side_effects_sends(
    pair: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    old, new = pair
    production = "production: true"
    targets = write_targets(
        tmp_path / "targets.yaml", old.url, new.url, old_extra=production, new_extra=production
    )
    suite = _unsafe_suite(tmp_path / "writes.yaml", "POST", allow=True)
    out = tmp_path / "out"
    proc = run_flamingo("run", "--targets", targets, "--suites", suite, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r.method for r in old.requests) == sorted(r.method for r in new.requests)
    assert sorted(r.method for r in old.requests) == ["GET", "POST"]
    assert set(read_rows(out)) == {"writes::read", "writes::write"}


# --------------------------------------------------------------------------------------------
# --max-requests is a hard cap, retries included
# --------------------------------------------------------------------------------------------


def _many_suite(path: Path, route: str, cases: int) -> Path:
    path.write_text(
        f"suite: many\nrequests:\n  - name: 'case {{{{ i }}}}'\n    path: '{route}?i={{{{ i }}}}'\n"
        f"    matrix: {{ i: [{', '.join(map(str, range(cases)))}] }}\n"
    )
    return path


@pytest.mark.parametrize(
    ("route", "retries", "cap", "workers"),
    [
        ("/ok", 1, 7, 1),
        ("/ok", 1, 1, 1),
        ("/reset", 3, 5, 1),
        ("/close", 3, 9, 1),
        ("/ok", 1, 7, 2),
    ],
)
def test_max_requests_is_a_hard_cap(
    pair: tuple[FaultServer, FaultServer],
    tmp_path: Path,
    route: str,
    retries: int,
    cap: int,
    workers: int,
) -> None:
    """20 cases, 20 requests in flight at once: the servers see at most ``cap`` requests,
    even when every request fails and would be retried. Asked for send workers, a capped run
    stays in one process (one hard counter) and says so."""
    old, new = pair
    targets = write_targets(
        tmp_path / "targets.yaml", old.url, new.url, run=f"concurrency: 20\nretries: {retries}"
    )
    suite = _many_suite(tmp_path / "many.yaml", route, 20)
    out = tmp_path / "out"
    proc = run_flamingo(
        "run", "--targets", targets, "--suites", suite, "--out", out, "--max-requests", cap,
        "--workers", workers,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert old.count + new.count <= cap
    gate = read_gate(out)
    assert gate["settings"]["workers"] == 1
    if workers > 1:
        assert "fewer: --max-requests keeps a run in one process" in proc.stdout
    assert gate["verdict"] == "error"
    assert gate["reason"] == f"--max-requests {cap} reached"
    assert f"flamingo: --max-requests {cap} reached" in proc.stderr
    assert gate["totals"]["cases"] == len(read_rows(out)) < 20


def test_max_requests_not_reached_completes(
    pair: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    old, new = pair
    targets = write_targets(tmp_path / "targets.yaml", old.url, new.url)
    suite = _many_suite(tmp_path / "many.yaml", "/ok", 5)
    out = tmp_path / "out"
    proc = run_flamingo(
        "run", "--targets", targets, "--suites", suite, "--out", out, "--max-requests", 10
    )
    assert proc.returncode == 0, proc.stderr
    assert old.count + new.count == 10
    assert read_gate(out)["verdict"] == "pass"


# --------------------------------------------------------------------------------------------
# The per-target rate limit, observed at the servers
# --------------------------------------------------------------------------------------------

RATE = 20.0


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_rate_limit_is_honoured_per_target(
    pair: tuple[FaultServer, FaultServer], tmp_path: Path, workers: int
) -> None:
    """40 cases at 20/s per target: ~2 s. A bound on the harness (it never sends faster than
    asked), measured at each server; not a timing assertion about how fast it can go. With send
    workers each paces its share (rate / workers) with its own phase."""
    old, new = pair
    targets = write_targets(
        tmp_path / "targets.yaml", old.url, new.url, run=f"concurrency: 50\nrate_limit: {RATE:g}"
    )
    suite = _many_suite(tmp_path / "many.yaml", "/ok", 40)
    proc = run_flamingo(
        "run", "--targets", targets, "--suites", suite, "--out", tmp_path / "out",
        "--workers", workers,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert read_gate(tmp_path / "out")["settings"]["workers"] == workers
    for server in (old, new):
        times = sorted(r.at for r in server.requests)
        assert len(times) == 40
        observed = (len(times) - 1) / (times[-1] - times[0])
        assert observed <= RATE * 1.1 + 0.5, f"{server.name}: {observed:.1f} requests/s"
        # No burst either: any one-second window holds at most rate (+1 for its two ends) plus
        # a little slack for arrival jitter, per pacer (independent phases).
        busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
        allowed = RATE * 1.1 + 2 * workers
        assert busiest <= allowed, f"{server.name}: {busiest} requests in one second"


def test_rate_option_overrides_and_is_honoured(
    pair: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    old, new = pair
    targets = write_targets(tmp_path / "targets.yaml", old.url, new.url)
    suite = _many_suite(tmp_path / "many.yaml", "/ok", 30)
    proc = run_flamingo(
        "run", "--targets", targets, "--suites", suite, "--out", tmp_path / "out", "--rate", 30
    )
    assert proc.returncode == 0, proc.stderr
    times = sorted(r.at for r in old.requests)
    assert (len(times) - 1) / (times[-1] - times[0]) <= 30 * 1.1 + 0.5


def test_dry_runs_send_nothing(pair: tuple[FaultServer, FaultServer], tmp_path: Path) -> None:
    old, new = pair
    targets = write_targets(tmp_path / "targets.yaml", old.url, new.url)
    suite = _many_suite(tmp_path / "many.yaml", "/ok", 5)
    for command in ("list", "check"):
        proc = run_flamingo(command, "--targets", targets, "--suites", suite)
        assert proc.returncode == 0, proc.stderr
    nothing_sent(old, new)
