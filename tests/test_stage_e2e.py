"""Stage rules end to end: `flamingo run` against the demo targets on 127.0.0.1, clean and with
planted regressions in the new proxy (``--fallback``: it hands /api/ to its legacy path;
``--leak-bytes``: it keeps memory after every request). The fallback and resource gates must pass
the clean demo and catch each planted regression; a metrics endpoint that cannot be scraped is
an ``error`` verdict (exit 3), never a pass; ``min_duration`` sends the selection in rounds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultserver import closed_port_url
from test_serve_e2e import SUITE

from flamingo.cli import main
from flamingo.demo import METRICS_PATH, start_demo_process

GATE = """\
gates:
  stages:
    canary:
      min_match_rate: 0.5
      min_duration: 1s
      max_fallback_rate: 0.1
      max_latency_regression: { p: 0.001, effect: 3.0 }
      resources:
        demo_proxy_retained_bytes: { max_new: 1000000 }
        demo_proxy_upstream_requests_total: { max_ratio_new_to_old: 1.5 }
"""


def write(tmp_path: Path, urls: dict[str, str], *, new_metrics: str | None = None) -> Path:
    (tmp_path / "suites").mkdir(exist_ok=True)
    (tmp_path / "suites" / "gate.yaml").write_text(SUITE)
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n"
        f"  old: {{ base_url: {urls['old']}, metrics_url: {urls['old']}{METRICS_PATH} }}\n"
        f"  new:\n    base_url: {urls['new']}\n"
        f"    metrics_url: {new_metrics or urls['new'] + METRICS_PATH}\n"
        '    fallback: { header: X-Fallback, value: "1" }\n'
        "run: { concurrency: 10 }\n" + GATE
    )
    return targets


def run(tmp_path: Path, targets: Path) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "out"
    selection = ["--targets", str(targets), "--suites", str(tmp_path / "suites")]
    code = main(["run", *selection, "--stage", "canary", "--out", str(out), "--no-progress"])
    return code, json.loads((out / "gate.json").read_text())


def checks(gate: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in gate["checks"]}


@pytest.fixture(scope="module")
def planted() -> Iterator[dict[str, str]]:
    with start_demo_process(fallback_paths=("/api/",), leak_bytes=64 * 1024) as demo:
        yield dict(demo.urls)


def test_the_clean_demo_passes_every_stage_rule(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    code, gate = run(tmp_path, write(tmp_path, demo_targets))
    assert code == 0, gate
    found = checks(gate)
    assert found["max_fallback_rate"]["observed"] == 0
    assert found["resources.demo_proxy_retained_bytes.max_new"]["observed"] == 0
    assert found["resources.demo_proxy_upstream_requests_total.max_ratio_new_to_old"]["passed"]
    assert found["max_latency_regression"]["passed"]
    assert "p=" in found["max_latency_regression"]["detail"]
    assert found["min_duration"]["observed"] >= 1
    assert gate["rounds"] >= 2 and gate["totals"]["cases"] == 5 * gate["rounds"]
    assert gate["fallback"] == {
        "count": 0,
        "judged": gate["totals"]["cases"],
        "rate": 0.0,
        "examples": [],
    }
    rows = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    ids = [json.loads(row)["id"] for row in rows]
    assert len(ids) == len(set(ids)) and "gate::user 42@round2" in ids
    assert gate["judgeResult"]["score"]["score"] == 100


def test_planted_fallbacks_and_leak_are_caught(planted: dict[str, str], tmp_path: Path) -> None:
    code, gate = run(tmp_path, write(tmp_path, planted))
    assert code == 1
    found = checks(gate)
    fallback = found["max_fallback_rate"]
    assert not fallback["passed"] and fallback["observed"] == 0.6  # 3 of 5 cases are under /api/
    assert gate["fallback"]["count"] == 3 * gate["rounds"]
    assert gate["fallback"]["examples"][0].startswith("gate::")
    leak = found["resources.demo_proxy_retained_bytes.max_new"]
    assert not leak["passed"] and leak["observed"] >= 5 * 64 * 1024
    assert found["resources.demo_proxy_upstream_requests_total.max_ratio_new_to_old"]["passed"]
    # A fallback response is still compared: the planted role change on user 42 (a fallback
    # here) is still a diff, and the marker header itself is not one.
    rows = [json.loads(r) for r in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    user42 = next(r for r in rows if r["id"] == "gate::user 42")
    assert [d["location"] for d in user42["differences"]] == ["$.role"]
    assert all(d["location"] != "x-fallback" for r in rows for d in r["differences"])
    assert gate["resources"]["metrics"]["demo_proxy_retained_bytes"]["new"]["after"] > 0
    assert gate["judgeResult"]["score"]["score"] == 0


def test_a_metrics_endpoint_that_cannot_be_scraped_is_an_error(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    for broken in (closed_port_url() + "/metrics", demo_targets["new"] + "/static/hello.txt"):
        shutil.rmtree(tmp_path / "out", ignore_errors=True)  # --out must be new or empty
        code, gate = run(tmp_path, write(tmp_path, demo_targets, new_metrics=broken))
        assert code == 3, gate
        assert gate["verdict"] == "error"
        assert "targets.new.metrics_url" in gate["reason"]
        assert gate["totals"]["cases"] >= 5  # the cases were still sent, judged and kept
