"""End to end: shards run as separate processes against the demo targets, merged by
``flamingo merge``, equal one unsharded run; the Kubernetes manifests and the GitHub Actions
workflow in docs/ run exactly as written (their commands, their environment), N processes at once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hdrh.histogram import HdrHistogram

from flamingo import __version__
from flamingo.cli import main
from flamingo.judge import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the `flamingo` console script of this environment
TIMEOUT = 120
#: `flamingo run` in a checkout made by `demo_repo` (the working folder).
RUN = ("run", "--targets", "targets.yaml", "--suites", "suites", "--no-progress")


def flamingo_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("FLAMINGO_SHARD", "JOB_COMPLETION_INDEX")
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def flamingo(
    *args: str | Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (a subprocess would spend ~2 s importing): argv, environment and
    working folder in; exit code, stdout and stderr out."""
    argv = [str(a) for a in args]
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(env or flamingo_env())
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def parallel(
    commands: Sequence[tuple[list[str], Mapping[str, str], Path]],
) -> list[subprocess.CompletedProcess[str]]:
    """Start every command at once (N machines), wait for all."""
    procs = [
        subprocess.Popen(
            cmd, env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for cmd, env, cwd in commands
    ]
    done = []
    for (cmd, _, _), proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=TIMEOUT)
        done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return done


def demo_repo(root: Path, demo: dict[str, str]) -> Path:
    """A checkout of the repository's example: suites/, accepted.yaml and targets.yaml pointed at
    the running demo targets (noise learning, accepted differences and planted diffs included)."""
    root.mkdir(parents=True, exist_ok=True)
    # suites/edge probes real proxies through flamingo's recording origin: the demo leaves it out.
    shutil.copytree(REPO / "suites", root / "suites", ignore=shutil.ignore_patterns("edge"))
    # The bundled noise suite without what only timing decides: a `Date` header or a
    # millisecond `updated_at` differs between two old answers only when they straddle a tick,
    # so whether it is learned varies from run to run (sharded or not). Ids and request ids
    # differ every time: those are learned every time, and are what this compares.
    noisy = root / "suites" / "learned-noise.yaml"
    suite = yaml.safe_load(noisy.read_text())
    suite["requests"] = [r for r in suite["requests"] if not r["name"].startswith("item")]
    suite["compare"]["ignore_headers"] = ["date"]
    noisy.write_text(yaml.safe_dump(suite, sort_keys=False))
    shutil.copy(REPO / "accepted.yaml", root / "accepted.yaml")
    # Without min_duration: a stage that repeats its selection for a while sends as many rounds
    # as fit in the time - another count in every run, sharded or not.
    text = "".join(
        line
        for line in (REPO / "targets.yaml").read_text().splitlines(keepends=True)
        if "min_duration:" not in line
    )
    text = text.replace("http://127.0.0.1:18081", demo["old"]).replace(
        "http://127.0.0.1:18082", demo["new"]
    )
    (root / "targets.yaml").write_text(text)
    return root


def gate(out: Path) -> dict[str, Any]:
    return json.loads((out / "gate.json").read_text())


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def junit_counts(out: Path) -> dict[str, str]:
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    return {k: suite.attrib[k] for k in ("tests", "failures", "errors")}


def stable_noise(doc: dict[str, Any]) -> set[tuple[str, str, str, int, int]]:
    """The noise rows that do not depend on timing: locations that differed in every sample
    (ids). A clock value (``Date``, a seconds timestamp) differs between two simultaneous old
    responses only when they straddle a tick - in an unsharded run as much as in a shard - so its
    count varies from run to run; the per-case outcomes, compared exactly, show the decisions."""
    return {
        (n["template"], n["kind"], n["location"], n["differing"], n["samples"])
        for n in doc["noise"]
        if n["differing"] == n["samples"]
    }


LATENCY_CHECKS = ("max_latency",)  # ratio and regression checks: measured anew by every run
EXIT = {"pass": 0, "fail": 1, "error": 3}


def assert_same_run(merged: Path, whole: Path) -> None:
    """What must be equal between a merge of shards and one unsharded run over the same cases.

    Latency is measured anew by every run (loopback jitter on a shared box), so two runs' latency
    checks can disagree: their names and thresholds must be equal, and the verdict must be when
    no latency check failed in either. The merge's own latency is checked against its shards'
    samples instead (`assert_latency_is_the_shards_histogram`)."""
    m, w = gate(merged), gate(whole)
    assert m["totals"] == w["totals"]
    latency_failed = False
    for cm, cw in zip(m["checks"], w["checks"], strict=True):
        assert (cm["name"], cm["threshold"]) == (cw["name"], cw["threshold"])
        if cm["name"].startswith(LATENCY_CHECKS):
            latency_failed = latency_failed or not (cm["passed"] and cw["passed"])
        else:
            assert (cm["observed"], cm["passed"]) == (cw["observed"], cw["passed"]), cm["name"]
    if not latency_failed:
        assert m["verdict"] == w["verdict"]
    assert {(s["id"], s["count"], s["share"]) for s in m["signatures"]} == {
        (s["id"], s["count"], s["share"]) for s in w["signatures"]
    }
    assert stable_noise(m) == stable_noise(w)
    assert m.get("accepted") == w.get("accepted")
    assert m.get("fallback", {}).get("count") == w.get("fallback", {}).get("count")
    by_id = {r["id"]: r["outcome"] for r in rows(merged)}
    assert by_id == {r["id"]: r["outcome"] for r in rows(whole)}
    assert len(rows(merged)) == len(by_id)
    assert junit_counts(merged) == junit_counts(whole)
    assert m["latency"]["old"]["count"] == w["latency"]["old"]["count"]
    assert m["latency"]["new"]["count"] == w["latency"]["new"]["count"]

    # report.html, signatures.json (what --baseline and `flamingo compare` read), evidence
    def clusters(run: Path) -> set[tuple[str, int]]:
        data = json.loads((run / "signatures.json").read_text())
        return {(e["id"], e["count"]) for e in data["signatures"]}

    assert clusters(merged) == clusters(whole)
    assert m["signature_count"] == w["signature_count"]
    assert m["evidence"]["cases"] == w["evidence"]["cases"]
    html = (merged / "report.html").read_text()
    assert f"class='verdict {m['verdict']}'" in html
    assert "no evidence kept for this example" not in html  # each example's side by side
    for case_id, outcome in by_id.items():
        if outcome != "match":
            assert case_id in html


def assert_latency_is_the_shards_histogram(merged: Path, shard_dirs: Sequence[Path]) -> None:
    """The merged percentiles are those of one histogram of every shard's samples (the results
    rows keep each latency to the µs the histogram records), within its precision."""
    for target in ("old", "new"):
        histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        samples = [
            r[target]["latency_ms"]
            for d in shard_dirs
            for r in rows(d)
            if r[target].get("status") is not None
        ]
        for ms in samples:
            histogram.record_value(max(LOWEST_US, round(ms * 1000)))
        got = gate(merged)["latency"][target]
        assert got["count"] == len(samples)
        for p in (50, 90, 99):
            expected = histogram.get_value_at_percentile(p) / 1000
            assert got[f"p{p}"] == pytest.approx(expected, rel=2e-3, abs=0.002), (target, p)
        assert got["max"] == pytest.approx(max(samples), abs=0.001)


# --------------------------------------------------------------------------------------------
# flamingo merge
# --------------------------------------------------------------------------------------------


def test_merged_shards_equal_an_unsharded_run(demo_targets: dict[str, str], tmp_path: Path) -> None:
    repo = demo_repo(tmp_path / "repo", demo_targets)
    base = [*RUN, "--workers", "1"]
    env = flamingo_env()
    whole = flamingo(*base, "--out", tmp_path / "whole", cwd=repo)
    assert whole.returncode == 1, whole.stderr  # the demo's planted differences fail the gate
    shard_runs = parallel(
        [
            (
                [
                    sys.executable,
                    "-m",
                    "flamingo",
                    *base,
                    "--shard",
                    f"{k}/3",
                    "--out",
                    str(tmp_path / f"s{k}"),
                ],
                env,
                repo,
            )
            for k in (1, 2, 3)
        ]
    )
    assert all(r.returncode in (0, 1) for r in shard_runs), [r.stderr for r in shard_runs]
    shards = [tmp_path / f"s{k}" for k in (1, 2, 3)]
    for k, shard in enumerate(shards, start=1):
        run = gate(shard)["run"]
        assert run["shard"] == f"{k}/3"
        assert run["selection"] == {"k": None, "tags": []}
        assert run["flamingo_version"] == __version__
        assert run["config_hash"] == gate(tmp_path / "whole")["run"]["config_hash"]
    # A learned-noise template is never split: each lies in exactly one shard.
    noise_shards: dict[str, set[int]] = {}
    for k, shard in enumerate(shards, start=1):
        for n in gate(shard)["noise"]:
            noise_shards.setdefault(n["template"], set()).add(k)
    assert noise_shards and all(len(ks) == 1 for ks in noise_shards.values())

    merged = flamingo("merge", *shards, "--out", tmp_path / "merged", cwd=repo)
    assert merged.returncode == 1, merged.stderr
    assert_same_run(tmp_path / "merged", tmp_path / "whole")
    assert_latency_is_the_shards_histogram(tmp_path / "merged", shards)
    doc = gate(tmp_path / "merged")
    assert doc["run"]["shard"] is None
    assert [m["shard"] for m in doc["merged_from"]] == ["1/3", "2/3", "3/3"]
    assert "verdict: fail" in merged.stdout + merged.stderr or doc["verdict"] == "fail"

    # Another stage at merge time: the gate is evaluated again from the merged records.
    canary = flamingo("merge", *shards, "--out", tmp_path / "canary", "--stage", "canary")
    whole_canary = flamingo(
        *base, "--stage", "canary", "--out", tmp_path / "whole-canary", cwd=repo
    )
    assert whole_canary.returncode in (0, 1), whole_canary.stderr
    assert canary.returncode == EXIT[gate(tmp_path / "canary")["verdict"]]
    assert gate(tmp_path / "canary")["stage"] == "canary"
    assert_same_run(tmp_path / "canary", tmp_path / "whole-canary")

    # A merged run is a run: it merges alone (another stage, the same outcomes).
    again = flamingo("merge", tmp_path / "merged", "--out", tmp_path / "again")
    assert again.returncode == 1, again.stderr
    assert gate(tmp_path / "again")["totals"] == doc["totals"]


def small_shards(
    tmp_path: Path, demo: dict[str, str], n: int = 3, **env: str
) -> tuple[Path, list[Path]]:
    repo = tmp_path / "repo"
    if not repo.exists():
        demo_repo(repo, demo)
    base = [*RUN, "-k", "api", "--workers", "1"]
    outs = [tmp_path / f"s{k}" for k in range(1, n + 1)]
    done = parallel(
        [
            (
                [sys.executable, "-m", "flamingo", *base, "--shard", f"{k}/{n}", "--out", str(out)],
                flamingo_env(**env),
                repo,
            )
            for k, out in enumerate(outs, 1)
        ]
    )
    assert all(r.returncode in (0, 1) for r in done), [r.stderr for r in done]
    return repo, outs


def refused(*args: str | Path) -> str:
    result = flamingo("merge", *args)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr.strip()


def test_merge_refuses_what_is_not_one_run(demo_targets: dict[str, str], tmp_path: Path) -> None:
    repo, (s1, s2, s3) = small_shards(tmp_path, demo_targets)
    out = tmp_path / "merged"
    assert refused(s1, s3, "--out", out) == "cannot merge: shard 2/3 is missing (given: 1/3, 3/3)"
    assert not (out / "gate.json").exists()
    copy = tmp_path / "copy"
    shutil.copytree(s2, copy)
    assert (
        refused(s1, s2, copy, s3, "--out", out)
        == f"cannot merge: shard 2/3 was given twice: {s2} and {copy}"
    )
    # a shard from another config (a gate threshold changed)
    other = tmp_path / "other"
    shutil.copytree(repo, other)
    targets = other / "targets.yaml"
    targets.write_text(
        targets.read_text().replace("max_error_rate: 0.001", "max_error_rate: 0.002")
    )
    run = flamingo(*RUN, "-k", "api", "--shard", "3/3", "--out", tmp_path / "o3", cwd=other)
    assert run.returncode in (0, 1), run.stderr
    assert "ran with different config" in refused(s1, s2, tmp_path / "o3", "--out", out)
    # another selection
    run = flamingo(*RUN, "-k", "user", "--shard", "3/3", "--out", tmp_path / "k3", cwd=repo)
    assert "selected different cases" in refused(s1, s2, tmp_path / "k3", "--out", out)
    # another flamingo version
    version = tmp_path / "version"
    shutil.copytree(s3, version)
    partial = json.loads((version / "partial.json").read_text())
    partial["run"]["flamingo_version"] = "9.9.9"
    (version / "partial.json").write_text(json.dumps(partial))
    assert "were made by different flamingo versions ('9.9.9' vs" in refused(
        s1, s2, version, "--out", out
    )
    # a truncated results.jsonl, a corrupt partial.json, a folder that is no run, the output
    # folder among the inputs, an unknown stage
    cut = tmp_path / "cut"
    shutil.copytree(s3, cut)
    lines = (cut / "results.jsonl").read_text().splitlines(keepends=True)
    (cut / "results.jsonl").write_text("".join(lines[:-1]))
    assert f"{cut}: results.jsonl holds {len(lines) - 1} rows" in refused(s1, s2, cut, "--out", out)
    broken = tmp_path / "broken"
    shutil.copytree(s3, broken)
    (broken / "partial.json").write_text('{"format": 1, "run": ')
    assert refused(s1, s2, broken, "--out", out).startswith(
        f"{broken}/partial.json: not valid JSON"
    )
    histogram = tmp_path / "histogram"
    shutil.copytree(s3, histogram)
    partial = json.loads((histogram / "partial.json").read_text())
    partial["latency"]["old"]["histogram"] = "HISTFAAAAGN4nO3IuQ2AMBBE0fXBIZMBIiKjEDIq"
    (histogram / "partial.json").write_text(json.dumps(partial))
    assert "latency.old.histogram: cannot decode" in refused(s1, s2, histogram, "--out", out)
    assert "neither a run folder nor a folder of run folders" in refused(
        tmp_path / "repo", "--out", out
    )
    assert "is one of the runs being merged" in refused(s1, s2, s3, "--out", s3)
    group = tmp_path / "group"  # a folder of shard folders, and --out the folder itself
    for shard in (s1, s2, s3):
        shutil.copytree(shard, group / shard.name)
    assert "is one of the runs being merged" in refused(group, "--out", group)
    assert "--stage: unknown stage 'nope' (stages: canary, quarter, global)" in refused(
        s1, s2, s3, "--out", out, "--stage", "nope"
    )
    assert not (out / "gate.json").exists()

    # A shard that could not judge (here: cut short by --max-requests) is no missing shard: the
    # merge keeps what it judged and fails closed, naming it.
    cut = flamingo(
        *RUN,
        "-k",
        "api",
        "--shard",
        "3/3",
        "--max-requests",
        "3",
        "--out",
        tmp_path / "short",
        cwd=repo,
    )
    assert cut.returncode == 3, cut.stderr
    merged = flamingo("merge", s1, s2, tmp_path / "short", "--out", out)
    assert merged.returncode == 3, merged.stderr
    doc = gate(out)
    assert doc["verdict"] == "error"
    assert doc["reason"] == f"shard 3/3 ({tmp_path / 'short'}): --max-requests 3 reached"
    judged = [gate(d)["totals"]["cases"] for d in (s1, s2, tmp_path / "short")]
    assert doc["totals"]["cases"] == sum(judged)  # what was judged is kept


def test_shard_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """FLAMINGO_SHARD=K/N, and Kubernetes' 0-based JOB_COMPLETION_INDEX with --shards N, select
    exactly what --shard K/N selects (nothing is sent: `flamingo list`)."""
    args = ["list", "--targets", str(REPO / "targets.yaml"), "--suites", str(REPO / "suites")]

    def listed(*more: str, **env: str) -> tuple[int, list[str], str]:
        for name in ("FLAMINGO_SHARD", "JOB_COMPLETION_INDEX"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main([*args, *more])
        out, err = capsys.readouterr()
        return code, out.splitlines(), err.strip()

    every = listed()[1]
    parts = [listed("--shard", f"{k}/3")[1] for k in (1, 2, 3)]
    assert sorted(line for part in parts for line in part) == sorted(every)
    assert all(parts)
    for k in (1, 2, 3):
        assert listed(FLAMINGO_SHARD=f"{k}/3")[1] == parts[k - 1]
        assert listed("--shards", "3", JOB_COMPLETION_INDEX=str(k - 1))[1] == parts[k - 1]
    assert listed("--shard", "1/3", FLAMINGO_SHARD="2/3")[1] == parts[0]  # the option wins
    assert listed("--shards", "3", JOB_COMPLETION_INDEX="3") == (
        2,
        [],
        "--shards 3: JOB_COMPLETION_INDEX='3' is not an index from 0 to 2",
    )
    assert listed(FLAMINGO_SHARD="0/3") == (
        2,
        [],
        "FLAMINGO_SHARD: expected K/N with 1 <= K <= N, got '0/3'",
    )


# --------------------------------------------------------------------------------------------
# docs/kubernetes: the Indexed Job and the gate Job, run as their pods would run
# --------------------------------------------------------------------------------------------


def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in ("flamingo-shards.yaml", "flamingo-gate.yaml"):
        docs += [
            d for d in yaml.safe_load_all((REPO / "docs" / "kubernetes" / name).read_text()) if d
        ]
    return docs


def pod_command(
    container: dict[str, Any], mounts: dict[str, Path], env: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The container's command and environment, its volume mount paths as local folders."""
    command = [*container.get("command", []), *container.get("args", [])]
    for mount in container.get("volumeMounts", []):
        command = [part.replace(mount["mountPath"], str(mounts[mount["name"]])) for part in command]
    values = dict(env)
    for item in container.get("env", []):
        if "value" in item:
            values[item["name"]] = str(item["value"])
    return command, values


def test_kubernetes_indexed_job_and_gate_job(demo_targets: dict[str, str], tmp_path: Path) -> None:
    docs = k8s_docs()
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    shards_job = by_kind[("Job", "flamingo-shards")]
    gate_job = by_kind[("Job", "flamingo-gate")]
    assert shards_job["spec"]["completionMode"] == "Indexed"
    n = shards_job["spec"]["completions"]
    assert ("PersistentVolumeClaim", "flamingo-reports") in by_kind

    # ConfigMap volumes become folders holding their data; the claim becomes one shared folder.
    folders: dict[str, Path] = {}
    for volume in (
        shards_job["spec"]["template"]["spec"]["volumes"]
        + gate_job["spec"]["template"]["spec"]["volumes"]
    ):
        folder = folders.setdefault(volume["name"], tmp_path / volume["name"])
        folder.mkdir(exist_ok=True)
        if "configMap" in volume:
            for key, text in by_kind[("ConfigMap", volume["configMap"]["name"])]["data"].items():
                (folder / key).write_text(text)
    pod = shards_job["spec"]["template"]["spec"]["containers"][0]
    secret_env = {"NEW_TOKEN": "k8s-test-token"}  # the secretKeyRef
    urls = {"OLD_URL": demo_targets["old"], "NEW_URL": demo_targets["new"]}  # staging -> demo
    commands = []
    for index in range(n):
        command, env = pod_command(pod, folders, flamingo_env(**secret_env))
        assert env["SHARDS"] == str(n), "SHARDS must equal completions"
        env.update(urls, JOB_COMPLETION_INDEX=str(index))
        commands.append((command, env, tmp_path))
    for result in parallel(commands):
        assert result.returncode == 0, result.stderr  # a shard completes whatever its verdict

    run_id = {e["name"]: e.get("value") for e in pod["env"]}["RUN_ID"]
    shard_dirs = sorted((folders["reports"] / run_id).iterdir())
    assert [d.name for d in shard_dirs] == [f"shard-{i}" for i in range(n)]
    assert [gate(d)["run"]["shard"] for d in shard_dirs] == [f"{i + 1}/{n}" for i in range(n)]

    gate_pod = gate_job["spec"]["template"]["spec"]["containers"][0]
    command, gate_env = pod_command(gate_pod, folders, flamingo_env())
    merged = subprocess.run(
        command, env=gate_env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT
    )
    merged_dir = folders["reports"] / run_id / "merged"
    stage = {e["name"]: e.get("value") for e in gate_pod["env"]}["STAGE"]

    # The same cases, unsharded, with the same config and stage.
    env = flamingo_env(**secret_env, **urls)
    whole = flamingo(
        "run",
        "--targets",
        folders["config"] / "targets.yaml",
        "--suites",
        folders["suites"],
        "--stage",
        stage,
        "--no-progress",
        "--out",
        tmp_path / "whole",
        env=env,
    )
    assert whole.returncode in (0, 1), whole.stderr
    assert merged.returncode == EXIT[gate(merged_dir)["verdict"]], (merged.stdout, merged.stderr)
    assert_same_run(merged_dir, tmp_path / "whole")
    assert gate(merged_dir)["verdict"] == "fail"  # the planted role change of user 42
    assert gate(merged_dir)["totals"]["diff"] >= 1

    # The gate again into the same folder: the earlier merge is not taken for a shard.
    shared = folders["reports"] / run_id
    again = flamingo("merge", shared, "--out", merged_dir, "--stage", stage)
    assert again.returncode == merged.returncode, again.stderr

    # A pod that never ran: the gate Job fails with the missing shard named.
    shutil.rmtree(shared / "shard-2")
    missing = flamingo("merge", shared, "--out", merged_dir, "--stage", stage)
    assert missing.returncode == 2
    assert f"shard 3/{n} is missing" in missing.stderr


# --------------------------------------------------------------------------------------------
# docs/github-actions: the matrix workflow, its steps run as the runner would run them
# --------------------------------------------------------------------------------------------

_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def expand(text: str, context: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr == "!cancelled()":
            return "true"
        scope, _, name = expr.partition(".")
        return str(context[scope][name])

    return _EXPR.sub(value, text)


def run_job(
    job: dict[str, Any],
    workflow: dict[str, Any],
    context: dict[str, Any],
    workdir: Path,
    artifacts: Path,
) -> list[subprocess.CompletedProcess[str]]:
    """The steps of one job, in order, as GitHub's runner runs them: ``run:`` steps with
    ``bash -e``, the artifact actions as copies; after a failed step only steps with
    ``if: ${{ !cancelled() }}`` run. Checkout, setup-python and installing flamingo are done
    already (the checkout is ``workdir``, flamingo is this environment's). The run steps'
    results, in order."""
    env = flamingo_env(**{k: str(v) for k, v in workflow.get("env", {}).items()})
    results: list[subprocess.CompletedProcess[str]] = []
    failed = False
    for step in job["steps"]:
        if failed and "!cancelled()" not in str(step.get("if", "")):
            continue
        uses = step.get("uses", "")
        if (
            uses.startswith(("actions/checkout", "actions/setup-python"))
            or step.get("name") == "Install flamingo"
        ):
            continue
        with_ = {k: expand(str(v), context) for k, v in step.get("with", {}).items()}
        if uses.startswith("actions/upload-artifact"):
            shutil.copytree(workdir / with_["path"], artifacts / with_["name"])
        elif uses.startswith("actions/download-artifact"):
            pattern = re.compile(with_["pattern"].replace("*", ".*"))
            for artifact in sorted(artifacts.iterdir()):
                if pattern.fullmatch(artifact.name):
                    shutil.copytree(artifact, workdir / with_["path"] / artifact.name)
        else:
            assert "run" in step and not uses, step
            step_env = dict(
                env, **{k: expand(str(v), context) for k, v in step.get("env", {}).items()}
            )
            result = subprocess.run(
                ["bash", "-e", "-c", expand(step["run"], context)],
                env=step_env,
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            results.append(result)
            failed = failed or result.returncode != 0
    return results


def test_github_actions_matrix_and_gate_job(demo_targets: dict[str, str], tmp_path: Path) -> None:
    workflow = yaml.safe_load(
        (REPO / "docs" / "github-actions" / "flamingo-sharded.yml").read_text()
    )
    shard_job, gate_job = workflow["jobs"]["shard"], workflow["jobs"]["gate"]
    assert gate_job["needs"] == "shard"
    matrix = shard_job["strategy"]["matrix"]["shard"]
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    secrets = {"NEW_TOKEN": "gha-test-token"}

    # Every matrix job on its own runner (a fresh checkout each), all at once.
    import concurrent.futures

    def shard(k: int) -> list[subprocess.CompletedProcess[str]]:
        checkout = demo_repo(tmp_path / f"runner-{k}", demo_targets)
        context: dict[str, Any] = {
            "matrix": {"shard": k},
            "strategy": {"job-total": len(matrix), "job-index": k - 1},
            "secrets": secrets,
            "env": workflow["env"],
        }
        return run_job(shard_job, workflow, context, checkout, artifacts)

    with concurrent.futures.ThreadPoolExecutor(len(matrix)) as pool:
        shard_results = list(pool.map(shard, matrix))
    for results in shard_results:
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert sorted(p.name for p in artifacts.iterdir()) == [f"flamingo-shard-{k}" for k in matrix]

    checkout = demo_repo(tmp_path / "runner-gate", demo_targets)
    context: dict[str, Any] = {"secrets": secrets, "env": workflow["env"]}
    merged = run_job(gate_job, workflow, context, checkout, artifacts)[-1]
    assert "flamingo merge" in merged.args[-1]

    # The same cases, unsharded.
    stage = workflow["env"]["STAGE"]
    whole = flamingo(
        "run",
        "--targets",
        "targets.yaml",
        "--suites",
        "suites",
        "--stage",
        stage,
        "--no-progress",
        "--out",
        tmp_path / "whole",
        cwd=checkout,
        env=flamingo_env(**secrets),
    )
    assert whole.returncode in (0, 1), whole.stderr
    assert merged.returncode == EXIT[gate(artifacts / "flamingo-gate")["verdict"]], merged.stderr
    assert_same_run(artifacts / "flamingo-gate", tmp_path / "whole")
