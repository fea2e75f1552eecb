"""A verdict that cannot pass by accident (issue 9): every scenario is a real run of the
`flamingo` command against real servers on 127.0.0.1 (the bundled demo targets, the fault
server of tests/faultserver.py) or real files, and asserts the exit code and gate.json.

Gates fail closed (CONTRACT §3): a gate that does not set ``min_match_rate``, ``max_error_rate``
or ``min_cases`` gets 1.0, 0 and 1, so a ``diff``, ``fail`` or ``error`` passes only where a
threshold written in the file allows its rate.
"""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from faultserver import ServerFactory, flamingo_command

from flamingo.cli import main


def run(*args: object) -> int:
    return main(["run", "--no-progress", *(str(a) for a in args)])


def gate_of(out: Path) -> dict[str, Any]:
    gate: dict[str, Any] = json.loads((out / "gate.json").read_text())
    return gate


def rows_of(out: Path) -> dict[str, dict[str, Any]]:
    """results.jsonl by case name."""
    with (out / "results.jsonl").open() as lines:
        return {row["name"]: row for row in map(json.loads, lines)}


def fault_targets(tmp_path: Path, servers: ServerFactory, gates: str | None = None) -> Path:
    """targets.yaml for two fault servers named old and new (their routes tell them apart)."""
    old, new = servers(name="old"), servers(name="new")
    return targets(tmp_path / "t.yaml", old.url, new.url, gates)


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
    config = fault_targets(tmp_path, servers, "gates: {default: {min_match_rate: 0.99}}\n")
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
    gates = """\
gates:
  stages:
    canary: {max_latency_ratio_p99: 1000}
    lenient: {max_error_rate: 0.5}
"""
    config = fault_targets(tmp_path, servers, gates)
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
    config = fault_targets(tmp_path, servers)
    body = "requests:\n  - {name: fine, path: /ok, repeat: 4}\n"
    out = tmp_path / "out"
    assert run("--targets", config, "--suites", suite(tmp_path / "s.yaml", body), "--out", out) == 0
    gate = gate_of(out)
    assert gate["verdict"] == "pass" and gate["totals"]["match"] == 4
    assert [c["name"] for c in gate["checks"]] == ["min_match_rate", "max_error_rate", "min_cases"]


# --------------------------------------------------------------------------------------------
# YAML alias bombs (item 6): an input error with FILE:LINE, found while composing
# --------------------------------------------------------------------------------------------


def alias_bomb(indent: str, levels: int = 9, width: int = 9) -> str:
    """Nine levels of ``&a [*a x9]``: ~4*10^8 values once expanded."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "".join(f"{indent}{line}\n" for line in lines)


def limited_flamingo(*args: object) -> subprocess.CompletedProcess[str]:
    """The real command in a child with 2 GiB of address space, so a bomb that is not stopped
    ends as a MemoryError or a timeout (the test then fails) instead of eating the machine."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run(
        flamingo_command(*args),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        check=False,
    )


@pytest.mark.parametrize("where", ["suite", "targets", "accepted"])
def test_yaml_alias_bomb_is_an_input_error(where: str, tmp_path: Path) -> None:
    suite_text = "suite: bomb\nrequests:\n  - name: r\n    path: /\n"
    targets_text = "targets:\n  old: {base_url: 'http://127.0.0.1:9'}\n  new: {base_url: 'http://127.0.0.1:9'}\n"
    accepted_text = "accepted:\n  - {kind: status, location: status, reason: ok}\n"
    if where == "suite":
        suite_text += "    json:\n" + alias_bomb("      ")
    elif where == "targets":
        targets_text += "compare:\n  x-bomb:\n" + alias_bomb("    ")
    else:
        accepted_text += "extra:\n" + alias_bomb("  ")
    targets_text += "accepted: accepted.yaml\n"
    (tmp_path / "s.yaml").write_text(suite_text)
    (tmp_path / "t.yaml").write_text(targets_text)
    (tmp_path / "accepted.yaml").write_text(accepted_text)
    done = limited_flamingo(
        "check", "--targets", tmp_path / "t.yaml", "--suites", tmp_path / "s.yaml"
    )
    assert done.returncode == 2, done.stderr
    file = {"suite": "s.yaml", "targets": "t.yaml", "accepted": "accepted.yaml"}[where]
    first = done.stderr.splitlines()[0]
    assert re.match(rf".*{file}:\d+: YAML aliases expand to more than 100,000 nodes", first), first


def test_a_recursive_alias_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "suite: s\nrequests:\n  - name: r\n    path: /\n    json: &j [1, *j]\n"
    )
    (tmp_path / "t.yaml").write_text(
        "targets:\n  old: {base_url: 'http://127.0.0.1:9'}\n  new: {base_url: 'http://127.0.0.1:9'}\n"
    )
    done = limited_flamingo(
        "check", "--targets", tmp_path / "t.yaml", "--suites", tmp_path / "s.yaml"
    )
    assert done.returncode == 2, done.stderr
    assert "s.yaml:5: YAML alias '*j' refers to a node that contains it" in done.stderr


# --------------------------------------------------------------------------------------------
# JSON that a dict or a float would flatten (item 10)
# --------------------------------------------------------------------------------------------


#: name -> (old body, new body, outcome)
JSON_PAIRS = {
    "duplicate key": ('{"a": 1, "a": 2}', '{"a": 2}', "diff"),
    "overflow": ('{"n": 1e400}', '{"n": 2e400}', "diff"),
    "underflow": ('{"n": 1e-400}', '{"n": 0.0}', "diff"),
    "long fraction": ("[0.1000000000000000000001]", "[0.1]", "diff"),
    "same big": ('{"n": 1e400}', '{"n": 10e399}', "match"),  # one value, two spellings
    "same float": ('{"n": 1.0, "m": [0.10]}', '{"m": [0.1], "n": 1}', "match"),
}


def test_duplicate_keys_and_overflowing_numbers_never_hide_a_difference(
    tmp_path: Path, servers: ServerFactory
) -> None:
    config = fault_targets(tmp_path, servers)
    requests = "requests:\n" + "".join(
        f"  - name: {name}\n    path: /said\n    query: {json.dumps({'old': a, 'new': b})}\n"
        for name, (a, b, _) in JSON_PAIRS.items()
    )
    out = tmp_path / "out"
    assert (
        run("--targets", config, "--suites", suite(tmp_path / "s.yaml", requests), "--out", out)
        == 1
    )
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    outcomes = {row["name"]: row["outcome"] for row in rows}
    assert outcomes == {name: outcome for name, (_, _, outcome) in JSON_PAIRS.items()}
    by_name = {row["name"]: row for row in rows}
    assert by_name["overflow"]["differences"][0]["location"] == "$.n"
    assert by_name["duplicate key"]["differences"][0]["note"] == "json vs non-json"


# --------------------------------------------------------------------------------------------
# A reused --out folder (item 10)
# --------------------------------------------------------------------------------------------


def test_a_stale_gate_never_survives_a_reused_out_folder(
    tmp_path: Path, servers: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fault_targets(tmp_path, servers)
    good = suite(tmp_path / "s.yaml", "requests:\n  - {name: fine, path: /ok}\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("suite: broken\nrequests:\n  - {name: x, path: /ok, bogus: 1}\n")
    out = tmp_path / "out"
    assert run("--targets", config, "--suites", good, "--out", out) == 0
    assert gate_of(out)["verdict"] == "pass"
    (out / "notes.txt").write_text("the team's own file\n")
    capsys.readouterr()

    # Reused without --force: refused before anything is read or written.
    assert run("--targets", config, "--suites", good, "--out", out) == 2
    err = capsys.readouterr().err
    assert f"--out: {out} is not empty" in err and "--force" in err

    # With --force and bad input: flamingo's own files are gone, nothing says "pass".
    assert run("--targets", config, "--suites", broken, "--out", out, "--force") == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    # With --force and good input: a fresh result beside the team's file.
    assert run("--targets", config, "--suites", good, "--out", out, "--force") == 0
    assert gate_of(out)["verdict"] == "pass"
    assert (out / "notes.txt").read_text() == "the team's own file\n"


def test_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    assert run("--targets", tmp_path / "none.yaml", "--out", file) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# noise: auto excuses only what is like old's own variation (item 4)
# --------------------------------------------------------------------------------------------

NOISE_RULES = "compare: {noise: auto}\n"


def test_learned_text_noise_never_hides_a_planted_failure(
    tmp_path: Path, servers: ServerFactory
) -> None:
    """Old's text carries a random token whose number of tokens varies; new says
    status=FAILED on 10 of 20 jobs. The token is learned as noise, the status never."""
    config = fault_targets(tmp_path, servers)
    body = """\
requests:
  - name: "job {{ n }}"
    path: /job
    matrix: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]}
    query: {n: "{{ n }}", fail_below: "10"}
"""
    out = tmp_path / "out"
    cases = suite(tmp_path / "s.yaml", body + NOISE_RULES)
    assert run("--targets", config, "--suites", cases, "--out", out) == 1
    rows = rows_of(out)
    outcomes = {name: row["outcome"] for name, row in rows.items()}
    assert outcomes == {f"job {n}": "diff" if n <= 10 else "match" for n in range(1, 21)}
    for n in range(1, 11):
        [difference] = rows[f"job {n}"]["differences"]
        assert difference["location"] == "text" and "FAILED" in difference["new"]
    learned = {(e["kind"], e["location"]) for e in gate_of(out)["noise"]}
    assert learned == {("body", 'text~" token="')}  # the token, never the whole body


def test_a_flapping_categorical_value_excuses_only_values_seen_on_old(
    tmp_path: Path, servers: ServerFactory
) -> None:
    """Old flaps 200/503 and X-Cache HIT/MISS; new answers 500 on 5 cases and X-Cache: ERROR on
    5 more: values never seen on old are differences, the flapping itself is noise."""
    config = fault_targets(tmp_path, servers)
    body = """\
requests:
  - name: "flap {{ n }}"
    path: /flap
    matrix: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                 23, 24, 25, 26, 27, 28, 29, 30]}
    query: {n: "{{ n }}"}
"""
    out = tmp_path / "out"
    cases = suite(tmp_path / "s.yaml", body + "compare: {noise: auto, ignore_headers: [date]}\n")
    assert run("--targets", config, "--suites", cases, "--out", out) == 1
    rows = rows_of(out)
    for n in range(1, 31):
        row = rows[f"flap {n}"]
        kept = {(d["kind"], d["location"], d["new"]) for d in row["differences"]}
        if n <= 5:
            assert row["outcome"] == "diff" and ("status", "status", 500) in kept, row
        elif n <= 10:
            assert row["outcome"] == "diff" and ("header", "x-cache", "ERROR") in kept, row
        else:
            assert row["outcome"] == "match", row
    learned = {(e["kind"], e["location"]) for e in gate_of(out)["noise"]}
    assert learned == {("status", "status"), ("header", "x-cache")}


# --------------------------------------------------------------------------------------------
# Catastrophic regexes (item 5): user regexes run in linear time (RE2)
# --------------------------------------------------------------------------------------------

EVIL = "(a+)+$"  # exponential in a backtracking engine over "a" * 34 + "!"


def test_a_catastrophic_regex_neither_hangs_the_run_nor_blocks_signals(
    tmp_path: Path, servers: ServerFactory
) -> None:
    config = fault_targets(tmp_path, servers)
    text = "a" * 34 + "!"
    body = f"""\
requests:
  - name: masked body
    path: /said
    query: {{old: "{text}", new: "{text}?", type: text/plain}}
  - name: header regex
    path: /echo
    headers: {{Authorization: "{text}"}}
    expect:
      headers:
        X-Echo-Authorization: {{regex: "{EVIL}"}}
compare:
  mask:
    - {{pattern: "{EVIL}", replace: "<a>"}}
"""
    (tmp_path / "accepted.yaml").write_text(
        f"accepted:\n  - {{kind: body, location: text, old: '{EVIL}', reason: r}}\n"
    )
    with config.open("a") as handle:
        handle.write("accepted: accepted.yaml\n")
    cases = suite(tmp_path / "s.yaml", body)
    out = tmp_path / "out"
    done = subprocess.run(
        flamingo_command(
            "run", "--no-progress", "--targets", config, "--suites", cases, "--out", out
        ),
        capture_output=True,
        text=True,
        timeout=60,  # a backtracking engine would still be running (minutes per response)
        check=False,
    )
    assert done.returncode == 1, done.stderr
    rows = rows_of(out)
    assert (
        rows["masked body"]["outcome"] == "diff"
    )  # "a...a!" vs "a...a!?": the mask cannot hide it
    assert rows["header regex"]["outcome"] == "fail"  # no match on either target

    # The same run stays interruptible: SIGTERM mid-run ends it with gate.json "error".
    slow = suite(
        tmp_path / "slow.yaml", body.replace("path: /said", "path: /said\n    repeat: 400")
    )
    out2 = tmp_path / "out2"
    process = subprocess.Popen(
        flamingo_command(
            "run", "--no-progress", "--targets", config, "--suites", slow, "--out", out2,
            "--concurrency", "2",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (out2 / "results.jsonl").exists() or not (out2 / "results.jsonl").stat().st_size:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 3
    assert gate_of(out2)["verdict"] == "error"


def test_a_regex_re2_cannot_run_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = targets(tmp_path / "t.yaml", "http://127.0.0.1:9", "http://127.0.0.1:9", None)
    body = "requests:\n  - {name: r, path: /}\ncompare:\n  mask:\n"
    body += '    - {pattern: "(a)\\\\1", replace: x}\n'  # a backreference
    assert run("--targets", config, "--suites", suite(tmp_path / "s.yaml", body)) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 's.yaml'}:6: " in err and "linear-time regex engine" in err, err


# --------------------------------------------------------------------------------------------
# Knobs that size a run (item 7): bounded, absurd values are input errors
# --------------------------------------------------------------------------------------------


def test_absurd_concurrency_is_an_input_error_and_a_large_one_is_bounded_by_the_cases(
    tmp_path: Path, servers: ServerFactory
) -> None:
    config = fault_targets(tmp_path, servers)
    cases = suite(tmp_path / "s.yaml", "requests:\n  - {name: one, path: /ok}\n")
    common = ("run", "--no-progress", "--targets", config, "--suites", cases)
    done = limited_flamingo(*common, "--concurrency", "99999999999", "--out", tmp_path / "a")
    assert done.returncode == 2, done.stderr
    assert "--concurrency: at most 10000, got 99999999999" in done.stderr
    assert not (tmp_path / "a").exists()  # refused before anything was sent or written

    done = limited_flamingo(*common, "--concurrency", "10000", "--out", tmp_path / "b")
    assert done.returncode == 0, done.stderr
    assert gate_of(tmp_path / "b")["settings"]["concurrency"] == 3  # one case: 3 at most


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("concurrency: 99999999999", "run.concurrency: at most 10000 is supported"),
        ("workers: 100000", "run.workers: at most 64 is supported"),
        ("retries: 1000000000", "run.retries: at most 100 is supported"),
        ("timeout: 1000000h", "run.timeout: at most 86400 is supported"),
        ("rate_limit: 1e-300", "run.rate_limit: expected 0 (unpaced) or at least 0.001"),
    ],
)
def test_absurd_run_settings_are_input_errors(
    line: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "t.yaml"
    config.write_text(
        "targets:\n  old: {base_url: 'http://127.0.0.1:9'}\n  new: {base_url: 'http://127.0.0.1:9'}\n"
        f"run:\n  {line}\n"
    )
    cases = suite(tmp_path / "s.yaml", "requests:\n  - {name: one, path: /ok}\n")
    assert run("--targets", config, "--suites", cases) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{config}:5: {message}"), err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--workers", "100000", "--workers: at most 64"),
        ("--rate", "1e-300", "--rate: expected 0 or at least 0.001"),
    ],
)
def test_absurd_options_are_input_errors(
    option: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = targets(tmp_path / "t.yaml", "http://127.0.0.1:9", "http://127.0.0.1:9", None)
    cases = suite(tmp_path / "s.yaml", "requests:\n  - {name: one, path: /ok}\n")
    assert run("--targets", config, "--suites", cases, option, value) == 2
    assert message in capsys.readouterr().err


def test_old_replica_cannot_be_the_new_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Red team: noise learned from "old vs new" would excuse every difference."""
    config = tmp_path / "t.yaml"
    config.write_text(
        "targets:\n  old: {base_url: 'http://127.0.0.1:9'}\n  new: {base_url: 'http://127.0.0.1:8/'}\n"
        "  old_replica: {base_url: 'http://127.0.0.1:8'}\n"
    )
    cases = suite(tmp_path / "s.yaml", "requests:\n  - {name: one, path: /ok}\n")
    assert run("--targets", config, "--suites", cases) == 2
    assert "old_replica is the new target's base_url" in capsys.readouterr().err


def test_stage_default_names_the_default_gate_and_no_stage_may_shadow_it(
    tmp_path: Path, servers: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Red team: a stage called "default" with min_match_rate 0 passed `--stage default` runs
    with a diff, where CONTRACT §3 says `--stage default` names gates.default."""
    body = "requests:\n  - {name: d, path: /said, query: {old: '[1]', new: '[2]'}}\n"
    cases = suite(tmp_path / "s.yaml", body)
    lenient = "gates: {stages: {canary: {min_match_rate: 0}}}\n"
    config = fault_targets(tmp_path, servers, lenient)
    out = tmp_path / "default"
    assert run("--targets", config, "--suites", cases, "--stage", "default", "--out", out) == 1
    assert gate_of(out)["checks"][0] == {**gate_of(out)["checks"][0], "threshold": 1.0}
    out = tmp_path / "canary"
    assert run("--targets", config, "--suites", cases, "--stage", "canary", "--out", out) == 0
    shadow = fault_targets(tmp_path, servers, "gates: {stages: {default: {min_match_rate: 0}}}\n")
    capsys.readouterr()
    assert run("--targets", shadow, "--suites", cases, "--stage", "default") == 2
    assert "a stage cannot be called 'default'" in capsys.readouterr().err
