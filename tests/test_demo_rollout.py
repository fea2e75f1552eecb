"""``flamingo demo --rollout`` end to end: the bundled stages against the demo targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flamingo.cli import main


def test_the_rollout_walks_the_stages_and_stops_at_global(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--rollout", "--strict", "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1  # --strict: the failing stage's exit code (without it the demo exits 0)
    gates = {
        stage: json.loads((tmp_path / stage / "gate.json").read_text())
        for stage in ("canary", "quarter", "global")
    }
    assert [gates[s]["verdict"] for s in ("canary", "quarter", "global")] == [
        "pass",
        "pass",
        "fail",
    ]
    for gate in gates.values():
        assert gate["rounds"] >= 1 and gate["checks"]
        assert gate["fallback"]["count"] > 0  # the demo's /api/time hand-offs, counted
    assert "resources" in gates["quarter"] and gates["quarter"]["resources"]["scrape_error"] is None
    assert "rollout stopped at stage global" in out
    assert "min_match_rate" in out.split("rollout stopped at stage global")[1]
