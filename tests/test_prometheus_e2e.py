"""A real Prometheus (Debian's ``prometheus``, installed by scripts/test.sh) scrapes a real
``flamingo serve`` on 127.0.0.1: the proof that GET /metrics is valid exposition a Prometheus
server accepts, behind the bearer token, and that the numbers arrive.

Bounded: Prometheus starts with a one-target config and a 1 s scrape interval, the test waits
(at most 60 s) for one successful scrape through Prometheus' own HTTP API, queries one series,
and stops it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serve_e2e import TOKEN, start_serve, wait_done, write_config

STAGES = "    canary: { min_match_rate: 0.5 }\n"


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        pytest.fail(
            "prometheus is not installed: `bash scripts/test.sh` installs Debian's prometheus"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_real_prometheus_scrapes_flamingo_serve(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    binary = prometheus_binary()
    targets = write_config(tmp_path, demo_targets["old"], demo_targets["new"], STAGES)
    serve = start_serve(targets, tmp_path / "suites", tmp_path / "data")
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=serve.url, headers=auth, timeout=60) as client:
            wait_done(client, client.post("/runs", json={"stage": "canary"}).json()["id"])
        listen = serve.url.removeprefix("http://")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: { scrape_interval: 1s, scrape_timeout: 1s }\n"
            "scrape_configs:\n"
            "  - job_name: flamingo\n"
            f"    authorization: {{ type: Bearer, credentials: {TOKEN} }}\n"
            f"    static_configs: [{{ targets: ['{listen}'] }}]\n"
        )
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
        )
        api = f"http://127.0.0.1:{port}/api/v1"
        target = wait_for_scrape(api, prometheus, tmp_path / "prometheus.log")
        assert target["health"] == "up", target
        assert target["lastError"] == ""
        value = query(api, 'flamingo_runs_total{stage="canary",verdict="pass"}')
        assert value == 1.0
        assert query(api, 'flamingo_stage_score{stage="canary"}') == 100.0
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(20)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait(10)
        serve.stop()


def wait_for_scrape(api: str, process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            targets = httpx.get(f"{api}/targets", timeout=2).json()["data"]["activeTargets"]
        except (httpx.HTTPError, ValueError, KeyError):
            targets = []
        for target in targets:
            if target.get("lastScrape", "").startswith("0001") or not target.get("health"):
                continue
            if target["health"] != "unknown":
                return dict(target)
        time.sleep(0.25)
    raise AssertionError(f"prometheus scraped nothing in 60s:\n{log.read_text()[-2000:]}")


def query(api: str, expression: str) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = httpx.get(f"{api}/query", params={"query": expression}, timeout=5).json()
        series = result["data"]["result"]
        if series:
            return float(series[0]["value"][1])
        time.sleep(0.25)
    raise AssertionError(f"no series for {expression}")
