"""The evidence store, report.html's data and views - against real servers and real files.

One ``flamingo run`` (tests/hostile.py: real aiohttp targets that differ on purpose and answer
with hostile content) feeds the end-to-end checks; the size bound of the evidence store is tested
with synthetic results through the real `EvidenceWriter`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hostile import EVIL_KEY, EVIL_SCRIPT, NEW_TOKEN, hostile_pair, hostile_run

from flamingo.model import Case, CaseResult, Difference, Response, Target
from flamingo.report.evidence import (
    FILE_NAME,
    REDUCED_BODY_BYTES,
    EvidenceLimits,
    EvidenceWriter,
    curl_command,
    find_evidence,
    read_evidence,
)
from flamingo.report.html import script_json
from flamingo.report.redact import REDACTED, Redactor
from flamingo.report.sidebyside import json_paths_diff, side_by_side, text_diff


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("hostile")
    with hostile_pair() as urls:
        proc = hostile_run(folder, urls)
    assert proc.returncode == 1, proc.stderr  # the gate fails: 124 diffs, 1 error
    yield folder / "out"


def records(out: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read_evidence(out)}


def test_evidence_for_every_non_match_and_no_match(run: Path) -> None:
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    evidence = records(run)
    non_matching = {r["id"] for r in rows if r["outcome"] != "match"}
    assert len(non_matching) == 125
    assert set(evidence) == non_matching  # matches keep no bodies, nothing at all
    gate = json.loads((run / "gate.json").read_text())
    assert gate["evidence"]["cases"] == 125 and gate["evidence"]["omitted"] == 0


def test_evidence_keeps_requests_responses_and_bodies(run: Path) -> None:
    item = records(run)["hostile::item 3"]
    for side in ("old", "new"):
        request = item[side]["request"]
        assert request["method"] == "GET" and request["url"].endswith("/item/3")
        response = item[side]["response"]
        assert response["status"] == 200
        body = json.loads(response["body"]["text"])
        assert body["role"] == ("user" if side == "old" else "admin")
        assert any(name.lower() == "content-type" for name, _ in response["headers"])
    # new's request carried the target's Authorization header: redacted, never the value
    assert item["new"]["request"]["headers"] == [["Authorization", REDACTED]]


def test_large_body_keeps_head_size_and_sha256(run: Path) -> None:
    big = records(run)["hostile::big body"]["new"]["response"]["body"]
    assert big["truncated"] is True and big["bytes"] == 205_000
    assert len(big["text"].encode()) == 64 * 1024
    text = ("0123456789abcdef" * 64 + "\n") * 200
    assert big["sha256"] == hashlib.sha256((text[:-2] + "X\n").encode()).hexdigest()


def test_transport_error_is_evidence_too(run: Path) -> None:
    broken = records(run)["hostile::broken"]
    assert broken["outcome"] == "error"
    assert broken["new"]["response"]["error"] == "reset"
    assert broken["old"]["response"]["status"] == 200


def test_secret_never_in_evidence_and_curl_names_the_variable(run: Path) -> None:
    raw = gzip.decompress((run / FILE_NAME).read_bytes()).decode()
    assert NEW_TOKEN not in raw and NEW_TOKEN[:8] not in raw
    echo = records(run)["hostile::echo auth"]
    # "Bearer ${NEW_TOKEN}" as configured: shown so (or blanked whole)
    auth = json.loads(echo["new"]["response"]["body"]["text"])["auth"]
    assert auth in (REDACTED, f"Bearer {REDACTED}")
    curl = echo["new"]["curl"]
    assert '"${NEW_TOKEN}"' in curl and NEW_TOKEN not in curl
    # The command is a real shell command: with the variable set it sends the real header.
    words = shlex.split(curl.replace('"${NEW_TOKEN}"', "TOKEN"))
    assert words[:2] == ["curl", "-sS"] and "Authorization: Bearer TOKEN" in words
    assert "${" not in echo["old"]["curl"]  # old has no secret


def test_curl_reproduces_the_response(run: Path) -> None:
    """The curl command of a differing case, run by a shell against the live targets, gets the
    response the evidence shows."""
    curl_binary = subprocess.run(["sh", "-c", "command -v curl"], capture_output=True, text=True)
    if curl_binary.returncode != 0:
        pytest.skip("curl is not installed")
    with hostile_pair() as urls:
        record = records(run)["hostile::item 3"]
        for side in ("old", "new"):
            old_base = re.match(r"https?://[^/]+", record[side]["request"]["url"])
            assert old_base is not None
            command = record[side]["curl"].replace(old_base.group(0), urls[side])
            proc = subprocess.run(
                ["sh", "-c", command],
                capture_output=True,
                text=True,
                timeout=20,
                env={**os.environ, "NEW_TOKEN": NEW_TOKEN},
            )
            assert proc.returncode == 0, proc.stderr
            role = "user" if side == "old" else "admin"
            assert f'"role": "{role}"' in proc.stdout


class _Texts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self._in = dict(attrs)
            self.scripts.append((self._in, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)


def test_page_embeds_every_case_as_safe_json(run: Path) -> None:
    page = (run / "report.html").read_text()
    parser = _Texts()
    parser.feed(page)
    kinds = [attrs.get("type") for attrs, _ in parser.scripts]
    # two data blocks and the page's one script: no hostile body opened another element
    assert kinds == ["application/json", "application/json", None]
    data = {attrs.get("id"): json.loads(text) for attrs, text in parser.scripts[:2]}
    assert len(data["cases-data"]) == 125  # every non-matching case, none capped
    evil = [row for row in data["cases-data"] if row[0] == "hostile::evil json"]
    assert EVIL_KEY in evil[0][4]  # the hostile key is data, intact
    assert "<script>window.__pwned" not in page.replace(escape_all(EVIL_SCRIPT), "")
    assert NEW_TOKEN not in page
    assert "http-equiv='Content-Security-Policy'" in page


def escape_all(text: str) -> str:
    from html import escape

    return escape(text)


def test_signatures_json_lists_every_signature_with_first_and_last(run: Path) -> None:
    doc = json.loads((run / "signatures.json").read_text())
    by_description = {s["description"]: s for s in doc["signatures"]}
    role = by_description["$.role: string changed"]
    assert role["count"] == 100
    assert role["first"].startswith("hostile::item ") and role["last"].startswith("hostile::item ")
    status = by_description["status 200 → 500"]
    assert status["count"] == 30
    assert doc["cases"] == 306 - 1  # 300 items + 5 others


# -- the size bound ---------------------------------------------------------------------------


def _result(n: int, size: int) -> CaseResult:
    body_old = os.urandom(size)  # incompressible: the worst case for the bound
    body_new = os.urandom(size)
    case = Case(
        id=f"s::case {n}",
        suite="s",
        name=f"case {n}",
        template="s::case {{ n }}",
        method="GET",
        path=f"/x/{n}",
        headers=(("Cookie", "session=abcdef123456"),),
    )
    old = Response(200, "OK", (("X-A", "1" * 100),), body_old, 1.0)
    new = Response(200, "OK", (("X-A", "2" * 100),), body_new, 1.0)
    diff = Difference("body", "bytes", "a", "b")
    return CaseResult(case, "diff", old, new, (diff,))


def test_store_size_is_bounded(tmp_path: Path) -> None:
    """Incompressible 8 KiB bodies, 400 cases, an 1 MiB budget: full bodies to half the budget,
    4 KiB bodies to the budget, nothing after; the file stays under budget + one record."""
    targets = {"old": Target("old", "http://o"), "new": Target("new", "http://n")}
    limits = EvidenceLimits(body_bytes=8 * 1024, budget=1024 * 1024)
    writer = EvidenceWriter(tmp_path, targets, Redactor(), limits)
    for n in range(400):
        writer.write(_result(n, 8 * 1024), Redactor())
    writer.close()
    summary = writer.summary()
    one_record = 2 * 2 * 8 * 1024 + 4096  # two bodies per side at most, base64-free JSON
    assert summary["bytes"] <= limits.budget + one_record
    assert summary["omitted"] > 0 and summary["reduced"] > 0
    assert summary["cases"] + summary["omitted"] == 400
    kept = list(read_evidence(tmp_path))
    assert len(kept) == summary["cases"]
    full = [r for r in kept if r["new"]["response"]["body"].get("truncated") is None]
    cut = [r for r in kept if r["new"]["response"]["body"].get("truncated")]
    assert full and cut
    assert all(len(r["new"]["response"]["body"]["text"]) <= REDUCED_BODY_BYTES for r in cut)
    # the cookie of the case's request is redacted in the record, named in the curl
    assert kept[0]["old"]["request"]["headers"] == [["Cookie", REDACTED]]
    assert "abcdef123456" not in kept[0]["old"]["curl"]


def test_store_cut_short_is_still_readable(tmp_path: Path) -> None:
    """An interrupted run leaves a gzip stream without its end: what was flushed reads back."""
    targets = {"old": Target("old", "http://o"), "new": Target("new", "http://n")}
    writer = EvidenceWriter(tmp_path, targets, Redactor(), EvidenceLimits(body_bytes=256))
    for n in range(200):
        writer.write(_result(n, 100), Redactor())
    writer.flush()
    data = (tmp_path / FILE_NAME).read_bytes()
    (tmp_path / FILE_NAME).write_bytes(data[: len(data) - 100])  # no trailer, a torn block
    kept = list(read_evidence(tmp_path))
    assert 100 < len(kept) <= 200
    assert find_evidence(tmp_path, {"s::case 3"})["s::case 3"]["id"] == "s::case 3"


def test_curl_quotes_hostile_values() -> None:
    case = Case(
        id="x",
        suite="s",
        name="x",
        template="s::x",
        method="POST",
        path="/a?q=$(touch /tmp/pwned)&b='c'",
        headers=(("X-Evil", '`id`; rm -rf / "$HOME"\x01'),),
        body=b'{"a": "$(id)"}',
    )
    target = Target("new", "http://127.0.0.1:1", headers=(("Authorization", "Bearer tok3n-xyz"),))
    command = curl_command(case, target, {"tok3n-xyz": "TOKEN"}, Redactor(["tok3n-xyz"]))
    assert "tok3n-xyz" not in command and '"${TOKEN}"' in command
    proc = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {command[len('curl ') :]}"],
        capture_output=True,
        text=True,
        env={"TOKEN": "T", "HOME": "/h", "PATH": os.environ["PATH"]},
    )
    args = proc.stdout.splitlines()
    assert "http://127.0.0.1:1/a?q=$(touch /tmp/pwned)&b='c'" in args
    assert 'X-Evil: `id`; rm -rf / "$HOME"\x01' in args
    assert "Authorization: Bearer T" in args
    assert '{"a": "$(id)"}' in args


# -- views ------------------------------------------------------------------------------------


def test_script_json_cannot_close_its_element() -> None:
    hostile = ["</script><script>alert(1)</script>", "<!--", "\u2028", "&amp;"]
    text = script_json(hostile)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == hostile


def test_json_paths_diff_and_text_diff() -> None:
    rows, total = json_paths_diff(
        {"a": 1, "b": [1, 2], "c": {"d": "x"}, "k y": True},
        {"a": 1, "b": [1, 3], "c": {}, "k y": 1},
    )
    assert total == 4
    assert rows == [
        {"path": "$.b[1]", "old": "2", "new": "3"},
        {"path": "$.c", "old": None, "new": "{}"},
        {"path": "$.c.d", "old": '"x"', "new": None},
        {"path": '$["k y"]', "old": "true", "new": "1"},  # True == 1, but not the same JSON
    ]
    lines, total = text_diff("a\nb\nc\n", "a\nB\nc\n")
    assert "-b" in lines and "+B" in lines and total == len(lines)


def test_side_by_side_marks_the_differing_headers() -> None:
    def side(value: str, body: str) -> dict[str, Any]:
        return {
            "request": {"method": "GET", "url": "http://x/"},
            "curl": "curl",
            "response": {
                "status": 200,
                "reason": "OK",
                "headers": [["Cache-Control", value], ["Date", value]],
                "body": {"text": body, "bytes": len(body)},
            },
        }

    record = {
        "id": "x",
        "outcome": "diff",
        "old": side("a", '{"x": 1}'),
        "new": side("b", '{"x": 2}'),
    }
    diffs = [{"kind": "header", "location": "cache-control", "old": "a", "new": "b"}]
    view = side_by_side(record, diffs)
    marks = {r["name"]: (r["differs"], r["changed"]) for r in view["headers"]}
    assert marks == {"cache-control": (True, True), "date": (False, True)}
    assert view["body"] == {
        "kind": "json",
        "rows": [{"path": "$.x", "old": "1", "new": "2"}],
        "total": 1,
    }


def test_text_diff_of_a_hostile_body_is_bounded() -> None:
    """64k one-character lines (difflib's worst case): only the first 2,000 lines of each side
    are compared, and the view says so."""
    old = "\n".join("a" if i % 2 else "b" for i in range(65_536))
    new = "\n".join("b" if i % 3 else "a" for i in range(65_536))
    lines, _ = text_diff(old, new)
    assert (
        len(lines) <= 401 and lines[-1] == "… only the first 2,000 lines of each side were compared"
    )
    assert all(len(line) <= 2_000 for line in lines)
