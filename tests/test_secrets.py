"""No output ever carries a secret: planted values, real echoes, every file and the console.

The end-to-end test plants secrets in targets.yaml (``${VAR}`` values in a header, in another
header and in the new target's base URL path; a literal Authorization on old) and in a suite
(a Cookie), points the targets at echo servers (tests/faultserver.py) that send them back in
JSON values, JSON *keys*, text cut into excerpts, a response header and a one-sided Set-Cookie -
so the secrets really reach the differences, the expect failures and the gate's examples - then
greps every file of the output folder and the captured console for any 8-character piece of
any planted value. The unit tests below pin the `Redactor`'s rules one by one.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from faultserver import (
    FaultServer,
    ServerFactory,
    flamingo_command,
    read_gate,
    read_rows,
    write_targets,
)
from rich.console import Console

from flamingo.engine import RunOptions, Session
from flamingo.load import load_config, load_suites
from flamingo.report.console import ConsoleObserver
from flamingo.report.redact import REDACTED, Redactor, credential_values

NEW_TOKEN = "sup3r-s3cret-planted-value"
API_KEY = "planted-k3y-0x5e9a"
NEW_PREFIX = "planted-prefix-4c3b2a"
OLD_LITERAL = "old-literal-token-1a2b3c"  # a literal Authorization value in targets.yaml
REQUEST_COOKIE = "planted-rq-c00kie-77aa"  # a literal Cookie value in a suite
SET_COOKIE = "planted-sess-v4lue-9f8e7d"  # sent by the new target only
FALLBACK = "harmless-fallback-text"  # ${UNSET:-default}: written in the file, not a secret

PLANTED = [NEW_TOKEN, API_KEY, NEW_PREFIX, OLD_LITERAL, REQUEST_COOKIE, SET_COOKIE]
ENV = {"NEW_TOKEN": NEW_TOKEN, "API_KEY": API_KEY, "NEW_PREFIX": NEW_PREFIX}
WINDOW = 8  # no piece of a planted value this long may appear anywhere


@pytest.fixture
def echo_pair(servers: ServerFactory) -> tuple[FaultServer, FaultServer]:
    old = servers(name="old")
    new = servers(name="new", set_cookie=f"session={SET_COOKIE}; Path=/; HttpOnly")
    return old, new


def leaks(text: str) -> list[str]:
    """Every planted piece (of `WINDOW` characters) found in ``text``."""
    found = []
    for value in PLANTED:
        for start in range(len(value) - WINDOW + 1):
            piece = value[start : start + WINDOW]
            if piece in text:
                found.append(piece)
    return found


def write_secret_targets(path: Path, old: FaultServer, new: FaultServer) -> Path:
    return write_targets(
        path,
        f"{old.url}/plain",
        f"{new.url}/${{NEW_PREFIX}}",
        old_extra=f'headers:\n  Authorization: "Bearer {OLD_LITERAL}"',
        new_extra=textwrap.dedent(
            """\
            headers:
              Authorization: "Bearer ${NEW_TOKEN}"
              X-Api-Key: "${API_KEY}"
              X-Fallback: "${FLAMINGO_TEST_UNSET_VARIABLE:-harmless-fallback-text}"
            """
        ),
    )


SUITE = textwrap.dedent(
    f"""\
    suite: secrets
    defaults:
      headers: {{ Cookie: "sid={REQUEST_COOKIE}; theme=dark" }}
    requests:
      - name: echo json
        path: /echo
      - name: echo text
        path: /echo.txt
      - name: token as a key
        path: /keyed
      - name: excerpt cuts the token
        path: "/excerpt?layout=tail&pad=73"
      - name: excerpt cuts the cookie
        path: "/excerpt?layout=head&pad=5"
      - name: expect on the echoed header
        path: /echo
        expect:
          headers: {{ X-Echo-Authorization: "Bearer nope" }}
      - name: expect on the echoed body
        path: /echo
        expect:
          json: {{ headers: {{ authorization: "Bearer nope" }} }}
    """
)


def test_planted_secrets_never_reach_any_output(
    echo_pair: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    old, new = echo_pair
    targets = write_secret_targets(tmp_path / "targets.yaml", old, new)
    suite = tmp_path / "secrets.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "FLAMINGO_TEST_UNSET_VARIABLE"}
    proc = subprocess.run(
        flamingo_command("run", "--targets", targets, "--suites", suite, "--out", out),
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, **ENV, "COLUMNS": "300"},
    )
    assert proc.returncode == 1, proc.stderr

    # The secrets really went out and came back: the servers saw them ...
    seen = json.dumps([r.headers for r in new.requests] + [r.path for r in new.requests])
    assert NEW_TOKEN in seen and API_KEY in seen and NEW_PREFIX in seen
    # ... and they are where the differences, failures and examples are - redacted.
    rows = read_rows(out)
    echo = {d["location"]: d for d in rows["secrets::echo json"]["differences"]}
    assert echo["$.headers.authorization"]["new"] == REDACTED
    assert echo["$.headers.authorization"]["old"] == REDACTED
    assert echo['$.headers["x-api-key"]'] == {
        "kind": "body",
        "location": '$.headers["x-api-key"]',
        "old": None,
        "new": REDACTED,
        "note": "added",
    }
    assert echo["$.path"]["new"] == f"/{REDACTED}/echo"
    assert echo["$.session"]["new"] == REDACTED  # the Set-Cookie value, echoed in the body
    assert echo["set-cookie"]["old"] is None and echo["set-cookie"]["new"] == REDACTED
    assert echo["x-echo-authorization"]["new"] == REDACTED
    # A ${VAR:-default} fallback is written in the file: not a secret, shown as it is.
    assert echo['$.headers["x-fallback"]']["new"] == FALLBACK
    keyed = rows["secrets::token as a key"]["differences"]
    assert {d["location"] for d in keyed} == {f'$.tokens["{REDACTED}"]'}
    tail = rows["secrets::excerpt cuts the token"]["differences"][0]
    assert tail["location"] == "text"
    # cut 10 characters into the token: the cut piece goes, with the "Bearer " before it
    assert tail["old"].endswith(f"\nauthorization: {REDACTED}")
    assert tail["new"].endswith(f"\nauthorization: {REDACTED}")
    head = rows["secrets::excerpt cuts the cookie"]["differences"][0]
    assert head["old"].startswith(REDACTED) and head["new"].startswith(REDACTED)
    failures = rows["secrets::expect on the echoed header"]["failures"]
    assert {(f["target"], f["actual"]) for f in failures} == {("old", REDACTED), ("new", REDACTED)}
    gate = read_gate(out)
    assert gate["targets"]["new"] == f"{new.url}/{REDACTED}"

    outputs = {p.name: p.read_bytes().decode("utf-8", "replace") for p in out.iterdir()}
    assert {"results.jsonl", "junit.xml", "report.html", "gate.json"} <= set(outputs)
    # the evidence store is compressed: read what it holds
    outputs["evidence.jsonl.gz"] = gzip.decompress(
        (out / "evidence.jsonl.gz").read_bytes()
    ).decode()
    outputs["stdout"], outputs["stderr"] = proc.stdout, proc.stderr
    assert REDACTED in outputs["stdout"]
    found = {name: leaks(text) for name, text in outputs.items()}
    assert found == {name: [] for name in outputs}
    assert FALLBACK in outputs["results.jsonl"]


def test_crash_log_and_reason_are_redacted(
    echo_pair: tuple[FaultServer, FaultServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A harness crash whose message carries the target's headers: crash.log, gate.json, the
    console and stderr all say why, none says the secret."""
    old, new = echo_pair
    config = load_config(write_secret_targets(tmp_path / "targets.yaml", old, new), env=ENV)
    suite = tmp_path / "secrets.yaml"
    suite.write_text(SUITE)
    suites = load_suites([suite])

    class Exploding:
        def __init__(self, target: object, settings: object) -> None:
            self.target = target

        async def send(self, case: object) -> object:
            raise RuntimeError(f"boom: {self.target!r}")

        async def aclose(self) -> None:
            pass

    screen = io.StringIO()
    out = tmp_path / "out"
    session = Session(config, suites, transport_factory=Exploding)  # type: ignore[arg-type]
    observer = ConsoleObserver(Console(file=screen, width=300), progress=False)
    code = session.run(options=RunOptions(out_dir=out), observers=[observer]).wait().exit_code
    assert code == 3
    crash = (out / "crash.log").read_text()
    assert "RuntimeError: boom" in crash and REDACTED in crash
    gate = read_gate(out)
    assert gate["verdict"] == "error" and gate["reason"].startswith("harness error: RuntimeError")
    outputs = {p.name: p.read_text(errors="replace") for p in out.iterdir()}
    outputs["console"] = screen.getvalue()
    outputs["stderr"] = capsys.readouterr().err
    assert "boom" in outputs["stderr"]
    assert {name: leaks(text) for name, text in outputs.items()} == {n: [] for n in outputs}
    assert not old.count and not new.count


@pytest.mark.parametrize("debug", ["", "1"])
def test_internal_error_outside_a_run_is_redacted(
    echo_pair: tuple[FaultServer, FaultServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    debug: str,
) -> None:
    """A bug outside the send loop (here: in the runner's entry) whose message carries the
    config: the command's last-resort message, and its traceback under FLAMINGO_DEBUG, are
    redacted too."""
    import flamingo.cli

    old, new = echo_pair
    targets = write_secret_targets(tmp_path / "targets.yaml", old, new)
    suite = tmp_path / "secrets.yaml"
    suite.write_text(SUITE)

    def broken(session: Session, *args: object, **kwargs: object) -> int:
        raise RuntimeError(f"bug with {session.config!r}")

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FLAMINGO_DEBUG", debug)
    monkeypatch.setattr(flamingo.cli, "_run", broken)
    code = flamingo.cli.main(["run", "--targets", str(targets), "--suites", str(suite)])
    assert code == 3
    err = capsys.readouterr().err
    assert "flamingo: internal error: RuntimeError: bug with Config(" in err
    assert ("Traceback" in err) == bool(debug)
    assert leaks(err) == []
    assert not old.count and not new.count


# --------------------------------------------------------------------------------------------
# The Redactor's rules
# --------------------------------------------------------------------------------------------


def test_every_encoding_of_a_secret_is_redacted() -> None:
    secret = 'tök"en<&>/+ x'
    redactor = Redactor([secret])
    for form in (
        secret,
        json.dumps(secret)[1:-1],  # \u00f6 and \"
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        "tök&quot;en&lt;&amp;&gt;/+ x",
        "t%C3%B6k%22en%3C%26%3E%2F%2B%20x",
        "t%C3%B6k%22en%3C%26%3E/%2B%20x",
        "t%C3%B6k%22en%3C%26%3E%2F%2B+x",
    ):
        assert redactor.text(f"a {form} b") == f"a {REDACTED} b", form


def test_longest_secret_wins_and_no_secrets_is_identity() -> None:
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.text("xabcdefghx abcd") == f"x{REDACTED}x {REDACTED}"
    assert Redactor().text("abcd") == "abcd"
    assert Redactor([""]).text("abcd") == "abcd"


def test_cut_secrets_are_redacted_at_the_cut() -> None:
    redactor = Redactor([NEW_TOKEN])
    assert redactor.fragment("... Bearer sup3r-s3c") == f"... Bearer {REDACTED}"
    assert redactor.fragment("et-planted-value\nrest") == f"{REDACTED}\nrest"
    assert redactor.fragment('"Bearer sup3r-s3cre…" → absent') == f'"Bearer {REDACTED}…" → absent'
    assert redactor.fragment("ends in sup") == "ends in sup"  # under MIN_FRAGMENT: left alone
    assert redactor.fragment("nothing secret") == "nothing secret"


def test_credential_values_and_their_parts() -> None:
    assert credential_values("Authorization", "Bearer abc.def.ghi") == [
        "Bearer abc.def.ghi",
        "abc.def.ghi",
    ]
    assert credential_values("Cookie", "sid=s3ss10n; theme=dark") == [
        "sid=s3ss10n; theme=dark",
        "sid=s3ss10n",
        "s3ss10n",
        "theme=dark",
        "dark",
    ]
    assert credential_values("Set-Cookie", "id=a1b2c3; Path=/; HttpOnly") == [
        "id=a1b2c3; Path=/; HttpOnly",
        "id=a1b2c3",
        "a1b2c3",
    ]
    assert credential_values("Set-Cookie", "n=1") == ["n=1"]  # "1" alone is no secret


def test_rows_and_gate_documents() -> None:
    redactor = Redactor([NEW_TOKEN])
    row = {
        "id": "s::a",
        "outcome": "diff",
        "differences": [
            {"kind": "header", "location": "set-cookie", "old": None, "new": "sid=zz; Path=/"},
            {"kind": "header", "location": "x-echo", "old": None, "new": f"Bearer {NEW_TOKEN}"},
            {"kind": "body", "location": "$.t", "old": {NEW_TOKEN: [NEW_TOKEN]}, "new": 1},
            {"kind": "body", "location": "text", "old": "abc sup3r-s3cr", "new": "x"},
        ],
        "failures": [
            {"target": "new", "what": "header cookie", "expected": "a", "actual": "b"},
            {"target": "old", "what": "json $.a", "expected": 1, "actual": f"x{NEW_TOKEN}"},
        ],
        "old": {"status": None, "error": "tls", "message": f"at {NEW_TOKEN}"},
        "new": {"status": 200},
    }
    out = redactor.row(row, extra=["zz-cookie"])
    diffs = out["differences"]
    assert diffs[0]["new"] == REDACTED and diffs[0]["old"] is None
    assert diffs[1]["new"] == f"Bearer {REDACTED}"
    assert diffs[2]["old"] == {REDACTED: [REDACTED]}
    assert diffs[3]["old"] == f"abc {REDACTED}"
    assert out["failures"][0]["expected"] == out["failures"][0]["actual"] == REDACTED
    assert out["failures"][1]["actual"] == f"x{REDACTED}"
    assert out["old"]["message"] == f"at {REDACTED}"
    assert row["old"]["message"] == f"at {NEW_TOKEN}"  # a copy: the input is not changed

    gate = {
        "verdict": "fail",
        "signatures": [
            {"kind": "header", "location": "set-cookie", "example_change": 'absent → "a=b"'},
            {"kind": "body", "location": "$.a", "example_change": '"sup3r-s3cret-pl…" → absent'},
        ],
    }
    shown = redactor.gate(gate)["signatures"]
    assert shown[0]["example_change"] == REDACTED
    assert shown[1]["example_change"] == f'"{REDACTED}…" → absent'


def test_a_number_like_secret_keeps_the_json_files_valid(tmp_path: Path) -> None:
    """``${PORT}``-style secrets are redacted inside JSON strings only: a number stays a number
    and results.jsonl / gate.json stay parseable for the tools that read them."""
    from flamingo.model import Case, CaseResult, Difference, GateResult, Response, Totals
    from flamingo.report.files import RunFiles

    files = RunFiles(tmp_path, Redactor(["1"]))
    case = Case(
        id="s::case 1", suite="s", name="case 1", template="s::case", method="GET", path="/a?i=1"
    )
    answer = Response(200, "OK", (), b"{}", 12.1)
    files.write(CaseResult(case, "diff", answer, answer, (Difference("body", "$.n", "1", 11),)))
    files.write(CaseResult(case, "match", answer, answer))
    doc = {"verdict": "fail", "totals": {"cases": 11}, "checks": [], "started_at": "2021"}
    files.finish(GateResult("fail", None, Totals(cases=2, match=1, diff=1)), doc, "2021")
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["totals"]["cases"] == 11
    assert gate["started_at"] == f"202{REDACTED}"
    assert [row["old"]["latency_ms"] for row in rows] == [12.1, 12.1]
    assert [row["id"] for row in rows] == [f"s::case {REDACTED}"] * 2
    assert rows[0]["differences"][0]["old"] == REDACTED
    assert rows[0]["differences"][0]["new"] == 11
