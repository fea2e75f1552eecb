"""The gate server's HTTP layer, storage and authentication (flamingo.server), on 127.0.0.1.

The server here is the real aiohttp application on a real socket; only the run function behind
the executor is a stand-in (a gate document per request), so these tests pin down the routes,
status codes, hostile input, restart recovery and /metrics without sending cases. The runs
through the real engine, the controllers' manifests and a real Prometheus are in
tests/test_serve_e2e.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from flamingo.server import parse_listen
from flamingo.server.app import MAX_BODY, build_app
from flamingo.server.executor import INTERRUPTED, Executor, gate_without_run
from flamingo.server.store import RunRecord, Store

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STAGES = ("canary", "global")


def fake_gate(verdict: str, stage: str | None) -> dict[str, Any]:
    score = 100 if verdict == "pass" else 0
    return {
        "verdict": verdict,
        "stage": stage,
        "complete": True,
        "totals": {
            "cases": 3,
            "match": 3 if verdict == "pass" else 2,
            "diff": 0 if verdict == "pass" else 1,
            "fail": 0,
            "error": 0,
        },
        "checks": [
            {
                "name": "min_match_rate",
                "threshold": 1.0,
                "observed": 1.0,
                "passed": verdict == "pass",
            }
        ],
        **({} if verdict == "pass" else {"reason": "1 of 3 cases differ"}),
        "judgeResult": {"score": {"score": score}},
        "fallback": {"count": 1, "rate": 0.25},
    }


class FakeRuns:
    """The run function: the verdict is the request's ``k`` ("pass", "fail", "boom"); "hold"
    waits until `release` (a run still running)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []

    def __call__(
        self, record: RunRecord, out_dir: Path, progress: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        self.started.append(record.id)
        k = record.request.get("k", "pass")
        progress({"cases": 1, "total": 3, "totals": {"cases": 1, "match": 1}})
        if k == "hold":
            assert self.release.wait(30)
            k = "pass"
        if k == "boom":
            raise RuntimeError("the engine blew up\nsecond line")
        return fake_gate(k, None if record.stage == "default" else record.stage)


class Server:
    def __init__(self, data: Path, runs: FakeRuns) -> None:
        self.data = data
        self.runs = runs
        self.store = Store(data)
        self.executor = Executor(self.store, data, runs)
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = build_app(self.store, self.executor, STAGES, TOKEN)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> Server:
        self.executor.start(
            self.store.recover(lambda r: gate_without_run(r, "stopped", complete=True))
        )
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        self.runs.release.set()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.halt()
        assert self.executor.stop(10)  # the run thread ended before its store is closed
        self.store.close()

    def halt(self) -> None:
        """Stop serving and close the loop (the executor and store are the caller's)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", FakeRuns()).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        yield c


def wait_done(client: httpx.Client, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout  # generous: the box may be busy with other suites
    while time.monotonic() < deadline:
        view = client.get(f"/runs/{run_id}").json()
        if view["status"] == "done":
            return view
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


# --------------------------------------------------------------------------------------------


BAD_AUTH: list[dict[str, Any]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": TOKEN},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": "Bearer \u00e9\u00e9".encode()},
    {"Authorization": "Basic " + base64.b64encode(b"flamingo:wrong").decode()},
    {"Authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()},  # no ':'
    {"Authorization": "Basic !!notbase64"},
]


def test_healthz_needs_no_token_and_everything_else_does(server: Server) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.head("/healthz").status_code == 200
        for method, path in [
            ("POST", "/runs"),
            ("GET", "/runs/" + "0" * 32),
            ("GET", "/stages/canary/gate"),
            ("POST", "/flagger/canary"),
            ("POST", "/flagger/canary/rollback"),
            ("GET", "/metrics"),
            ("GET", "/nothing-here"),
            ("POST", "/healthz"),
        ]:
            for headers in BAD_AUTH:
                answer = anonymous.request(method, path, headers=headers, content=b"{}")
                assert answer.status_code == 401, (method, path, headers)
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert server.runs.started == []  # nothing ran
    # The token as a URL's password (what Flagger's Go client sends as Basic) is the token too.
    with httpx.Client(base_url=server.url, auth=("flamingo", TOKEN)) as flagger:
        assert flagger.post("/flagger/canary", json={}).status_code == 412  # authenticated


def test_a_run_from_post_to_gate(server: Server, client: httpx.Client) -> None:
    answer = client.post(
        "/runs", json={"stage": "canary", "k": "pass", "tags": ["smoke"], "shard": "1/2"}
    )
    assert answer.status_code == 202
    body = answer.json()
    assert body["url"] == f"/runs/{body['id']}" == answer.headers["Location"]
    view = wait_done(client, body["id"])
    assert view["verdict"] == "pass"
    assert view["request"] == {"k": "pass", "tags": ["smoke"], "shard": "1/2"}
    gate = client.get(f"/runs/{body['id']}/gate").json()
    assert gate["complete"] is True and gate["verdict"] == "pass" and gate["id"] == body["id"]
    assert client.get("/stages/canary/gate").json() == gate
    assert client.get("/stages/global/gate").status_code == 404  # no finished run


def test_default_stage_and_empty_body(server: Server, client: httpx.Client) -> None:
    answer = client.post("/runs", content=b"")
    assert answer.status_code == 202
    wait_done(client, answer.json()["id"])
    assert client.get("/stages/default/gate").json()["stage"] is None


def test_running_gate_is_incomplete_and_a_second_run_of_the_stage_is_refused(
    server: Server, client: httpx.Client
) -> None:
    first = client.post("/runs", json={"stage": "canary", "k": "hold"}).json()
    gate = client.get(f"/runs/{first['id']}/gate").json()
    assert gate["complete"] is False
    assert gate["verdict"] != "pass"
    assert gate["judgeResult"]["score"]["score"] == 0
    busy = client.post("/runs", json={"stage": "canary"})
    assert busy.status_code == 409
    assert busy.json()["id"] == first["id"]
    other = client.post("/runs", json={"stage": "global"})  # another stage queues behind it
    assert other.status_code == 202
    assert client.get(f"/runs/{other.json()['id']}").json()["status"] == "queued"
    server.runs.release.set()
    assert wait_done(client, first["id"])["verdict"] == "pass"
    assert wait_done(client, other.json()["id"])["verdict"] == "pass"
    assert server.runs.started == [first["id"], other.json()["id"]]  # one after the other


def test_a_run_that_raises_is_an_error_not_a_crash(server: Server, client: httpx.Client) -> None:
    run_id = client.post("/runs", json={"k": "boom"}).json()["id"]
    assert wait_done(client, run_id)["verdict"] == "error"
    gate = client.get(f"/runs/{run_id}/gate").json()
    assert gate["reason"] == "the run could not run: the engine blew up"
    assert (server.data / "runs" / run_id / "server-error.log").exists()
    again = client.post("/runs", json={"k": "pass"})  # the thread lives on
    assert wait_done(client, again.json()["id"])["verdict"] == "pass"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'"canary"', 400, "JSON object"),
        (b'{"stage": "prod"}', 400, "unknown stage"),
        (b'{"stage": 3}', 400, "unknown stage"),
        (b'{"stage": "../../etc"}', 400, "unknown stage"),
        (b'{"colour": "red"}', 400, "unknown key 'colour'"),
        (b'{"k": "a and (b"}', 400, "k:"),
        (b'{"k": 5}', 400, "k:"),
        (b'{"tags": "smoke"}', 400, "tags:"),
        (b'{"tags": [""]}', 400, "tags:"),
        (b'{"shard": "3/2"}', 400, "shard:"),
        (b'{"shard": 1}', 400, "shard:"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"{" * 100_000, 413, "Too Large"),
        (b"x" * (MAX_BODY + 1), 413, "Too Large"),
    ],
)
def test_hostile_run_requests_are_refused_and_nothing_runs(
    server: Server, client: httpx.Client, body: bytes, status: int, message: str
) -> None:
    answer = client.post("/runs", content=body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert server.runs.started == []
    assert server.store.counts() == []


@pytest.mark.parametrize(
    "path",
    [
        "/runs/../../etc/passwd",
        "/runs/..%2F..%2Fetc%2Fpasswd",
        "/runs/%2e%2e",
        "/runs/" + "A" * 32,
        "/runs/" + "0" * 31,
        "/runs/" + "0" * 32 + "/gate",
        "/runs/' OR 1=1 --",
        "/stages/prod/gate",
        "/stages/..%2Fdefault/gate",
    ],
)
def test_odd_ids_and_stages_are_404(client: httpx.Client, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 404, (path, answer.text)
    assert answer.json()["error"]


def test_flagger_hooks_read_the_latest_finished_run(server: Server, client: httpx.Client) -> None:
    hook = {"name": "podinfo", "namespace": "test", "phase": "Progressing", "metadata": {}}
    nothing = client.post("/flagger/canary", json=hook)
    assert nothing.status_code == 412
    assert client.post("/flagger/canary/rollback", json=hook).status_code == 412
    wait_done(client, client.post("/runs", json={"stage": "canary", "k": "fail"}).json()["id"])
    failed = client.post("/flagger/canary", json=hook)
    assert failed.status_code == 412
    assert "\n" not in failed.json()["reason"] and "fail" in failed.json()["reason"]
    assert client.post("/flagger/canary/rollback", json=hook).status_code == 200
    wait_done(client, client.post("/runs", json={"stage": "canary", "k": "pass"}).json()["id"])
    assert client.post("/flagger/canary", json=hook).status_code == 200
    assert client.post("/flagger/canary/rollback", json=hook).status_code == 412
    assert client.post("/flagger/prod", json=hook).status_code == 404
    assert client.post("/flagger/canary", json={"metadata": ["x"]}).status_code == 400
    assert client.post("/flagger/canary", json={"metadata": {"run": True}}).status_code == 400
    assert client.post("/flagger/canary", content=b"{").status_code == 400


def test_flagger_run_true_starts_a_run_and_answers_when_done(
    server: Server, client: httpx.Client
) -> None:
    hook = {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "metadata": {"run": "true", "timeout": "60s"},
    }
    answer = client.post("/flagger/global", json=hook)
    assert answer.status_code == 200
    assert len(server.runs.started) == 1
    # A run still going when the wait ends: 412, and the next call waits for the same run.
    held = client.post("/runs", json={"stage": "canary", "k": "hold"}).json()["id"]
    short = {**hook, "metadata": {"run": "true", "timeout": "200ms"}}
    late = client.post("/flagger/canary", json=short)
    assert late.status_code == 412
    assert "still running" in late.json()["reason"]
    assert (
        client.post(
            "/flagger/canary", json={**hook, "metadata": {"run": "true", "timeout": "soon"}}
        ).status_code
        == 400
    )
    server.runs.release.set()
    assert (
        client.post(
            "/flagger/canary", json=short | {"metadata": {"run": "true", "timeout": "20s"}}
        ).status_code
        == 200
    )
    assert server.runs.started.count(held) == 1


def test_runs_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Server(data, FakeRuns()).start()
    with httpx.Client(base_url=first.url, headers=AUTH) as c:
        done = c.post("/runs", json={"stage": "canary", "k": "fail"}).json()["id"]
        wait_done(c, done)
        held = c.post("/runs", json={"stage": "global", "k": "hold"}).json()["id"]
        queued = c.post("/runs", json={"stage": "default"}).json()["id"]
    # Stop without letting the held run finish (a crash, as far as the store knows).
    asyncio.run_coroutine_threadsafe(first.runner.cleanup(), first.loop).result(10)
    first.halt()
    first.store.close()

    second_runs = FakeRuns()
    second = Server(data, second_runs).start()
    try:
        with httpx.Client(base_url=second.url, headers=AUTH) as c:
            assert c.get(f"/runs/{done}/gate").json()["verdict"] == "fail"
            assert c.get("/stages/canary/gate").json()["id"] == done
            interrupted = c.get(f"/runs/{held}/gate").json()
            assert interrupted["verdict"] == "error" and interrupted["complete"] is True
            assert wait_done(c, queued)["verdict"] == "pass"  # the queued run ran after the restart
            assert second_runs.started == [queued]
    finally:
        first.runs.release.set()
        first.executor.stop(10)  # its run ends on a closed store: recovery above finished it
        second.stop()


def test_metrics_are_prometheus_text_with_the_flamingo_prefix(
    server: Server, client: httpx.Client
) -> None:
    wait_done(client, client.post("/runs", json={"stage": "canary", "k": "fail"}).json()["id"])
    wait_done(client, client.post("/runs", json={"stage": "canary", "k": "pass"}).json()["id"])
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }
    assert all(name.startswith("flamingo_") for name, _ in samples)
    assert samples[("flamingo_runs_total", (("stage", "canary"), ("verdict", "pass")))] == 1
    assert samples[("flamingo_runs_total", (("stage", "canary"), ("verdict", "fail")))] == 1
    assert samples[("flamingo_cases_total", (("outcome", "diff"), ("stage", "canary")))] == 1
    assert samples[("flamingo_stage_verdict", (("stage", "canary"), ("verdict", "pass")))] == 1
    assert samples[("flamingo_stage_verdict", (("stage", "canary"), ("verdict", "fail")))] == 0
    assert samples[("flamingo_stage_score", (("stage", "canary"),))] == 100
    assert samples[("flamingo_stage_fallback_rate", (("stage", "canary"),))] == 0.25


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "host:", "host:http", "host:70000", ""])
def test_parse_listen_refuses(text: str) -> None:
    from flamingo.errors import InputError

    with pytest.raises(InputError):
        parse_listen(text)


def test_an_empty_token_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with contextlib.closing(store), pytest.raises(ValueError):
        build_app(store, Executor(store, tmp_path, FakeRuns()), STAGES, "")


def test_concurrent_posts_of_one_stage_start_exactly_one_run(
    server: Server, client: httpx.Client
) -> None:
    import concurrent.futures

    def post(_: int) -> int:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
            return c.post("/runs", json={"stage": "canary", "k": "hold"}).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = sorted(pool.map(post, range(32)))
    assert codes.count(202) == 1 and codes.count(409) == 31
    server.runs.release.set()


def test_a_failed_run_never_shows_a_secret(tmp_path: Path) -> None:
    def leaky(
        record: RunRecord, out_dir: Path, progress: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        raise RuntimeError("cannot reach http://svc:hunter2secret@10.0.0.1/")

    store = Store(tmp_path)
    executor = Executor(
        store, tmp_path, leaky, redact=lambda t: t.replace("hunter2secret", "[REDACTED]")
    )
    executor.start([])
    record = store.create("default", {})
    executor.submit(record)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = store.get(record.id)
        if done is not None and done.status == "done":
            break
        time.sleep(0.02)
    assert done is not None and done.gate is not None
    assert "hunter2secret" not in json.dumps(done.gate)
    assert "[REDACTED]" in done.gate["reason"]
    assert "hunter2secret" not in (tmp_path / "runs" / record.id / "server-error.log").read_text()
    executor.stop()
    store.close()


def test_stopping_interrupts_the_run_in_flight_and_waits_for_it(tmp_path: Path) -> None:
    """Stop in order: the run in flight is told to stop and ends as error (with what it judged),
    the thread is joined before the store may close, and a queued run stays queued."""
    interrupted = threading.Event()

    def stoppable(
        record: RunRecord, out_dir: Path, progress: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        progress({"cases": 2, "total": 9})
        assert interrupted.wait(30)
        time.sleep(0.2)  # winding down takes a while: stop() must wait for it
        gate = fake_gate("error", record.stage)
        return {**gate, "reason": "interrupted by SIGTERM"}

    store = Store(tmp_path)
    with contextlib.closing(store):
        executor = Executor(store, tmp_path, stoppable, interrupt=interrupted.set)
        executor.start([])
        flight = store.create("canary", {})
        queued = store.create("global", {})
        executor.submit(flight)
        executor.submit(queued)
        deadline = time.monotonic() + 30
        while executor.progress(flight.id) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert executor.stop(10)
        done = store.get(flight.id)
        assert done is not None and done.status == "done" and done.gate is not None
        assert done.verdict == "error" and done.gate["totals"]["cases"] == 3  # kept
        assert done.gate["reason"] == f"{INTERRUPTED} (interrupted by SIGTERM)"
        later = store.get(queued.id)
        assert later is not None and later.status == "queued"  # run after the restart
    assert executor.stop(1)  # twice is harmless


def test_stopping_an_idle_executor_interrupts_nothing(tmp_path: Path) -> None:
    told: list[int] = []
    store = Store(tmp_path)
    with contextlib.closing(store):
        executor = Executor(store, tmp_path, FakeRuns(), interrupt=lambda: told.append(1))
        executor.start([])
        assert executor.stop(5)
    assert told == []
