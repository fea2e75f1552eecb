"""Recorded baselines: the store, the replaying response source, and `flamingo record` /
`run --old` / `run --record-old` end to end against the demo targets."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from flamingo.baseline import (
    Baseline,
    BaselineInfo,
    BaselineWriter,
    ReplayTransport,
    request_key,
)
from flamingo.cli import main
from flamingo.errors import InputError
from flamingo.model import ForwardedRequest, RawRequest, Response, TransportError, UpstreamView
from flamingo.send import WireRequest

REPO = Path(__file__).resolve().parent.parent
RULED = [REPO / "suites" / name for name in ("static.yaml", "api.yaml", "errors.yaml")]
ALL = sorted((REPO / "suites").glob("*.yaml"))  # with learned-noise.yaml: no ignore rules


def _info() -> BaselineInfo:
    return BaselineInfo("old", "http://x", "h", (), "t0", "t1", 1, 0, 0, 0)


def _replay(transport: ReplayTransport, request: Any) -> Any:
    return asyncio.run(transport.send(request))


def test_every_field_of_an_exchange_survives_the_store(tmp_path: Path) -> None:
    forwarded = ForwardedRequest(
        "GET / HTTP/1.1", (("Host", "a"),), b"up", "none", True, 2, "", 3, ("bare LF",)
    )
    response = Response(
        status=200,
        reason="OK",
        headers=(("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("X", "")),
        body=b"\x00\xffbinary",
        latency_ms=12.5,
        body_size=100,
        body_sha256="ab" * 32,
        attempts=2,
        ending="closed",
        more=(Response(100, "Continue", (), b"", 1.0),),
        upstream=UpstreamView((forwarded,), untokened=1),
    )
    error = TransportError("timeout", "no answer in 5s", 5000.0, 2)
    request = WireRequest("GET", "/a?b=1", (("Accept", "x"),), None)
    other = WireRequest("POST", "/a?b=1", (("Accept", "x"),), b"body")
    writer = BaselineWriter(tmp_path / "base")
    writer.add(request, response, "old")
    writer.add(request, error, "new")
    writer.add(other, response, "old")
    info = writer.commit(_info())
    assert (info.exchanges, info.objects) == (3, 4)  # bodies: response, 100 (empty), upstream, POST
    replay = ReplayTransport([Baseline.open(tmp_path / "base")])
    assert _replay(replay, request) == response
    assert _replay(replay, request) == error  # recorded answers in turn
    assert _replay(replay, request) == response  # and round again
    assert _replay(replay, other) == response
    assert not list(tmp_path.glob(".base.*"))  # the work directory became the baseline


def test_several_recordings_answer_in_turn(tmp_path: Path) -> None:
    request = WireRequest("GET", "/a", (), None)
    for name, bodies in (("monday", [b"m1", b"m2"]), ("tuesday", [b"t1"])):
        writer = BaselineWriter(tmp_path / name)
        for body in bodies:
            writer.add(request, Response(200, "OK", (), body, 1.0), "old")
        writer.commit(_info())
    replay = ReplayTransport([Baseline.open(tmp_path / n) for n in ("monday", "tuesday")])
    assert [_replay(replay, request).body for _ in range(4)] == [b"m1", b"t1", b"m2", b"m1"]


def test_repeats_cost_little_and_files_are_private(tmp_path: Path) -> None:
    writer = BaselineWriter(tmp_path / "base")
    body = b"x" * 100_000
    for n in range(200):
        writer.add(
            WireRequest("GET", f"/{n % 3}", (), None), Response(200, "OK", (), body, 1.0), "old"
        )
    info = writer.commit(_info())
    assert info.objects == 1
    assert info.stored_bytes < 10_000  # 200 responses of 100 kB each
    for path in (tmp_path / "base").rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_the_key_is_everything_sent_and_nothing_else() -> None:
    base = WireRequest("GET", "/a", (("A", "1"),), None)
    assert request_key(base) == request_key(WireRequest("GET", "/a", (("A", "1"),), None))
    for changed in (
        WireRequest("HEAD", "/a", (("A", "1"),), None),
        WireRequest("GET", "/a?x", (("A", "1"),), None),
        WireRequest("GET", "/a", (("A", "2"),), None),
        WireRequest("GET", "/a", (("A", "1"),), b""),
    ):
        assert request_key(changed) != request_key(base)

    class Raw:
        method, path, headers, body = "GET", "/a", (("A", "1"),), None

        def __init__(self, data: bytes) -> None:
            self.raw = RawRequest((data,))

    assert request_key(Raw(b"GET / HTTP/1.1\r\n\r\n")) != request_key(
        Raw(b"GET / HTTP/1.0\r\n\r\n")
    )
    # The upstream token is new for every exchange: never part of the key.
    token_a, token_b = b"flamingo-0123456789abcdef", b"flamingo-fedcba9876543210"
    assert request_key(Raw(b"GET /" + token_a)) == request_key(Raw(b"GET /" + token_b))
    stamped = WireRequest("GET", "/a", (("A", "1"), ("X-Flamingo-Token", "flamingo-1")), None)
    assert request_key(stamped) == request_key(base)


def test_a_request_never_recorded_is_an_error_never_a_match(tmp_path: Path) -> None:
    writer = BaselineWriter(tmp_path / "base")
    writer.add(WireRequest("GET", "/a", (), None), Response(200, "OK", (), b"", 1.0), "old")
    writer.commit(_info())
    answer = _replay(
        ReplayTransport([Baseline.open(tmp_path / "base")]), WireRequest("GET", "/b", (), None)
    )
    assert isinstance(answer, TransportError)
    assert answer.kind == "not-recorded"
    assert "no recorded response to GET /b" in answer.message


def test_an_abandoned_recording_keeps_the_earlier_baseline(tmp_path: Path) -> None:
    first = BaselineWriter(tmp_path / "base")
    first.add(WireRequest("GET", "/a", (), None), Response(200, "OK", (), b"first", 1.0), "old")
    first.commit(_info())
    second = BaselineWriter(tmp_path / "base")
    second.add(WireRequest("GET", "/a", (), None), Response(200, "OK", (), b"second", 1.0), "old")
    second.abandon()
    replay = ReplayTransport([Baseline.open(tmp_path / "base")])
    assert _replay(replay, WireRequest("GET", "/a", (), None)).body == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


def test_damaged_or_missing_baselines_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a baseline \\(no such directory"):
        Baseline.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no baseline\.json in it"):
        Baseline.open(tmp_path / "empty")
    writer = BaselineWriter(tmp_path / "base")
    writer.add(WireRequest("GET", "/a", (), None), Response(200, "OK", (), b"body", 1.0), "old")
    writer.commit(_info())
    info = tmp_path / "base" / "baseline.json"
    saved = info.read_text()
    info.write_text(saved.replace('"format": 1', '"format": 99'))
    with pytest.raises(InputError, match="unsupported baseline format 99"):
        Baseline.open(tmp_path / "base")
    info.write_text(saved)
    (obj,) = (tmp_path / "base" / "objects").rglob("*.gz")
    obj.write_bytes(gzip.compress(b"tampered"))
    replay = ReplayTransport([Baseline.open(tmp_path / "base")])
    with pytest.raises(InputError, match="is damaged"):
        _replay(replay, WireRequest("GET", "/a", (), None))
    with gzip.open(tmp_path / "base" / "index.jsonl.gz", "wt") as handle:
        handle.write("{not json\n")
    with pytest.raises(InputError, match=r"index\.jsonl\.gz:1: damaged index line"):
        Baseline.open(tmp_path / "base")


# --------------------------------------------------------------------------------------------
# End to end, against the demo targets
# --------------------------------------------------------------------------------------------


def _targets(path: Path, old: str, new: str) -> Path:
    path.write_text(
        f"targets:\n  old: {{ base_url: '{old}' }}\n  new: {{ base_url: '{new}' }}\n"
        "run: { concurrency: 20, timeout: 5s, workers: 1 }\n"
        "gates:\n  default: { min_match_rate: 1.0, max_error_rate: 0, min_cases: 1 }\n"
    )
    return path


def _outcomes(out: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {row["id"]: row["outcome"] for row in rows}


def _suites(*paths: Path) -> list[str]:
    return ["--suites", *map(str, paths)]


def test_record_then_judge_new_against_the_recording_as_against_live_old(
    demo_targets: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    targets = _targets(tmp_path / "targets.yaml", demo_targets["old"], demo_targets["new"])
    files = ["--targets", str(targets), *_suites(*ALL), "--no-progress"]
    base = tmp_path / "base"
    assert main(["record", "--target", "old", "--out", str(base), *files]) == 0
    said = capsys.readouterr().out
    info = json.loads((base / "baseline.json").read_text())
    assert info["target"] == "old" and info["base_url"] == demo_targets["old"]
    assert info["cases"] > 50 and info["exchanges"] >= 2 * info["cases"]
    assert [Path(s["file"]).name for s in info["suites"]] == [p.name for p in ALL]
    assert f"baseline: {info['cases']} cases" in said

    live, replayed = tmp_path / "live", tmp_path / "replayed"
    live_code = main(["run", *files, "--out", str(live)])
    replay_code = main(["run", *files, "--out", str(replayed), "--old", str(base)])
    assert "old: the baseline" in capsys.readouterr().out
    assert live_code == replay_code == 1  # the demo's planted differences
    assert _outcomes(replayed) == _outcomes(live)
    gate = json.loads((replayed / "gate.json").read_text())
    assert gate["totals"]["error"] == 0

    # The old system is gone: the recording still answers (and send workers can replay too).
    dead = _targets(tmp_path / "dead.yaml", "http://127.0.0.1:9", demo_targets["new"])
    gone = tmp_path / "gone"
    dead_files = ["--targets", str(dead), *_suites(*ALL), "--no-progress", "--workers", "2"]
    assert main(["run", *dead_files, "--out", str(gone), "--old", str(base)]) == 1
    assert _outcomes(gone) == _outcomes(live)


def test_a_case_the_baseline_never_saw_is_an_error_with_that_reason(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    targets = _targets(tmp_path / "targets.yaml", demo_targets["old"], demo_targets["new"])
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "suite: s\nrequests:\n  - { name: hello, path: /static/hello.txt }\n"
        "compare: { ignore_headers: [date, server, via, x-request-id, x-proxy-request-id] }\n"
    )
    base = tmp_path / "base"
    files = ["--targets", str(targets), "--suites", str(suite), "--no-progress"]
    assert main(["record", "--target", "old", "--out", str(base), *files]) == 0
    suite.write_text(
        suite.read_text().replace(
            "requests:\n", "requests:\n  - { name: new one, path: /api/items/1 }\n"
        )
    )
    out = tmp_path / "out"
    assert main(["run", *files, "--out", str(out), "--old", str(base)]) == 1
    rows = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert rows["s::hello"]["outcome"] == "match"
    assert rows["s::new one"]["outcome"] == "error"
    assert "not in the baseline" in json.dumps(rows["s::new one"]["old"])
    assert json.loads((out / "gate.json").read_text())["verdict"] != "pass"


def test_record_old_during_a_normal_run_refreshes_the_baseline(
    demo_targets: dict[str, str], tmp_path: Path
) -> None:
    targets = _targets(tmp_path / "targets.yaml", demo_targets["old"], demo_targets["new"])
    files = ["--targets", str(targets), *_suites(RULED[0]), "--no-progress"]
    base = tmp_path / "base"
    writer = BaselineWriter(base)  # an older baseline, of other requests
    writer.add(WireRequest("GET", "/stale", (), None), Response(200, "OK", (), b"", 1.0), "old")
    writer.commit(_info())
    live = tmp_path / "live"
    assert main(["run", *files, "--out", str(live), "--record-old", str(base)]) == 1
    info = json.loads((base / "baseline.json").read_text())
    assert info["exchanges"] == info["cases"]  # old only: new is not recorded
    replayed = tmp_path / "replayed"
    assert main(["run", *files, "--out", str(replayed), "--old", str(base)]) == 1
    assert _outcomes(replayed) == _outcomes(live)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--old", "{tmp}/nope"], "not a baseline (no such directory"),
        (["run", "--old", "{tmp}", "--record-old", "{tmp}/b"], "exclude each other"),
        (
            ["record", "--target", "staging", "--out", "{tmp}/b"],
            "--target: unknown target 'staging'",
        ),
        (
            ["record", "--target", "old", "--out", "{tmp}/keep"],
            "keep: exists and is not a baseline",
        ),
        (["run", "--record-old", "{tmp}/keep"], "keep: exists and is not a baseline"),
        (["run", "--record-old", "{tmp}/keep/file"], "exists and is not a baseline"),
    ],
)
def test_bad_baseline_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    targets = _targets(tmp_path / "targets.yaml", "http://127.0.0.1:9", "http://127.0.0.1:9")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "file").write_text("precious")
    args = [a.format(tmp=tmp_path) for a in argv]
    assert main([*args, "--targets", str(targets), *_suites(RULED[0]), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert (tmp_path / "keep" / "file").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "targets.yaml"]


def test_quiet_and_json_hold_with_a_baseline(
    demo_targets: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run --old``/``--record-old`` print what ``run`` prints: with ``--json`` stdout is the gate
    document alone (the baseline's own lines go to stderr), with ``--quiet`` no summary tables."""
    targets = _targets(tmp_path / "targets.yaml", demo_targets["old"], demo_targets["new"])
    files = ["--targets", str(targets), *_suites(RULED[0])]
    base, recorded, replayed = tmp_path / "base", tmp_path / "recorded", tmp_path / "replayed"
    capsys.readouterr()
    assert main(["run", *files, "--out", str(recorded), "--record-old", str(base), "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads((recorded / "gate.json").read_text())
    assert "baseline:" in err and "baseline:" not in out
    assert main(["run", *files, "--out", str(replayed), "--old", str(base), "--quiet"]) == 1
    out, _ = capsys.readouterr()
    assert "signature" not in out.lower() and "latency" not in out.lower(), out
    assert out.splitlines()[-1].startswith("fail: ")  # the one verdict line
