"""``flamingo serve`` end to end: the controllers' manifests in docs/rollout/ against a real
server, on 127.0.0.1, over the demo targets.

Each manifest is loaded as YAML; the URL, method, headers, body and conditions a controller
would use are taken from it (only the host is moved to the loopback server, and ``{{args.*}}``
filled in), and exactly those requests are made. The answers are read as each controller reads
them: Argo Rollouts evaluates successCondition/failureCondition on the JSON (the expressions
here are Argo's, evaluated with simpleeval after spelling ``&&`` as ``and``); Argo's job
provider and GitHub Actions go by the command's exit code; Flagger by the status code
(<= 202 goes on); a Kayenta reader by judgeResult.score.

Stages of the scenario (tests/test_serve_e2e.py's targets file): ``canary`` passes (4 of 5
cases match, 0.5 needed), ``global`` fails (1.0 needed), ``slow`` is still running
(``min_duration: 600s``) while the readings are taken.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from faultserver import flamingo_command
from simpleeval import simple_eval

REPO = Path(__file__).resolve().parents[1]
ROLLOUT = REPO / "docs" / "rollout"
TOKEN = "e2e-token-0123456789"

SUITE = """\
suite: gate
defaults: { method: GET }
compare:
  ignore_headers: [date, server, via, x-proxy-request-id, x-request-id, vary, etag]
  ignore_json_paths: ["$.now", "$.request_id", "$.items[*].updated_at"]
requests:
  - name: "file {{ path }}"
    path: "{{ path }}"
    matrix: { path: [/static/hello.txt, /static/data.json] }
  - name: items
    path: /api/items
  - name: user 7
    path: /api/user/7
  - name: user 42
    path: /api/user/42
"""


def write_config(directory: Path, old: str, new: str, stages: str) -> Path:
    (directory / "suites").mkdir(parents=True, exist_ok=True)
    (directory / "suites" / "gate.yaml").write_text(SUITE)
    targets = directory / "targets.yaml"
    targets.write_text(
        "targets:\n"
        f"  old: {{ base_url: {old} }}\n"
        f"  new: {{ base_url: {new} }}\n"
        "run: { concurrency: 10 }\n"
        "gates:\n  stages:\n" + stages
    )
    return targets


STAGES = """\
    canary: { min_match_rate: 0.5 }
    global: { min_match_rate: 1.0 }
    slow: { min_match_rate: 0.5, min_duration: 600s }
"""


# --------------------------------------------------------------------------------------------
# A real `flamingo serve`
# --------------------------------------------------------------------------------------------


@dataclass
class Serve:
    process: subprocess.Popen[str]
    url: str
    data: Path
    log: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


def start_serve(targets: Path, suites: Path, data: Path, *, token: str = TOKEN) -> Serve:
    log = data.parent / f"{data.name}.stderr"
    env = {**os.environ, "FLAMINGO_TOKEN": token}
    command = flamingo_command(
        "serve", "--targets", targets, "--suites", suites, "--listen", "127.0.0.1:0", "--data", data
    )
    with log.open("w") as stderr:  # the child has its own copy
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
    assert process.stdout is not None
    line = process.stdout.readline()  # bounded: the server prints it once it listens, or dies
    match = re.search(r"listening on (http://\S+)", line)
    if match is None:
        process.kill()
        raise AssertionError(f"flamingo serve did not start: {line!r} {log.read_text()}")
    return Serve(process, match.group(1), data, log)


def wait_done(client: httpx.Client, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/runs/{run_id}").json()
        if view["status"] == "done":
            return view
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


@dataclass
class Scenario:
    serve: Serve
    client: httpx.Client
    targets: Path
    directory: Path
    runs: dict[str, str] = field(default_factory=dict)  # stage -> run id
    flagger_run_answers: dict[str, int] = field(default_factory=dict)  # hook name -> status


def flagger_request(
    hook: dict[str, Any], base: str, *, phase: str
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """What Flagger POSTs for ``hook``: the URL moved to ``base``, Basic credentials from the
    URL's userinfo (Go's client does that), the webhook payload."""
    parts = urlsplit(hook["url"])
    url = base + parts.path
    headers = {"Content-Type": "application/json"}
    if parts.password is not None:
        password = parts.password.replace("FLAMINGO_TOKEN", TOKEN)
        pair = f"{parts.username}:{password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    body = {
        "name": "proxy",
        "namespace": "edge",
        "phase": phase,
        "metadata": hook.get("metadata", {}),
    }
    return url, headers, body


def flagger_hooks() -> dict[str, dict[str, Any]]:
    canary = yaml.safe_load((ROLLOUT / "flagger-canary.yaml").read_text())
    assert canary["kind"] == "Canary"
    return {hook["name"]: hook for hook in canary["spec"]["analysis"]["webhooks"]}


@pytest.fixture(scope="module")
def scenario(
    demo_targets: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    directory = tmp_path_factory.mktemp("serve")
    targets = write_config(directory, demo_targets["old"], demo_targets["new"], STAGES)
    serve = start_serve(targets, directory / "suites", directory / "data")
    client = httpx.Client(
        base_url=serve.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    state = Scenario(serve, client, targets, directory)
    try:
        # The passing and the failing stage are run by Flagger's own run: "true" hooks, exactly
        # as the Canary declares them (they answer once the run is done).
        hooks = flagger_hooks()
        for name in ("flamingo-canary-run", "flamingo-global-gate"):
            url, headers, body = flagger_request(hooks[name], serve.url, phase="Progressing")
            answer = httpx.post(url, headers=headers, json=body, timeout=300)
            state.flagger_run_answers[name] = answer.status_code
        for stage in ("canary", "global"):
            state.runs[stage] = client.get(f"/stages/{stage}/gate").json()["id"]
        # The running stage: a minute of rounds, read while it goes.
        answer = client.post("/runs", json={"stage": "slow"})
        assert answer.status_code == 202
        state.runs["slow"] = answer.json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/runs/{state.runs['slow']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield state
    finally:
        client.close()
        serve.stop()


# --------------------------------------------------------------------------------------------
# Argo Rollouts
# --------------------------------------------------------------------------------------------


def argo_templates() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((ROLLOUT / "argo-analysis-template.yaml").read_text()))
    assert all(doc["kind"] == "AnalysisTemplate" for doc in docs)
    return {doc["metadata"]["name"]: doc for doc in docs}


def argo_condition(expression: str, result: Any) -> bool:
    """An Argo (expr-lang) condition over ``result``: && || ! spelled for simpleeval."""
    python = expression.replace("&&", " and ").replace("||", " or ")
    python = re.sub(r"!(?!=)", " not ", python)
    python = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", python))
    return bool(simple_eval(python, names={"result": result}))


def argo_web_measure(metric: dict[str, Any], base: str, args: dict[str, str]) -> str:
    """One measurement of a web metric, read as Argo reads it: Successful, Failed,
    Inconclusive, or Error (a non-2xx answer)."""

    def fill(text: str) -> str:
        return re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", lambda m: args[m.group(1)], text)

    web = metric["provider"]["web"]
    url = base + urlsplit(fill(web["url"])).path
    headers = {h["key"]: fill(h["value"]) for h in web.get("headers", [])}
    answer = httpx.request(
        web.get("method", "GET"), url, headers=headers, timeout=web["timeoutSeconds"]
    )
    if not 200 <= answer.status_code < 300:
        return "Error"
    assert web["jsonPath"] == "{$}"
    result = answer.json()
    if argo_condition(metric["successCondition"], result):
        return "Successful"
    if argo_condition(metric["failureCondition"], result):
        return "Failed"
    return "Inconclusive"


def test_argo_web_stage_gate(scenario: Scenario) -> None:
    template = argo_templates()["flamingo-stage-gate"]
    (metric,) = template["spec"]["metrics"]
    assert metric["initialDelay"] and metric["interval"]
    base = scenario.serve.url
    args = {"flamingo-token": TOKEN}
    assert argo_web_measure(metric, base, {**args, "stage": "canary"}) == "Successful"
    assert argo_web_measure(metric, base, {**args, "stage": "global"}) == "Failed"
    # The running stage has no finished run yet: an Error measurement, never Successful.
    assert argo_web_measure(metric, base, {**args, "stage": "slow"}) == "Error"
    assert argo_web_measure(metric, base, {"flamingo-token": "wrong", "stage": "canary"}) == "Error"


def test_argo_web_run_gate(scenario: Scenario) -> None:
    (metric,) = argo_templates()["flamingo-run-gate"]["spec"]["metrics"]
    base, runs = scenario.serve.url, scenario.runs
    args = {"flamingo-token": TOKEN}
    assert argo_web_measure(metric, base, {**args, "run-id": runs["canary"]}) == "Successful"
    assert argo_web_measure(metric, base, {**args, "run-id": runs["global"]}) == "Failed"
    assert argo_web_measure(metric, base, {**args, "run-id": runs["slow"]}) == "Inconclusive"


def job_command(stage: str, directory: Path) -> list[str]:
    (metric,) = argo_templates()["flamingo-run-job"]["spec"]["metrics"]
    (container,) = metric["provider"]["job"]["spec"]["template"]["spec"]["containers"]
    command = [part.replace("{{args.stage}}", stage) for part in container["command"]]
    # The container's mounts, on this machine: /config -> the scenario's folder.
    command = [
        part.replace("/config", str(directory)).replace("/reports", str(directory / stage))
        for part in command
    ]
    assert command[:2] == ["flamingo", "run"]
    return flamingo_command(*command[1:])


def test_argo_job_provider(scenario: Scenario) -> None:
    directory = scenario.directory
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    passing = subprocess.Popen(job_command("canary", directory), **quiet)  # type: ignore[call-overload]
    failing = subprocess.Popen(job_command("global", directory), **quiet)  # type: ignore[call-overload]
    assert passing.wait(120) == 0  # Job succeeded -> Successful
    assert failing.wait(120) == 1  # Job failed -> Failed
    results = directory / "slow" / "run" / "results.jsonl"
    running = subprocess.Popen(
        job_command("slow", directory), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sending(running, results)
        assert running.poll() is None  # Job still running -> the measurement is Running
    finally:
        running.send_signal(signal.SIGTERM)
        assert running.wait(30) == 3  # stopped: error, never a pass


def sending(process: subprocess.Popen[bytes], results: Path, timeout: float = 60) -> None:
    """Wait until the run judges cases (results.jsonl grows): it is past start-up."""
    deadline = time.monotonic() + timeout
    while not (results.exists() and results.stat().st_size > 0):
        assert process.poll() is None, process.returncode
        assert time.monotonic() < deadline, "the run never started sending"
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Flagger
# --------------------------------------------------------------------------------------------


def flagger_goes_on(status: int) -> bool:
    return status <= 202  # Flagger: any answer above 202 is a failed webhook


def test_flagger_webhooks(scenario: Scenario) -> None:
    hooks = flagger_hooks()
    # Run by their own run: "true" hooks (in the fixture): canary passed, global failed.
    assert flagger_goes_on(scenario.flagger_run_answers["flamingo-canary-run"])
    assert not flagger_goes_on(scenario.flagger_run_answers["flamingo-global-gate"])
    base = scenario.serve.url

    def post(name: str, *, stage: str | None = None, **metadata: str) -> httpx.Response:
        hook = dict(hooks[name])
        if stage is not None:
            hook["url"] = re.sub(r"/flagger/[^/]+", f"/flagger/{stage}", hook["url"])
        if metadata:
            hook["metadata"] = {**hook.get("metadata", {}), **metadata}
        url, headers, body = flagger_request(hook, base, phase="Progressing")
        return httpx.post(url, headers=headers, json=body, timeout=60)

    assert hooks["flamingo-canary-gate"]["type"] == "rollout"
    assert flagger_goes_on(post("flamingo-canary-gate").status_code)  # canary passed
    rollback = post("flamingo-rollback")
    assert hooks["flamingo-rollback"]["type"] == "rollback"
    assert not flagger_goes_on(rollback.status_code)  # passed: no rollback
    # The failing stage, through the same hooks.
    failed = post("flamingo-canary-gate", stage="global")
    assert failed.status_code == 412 and "min_match_rate" in failed.json()["reason"]
    assert flagger_goes_on(post("flamingo-rollback", stage="global").status_code)  # roll back
    # The running stage: no finished run, so no gate passes and nothing is rolled back ...
    assert not flagger_goes_on(post("flamingo-canary-gate", stage="slow").status_code)
    assert not flagger_goes_on(post("flamingo-rollback", stage="slow").status_code)
    # ... and a run: "true" hook joins the run in flight (the wait shortened for the test).
    waiting = post("flamingo-canary-run", stage="slow", timeout="1s")
    assert waiting.status_code == 412 and "still running" in waiting.json()["reason"]
    assert waiting.json()["run"] == scenario.runs["slow"]


def test_flagger_without_credentials_is_refused(scenario: Scenario) -> None:
    hook = dict(flagger_hooks()["flamingo-canary-gate"])
    hook["url"] = hook["url"].replace("FLAMINGO_TOKEN", "not-the-token")
    url, headers, body = flagger_request(hook, scenario.serve.url, phase="Progressing")
    assert httpx.post(url, headers=headers, json=body).status_code == 401


# --------------------------------------------------------------------------------------------
# Kayenta reader, GitHub Actions
# --------------------------------------------------------------------------------------------


def kayenta_reading(gate: dict[str, Any], marginal: float = 75, passing: float = 95) -> str:
    """Spinnaker's reading of a canary judge result with score thresholds."""
    if not gate.get("complete"):
        return "RUNNING"
    score = gate["judgeResult"]["score"]["score"]
    return "PASS" if score >= passing else "MARGINAL" if score >= marginal else "FAIL"


def test_kayenta_reader(scenario: Scenario) -> None:
    def read(stage: str) -> str:
        return kayenta_reading(scenario.client.get(f"/runs/{scenario.runs[stage]}/gate").json())

    assert read("canary") == "PASS"
    assert read("global") == "FAIL"
    assert read("slow") == "RUNNING"
    gate = scenario.client.get(f"/runs/{scenario.runs['global']}/gate").json()
    by_name = {r["name"]: r["classification"] for r in gate["judgeResult"]["results"]}
    assert by_name["min_match_rate"] == "Low"


def last_checkout(tmp_path: Path) -> Path:
    return max(tmp_path.glob("checkout*"), key=lambda p: int(p.name.removeprefix("checkout")))


def test_github_actions_gate(demo_targets: dict[str, str], tmp_path: Path) -> None:
    workflow = yaml.safe_load((ROLLOUT / "github-actions-gate.yml").read_text())
    jobs = workflow["jobs"]
    assert jobs["deploy"]["needs"] == "gate"  # deploy runs only when the gate job succeeded
    (step,) = [s for s in jobs["gate"]["steps"] if "flamingo run" in s.get("run", "")]
    env = {**os.environ, **{k: "x" for k in step.get("env", {})}}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"

    def gate(stages: str) -> subprocess.Popen[bytes]:
        checkout = tmp_path / f"checkout{len(list(tmp_path.iterdir()))}"
        write_config(checkout, demo_targets["old"], demo_targets["new"], stages)
        argv = shlex.split(step["run"])
        return subprocess.Popen(
            argv, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    passing = gate("    canary: { min_match_rate: 0.5 }\n")
    failing = gate("    canary: { min_match_rate: 1.0 }\n")
    assert passing.wait(120) == 0  # deploy runs
    assert failing.wait(120) == 1  # deploy skipped
    running = gate("    canary: { min_match_rate: 0.5, min_duration: 60s }\n")
    try:
        sending(running, last_checkout(tmp_path) / "reports" / "gate" / "results.jsonl")
        assert running.poll() is None  # the deploy job waits for it
    finally:
        running.send_signal(signal.SIGTERM)
        assert running.wait(30) == 3


# --------------------------------------------------------------------------------------------
# The server itself: restart, refusals
# --------------------------------------------------------------------------------------------


def test_a_restart_keeps_runs_and_finishes_an_interrupted_one_as_error(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    targets = write_config(tmp_path, demo_targets["old"], demo_targets["new"], STAGES)
    data = tmp_path / "data"
    first = start_serve(targets, tmp_path / "suites", data)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=first.url, headers=auth, timeout=60) as client:
        done = client.post("/runs", json={"stage": "canary"}).json()["id"]
        wait_done(client, done)
        slow = client.post("/runs", json={"stage": "slow"}).json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/runs/{slow}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the slow run never started"
            time.sleep(0.05)
        before = client.get(f"/runs/{done}/gate").json()
    stopped = first.stop()
    assert stopped == 0, (stopped, first.log.read_text())
    assert "Traceback" not in first.log.read_text()
    # The run in flight was stopped, not abandoned at exit: the engine finished it as error and
    # kept every case it had judged; the server stored that document, with its reason.
    written = json.loads((data / "runs" / slow / "gate.json").read_text())
    judged = (data / "runs" / slow / "results.jsonl").read_text().splitlines()
    assert written["verdict"] == "error" and written["totals"]["cases"] == len(judged)
    second = start_serve(targets, tmp_path / "suites", data)
    try:
        with httpx.Client(base_url=second.url, headers=auth, timeout=60) as client:
            assert client.get(f"/runs/{done}/gate").json() == before
            interrupted = client.get(f"/runs/{slow}/gate").json()
            assert interrupted["complete"] is True and interrupted["verdict"] == "error"
            assert "stopped" in interrupted["reason"]
            assert interrupted["totals"] == written["totals"]
            assert client.get("/stages/slow/gate").json()["id"] == slow
    finally:
        second.stop()


def test_hostile_requests_to_a_real_server(scenario: Scenario) -> None:
    client, url = scenario.client, scenario.serve.url
    counts = client.get("/metrics").text
    for body in (b"{", b"[]", b'{"stage": "prod"}', b'{"k": "(("}', b"x" * 200_000):
        assert 400 <= client.post("/runs", content=body).status_code < 500
    assert client.get("/runs/..%2F..%2Fetc%2Fpasswd/gate").status_code == 404
    assert client.get("/stages/..%2Fcanary/gate").status_code == 404
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer x"}).status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200
    # A second run of the stage in flight is refused; nothing was queued by any of the above.
    busy = client.post("/runs", json={"stage": "slow"})
    assert busy.status_code == 409 and busy.json()["id"] == scenario.runs["slow"]
    assert _runs_total(client.get("/metrics").text) == _runs_total(counts)


def _runs_total(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("flamingo_runs_total{")
    )


def test_gate_documents_are_json_with_the_contract_keys(scenario: Scenario) -> None:
    gate = scenario.client.get(f"/runs/{scenario.runs['canary']}/gate").json()
    assert {
        "verdict",
        "stage",
        "totals",
        "checks",
        "started_at",
        "finished_at",
        "complete",
        "judgeResult",
    } <= set(gate)
    assert gate["totals"]["cases"] == 5
    json.dumps(gate, allow_nan=False)


def serve_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    *, stages: str = STAGES, token: str | None = TOKEN, data: Path | None = None,
) -> tuple[int, str]:  # fmt: skip
    """``flamingo serve`` through the real CLI, in this process: for refusals, which end before
    anything listens."""
    from flamingo.cli import main

    targets = write_config(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", stages)
    if token is None:
        monkeypatch.delenv("FLAMINGO_TOKEN", raising=False)
    else:
        monkeypatch.setenv("FLAMINGO_TOKEN", token)
    argv = ["serve", "--targets", str(targets), "--suites", str(tmp_path / "suites")]
    argv += ["--listen", "127.0.0.1:0", "--data", str(data or tmp_path / "d")]
    code = main(argv)
    return code, capsys.readouterr().err


def test_serve_refuses_to_start_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for token in (None, "  ", "\n"):
        code, err = serve_in_process(tmp_path, monkeypatch, capsys, token=token)
        assert code == 2
        assert "FLAMINGO_TOKEN" in err and "Traceback" not in err


def test_serve_bad_targets_is_file_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stages = "    canary: { min_match_rate: 2 }\n"
    code, err = serve_in_process(tmp_path, monkeypatch, capsys, stages=stages)
    assert code == 2
    assert re.search(r"targets\.yaml:\d+: ", err), err


def test_serve_refuses_what_it_cannot_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "flamingo.sqlite3").write_bytes(b"this is not a database" * 100)
    code, err = serve_in_process(tmp_path, monkeypatch, capsys, data=data)
    assert code == 2 and "--data:" in err and "Traceback" not in err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, err = serve_in_process(tmp_path, monkeypatch, capsys, data=blocker / "sub")
    assert code == 2 and "--data:" in err
