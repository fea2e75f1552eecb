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

import base64
import gzip
import html
import io
import json
import os
import subprocess
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

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
from flamingo.model import Case, CaseResult, Difference, ExpectFailure, Response, TransportError
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
    assert echo["x-echo-authorization"]["new"] == f"Bearer {REDACTED}"  # shown as configured
    # A ${VAR:-default} fallback is written in the file: not a secret, shown as it is.
    assert echo['$.headers["x-fallback"]']["new"] == FALLBACK
    keyed = rows["secrets::token as a key"]["differences"]
    # new: "Bearer ${NEW_TOKEN}", shown as configured; old: a literal credential, all of it
    assert {d["location"] for d in keyed} == {
        f'$.tokens["Bearer {REDACTED}"]',
        f'$.tokens["{REDACTED}"]',
    }
    tail = rows["secrets::excerpt cuts the token"]["differences"][0]
    assert tail["location"] == "text"
    # cut 10 characters into the token: the cut piece goes, with the "Bearer " before it
    assert tail["old"].endswith(f"\nauthorization: {REDACTED}")
    assert tail["new"].endswith(f"\nauthorization: {REDACTED}")
    head = rows["secrets::excerpt cuts the cookie"]["differences"][0]
    assert head["old"].startswith(REDACTED) and head["new"].startswith(REDACTED)
    failures = rows["secrets::expect on the echoed header"]["failures"]
    assert {(f["target"], f["actual"]) for f in failures} == {
        ("old", REDACTED),
        ("new", f"Bearer {REDACTED}"),
    }
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


def _case(name: str = "case 1", headers: tuple[tuple[str, str], ...] = ()) -> Case:
    return Case(
        id=f"s::{name}",
        suite="s",
        name=name,
        template="s::case",
        method="GET",
        path="/a?i=1",
        headers=headers,
    )


def test_results_are_redacted_field_by_field() -> None:
    redactor = Redactor([NEW_TOKEN])
    answer = Response(200, "OK", (), b"{}", 1.0)
    cookie = Response(200, "OK", (("Set-Cookie", "sid=zz-cookie; Path=/"),), b"{}", 1.0)
    result = CaseResult(
        _case(),
        "error",
        TransportError("tls", f"at {NEW_TOKEN}", 1.0),
        cookie,
        differences=(
            Difference("header", "set-cookie", None, "sid=zz-cookie; Path=/"),
            Difference("header", "x-echo", None, f"Bearer {NEW_TOKEN}"),
            Difference("body", "$.t", {NEW_TOKEN: [NEW_TOKEN]}, 1),
            Difference("body", "text", "abc sup3r-s3cr", "x"),
            Difference("body", "$.echo", "zz-cookie", None),
        ),
        failures=(
            ExpectFailure("new", "header cookie", "a", "b"),
            ExpectFailure("old", "json $.a", 1, f"x{NEW_TOKEN}"),
        ),
    )
    out = redactor.result(result)
    diffs = out.differences
    assert diffs[0].new == REDACTED and diffs[0].old is None  # a credential header: blanked
    assert diffs[1].new == f"Bearer {REDACTED}"
    assert diffs[2].old == {REDACTED: [REDACTED]}
    assert diffs[3].old == f"abc {REDACTED}"  # cut by the excerpt: the cut piece too
    assert diffs[4].old == REDACTED  # this case's own Set-Cookie value, echoed
    assert out.failures[0].expected == out.failures[0].actual == REDACTED
    assert out.failures[1].actual == f"x{REDACTED}"
    assert isinstance(out.old, TransportError) and out.old.message == f"at {REDACTED}"
    assert result.old.message == f"at {NEW_TOKEN}"  # type: ignore[union-attr]  # a copy
    assert out.case == result.case  # ids are the suite's, never rewritten
    plain = CaseResult(_case(), "match", answer, answer)
    assert redactor.result(plain) is plain  # nothing a target sent but its reason phrase


def test_short_secrets_are_redacted_where_they_were_put() -> None:
    """A one-character secret is not searched for in free text (every "1" of a report), but the
    field it was substituted into, a value that *is* it, and echoes under its header's name are
    redacted."""
    redactor = Redactor(["1"], shown={"Bearer 1": f"Bearer {REDACTED}"}, secret_headers=["X-Token"])
    answer = Response(200, "OK", (), b"{}", 12.1)
    result = CaseResult(
        _case(),
        "diff",
        answer,
        answer,
        differences=(
            Difference("header", "x-token", None, "1"),
            Difference("header", "x-echo-authorization", None, "Bearer 1"),
            Difference("body", '$.headers["x-token"]', None, "anything"),
            Difference("body", "$.n", "1", 11),
            Difference("body", "$.m", 1, "10 apples"),
            Difference("body", "$.h", {"x-token": "1", "x-other": "21"}, None),
        ),
    )
    diffs = redactor.result(result).differences
    assert [(d.old, d.new) for d in diffs] == [
        (None, REDACTED),
        (None, f"Bearer {REDACTED}"),
        (None, REDACTED),
        (REDACTED, 11),
        (REDACTED, "10 apples"),
        ({"x-token": REDACTED, "x-other": "21"}, None),
    ]
    assert redactor.text("case 1 took 1 ms") == "case 1 took 1 ms"


def test_base_url_credentials_and_their_derived_forms() -> None:
    import base64

    from flamingo.model import Config, Target

    config = Config(
        path="t.yaml",
        old=Target("old", "http://svc:pl41n-pw@127.0.0.1:1"),
        new=Target("new", "http://t0ken-only@127.0.0.1:2"),
    )
    redactor = Redactor.for_config(config)
    basic = base64.b64encode(b"svc:pl41n-pw").decode()
    assert redactor.text(f"echo: Basic {basic}") == f"echo: {REDACTED}"
    assert redactor.text(f"token {basic}") == f"token {REDACTED}"
    assert redactor.text("svc:pl41n-pw") == REDACTED
    assert redactor.config_text(config.old.base_url) == f"http://svc:{REDACTED}@127.0.0.1:1"
    assert redactor.config_text(config.new.base_url) == f"http://{REDACTED}@127.0.0.1:2"
    doc = redactor.gate({"targets": {"old": config.old.base_url, "new": config.new.base_url}})
    assert "pl41n" not in json.dumps(doc) and "t0ken" not in json.dumps(doc)


def test_the_gate_document_keeps_its_keys_and_flamingos_own_values() -> None:
    redactor = Redactor(["verdict", "pass", "1", "e", '"', "\\"])
    doc = {
        "verdict": "pass",
        "totals": {"cases": 1},
        "checks": [{"name": "min_match_rate", "threshold": 1, "observed": 1.0, "passed": True}],
        "reason": "a verdict could not pass",
        "targets": {"old": "http://127.0.0.1:1"},
        "noise": [{"kind": "body", "location": "$.pass", "examples": ["pass", "x"], "context": ""}],
    }
    out = redactor.gate(doc)
    assert out["verdict"] == "pass" and out["totals"] == {"cases": 1}
    assert out["checks"] == doc["checks"]
    assert out["reason"] == f"a {REDACTED} could not {REDACTED}"
    assert out["noise"][0]["location"] == f"$.{REDACTED}"
    assert out["noise"][0]["examples"] == [REDACTED, "x"]
    assert out["targets"] == doc["targets"]


def test_a_secret_cannot_eat_into_the_redaction_mark() -> None:
    for secret in ("REDACTED", "DACT", "[RED", "ED]x"):
        redactor = Redactor([secret], shown={f"a {secret}": f"a {REDACTED}"})
        assert redactor.text(f"a {secret}") == f"a {REDACTED}"
        assert redactor.text(f"{REDACTED} {secret}") == f"{REDACTED} {REDACTED}"


# --------------------------------------------------------------------------------------------
# Odd secret values, end to end: structure and syntax of every output survive
# --------------------------------------------------------------------------------------------


def _outputs(out: Path) -> dict[str, str]:
    """Every file of an output folder as text (the evidence store decompressed)."""
    texts = {}
    for path in out.iterdir():
        data = path.read_bytes()
        texts[path.name] = (gzip.decompress(data) if path.suffix == ".gz" else data).decode()
    return texts


_VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr"}


class _TagBalance(HTMLParser):
    """Fails on an end tag that closes anything but the innermost open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def _assert_well_formed(out: Path) -> dict[str, Any]:
    """Every file parses as what it claims to be; gate.json keeps its keys and values."""
    gate = json.loads((out / "gate.json").read_text(encoding="utf-8"))
    for key in ("verdict", "stage", "totals", "checks", "started_at", "finished_at"):
        assert key in gate, key
    assert gate["verdict"] == "pass"
    assert set(gate["totals"]) >= {"cases", "match", "diff", "fail", "error"}
    assert gate["totals"]["cases"] == 2 and gate["totals"]["diff"] == 1
    assert all(set(c) == {"name", "threshold", "observed", "passed"} for c in gate["checks"])
    for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert set(row) >= {"id", "suite", "name", "outcome", "differences", "old", "new"}
        assert row["id"] in ("odd::echo 1", "odd::ok 1")
        assert row["old"]["status"] == row["new"]["status"] == 200
    ElementTree.parse(out / "junit.xml")
    page = _TagBalance()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    page.close()
    assert page.stack == [], page.stack
    return gate


ODD_SUITE = textwrap.dedent(
    """\
    suite: odd
    requests:
      - name: echo 1
        path: /echo
      - name: ok 1
        path: /ok
    """
)


@pytest.mark.parametrize(
    "value",
    [
        "verdict",  # a key of gate.json
        "pass",  # a verdict
        "1",  # in every number
        "e",  # in every word
        "",
        '"',
        "\\",
        "<",
        "status",  # a key of every result row
        "DACT",  # a piece of the redaction mark
        "ünïcødé-✓-s3cret",
    ],
)
def test_an_odd_secret_value_cannot_break_or_leak_into_any_output(
    servers: ServerFactory, tmp_path: Path, value: str
) -> None:
    """``${TOK}`` in an Authorization and an X-Token header of new, against targets that echo
    the request headers in a JSON body and a response header. Whatever the value, every file
    parses, gate.json keeps its keys and its verdict (and the exit code matches it), the console
    does not crash, and the echoed secret is redacted in every field it came back in. (Before:
    ``verdict`` deleted gate.json's verdict key, ``1`` made it invalid JSON, ``e`` broke
    junit.xml, ``pass`` crashed the console.)"""
    old, new = servers(name="old"), servers(name="new")
    targets = write_targets(
        tmp_path / "targets.yaml",
        old.url,
        new.url,
        new_extra='headers:\n  Authorization: "Bearer ${TOK}"\n  X-Token: "${TOK}"',
        gates="default: { min_match_rate: 0.5 }",  # the echo differs: a pass, allowed so
    )
    suite = tmp_path / "odd.yaml"
    suite.write_text(ODD_SUITE)
    out = tmp_path / "out"
    proc = subprocess.run(
        flamingo_command("run", "--targets", targets, "--suites", suite, "--out", out),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TOK": value, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert "verdict: PASS" in proc.stdout
    gate = _assert_well_formed(out)
    sent = dict(new.requests[0].headers)
    # the value really went out (as UTF-8: the server reads header bytes as latin-1)
    assert sent.get("X-Token", "").encode("latin-1").decode() == value.strip()
    echo = {d["location"]: d for d in read_rows(out)["odd::echo 1"]["differences"]}
    if value.strip():  # an empty value is no secret: nothing to redact
        assert echo["x-echo-authorization"]["new"] in (f"Bearer {REDACTED}", REDACTED)
        assert echo["$.headers.authorization"]["new"] == REDACTED
        assert echo['$.headers["x-token"]']["new"] == REDACTED
        # the evidence store keeps the echoed body: the header's echo is redacted there too
        evidence = _outputs(out)["evidence.jsonl.gz"]
        for line in evidence.splitlines():
            for side in json.loads(line).get("new", {}), json.loads(line).get("old", {}):
                body = side.get("response", {}).get("body", {}).get("text", "")
                if body.startswith("{"):
                    assert json.loads(body)["headers"].get("x-token") in (None, REDACTED)
    if len(value) >= 4:  # long enough to be recognised anywhere: nowhere a target put it
        forms = {value, json.dumps(value)[1:-1], html.escape(value)}
        forms.add(value.encode().decode("latin-1"))  # UTF-8 bytes read back as latin-1
        rows = read_rows(out).values()
        echoed = {  # every field a target's answer fills
            "results": [
                [r["differences"], r["failures"]]
                + [r[t].get(f) for t in ("old", "new") for f in ("reason", "message")]
                for r in rows
            ],
            "signatures": [
                [s["location"], s["description"], s["example_change"]] for s in gate["signatures"]
            ],
        }
        texts = {k: json.dumps(v, ensure_ascii=False) for k, v in echoed.items()}
        if value not in ("verdict", "pass", "status"):  # else: flamingo's own words are there
            texts |= _outputs(out)
            texts["console"] = proc.stdout + proc.stderr
        found = {
            name: [f for f in forms if f in text.replace(REDACTED, "")]
            for name, text in texts.items()
        }
        assert found == {name: [] for name in texts}


# --------------------------------------------------------------------------------------------
# Credentials in a base_url
# --------------------------------------------------------------------------------------------

URL_PASSWORD = "url-pa55-from-env"
PLAIN_PASSWORD = "plain-written-pa55"  # written in targets.yaml itself: a credential all the same


def test_base_url_credentials_and_the_basic_header_never_reach_any_output(
    echo_pair: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    """``http://svc:${PW}@host`` (and a password written in the file): the client sends
    ``Authorization: Basic base64(svc:PW)``, the targets echo it in a body and a header - it is
    redacted there, and the URLs are shown with the password redacted."""
    old, new = echo_pair
    old_url = old.url.replace("http://", f"http://ops:{PLAIN_PASSWORD}@")
    new_url = new.url.replace("http://", "http://svc:${PW}@")
    targets = write_targets(tmp_path / "targets.yaml", old_url, new_url)
    suite = tmp_path / "echo.yaml"
    suite.write_text("suite: userinfo\nrequests:\n  - name: echo\n    path: /echo\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        flamingo_command("run", "--targets", targets, "--suites", suite, "--out", out),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PW": URL_PASSWORD, "COLUMNS": "300"},
    )
    assert proc.returncode == 1, proc.stderr
    basic_new = base64.b64encode(f"svc:{URL_PASSWORD}".encode()).decode()
    basic_old = base64.b64encode(f"ops:{PLAIN_PASSWORD}".encode()).decode()
    assert ("Authorization", f"Basic {basic_new}") in new.requests[0].headers  # really sent
    assert ("Authorization", f"Basic {basic_old}") in old.requests[0].headers
    echo = {d["location"]: d for d in read_rows(out)["userinfo::echo"]["differences"]}
    assert echo["$.headers.authorization"] == {
        "kind": "body",
        "location": "$.headers.authorization",
        "old": REDACTED,
        "new": REDACTED,
    }
    assert echo["x-echo-authorization"]["new"] == REDACTED
    gate = read_gate(out)
    assert gate["targets"] == {
        "old": old.url.replace("http://", f"http://ops:{REDACTED}@"),
        "new": new.url.replace("http://", f"http://svc:{REDACTED}@"),
    }
    outputs = _outputs(out)
    outputs["console"] = proc.stdout + proc.stderr
    forms = [URL_PASSWORD, PLAIN_PASSWORD, basic_new, basic_old, basic_new[:12], basic_old[:12]]
    found = {name: [f for f in forms if f in text] for name, text in outputs.items()}
    assert found == {name: [] for name in outputs}


def test_base_url_credentials_with_an_authorization_header_is_an_input_error(
    servers: ServerFactory, tmp_path: Path
) -> None:
    server = servers(name="untouched")
    targets = write_targets(
        tmp_path / "targets.yaml",
        server.url,
        server.url.replace("http://", "http://svc:${PW}@"),
        new_extra='headers:\n  authorization: "Bearer abc"',
    )
    suite = tmp_path / "echo.yaml"
    suite.write_text("suite: userinfo\nrequests:\n  - name: echo\n    path: /echo\n")
    proc = subprocess.run(
        flamingo_command("run", "--targets", targets, "--suites", suite, "--out", tmp_path / "o"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PW": URL_PASSWORD},
    )
    assert proc.returncode == 2, proc.stderr
    line = next(n for n, text in enumerate(targets.read_text().splitlines(), 1) if "svc:" in text)
    assert proc.stderr.startswith(f"{targets}:{line}: targets.new.base_url: credentials in the URL")
    assert URL_PASSWORD not in proc.stderr and "Traceback" not in proc.stderr
    assert server.count == 0


def test_a_load_error_never_repeats_a_password_written_in_a_base_url(tmp_path: Path) -> None:
    from flamingo.errors import InputError

    path = tmp_path / "targets.yaml"
    path.write_text(
        "targets:\n  old:\n    base_url: 'http://svc:hunter22-pw@127.0.0.1:99999'\n"
        "  new:\n    base_url: http://127.0.0.1:1\n"
    )
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert "hunter22" not in str(caught.value)
    assert f"'http://svc:{REDACTED}@127.0.0.1:99999'" in str(caught.value)
