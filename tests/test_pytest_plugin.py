"""The pytest plugin end to end: suites collected as items and sent to the real demo targets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_plugin_collects_cases_and_reports_differences(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "targets.yaml").write_text(
        f"targets:\n  old: {{base_url: '{demo_targets['old']}'}}\n"
        f"  new: {{base_url: '{demo_targets['new']}'}}\n"
    )
    suite = tmp_path / "users.yaml"
    suite.write_text(
        "suite: users\ntags: [api]\nrequests:\n"
        "  - name: 'user {{ id }}'\n    path: '/api/user/{{ id }}'\n"
        "    matrix: { id: [7, 42] }\n"
        "compare:\n  ignore_headers: [date, server, via, x-request-id, x-proxy-request-id]\n"
        "  ignore_json_paths: ['$.now', '$.request_id']\n"
    )
    (tmp_path / "not_a_suite.yaml").write_text("just: data\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
         "--flamingo-targets", "targets.yaml", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "1 failed, 1 passed" in out
    assert "PASSED users.yaml::user 7" in out
    assert "FAILED users.yaml::user 42" in out
    assert "users::user 42: diff" in out
    assert "$.role: 'user' → 'admin'" in out


def test_plugin_is_inert_without_its_option(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("suite: s\nrequests:\n  - {name: a, path: /a}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 5, proc.stdout  # no tests collected: nothing was sent
