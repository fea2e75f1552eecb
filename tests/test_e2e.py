"""End to end: the `flamingo` command against real servers on 127.0.0.1.

The demo targets (aiohttp proxies that differ in planted ways) and real nginx reverse proxies in
front of the demo origin. Every test asserts exact outcome sets, exit codes and file contents.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from flamingo.cli import main

REPO = Path(__file__).resolve().parent.parent
SUITES = REPO / "suites"
# The bundled suites with explicit compare rules (learned-noise.yaml is tested on its own).
RULED = [SUITES / "static.yaml", SUITES / "api.yaml", SUITES / "errors.yaml"]

# The planted differences of the demo (flamingo/demo/servers.py DEMO_DIFFERENCES), as case ids.
PLANTED = {
    # (a) Cache-Control max-age changed on /static/page.html
    "static-assets::get /static/page.html (identity)",
    "static-assets::get /static/page.html (gzip)",
    "static-assets::get /static/page.html (br)",
    "static-assets::get /static/page.html (gzip, br)",
    "static-assets::head /static/page.html",
    "static-assets::revalidate /static/page.html",
    # (b) role changed for one user
    "api::user 42",
    # (c) a different 404 page for unknown paths
    "errors::not found /nope",
    "errors::not found /static/missing.css",
    "errors::not found /api/v2/items",
    "errors::not found /admin/login",
    "static-assets::missing file",
}


def write_targets(
    path: Path, old: str, new: str, gates: str = "", run: str = "", extra_new: str = ""
) -> Path:
    gates = gates or "default: { min_match_rate: 1.0, max_error_rate: 0, min_cases: 1 }"
    text = textwrap.dedent(
        """\
        targets:
          old:
            base_url: {old}
          new:
            base_url: {new}
        {extra_new}
        run:
          concurrency: 20
          timeout: 5s
          retries: 1
        {run}
        gates:
        {gates}
        """
    ).format(
        old=old,
        new=new,
        extra_new=textwrap.indent(extra_new, "    "),
        run=textwrap.indent(run, "  "),
        gates=textwrap.indent(gates, "  "),
    )
    path.write_text(text)
    return path


def run_cli(*args: str | Path) -> int:
    return main([str(a) for a in args])


def read_results(out: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows), "ids must be unique"
    return by_id


def outcome_ids(rows: dict[str, dict[str, Any]], outcome: str) -> set[str]:
    return {i for i, row in rows.items() if row["outcome"] == outcome}


def expanded_ids(*suite_args: str | Path) -> list[str]:
    from flamingo.expand import expand
    from flamingo.load import load_suites

    return [c.id for c in expand(load_suites([Path(s) for s in suite_args]))]


# --------------------------------------------------------------------------------------------


# One process, and two forked send workers (flamingo/workers.py) judged by the parent: the same
# cases must give the same outcomes, whichever process sent them.
WORKERS = pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])


@WORKERS
def test_demo_targets_give_exactly_the_planted_differences(
    demo_targets: dict[str, str], tmp_path: Path, workers: str
) -> None:
    targets = write_targets(tmp_path / "t.yaml", demo_targets["old"], demo_targets["new"])
    out = tmp_path / "out"
    code = run_cli(
        "run", "--targets", targets, "--suites", *RULED, "--out", out, "--no-progress",
        "--workers", workers,
    )  # fmt: skip
    assert code == 1
    gate = json.loads((out / "gate.json").read_text())
    assert gate["settings"]["workers"] == int(workers)
    if workers == "2":  # the parent and each worker, summed
        assert len(gate["peak_rss_mb_by_process"]) == 3
        assert gate["peak_rss_mb"] == round(sum(gate["peak_rss_mb_by_process"]), 1)
    rows = read_results(out)
    assert set(rows) == set(expanded_ids(*RULED))
    assert outcome_ids(rows, "diff") == PLANTED
    assert outcome_ids(rows, "fail") == set()
    assert outcome_ids(rows, "error") == set()

    user = rows["api::user 42"]["differences"]
    assert user == [{"kind": "body", "location": "$.role", "old": "user", "new": "admin"}]
    cache = rows["static-assets::get /static/page.html (gzip)"]["differences"]
    assert [(d["kind"], d["location"]) for d in cache] == [("header", "cache-control")]
    assert "max-age=60" in cache[0]["old"] and "max-age=300" in cache[0]["new"]

    gate = json.loads((out / "gate.json").read_text())
    total = len(rows)
    assert gate["verdict"] == "fail"
    assert gate["totals"] == {
        "cases": total,
        "match": total - len(PLANTED),
        "diff": len(PLANTED),
        "fail": 0,
        "error": 0,
        "accepted": 0,
    }
    names = [c["name"] for c in gate["checks"]]
    assert names == ["min_match_rate", "max_error_rate", "min_cases"]
    match_rate = next(c for c in gate["checks"] if c["name"] == "min_match_rate")
    assert match_rate["observed"] == round((total - len(PLANTED)) / total, 6)
    assert match_rate["passed"] is False
    assert gate["started_at"] <= gate["finished_at"]

    junit = ET.parse(out / "junit.xml").getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) == total
    failed = {
        f"{c.get('classname')}::{c.get('name')}" for c in cases if c.find("failure") is not None
    }
    assert failed == PLANTED
    assert junit.get("failures") == str(len(PLANTED))
    html = (out / "report.html").read_text()
    assert "api::user 42" in html and "$.role" in html


def test_same_target_on_both_sides_passes(demo_targets: dict[str, str], tmp_path: Path) -> None:
    targets = write_targets(tmp_path / "t.yaml", demo_targets["old"], demo_targets["old"])
    out = tmp_path / "out"
    code = run_cli("run", "--targets", targets, "--suites", *RULED, "--out", out, "--no-progress")
    gate = json.loads((out / "gate.json").read_text())
    assert code == 0, gate
    assert gate["verdict"] == "pass"
    assert gate["totals"]["match"] == gate["totals"]["cases"] == len(expanded_ids(*RULED))


def test_stage_overrides_default_keys(demo_targets: dict[str, str], tmp_path: Path) -> None:
    gates = textwrap.dedent(
        """\
        default: { min_match_rate: 1.0, max_error_rate: 0 }
        stages:
          lenient: { min_match_rate: 0.5 }
        """
    )
    targets = write_targets(tmp_path / "t.yaml", demo_targets["old"], demo_targets["new"], gates)
    out = tmp_path / "out"
    code = run_cli(
        "run", "--targets", targets, "--suites", *RULED, "--out", out, "--stage", "lenient",
        "--no-progress",
    )  # fmt: skip
    gate = json.loads((out / "gate.json").read_text())
    assert code == 0
    assert gate["stage"] == "lenient"
    assert {c["name"]: c["threshold"] for c in gate["checks"]} == {
        "min_match_rate": 0.5,
        "max_error_rate": 0,
        "min_cases": 1,
    }
    assert run_cli("run", "--targets", targets, "--suites", SUITES, "--stage", "nope") == 2


NGINX_SUITE = textwrap.dedent(
    """\
    suite: through-nginx
    tags: [nginx]
    matrix:
      path: [/static/hello.txt, /static/page.html, /static/data.json, /api/user/7, /nope]
      encoding: [identity, gzip]
    requests:
      - name: "get {{ path }} ({{ encoding }})"
        path: "{{ path }}"
        headers: { Accept-Encoding: "{{ encoding }}" }
      - name: "items {{ n }}"
        path: /api/items
        matrix: { n: [1, 2] }
        query: { page: "{{ n }}" }
      - name: redirect
        path: /redirect
        matrix: {}
        expect: { status: 301 }
    compare:
      ignore_headers: [date, x-request-id]
      ignore_json_paths: ["$.now", "$.request_id", "$.items[*].updated_at"]
    """
)


@WORKERS
def test_two_real_nginx_proxies_with_a_planted_header(
    nginx_factory: Any, demo_targets: dict[str, str], tmp_path: Path, workers: str
) -> None:
    plain = nginx_factory("")
    planted = nginx_factory("add_header X-Planted yes always;")
    suite = tmp_path / "nginx.yaml"
    suite.write_text(NGINX_SUITE)
    ids = set(expanded_ids(suite))
    assert len(ids) == 13

    out = tmp_path / "same"
    targets = write_targets(tmp_path / "same.yaml", plain, plain)
    args = ("--suites", suite, "--workers", workers)
    assert run_cli("run", "--targets", targets, *args, "--out", out) == 0
    assert outcome_ids(read_results(out), "match") == ids

    out = tmp_path / "planted"
    targets = write_targets(tmp_path / "planted.yaml", plain, planted)
    assert run_cli("run", "--targets", targets, *args, "--out", out) == 1
    rows = read_results(out)
    assert outcome_ids(rows, "diff") == ids
    for row in rows.values():
        assert row["differences"] == [
            {"kind": "header", "location": "x-planted", "old": None, "new": "yes"}
        ]


def test_nginx_against_the_demo_old_proxy_differs_only_in_proxy_headers(
    nginx_proxy: str, demo_targets: dict[str, str], tmp_path: Path
) -> None:
    """nginx and the demo's aiohttp proxy in front of the same origin: a real, different proxy
    whose only differences are headers the suite ignores — so every case matches."""
    suite = tmp_path / "nginx.yaml"
    suite.write_text(
        NGINX_SUITE.replace(
            "ignore_headers: [date, x-request-id]",
            "ignore_headers: [date, x-request-id, server, via, x-proxy-request-id, connection,"
            " etag, last-modified, accept-ranges, vary, content-type]",
        )
    )
    out = tmp_path / "out"
    targets = write_targets(tmp_path / "t.yaml", nginx_proxy, demo_targets["old"])
    code = run_cli("run", "--targets", targets, "--suites", suite, "--out", out)
    rows = read_results(out)
    assert {i: r["differences"] for i, r in rows.items() if r["outcome"] != "match"} == {}
    assert code == 0


def test_unreachable_target_is_error_never_pass(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    targets = write_targets(tmp_path / "t.yaml", demo_targets["old"], dead)
    out = tmp_path / "out"
    code = run_cli("run", "--targets", targets, "--suites", SUITES / "static.yaml", "--out", out)
    assert code == 1
    rows = read_results(out)
    assert outcome_ids(rows, "error") == set(rows)
    row = next(iter(rows.values()))
    assert row["new"]["error"] == "connect"
    assert row["new"]["attempts"] == 2
    gate = json.loads((out / "gate.json").read_text())
    assert gate["verdict"] == "fail"
    checks = {c["name"]: c for c in gate["checks"]}
    assert checks["min_match_rate"]["observed"] is None
    assert checks["min_match_rate"]["passed"] is False
    assert checks["max_error_rate"]["observed"] == 1.0


def test_list_check_and_selection_send_nothing(tmp_path: Path, capsys: Any) -> None:
    all_ids = expanded_ids(SUITES)
    assert run_cli("list", "--suites", SUITES, "--targets", tmp_path / "none.yaml") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == all_ids
    assert lines[0].split("\t")[1] in {"GET", "HEAD", "POST", "DELETE"}

    shards: list[str] = []
    for k in (1, 2, 3):
        assert run_cli("list", "--suites", SUITES, "--shard", f"{k}/3") == 0
        shards += [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert sorted(shards) == sorted(all_ids)

    assert run_cli("list", "--suites", SUITES, "-k", "user and not 42") == 0
    picked = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert picked and all("user" in i and "42" not in i for i in picked)

    assert run_cli("list", "--suites", SUITES, "--tag", "errors") == 0
    picked = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert picked and all(i.startswith("errors::") for i in picked)
    assert run_cli("list", "--suites", SUITES, "--tag", "errors", "static") == 0
    both = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert run_cli("list", "--suites", SUITES, "--tag", "errors", "--tag", "static") == 0
    assert both == [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert {i.split("::")[0] for i in both} == {"errors", "static-assets"}

    assert run_cli("check", "--suites", SUITES, "--targets", REPO / "targets.yaml") == 0
    assert "valid" in capsys.readouterr().out


def test_bad_input_exits_2_with_file_and_line(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("suite: x\nrequests:\n  - name: a\n    path: /a\n    methd: GET\n")
    code = run_cli(
        "run", "--suites", bad, "--targets", REPO / "targets.yaml", "--out", tmp_path / "out"
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"{bad}:5: ")
    assert "did you mean 'method'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "results.jsonl").exists()
    assert run_cli("run", "--shard", "4/3", "--suites", SUITES) == 2


def test_demo_command_from_a_fresh_directory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flamingo", "demo", "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "verdict: FAIL" in proc.stdout
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert gate["verdict"] == "fail"
    rows = read_results(tmp_path / "out")
    assert outcome_ids(rows, "diff") >= PLANTED | NOISE_PLANTED
    assert gate["totals"]["accepted"] > 0
    for name in ("results.jsonl", "junit.xml", "report.html"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@WORKERS
def test_sigterm_mid_run_flushes_and_reports_error(
    demo_targets: dict[str, str], tmp_path: Path, workers: str
) -> None:
    suite = tmp_path / "many.yaml"
    suite.write_text(
        "suite: many\nrequests:\n  - name: 'echo {{ i }}'\n    path: /api/echo\n"
        "    query: { i: '{{ i }}' }\n    matrix: { i: ["
        + ", ".join(map(str, range(3000)))
        + "] }\n"
    )
    targets = write_targets(
        tmp_path / "t.yaml", demo_targets["old"], demo_targets["new"], run="rate_limit: 200"
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flamingo", "run", "--targets", str(targets), "--suites",
         str(suite), "--out", str(out), "--no-progress", "--workers", workers],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    results = out / "results.jsonl"
    while time.monotonic() < deadline and not (results.exists() and results.stat().st_size):
        time.sleep(0.1)
    time.sleep(0.5)
    senders = _children(proc.pid)
    assert len(senders) == (2 if workers == "2" else 0)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(_gone(pid) for pid in senders):
        time.sleep(0.05)
    assert all(_gone(pid) for pid in senders), "a send worker outlived the run"
    gate = json.loads((out / "gate.json").read_text())
    assert gate["verdict"] == "error"
    assert "SIGTERM" in gate["reason"]
    rows = read_results(out)
    assert 0 < len(rows) < 3000
    assert gate["totals"]["cases"] == len(rows)


NOISE_PLANTED = {
    "learned-noise::user 42",  # (b) $.role
    "learned-noise::page /static/page.html",  # (a) cache-control
    "learned-noise::not found",  # (c) the 404 page
}


@WORKERS
def test_noise_is_learned_with_no_ignore_rules_and_accepted_differences_count_as_match(
    demo_targets: dict[str, str], tmp_path: Path, capsys: Any, workers: str
) -> None:
    suite = SUITES / "learned-noise.yaml"
    compare = yaml.safe_load(suite.read_text())["compare"]
    assert compare == {"noise": "auto", "noise_threshold": 0.2}  # no ignore rules, no masks
    accepted = tmp_path / "accepted.yaml"
    accepted.write_text((REPO / "accepted.yaml").read_text() + STALE_ENTRY)
    targets = write_targets(tmp_path / "t.yaml", demo_targets["old"], demo_targets["new"])
    targets.write_text(targets.read_text() + "accepted: accepted.yaml\n")
    out = tmp_path / "out"
    args = ("--targets", targets, "--suites", suite, "--out", out, "--workers", workers)
    code = run_cli("run", *args)
    assert code == 1
    rows = read_results(out)
    diffs = {i: r["differences"] for i, r in rows.items() if r["outcome"] != "match"}
    # The Date header changes once a second: a case whose three requests straddle a second
    # boundary may show it (README, "Noise learning"); nothing else may differ.
    assert set(diffs) >= NOISE_PLANTED
    for case_id, differences in diffs.items():
        if case_id not in NOISE_PLANTED:
            assert [d["location"] for d in differences] == ["date"], differences
    assert [d["location"] for d in diffs["learned-noise::user 42"]] == ["$.role"]
    echo = rows["learned-noise::echo a"]
    assert {d["location"] for d in echo["noise"]} >= {"$.now", "$.request_id", "x-request-id"}
    assert {a["location"] for a in echo["accepted"]} == {"server", "via"}
    assert echo["old_replica"]["status"] == 200

    gate = json.loads((out / "gate.json").read_text())
    learned = {(n["template"], n["location"]) for n in gate["noise"]}
    assert ("learned-noise::echo {{ q }}", "$.request_id") in learned
    assert ("learned-noise::create item", "location") in learned
    assert gate["totals"]["accepted"] == gate["totals"]["match"] > 0
    assert [s["source"].rsplit(":", 1)[1] for s in gate["accepted"]["stale"]] == ["14"]
    signatures = {s["description"]: s for s in gate["signatures"]}
    assert signatures["$.role: string changed"]["example_change"] == '"user" → "admin"'
    assert rows["learned-noise::user 42"]["signatures"] == [
        signatures["$.role: string changed"]["id"]
    ]

    capsys.readouterr()
    assert run_cli("noise", "--suggest", out) == 0
    suggested = capsys.readouterr().out
    assert "x-request-id" in suggested and "$.request_id" in suggested
    rules = yaml.safe_load(suggested)["compare"]
    assert "$.now" in rules["ignore_json_paths"]


STALE_ENTRY = """\
  - template: "nothing::*"
    location: status
    reason: an entry that matches nothing is reported as stale
"""
